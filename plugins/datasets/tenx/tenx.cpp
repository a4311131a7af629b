// The tenx dataset plugin: the feature-barcode matrices of 10x Genomics Cell Ranger
// (docs/user-guide.md, "10x Genomics Cell Ranger output (tenx plugin)"; parameters in
// docs/config-reference.md, "tenx").
//
// Inputs handled:
//  - filtered_feature_bc_matrix.h5 (Cell Ranger 3 and later): /matrix with barcodes, data, indices,
//    indptr and shape, and /matrix/features with id, name and feature_type. The features x barcodes
//    CSC arrays are exactly a barcodes x features CSR matrix and are read as such
//    (scssl/anndata/matrix.hpp), without a conversion. Cell Ranger 2's .h5 (one group per genome
//    with genes and gene_names) is read when it holds one genome.
//  - the matrix folder: matrix.mtx (MatrixMarket coordinate, integer or real, general; rows are
//    features, columns barcodes), features.tsv (id, name, feature type) or Cell Ranger 2's
//    genes.tsv (id, name), barcodes.tsv; each gzip-compressed (.gz, as Cell Ranger 3 writes them)
//    or plain.
//  - optionally a CSV or TSV of per-barcode annotations (obs_path), joined by barcode.
// "Gene Expression" features form the RNA modality and "Antibody Capture" features the ADT
// modality (the names the h5ad and synthetic plugins give them); features of any other type
// (CRISPR guides, multiplexing tags, peaks, custom) are left out with a warning.
// The files are untrusted: shapes, index ranges, counts and header lines are checked before they
// are used, and every error names the file and the thing (dataset, line). The matrix is never made
// dense; the matrix folder is read in one pass over the text.
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "scssl/anndata/frame.hpp"
#include "scssl/anndata/hdf5.hpp"
#include "scssl/anndata/matrix.hpp"
#include "scssl/anndata/to_cell_data.hpp"
#include "scssl/plugin.hpp"

namespace {

namespace fs = std::filesystem;
using scssl::BadData;
using scssl::InvalidArgument;
using scssl::IoError;
using scssl::anndata::CsrArrays;
using scssl::anndata::list_names;
using FrameColumn = scssl::anndata::Column;

const std::string kGeneExpression = "Gene Expression";
const std::string kAntibodyCapture = "Antibody Capture";

// ---- text files, gzip-compressed or plain ------------------------------------------------------

// Reads a text file line by line through zlib, which reads gzip-compressed and plain files alike.
// Lines lose their "\n" and a "\r" before it. Errors name the file and the line.
class TextFile {
 public:
  explicit TextFile(std::string path) : path_(std::move(path)) {
    std::error_code ec;
    if (!fs::is_regular_file(path_, ec))
      throw IoError(path_ + (fs::exists(path_, ec) ? ": is not a file" : ": does not exist"));
    file_ = gzopen(path_.c_str(), "rb");
    if (!file_) throw IoError(path_ + ": cannot open the file (" + std::strerror(errno) + ")");
    gzbuffer(file_, 1 << 17);
    buffer_.resize(1 << 20);
  }
  ~TextFile() { gzclose(file_); }
  TextFile(const TextFile&) = delete;
  TextFile& operator=(const TextFile&) = delete;

  const std::string& path() const { return path_; }
  int64_t line_number() const { return line_; }

  // The next line, valid until the next call; false at the end of the file.
  bool next(std::string_view& line) {
    for (;;) {
      const char* begin = buffer_.data() + begin_;
      if (const void* nl = std::memchr(begin, '\n', end_ - begin_)) {
        const size_t n = static_cast<size_t>(static_cast<const char*>(nl) - begin);
        begin_ += n + 1;
        ++line_;
        line = without_cr(std::string_view(begin, n));
        return true;
      }
      if (eof_) {
        if (begin_ == end_) return false;
        line = without_cr(std::string_view(begin, end_ - begin_));
        begin_ = end_;
        ++line_;
        return true;
      }
      fill();
    }
  }

  // BadData "<file>: line <n>: <problem>" for the line last returned.
  [[noreturn]] void fail(const std::string& problem) const {
    throw BadData(path_ + ": line " + std::to_string(line_) + ": " + problem);
  }

 private:
  static constexpr size_t kMaxLine = size_t{64} << 20;

  static std::string_view without_cr(std::string_view s) {
    if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
    return s;
  }

  void fill() {
    // The unfinished line moves to the front; a line that fills the whole buffer grows it.
    if (begin_ > 0) {
      std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (end_ == buffer_.size()) {
      if (buffer_.size() >= kMaxLine)
        throw BadData(path_ + ": line " + std::to_string(line_ + 1) +
                      " is longer than 64 MiB; this is not a text file of a 10x matrix");
      buffer_.resize(buffer_.size() * 2);
    }
    const int n =
        gzread(file_, buffer_.data() + end_, static_cast<unsigned>(buffer_.size() - end_));
    int err = Z_OK;
    const char* message = gzerror(file_, &err);
    if (n < 0 || (err != Z_OK && err != Z_STREAM_END)) {
      if (err == Z_BUF_ERROR)
        throw BadData(path_ + ": the gzip data ends early (the file is truncated)");
      throw BadData(path_ + ": cannot be read (" +
                    (err == Z_ERRNO ? std::string(std::strerror(errno)) : std::string(message)) +
                    ")");
    }
    if (n == 0) eof_ = true;
    end_ += static_cast<size_t>(n);
  }

  std::string path_;
  gzFile file_ = nullptr;
  std::vector<char> buffer_;
  size_t begin_ = 0, end_ = 0;
  bool eof_ = false;
  int64_t line_ = 0;
};

// Fields separated by `sep` (no quoting: the 10x .tsv files have none).
void split(std::string_view line, char sep, std::vector<std::string_view>& out) {
  out.clear();
  for (size_t start = 0;;) {
    const size_t end = line.find(sep, start);
    out.push_back(line.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) return;
    start = end + 1;
  }
}

// Fields separated by spaces or tabs, runs of them counting as one (MatrixMarket).
void split_blanks(std::string_view line, std::vector<std::string_view>& out) {
  out.clear();
  size_t i = 0;
  const size_t n = line.size();
  while (i < n) {
    while (i < n && (line[i] == ' ' || line[i] == '\t')) ++i;
    const size_t start = i;
    while (i < n && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
}

template <class T>
bool parse_number(std::string_view s, T& value) {
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, value);
  return ec == std::errc() && p == end && !s.empty();
}

std::string quoted(std::string_view s) {
  constexpr size_t kShown = 60;
  return "'" + std::string(s.substr(0, kShown)) + (s.size() > kShown ? "...'" : "'");
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// ---- what either layout gives ------------------------------------------------------------------

struct Source {
  std::string barcodes_file;  // where the barcodes are (file, and key in an .h5), for messages
  std::string matrix_file;    // likewise for the counts
  std::string features_file;  // and for the feature types
  std::vector<std::string> barcodes;
  std::vector<std::string> ids, names, types;  // per feature
  CsrArrays matrix;                            // barcodes x features
};

// ---- the .h5 file ------------------------------------------------------------------------------

Source read_h5(const std::string& path) {
  scssl::h5::File file = scssl::h5::File::open(path);
  const scssl::h5::Group& root = file.root();
  Source s;
  scssl::h5::Group g;
  std::string ids_key, types_key;
  if (root.has_group("matrix")) {  // Cell Ranger 3 and later
    g = root.group("matrix");
    const scssl::h5::Group f = g.group("features");
    const scssl::h5::Dataset id = f.dataset("id");
    ids_key = id.key();
    s.ids = id.read_strings();
    for (auto [name, out] : {std::pair{"name", &s.names}, std::pair{"feature_type", &s.types}}) {
      const scssl::h5::Dataset d = f.dataset(name);
      *out = d.read_strings();
      if (out == &s.types) types_key = d.key();
      if (out->size() != s.ids.size())
        d.fail("has " + std::to_string(out->size()) + " entries but '" + ids_key + "' has " +
               std::to_string(s.ids.size()));
    }
  } else {  // Cell Ranger 2: one group per genome with genes and gene_names
    std::vector<std::string> genomes;
    for (const std::string& child : root.children())
      if (root.has_group(child) && root.has_dataset(child + "/genes")) genomes.push_back(child);
    if (genomes.empty())
      throw BadData(path +
                    ": has no group 'matrix' (Cell Ranger 3 and later) and no genome group with "
                    "'genes' (Cell Ranger 2): it is not a 10x feature-barcode matrix file");
    if (genomes.size() > 1)
      throw BadData(path + ": is a Cell Ranger 2 file with several genomes (" +
                    list_names(genomes) +
                    "); give the matrix folder of one genome (filtered_gene_bc_matrices/<genome>)");
    g = root.group(genomes[0]);
    const scssl::h5::Dataset genes = g.dataset("genes");
    ids_key = genes.key();
    s.ids = genes.read_strings();
    const scssl::h5::Dataset names = g.dataset("gene_names");
    s.names = names.read_strings();
    if (s.names.size() != s.ids.size())
      names.fail("has " + std::to_string(s.names.size()) + " entries but '" + ids_key + "' has " +
                 std::to_string(s.ids.size()));
    s.types.assign(s.ids.size(), kGeneExpression);
  }
  const scssl::h5::Dataset barcodes = g.dataset("barcodes");
  s.barcodes = barcodes.read_strings();
  s.barcodes_file = path + ": '" + barcodes.key() + "'";
  s.matrix_file = path + ": '" + g.key() + "/data'";
  s.features_file = path + ": '" + (types_key.empty() ? ids_key : types_key) + "'";

  const scssl::h5::Dataset shape = g.dataset("shape");
  if (shape.type().cls != scssl::h5::TypeClass::Integer || shape.length_1d() != 2)
    shape.fail("must be 2 integers (features, barcodes), but holds " +
               std::to_string(shape.size()) + " " + shape.type().describe() + " values");
  const std::vector<int64_t> dims = shape.read_vector<int64_t>();
  const auto n_features = static_cast<int64_t>(s.ids.size());
  const auto n_barcodes = static_cast<int64_t>(s.barcodes.size());
  if (dims[0] != n_features || dims[1] != n_barcodes)
    shape.fail("says " + std::to_string(dims[0]) + " features x " + std::to_string(dims[1]) +
               " barcodes, but '" + ids_key + "' has " + std::to_string(n_features) + " and '" +
               barcodes.key() + "' " + std::to_string(n_barcodes));
  try {
    s.matrix = scssl::anndata::read_csr_arrays(g, n_barcodes, n_features);
  } catch (const BadData& e) {
    throw BadData(std::string(e.what()) +
                  " (10x stores the matrix barcode by barcode: its rows here are the barcodes, its "
                  "columns the features)");
  }
  return s;
}

// ---- the matrix folder -------------------------------------------------------------------------

// The first of `names` in `dir` that is a file, or "".
std::string first_file(const fs::path& dir, std::initializer_list<const char*> names) {
  std::error_code ec;
  for (const char* name : names)
    if (fs::is_regular_file(dir / name, ec)) return (dir / name).string();
  return "";
}

std::vector<std::string> read_barcodes(const std::string& path) {
  TextFile in(path);
  std::vector<std::string> out;
  std::vector<std::string_view> fields;
  for (std::string_view line; in.next(line);) {
    split(line, '\t', fields);
    if (fields[0].empty()) in.fail("has no barcode");
    out.emplace_back(fields[0]);
  }
  return out;
}

// features.tsv: id, name, feature type (and maybe more columns, e.g. Cell Ranger ARC's genome
// coordinates); genes.tsv (Cell Ranger 2): id, name, all of them gene expression.
void read_features(const std::string& path, bool has_types, Source& s) {
  TextFile in(path);
  const size_t need = has_types ? 3 : 2;
  std::vector<std::string_view> fields;
  for (std::string_view line; in.next(line);) {
    split(line, '\t', fields);
    if (fields.size() < need)
      in.fail("has " + std::to_string(fields.size()) + " tab-separated field" +
              (fields.size() == 1 ? "" : "s") + "; expected " +
              (has_types ? "3 (id, name, feature type)" : "2 (id, name)"));
    if (fields[0].empty()) in.fail("has no feature id");
    s.ids.emplace_back(fields[0]);
    s.names.emplace_back(fields[1]);
    s.types.push_back(has_types ? std::string(fields[2]) : kGeneExpression);
  }
}

// matrix.mtx: "%%MatrixMarket matrix coordinate integer general" (or real), comment lines, then
// "<features> <barcodes> <entries>" and one "<feature> <barcode> <count>" line (1-based) per entry.
// The entries are kept as they come (feature, value, barcode) and then put in barcode order by a
// counting sort, unless they already are (Cell Ranger writes them barcode by barcode).
CsrArrays read_mtx(const std::string& path, int64_t n_features, int64_t n_barcodes,
                   const std::string& features_file, const std::string& barcodes_file) {
  TextFile in(path);
  std::string_view line;
  std::vector<std::string_view> f;
  const std::string expected = "'%%MatrixMarket matrix coordinate integer general'";
  if (!in.next(line) || lower(line.substr(0, 14)) != "%%matrixmarket")
    throw BadData(path + ": line 1: " + (line.empty() ? std::string("is empty") : quoted(line)) +
                  " is not a MatrixMarket header (Cell Ranger writes " + expected + ")");
  split_blanks(line, f);
  std::vector<std::string> words;
  for (const auto& w : f) words.push_back(lower(w));
  if (words.size() != 5 || words[1] != "matrix" || words[2] != "coordinate" ||
      (words[3] != "integer" && words[3] != "real") || words[4] != "general")
    in.fail(quoted(line) +
            " is not a MatrixMarket header of a general coordinate matrix of integers or reals "
            "(Cell Ranger writes " +
            expected + ")");
  const bool integers = words[3] == "integer";

  // The size line, after comments.
  bool have_size = false;
  while (!have_size && in.next(line)) have_size = !line.empty() && line[0] != '%';
  if (!have_size) throw BadData(path + ": has no size line after its header");
  split_blanks(line, f);
  int64_t rows = -1, cols = -1, declared = -1;
  if (f.size() != 3 || !parse_number(f[0], rows) || !parse_number(f[1], cols) ||
      !parse_number(f[2], declared) || rows < 0 || cols < 0 || declared < 0)
    in.fail(quoted(line) + " is not a size line '<rows> <columns> <entries>'");
  const int64_t size_line = in.line_number();
  if (rows != n_features)
    in.fail("the matrix has " + std::to_string(rows) + " rows (features), but " + features_file +
            " lists " + std::to_string(n_features) + " features");
  if (cols != n_barcodes)
    in.fail("the matrix has " + std::to_string(cols) + " columns (barcodes), but " + barcodes_file +
            " lists " + std::to_string(n_barcodes) + " barcodes");
  if (rows > std::numeric_limits<int32_t>::max() || cols > std::numeric_limits<int32_t>::max())
    in.fail("the matrix has more rows or columns than 32-bit indices can address");
  if (declared > rows * cols)
    in.fail("declares " + std::to_string(declared) + " entries, more than its " +
            std::to_string(rows) + " x " + std::to_string(cols) + " cells can hold");

  // Room for the declared entries, but no more than the file can hold: an entry line has at
  // least 6 characters, and gzip expands at most about 1032-fold.
  std::error_code ec;
  const auto bytes = static_cast<int64_t>(fs::file_size(path, ec));
  const int64_t fits =
      ec ? 0 : bytes / 6 * (path.size() > 3 && path.substr(path.size() - 3) == ".gz" ? 1032 : 1);
  const auto room = static_cast<size_t>(std::min(declared, fits));
  std::vector<int32_t> feature, barcode;
  std::vector<float> value;
  feature.reserve(room);
  barcode.reserve(room);
  value.reserve(room);
  std::vector<int64_t> indptr(static_cast<size_t>(n_barcodes) + 1, 0);
  bool sorted = true;
  int64_t i = 0, j = 0, count = 0;
  double v = 0;
  while (in.next(line)) {
    if (line.empty() || line[0] == '%') continue;
    split_blanks(line, f);
    if (f.size() != 3)
      in.fail(quoted(line) + " is not an entry '<feature> <barcode> <count>' (" +
              std::to_string(f.size()) + " fields)");
    if (!parse_number(f[0], i) || !parse_number(f[1], j))
      in.fail(quoted(line) + " does not start with two integer indices");
    if (i < 1 || i > rows)
      in.fail("feature index " + std::to_string(i) + " is out of range 1.." + std::to_string(rows));
    if (j < 1 || j > cols)
      in.fail("barcode index " + std::to_string(j) + " is out of range 1.." + std::to_string(cols));
    if (integers) {
      int64_t n = 0;
      if (!parse_number(f[2], n)) in.fail("count " + quoted(f[2]) + " is not an integer");
      v = static_cast<double>(n);
    } else if (!parse_number(f[2], v)) {
      in.fail("value " + quoted(f[2]) + " is not a number");
    }
    if (std::isnan(v) || std::isinf(v)) in.fail("value " + quoted(f[2]) + " is NaN or infinite");
    if (v < 0) in.fail("count " + quoted(f[2]) + " is negative");
    if (++count > declared)
      in.fail("is entry " + std::to_string(count) + ", but the size line (line " +
              std::to_string(size_line) + ") declares " + std::to_string(declared));
    const auto b = static_cast<int32_t>(j - 1);
    if (!barcode.empty() && b < barcode.back()) sorted = false;
    feature.push_back(static_cast<int32_t>(i - 1));
    barcode.push_back(b);
    value.push_back(static_cast<float>(v));
    ++indptr[b + 1];
  }
  if (count != declared)
    throw BadData(path + ": has " + std::to_string(count) + " entries, but its size line (line " +
                  std::to_string(size_line) + ") declares " + std::to_string(declared) +
                  " (is the file cut short?)");

  for (int64_t b = 0; b < n_barcodes; ++b) indptr[b + 1] += indptr[b];
  CsrArrays m;
  m.rows = n_barcodes;
  m.cols = n_features;
  if (sorted) {
    m.indices = std::move(feature);
    m.values = std::move(value);
  } else {
    m.indices.resize(feature.size());
    m.values.resize(value.size());
    std::vector<int64_t> next(indptr.begin(), indptr.end() - 1);
    for (size_t k = 0; k < feature.size(); ++k) {
      const int64_t pos = next[barcode[k]]++;
      m.indices[pos] = feature[k];
      m.values[pos] = value[k];
    }
  }
  m.indptr = std::move(indptr);
  return m;
}

Source read_folder(const fs::path& dir) {
  const std::string shown = dir.string();
  const std::string matrix = first_file(dir, {"matrix.mtx.gz", "matrix.mtx"});
  const std::string features =
      first_file(dir, {"features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv"});
  const std::string barcodes = first_file(dir, {"barcodes.tsv.gz", "barcodes.tsv"});
  const char* layout =
      " (a Cell Ranger matrix folder such as outs/filtered_feature_bc_matrix holds matrix.mtx.gz, "
      "features.tsv.gz and barcodes.tsv.gz; Cell Ranger 2's holds matrix.mtx, genes.tsv and "
      "barcodes.tsv)";
  if (matrix.empty()) throw IoError(shown + ": has no matrix.mtx.gz or matrix.mtx" + layout);
  if (features.empty())
    throw IoError(shown + ": has no features.tsv.gz, features.tsv, genes.tsv.gz or genes.tsv" +
                  layout);
  if (barcodes.empty()) throw IoError(shown + ": has no barcodes.tsv.gz or barcodes.tsv" + layout);
  Source s;
  s.barcodes = read_barcodes(barcodes);
  read_features(features, fs::path(features).filename().string().rfind("features", 0) == 0, s);
  s.barcodes_file = barcodes;
  s.matrix_file = matrix;
  s.features_file = features;
  s.matrix = read_mtx(matrix, static_cast<int64_t>(s.ids.size()),
                      static_cast<int64_t>(s.barcodes.size()), features, barcodes);
  return s;
}

// ---- checks on either layout -------------------------------------------------------------------

// Counts are non-negative (the .h5 reader checked that they are finite, the .mtx reader checked
// both) and no barcode has two entries for one feature. One pass.
void check_entries(const Source& s) {
  const CsrArrays& m = s.matrix;
  std::vector<int64_t> seen(static_cast<size_t>(m.cols), -1);
  for (int64_t r = 0; r < m.rows; ++r) {
    for (int64_t k = m.indptr[r]; k < m.indptr[r + 1]; ++k) {
      const int32_t j = m.indices[k];
      if (m.values[k] < 0)
        throw BadData(s.matrix_file + " holds a negative count (" +
                      scssl::anndata::format_number(m.values[k]) + ") for barcode '" +
                      s.barcodes[r] + "' and feature '" + s.ids[j] + "'");
      if (seen[j] == r)
        throw BadData(s.matrix_file + " holds two entries for barcode '" + s.barcodes[r] +
                      "' and feature '" + s.ids[j] + "'");
      seen[j] = r;
    }
  }
}

// Barcode -> its index; BadData on a repeated barcode.
std::unordered_map<std::string_view, int64_t> index_barcodes(const Source& s) {
  std::unordered_map<std::string_view, int64_t> index;
  index.reserve(s.barcodes.size());
  for (size_t i = 0; i < s.barcodes.size(); ++i) {
    auto [it, fresh] = index.emplace(s.barcodes[i], static_cast<int64_t>(i));
    if (!fresh)
      throw BadData(s.barcodes_file + " lists barcode '" + s.barcodes[i] + "' twice (entries " +
                    std::to_string(it->second + 1) + " and " + std::to_string(i + 1) + ")");
  }
  return index;
}

// Keeps the rows (barcodes) marked in `keep`, in place.
void keep_rows(CsrArrays& m, const std::vector<uint8_t>& keep) {
  int64_t rows = 0, out = 0, begin = 0;
  for (int64_t r = 0; r < m.rows; ++r) {
    const int64_t end = m.indptr[r + 1];
    if (keep[r]) {
      for (int64_t k = begin; k < end; ++k, ++out) {
        m.indices[out] = m.indices[k];
        m.values[out] = m.values[k];
      }
      m.indptr[++rows] = out;
    }
    begin = end;
  }
  m.rows = rows;
  m.indptr.resize(static_cast<size_t>(rows) + 1);
  m.indices.resize(static_cast<size_t>(out));
  m.values.resize(static_cast<size_t>(out));
}

// ---- the annotation table ----------------------------------------------------------------------

// Fields of one CSV line (RFC 4180 quoting: "a ""b""" is a "b"; a quoted field does not span
// lines).
void csv_fields(std::string_view line, char sep, const TextFile& in,
                std::vector<std::string>& out) {
  out.clear();
  size_t i = 0;
  const size_t n = line.size();
  for (;;) {
    std::string field;
    if (i < n && line[i] == '"') {
      for (++i;; ++i) {
        if (i >= n) in.fail("has a quoted field without its closing quote");
        if (line[i] == '"') {
          if (i + 1 < n && line[i + 1] == '"') {
            field += '"';
            ++i;
          } else {
            ++i;
            break;
          }
        } else {
          field += line[i];
        }
      }
      if (i < n && line[i] != sep) in.fail("has text after the closing quote of a field");
    } else {
      const size_t end = std::min(line.find(sep, i), n);
      field.assign(line.substr(i, end - i));
      i = end;
    }
    out.push_back(std::move(field));
    if (i >= n) return;
    ++i;  // the separator
  }
}

struct ObsTable {
  std::string key;                                  // the barcode column
  std::vector<std::string> columns;                 // the others
  std::vector<std::vector<std::string>> values;     // [column][row]
  std::unordered_map<std::string, int64_t> row_of;  // barcode -> row
  std::vector<std::string> barcodes;                // [row]
  std::vector<int64_t> lines;                       // [row]: its line in the file
};

bool is_missing(const std::string& v) { return v.empty() || v == "NA" || v == "NaN" || v == "nan"; }

ObsTable read_obs(const std::string& path) {
  ObsTable t;
  TextFile in(path);
  const std::string name = lower(fs::path(path).filename().string());
  const auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  const char sep =
      ends_with(".tsv") || ends_with(".tsv.gz") || ends_with(".txt") || ends_with(".txt.gz") ? '\t'
                                                                                             : ',';
  std::string_view line;
  if (!in.next(line))
    throw BadData(path + ": is empty; expected a header line with the column names");
  if (line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);  // a UTF-8 byte-order mark
  std::vector<std::string> header;
  csv_fields(line, sep, in, header);
  size_t key = 0;
  for (size_t c = 0; c < header.size(); ++c)
    if (lower(header[c]) == "barcode") {
      key = c;
      break;
    }
  t.key = header[key];
  std::vector<size_t> source;  // header index of each obs column
  for (size_t c = 0; c < header.size(); ++c) {
    if (c == key) continue;
    if (header[c].empty()) in.fail("column " + std::to_string(c + 1) + " has no name");
    if (std::find(t.columns.begin(), t.columns.end(), header[c]) != t.columns.end())
      in.fail("names column '" + header[c] + "' twice");
    t.columns.push_back(header[c]);
    source.push_back(c);
  }
  t.values.resize(t.columns.size());
  std::vector<std::string> fields;
  while (in.next(line)) {
    if (line.empty()) continue;
    csv_fields(line, sep, in, fields);
    if (fields.size() != header.size())
      in.fail("has " + std::to_string(fields.size()) + " fields, the header " +
              std::to_string(header.size()) +
              (sep == '\t' ? " (tab-separated)" : " (comma-separated)"));
    if (fields[key].empty()) in.fail("has no barcode");
    const auto row = static_cast<int64_t>(t.barcodes.size());
    auto [it, fresh] = t.row_of.emplace(fields[key], row);
    if (!fresh)
      in.fail("barcode '" + fields[key] + "' appears a second time (first on line " +
              std::to_string(t.lines[it->second]) + ")");
    t.lines.push_back(in.line_number());
    t.barcodes.push_back(std::move(fields[key]));
    for (size_t c = 0; c < source.size(); ++c) t.values[c].push_back(std::move(fields[source[c]]));
  }
  return t;
}

// One obs column for the cells, from the table's rows (`row[i]` of cell i, -1 for none): numbers
// when every value present is one, categories otherwise (and for batches and labels always).
FrameColumn obs_column(const std::string& name, std::vector<std::string>& values,
                       const std::vector<int64_t>& row, bool categorical) {
  std::vector<std::string> cell(row.size());
  std::vector<uint8_t> missing(row.size(), 1);
  bool numeric = true;
  std::vector<double> numbers(row.size(), std::nan(""));
  for (size_t i = 0; i < row.size(); ++i) {
    if (row[i] < 0 || is_missing(values[row[i]])) continue;
    cell[i] = std::move(values[row[i]]);
    missing[i] = 0;
    double v = 0;
    if (numeric && parse_number<double>(cell[i], v) && std::isfinite(v))
      numbers[i] = v;
    else
      numeric = false;
  }
  if (numeric) {
    FrameColumn c;
    c.name = name;
    c.values = std::move(numbers);
    return categorical ? scssl::anndata::categorical_from_numbers(c) : c;
  }
  return scssl::anndata::categorical_from_strings(name, cell, &missing);
}

// ---- the plugin --------------------------------------------------------------------------------

class TenxDataset final : public scssl::IDataset {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    return {
        scssl::ParamSpec("path", SCSSL_PARAM_STRING, "",
                         "Cell Ranger's filtered_feature_bc_matrix.h5, or its matrix folder "
                         "(matrix.mtx.gz, features.tsv.gz, barcodes.tsv.gz)")
            .required()
            .nonempty(),
        {"obs_path", SCSSL_PARAM_STRING, "",
         "CSV (or .tsv) of per-barcode annotations: a 'barcode' column (else the first column) "
         "and one column per obs column; \"\" for none"},
        {"batch_key", SCSSL_PARAM_STRING, "batch",
         "obs column holding the batches (\"\" for none)"},
        {"label_key", SCSSL_PARAM_STRING, "cell_type",
         "obs column holding the cell types (\"\" for none)"},
        scssl::ParamSpec("unannotated", SCSSL_PARAM_STRING, "error",
                         "barcodes of the matrix without a row in obs_path: error, drop (leave "
                         "the cells out) or keep (without annotations)")
            .one_of({"error", "drop", "keep"}),
        scssl::ParamSpec("feature_names", SCSSL_PARAM_STRING, "name",
                         "feature names: name (gene symbols, as Cell Ranger's 'name') or id "
                         "(Ensembl ids)")
            .one_of({"name", "id"}),
    };
  }

  scssl::CellData load(const scssl::ParamSet& params, scssl::HostContext& host) override {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string& path = params.get_string("path");
    const std::string& obs_path = params.get_string("obs_path");
    std::string batch_key = params.get_string("batch_key");
    std::string label_key = params.get_string("label_key");
    const std::string& unannotated = params.get_string("unannotated");

    // The annotations first: a bad key fails before the (larger) matrix is read.
    ObsTable obs;
    if (obs_path.empty()) {
      // Without a table there are no obs columns; the default keys then mean none.
      for (auto [key, name, fallback] : {std::tuple{&batch_key, "batch_key", "batch"},
                                         std::tuple{&label_key, "label_key", "cell_type"}}) {
        if (!key->empty() && *key != fallback)
          throw InvalidArgument(std::string(name) + " = \"" + *key +
                                "\" names an obs column, but the tenx plugin reads obs columns "
                                "only from obs_path, which is not set");
        key->clear();
      }
      host.debug(path + ": no obs_path, so no batch or cell-type column");
    } else {
      obs = read_obs(obs_path);
      for (const std::string* key : {&batch_key, &label_key})
        if (!key->empty() &&
            std::find(obs.columns.begin(), obs.columns.end(), *key) == obs.columns.end())
          throw BadData(obs_path + ": has no column '" + *key + "' (columns: " +
                        list_names(obs.columns) + "; barcodes in '" + obs.key + "')");
    }

    std::error_code ec;
    if (!fs::exists(path, ec))
      throw IoError(path +
                    ": does not exist (give Cell Ranger's filtered_feature_bc_matrix.h5 or the "
                    "filtered_feature_bc_matrix folder)");
    Source s = fs::is_directory(path, ec) ? read_folder(path) : read_h5(path);
    check_entries(s);

    // The annotation row of every barcode (-1: none).
    std::vector<int64_t> row;
    int64_t matched = 0;
    std::string first_extra;
    {
      const auto index = index_barcodes(s);
      if (!obs_path.empty()) {
        row.assign(s.barcodes.size(), -1);
        for (size_t r = 0; r < obs.barcodes.size(); ++r) {
          auto it = index.find(obs.barcodes[r]);
          if (it == index.end()) {
            if (first_extra.empty()) first_extra = obs.barcodes[r];
            continue;
          }
          row[it->second] = static_cast<int64_t>(r);
          ++matched;
        }
      }
    }
    if (!obs_path.empty()) {
      int64_t missing = 0;
      std::string first_missing;
      for (size_t i = 0; i < row.size(); ++i)
        if (row[i] < 0 && missing++ == 0) first_missing = s.barcodes[i];
      if (matched == 0 && !s.barcodes.empty())
        throw BadData(obs_path + ": none of its " + std::to_string(obs.barcodes.size()) +
                      " barcodes is a barcode of " + s.barcodes_file + " (its first: " +
                      (obs.barcodes.empty() ? std::string("none") : "'" + obs.barcodes[0] + "'") +
                      "; the matrix's first: '" + s.barcodes[0] + "')");
      if (missing > 0 && unannotated == "error")
        throw BadData(obs_path + ": has no row for " + std::to_string(missing) + " of the " +
                      std::to_string(s.barcodes.size()) + " barcodes of " + s.barcodes_file +
                      " (the first: '" + first_missing +
                      "'); set unannotated = \"drop\" to leave those cells out, or \"keep\" to "
                      "keep them without annotations");
      if (const int64_t extra = static_cast<int64_t>(obs.barcodes.size()) - matched; extra > 0)
        host.info(obs_path + ": " + std::to_string(extra) + " of its barcodes are not in " +
                  s.barcodes_file + " and are ignored (the first: '" + first_extra + "')");
      if (missing > 0 && unannotated == "drop") {
        std::vector<uint8_t> keep(row.size());
        size_t n = 0;
        for (size_t i = 0; i < row.size(); ++i) {
          keep[i] = row[i] >= 0;
          if (keep[i]) {
            s.barcodes[n] = std::move(s.barcodes[i]);
            row[n++] = row[i];
          }
        }
        s.barcodes.resize(n);
        row.resize(n);
        keep_rows(s.matrix, keep);
        host.info(path + ": left out " + std::to_string(missing) + " barcodes without a row in " +
                  obs_path + " (unannotated = \"drop\")");
      } else if (missing > 0) {
        host.info(path + ": " + std::to_string(missing) + " barcodes have no row in " + obs_path +
                  " and no annotations (unannotated = \"keep\")");
      }
    }

    scssl::CellData data;
    for (size_t c = 0; c < obs.columns.size(); ++c) {
      const std::string& name = obs.columns[c];
      data.columns.push_back(scssl::anndata::to_column(
          obs_column(name, obs.values[c], row, name == batch_key || name == label_key)));
    }
    data.batch_key = batch_key;
    data.label_key = label_key;

    // The modality of every feature: RNA, then ADT; other feature types are left out.
    std::vector<int32_t> group(s.ids.size(), -1);
    std::map<std::string, int64_t> left_out;
    int64_t n_rna = 0, n_adt = 0;
    for (size_t j = 0; j < s.types.size(); ++j) {
      if (s.types[j] == kGeneExpression)
        ++n_rna;
      else if (s.types[j] == kAntibodyCapture)
        ++n_adt;
      else
        ++left_out[s.types[j]];
    }
    std::vector<std::string> modality_names, other_types;
    if (n_rna > 0) modality_names.push_back("RNA");
    if (n_adt > 0) modality_names.push_back("ADT");
    for (const auto& [type, n] : left_out) other_types.push_back("'" + type + "'");
    if (modality_names.empty())
      throw BadData(s.features_file + " has no '" + kGeneExpression + "' or '" + kAntibodyCapture +
                    "' features (feature types: " + list_names(other_types) + ")");
    const int32_t adt = n_rna > 0 ? 1 : 0;
    for (size_t j = 0; j < s.types.size(); ++j)
      group[j] = s.types[j] == kGeneExpression ? 0 : s.types[j] == kAntibodyCapture ? adt : -1;
    if (!left_out.empty()) {
      std::string what;
      for (const auto& [type, n] : left_out)
        what += (what.empty() ? "" : ", ") + std::to_string(n) +
                (n == 1 ? " feature" : " features") + " of type '" + type + "'";
      host.warn(s.features_file + ": left out " + what +
                " (the tenx plugin reads 'Gene Expression' features as RNA and 'Antibody "
                "Capture' features as ADT)");
    }

    const bool by_id = params.get_string("feature_names") == "id";
    const auto n_modalities = static_cast<int32_t>(modality_names.size());
    std::vector<CsrArrays> parts;
    if (n_modalities == 1 && left_out.empty())
      parts.push_back(std::move(s.matrix));
    else
      parts = scssl::anndata::split_columns(std::move(s.matrix), group, n_modalities);
    for (int32_t g = 0; g < n_modalities; ++g) {
      scssl::Modality mod;
      mod.name = modality_names[g];
      for (size_t j = 0; j < group.size(); ++j)
        if (group[j] == g) mod.features.push_back(by_id ? s.ids[j] : s.names[j]);
      mod.X = scssl::anndata::to_matrix(std::move(parts[g]));
      if (!by_id) {
        // Cell Ranger's gene symbols repeat now and then (its ids do not); kept as they are.
        std::unordered_set<std::string_view> seen;
        int64_t repeats = 0;
        std::string first;
        for (const std::string& f : mod.features)
          if (!seen.insert(f).second && repeats++ == 0) first = f;
        if (repeats > 0)
          host.info(s.features_file + ": " + std::to_string(repeats) + " of the " + mod.name +
                    " feature names repeat an earlier one (the first: '" + first +
                    "'); feature_names = \"id\" gives unique names");
      }
      data.modalities.push_back(std::move(mod));
    }
    data.cell_names = std::move(s.barcodes);

    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.2f s", seconds);
    std::string shape;
    for (const auto& m : data.modalities)
      shape += (shape.empty() ? "" : ", ") + std::to_string(m.features.size()) + " " + m.name;
    host.debug(path + ": read " + std::to_string(data.n_cells()) + " cells x " + shape +
               " features in " + buf);
    return data;
  }
};

}  // namespace

SCSSL_PLUGIN(TenxDataset, "tenx", "1.0.0",
             "10x Genomics Cell Ranger matrices (.h5 or matrix folder): RNA + ADT, obs from a CSV")
