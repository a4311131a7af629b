#include "fetch.hpp"

#include <sys/wait.h>
#include <unistd.h>
#include <toml++/toml.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "scssl/h5.hpp"
#include "scssl/params.hpp"

namespace fs = std::filesystem;

namespace scssl::host {

namespace {

// ---- SHA-256 -----------------------------------------------------------------------------------
// Computed here rather than by `sha256sum`: no dependence on coreutils' name for the tool (macOS
// has `shasum -a 256`) and no parsing of another program's output.

constexpr std::array<uint32_t, 64> kRound = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

class Sha256 {
 public:
  void update(const unsigned char* data, size_t n) {
    length_ += n;
    while (n > 0) {
      const size_t take = std::min(n, block_.size() - used_);
      std::copy(data, data + take, block_.begin() + used_);
      used_ += take;
      data += take;
      n -= take;
      if (used_ == block_.size()) {
        compress();
        used_ = 0;
      }
    }
  }

  std::string hex() {
    const uint64_t bits = length_ * 8;
    const unsigned char one = 0x80, zero = 0;
    update(&one, 1);
    while (used_ != 56) update(&zero, 1);
    unsigned char tail[8];
    for (int i = 0; i < 8; ++i) tail[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    update(tail, 8);
    char out[65];
    for (int i = 0; i < 8; ++i) std::snprintf(out + 8 * i, 9, "%08x", state_[i]);
    return std::string(out, 64);
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  void compress() {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t(block_[4 * i]) << 24 | uint32_t(block_[4 * i + 1]) << 16 |
             uint32_t(block_[4 * i + 2]) << 8 | uint32_t(block_[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
    uint32_t e = state_[4], f = state_[5], g = state_[6], h = state_[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) +
                          kRound[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    const uint32_t add[8] = {a, b, c, d, e, f, g, h};
    for (int i = 0; i < 8; ++i) state_[i] += add[i];
  }

  std::array<uint32_t, 8> state_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::array<unsigned char, 64> block_{};
  size_t used_ = 0;
  uint64_t length_ = 0;
};

// ---- manifest ----------------------------------------------------------------------------------

class ManifestReader {
 public:
  ManifestReader(const std::string& file, const toml::table& root) : file_(file), root_(root) {}

  [[noreturn]] void fail(const std::string& key, const std::string& problem) const {
    throw InvalidArgument(file_ + ": '" + key + "' " + problem + " (schema: docs/datasets.md)");
  }

  const toml::node& node(const std::string& key) const {
    const toml::node* n = root_.at_path(key).node();
    if (n == nullptr) fail(key, "is missing");
    return *n;
  }

  std::string text(const std::string& key) const {
    if (const auto* s = node(key).as_string()) return s->get();
    fail(key, "must be a string (\"\" when unknown)");
  }

  int64_t count(const std::string& key) const {
    const auto* i = node(key).as_integer();
    if (i == nullptr || i->get() < 0) fail(key, "must be a whole number, 0 when unknown");
    return i->get();
  }

  std::string text_or(const std::string& key, const std::string& fallback) const {
    return root_.at_path(key).node() ? text(key) : fallback;
  }

 private:
  std::string file_;
  const toml::table& root_;
};

toml::table parse_toml(const std::string& path) {
  try {
    return toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw InvalidArgument(path + ":" + std::to_string(e.source().begin.line) + ": " +
                          std::string(e.description()));
  }
}

bool is_hex64(const std::string& s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// ---- subprocesses ------------------------------------------------------------------------------

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct ToolResult {
  int code;            // exit status; 127 when the shell did not find the program
  std::string output;  // what it printed (stderr, and stdout unless redirected)
};

// Runs a shell command; its messages are captured and its output goes to `output_file` if given.
ToolResult run_tool(const std::string& command, const std::string& output_file = "") {
  std::fflush(stdout);
  // "2>&1" before "> file": messages into the pipe, never into the converted file.
  const std::string line = command + " 2>&1" + (output_file.empty() ? "" : " > " + shell_quote(output_file));
  FILE* pipe = popen(line.c_str(), "r");
  if (pipe == nullptr) throw Error(SCSSL_ERR_INTERNAL, "cannot start a shell for: " + command);
  ToolResult r{0, ""};
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) r.output.append(buf, n);
  const int status = pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  while (!r.output.empty() && (r.output.back() == '\n' || r.output.back() == '\r')) r.output.pop_back();
  return r;
}

void require_tool(const ToolResult& r, const std::string& tool, const std::string& what) {
  if (r.code == 0) return;
  if (r.code == 127)
    throw IoError(tool + " is needed to " + what + " but was not found (install it, e.g. `apt-get install " +
                  tool + "`)");
  throw IoError("could not " + what + ": " + tool + " failed (exit code " + std::to_string(r.code) +
                ")" + (r.output.empty() ? "" : ": " + r.output));
}

// ---- checks on the result ----------------------------------------------------------------------

// Opens the file as an AnnData .h5ad without reading its matrix and checks what a run will need:
// the obs columns of the batches and labels, the chosen matrix and the modality column. Returns
// the number of cells.
int64_t check_h5ad(const std::string& path, const DatasetManifest& m, const std::string& shown_as) {
  try {
    h5::File file = h5::File::open(path);
    const h5::Group& root = file.root();
    int64_t n_cells = 0;
    std::vector<std::string> columns;
    if (root.has_group("obs")) {  // anndata >= 0.7
      const h5::Group obs = root.group("obs");
      n_cells = obs.dataset(obs.attr_string_or("_index", "_index")).length_1d();
      columns = obs.children();
    } else if (root.has_dataset("obs")) {  // anndata < 0.7: a compound dataset
      const h5::Dataset obs = root.dataset("obs");
      n_cells = obs.length_1d();
      columns = obs.field_names();
    } else {
      throw BadData("has no obs (is it an AnnData .h5ad file?)");
    }
    auto need_column = [&](const std::string& key, const char* what) {
      if (!key.empty() && std::find(columns.begin(), columns.end(), key) == columns.end())
        throw BadData("obs has no column '" + key + "' (the manifest's dataset." + what + ")");
    };
    need_column(m.batch_key, "batch_key");
    need_column(m.label_key, "label_key");
    const std::string matrix = m.layer.empty() ? "X" : m.layer == "raw" ? "raw/X" : "layers/" + m.layer;
    if (!root.has(matrix) && !(m.layer == "raw" && root.has("raw.X")))
      throw BadData("has no '" + matrix + "' (the manifest's dataset.layer is \"" + m.layer + "\")");
    if (!m.modality_key.empty() && m.modalities.size() > 1 && root.has_group("var") &&
        !root.group("var").has(m.modality_key))
      throw BadData("var has no column '" + m.modality_key + "' (the manifest's dataset.modality_key)");
    if (m.n_cells > 0 && n_cells != m.n_cells)
      throw BadData("has " + std::to_string(n_cells) + " cells, the manifest " + m.path +
                    " expects n_cells = " + std::to_string(m.n_cells));
    return n_cells;
  } catch (const Error& e) {
    // The h5 layer names the temporary file; the user knows the data set by its final name.
    std::string message = e.what();
    if (message.compare(0, path.size(), path) == 0) message = message.substr(path.size() + 2);
    throw BadData(shown_as + " is not a usable .h5ad: " + message);
  }
}

// Removes the temporary files of a fetch (and the target folder when this fetch created it and
// left it empty) unless the fetch finished.
class Cleanup {
 public:
  explicit Cleanup(fs::path created_dir) : created_dir_(std::move(created_dir)) {}
  ~Cleanup() {
    std::error_code ec;
    for (const auto& f : files_) fs::remove(f, ec);
    if (!done_ && !created_dir_.empty() && fs::is_empty(created_dir_, ec)) fs::remove(created_dir_, ec);
  }
  Cleanup(const Cleanup&) = delete;
  Cleanup& operator=(const Cleanup&) = delete;
  const fs::path& add(fs::path p) { return files_.emplace_back(std::move(p)); }
  void done() { done_ = true; }

 private:
  std::vector<fs::path> files_;
  fs::path created_dir_;
  bool done_ = false;
};

std::string human_size(int64_t bytes) {
  char buf[32];
  if (bytes >= (int64_t{1} << 30)) std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / 1073741824.0);
  else if (bytes >= (int64_t{1} << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / 1048576.0);
  else std::snprintf(buf, sizeof buf, "%lld bytes", static_cast<long long>(bytes));
  return buf;
}

// DIR/<name>.dataset.toml: the manifest's run-config sections with the path of the fetched file,
// so that a run config can `include` it. Written through a temporary name; unchanged files stay.
fs::path write_run_sections(const DatasetManifest& m, const fs::path& dir) {
  const toml::table manifest = parse_toml(m.path);
  toml::table sections;
  for (const char* name : {"dataset", "preprocess", "evaluation"})
    if (const toml::table* t = manifest[name].as_table()) sections.insert(name, *t);
  sections["dataset"].as_table()->insert_or_assign("path", m.file_name);
  std::ostringstream text;
  text << "# Written by `scssl-host fetch " << m.path << "`.\n"
       << "# Use it from a run config: include = [\"" << (dir / (m.name + ".dataset.toml")).string()
       << "\"]\n# (paths in [dataset] are relative to this file).\n\n"
       << sections << "\n";
  const fs::path target = dir / (m.name + ".dataset.toml");
  std::ifstream old(target);
  std::stringstream current;
  current << old.rdbuf();
  if (old && current.str() == text.str()) return target;
  const fs::path tmp = dir / ("." + target.filename().string() + ".part-" + std::to_string(getpid()));
  {
    std::ofstream out(tmp);
    out << text.str();
    if (!out.flush()) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw IoError("cannot write " + tmp.string());
    }
  }
  fs::rename(tmp, target);
  return target;
}

}  // namespace

std::string sha256_hex(const std::string& bytes) {
  Sha256 h;
  h.update(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  return h.hex();
}

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot read " + path);
  Sha256 h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(reinterpret_cast<const unsigned char*>(buf.data()), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) throw IoError("error while reading " + path);
  return h.hex();
}

DatasetManifest load_manifest(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw InvalidArgument("manifest '" + path + "' does not exist");
  const toml::table root = parse_toml(path);
  ManifestReader r(path, root);
  DatasetManifest m;
  m.path = path;
  if (r.count("schema") != 1) r.fail("schema", "must be 1 (the only version this program reads)");
  m.name = r.text("name");
  if (m.name.empty() || m.name.find('/') != std::string::npos || m.name[0] == '.')
    r.fail("name", "must be a plain folder name");
  m.title = r.text("title");
  const auto* mods = r.node("modalities").as_array();
  if (mods == nullptr || mods->empty()) r.fail("modalities", "must be a non-empty list of names");
  for (const auto& mod : *mods) {
    if (!mod.is_string()) r.fail("modalities", "must list names");
    m.modalities.push_back(mod.as_string()->get());
  }
  m.n_cells = r.count("n_cells");
  m.n_features = r.count("n_features");
  m.licence = r.text("licence");
  r.text("preprocessing");
  m.citation = r.text("publication.citation");
  m.doi = r.text("publication.doi");
  m.page = r.text("source.page");
  m.url = r.text("source.url");
  m.format = r.text("source.format");
  if (m.format != "h5ad" && m.format != "h5ad.gz" && m.format != "zip")
    r.fail("source.format", "is \"" + m.format + "\", which fetch cannot convert (known: h5ad, h5ad.gz, zip)");
  m.member = r.text_or("source.member", "");
  if (m.format == "zip" && m.member.empty()) r.fail("source.member", "must name the .h5ad inside the zip");
  m.sha256 = r.text("source.sha256");
  m.size_bytes = r.count("source.size_bytes");
  m.file_name = r.text("file.name");
  if (m.file_name.empty() || m.file_name.find('/') != std::string::npos || m.file_name[0] == '.')
    r.fail("file.name", "must be a plain file name");
  m.file_sha256 = r.text_or("file.sha256", "");
  if (!m.sha256.empty() && !is_hex64(m.sha256)) r.fail("source.sha256", "must be 64 lower-case hex digits (\"\" when unknown)");
  if (!m.file_sha256.empty() && !is_hex64(m.file_sha256)) r.fail("file.sha256", "must be 64 lower-case hex digits (\"\" when unknown)");
  if (r.text("dataset.plugin") != "h5ad") r.fail("dataset.plugin", "must be \"h5ad\" (fetch makes .h5ad files)");
  if (root.at_path("dataset.path").node()) r.fail("dataset.path", "must not be set (fetch writes it)");
  m.batch_key = r.text("dataset.batch_key");
  m.label_key = r.text("dataset.label_key");
  m.modality_key = r.text_or("dataset.modality_key", "");
  m.layer = r.text_or("dataset.layer", "");
  return m;
}

int run_fetch(const std::vector<std::string>& args) {
  std::string manifest_path, into;
  bool force = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--force") {
      force = true;
    } else if (a == "--into") {
      if (i + 1 == args.size()) throw InvalidArgument("fetch: --into needs a folder");
      into = args[++i];
    } else if (a.rfind("--into=", 0) == 0) {
      into = a.substr(7);
    } else if (!a.empty() && a[0] == '-') {
      throw InvalidArgument("fetch: unknown option '" + a + "' (usage: fetch MANIFEST.toml [--into DIR] [--force])");
    } else if (manifest_path.empty()) {
      manifest_path = a;
    } else {
      throw InvalidArgument("fetch takes one manifest (got '" + manifest_path + "' and '" + a + "')");
    }
  }
  if (manifest_path.empty()) throw InvalidArgument("fetch: which manifest? (usage: fetch MANIFEST.toml [--into DIR] [--force])");

  const DatasetManifest m = load_manifest(manifest_path);
  // Default: a folder named after the data set next to its manifest, as the bundled ones lie.
  const fs::path dir = into.empty() ? fs::absolute(manifest_path).parent_path() / m.name : fs::absolute(into);
  const fs::path target = dir / m.file_name;
  // The checksum that the finished file must have, where the manifest knows it.
  const std::string final_sum = !m.file_sha256.empty() ? m.file_sha256 : m.format == "h5ad" ? m.sha256 : "";

  std::error_code ec;
  if (fs::exists(target, ec) && !force) {
    const std::string actual = sha256_file(target.string());
    if (!final_sum.empty() && actual != final_sum)
      throw BadData(target.string() + " exists but its sha256 is " + actual + ", the manifest " + m.path +
                    " expects " + final_sum + "; it was left as it is (--force replaces it)");
    int64_t n = 0;
    try {
      n = check_h5ad(target.string(), m, target.string());
    } catch (const BadData& e) {
      throw BadData(std::string(e.what()) + "; it was left as it is (--force replaces it)");
    }
    std::cout << m.name << ": " << target.string() << " is already present (" << n << " cells); ";
    if (final_sum.empty())
      std::cout << "its sha256 " << actual << " is not pinned in " << m.path << ": add\n  [file] sha256 = \""
                << actual << "\"\nthere once you trust this copy.\n";
    else
      std::cout << "sha256 matches, nothing to do.\n";
    std::cout << "run-config sections: " << write_run_sections(m, dir).string() << "\n";
    return 0;
  }
  if (m.url.empty())
    throw InvalidArgument(m.name + ": no public download of " + m.file_name + " is known (" + m.path +
                          ": source.url is \"\"). Get it as described at " +
                          (m.page.empty() ? std::string("the publication") : m.page) + ", put it at " +
                          target.string() + " and run fetch again to check it.");

  const bool created = !fs::exists(dir, ec);
  fs::create_directories(dir, ec);
  if (ec) throw IoError("cannot create " + dir.string() + ": " + ec.message());
  Cleanup cleanup(created ? dir : fs::path());
  const std::string tag = std::to_string(getpid());
  const fs::path part = cleanup.add(dir / ("." + m.file_name + ".download-" + tag));

  std::cout << m.name << ": downloading " << m.url
            << (m.size_bytes > 0 ? " (" + human_size(m.size_bytes) + ")" : std::string()) << "\n";
  require_tool(run_tool("curl -fL --retry 2 -sS -o " + shell_quote(part.string()) + " " + shell_quote(m.url)),
               "curl", "download " + m.url);
  const std::string got = sha256_file(part.string());
  if (m.sha256.empty()) {
    std::cout << "  sha256 of the download: " << got << "\n  not pinned in " << m.path
              << ": after checking the data, add\n  [source] sha256 = \"" << got << "\"\n";
  } else if (got != m.sha256) {
    throw BadData(m.name + ": checksum mismatch for " + m.url + ": the download has sha256 " + got +
                  ", the manifest " + m.path + " expects " + m.sha256 + "; nothing was kept");
  } else {
    std::cout << "  sha256 ok (" << got << ")\n";
  }

  fs::path ready = part;
  if (m.format != "h5ad") {
    ready = cleanup.add(dir / ("." + m.file_name + ".convert-" + tag));
    if (m.format == "h5ad.gz")
      require_tool(run_tool("gzip -dc " + shell_quote(part.string()), ready.string()),
                   "gzip", "decompress the download");
    else
      require_tool(run_tool("unzip -p " + shell_quote(part.string()) + " " + shell_quote(m.member), ready.string()),
                   "unzip", "extract '" + m.member + "' from the download");
    fs::remove(part, ec);
    if (!m.file_sha256.empty()) {
      const std::string converted = sha256_file(ready.string());
      if (converted != m.file_sha256)
        throw BadData(m.name + ": checksum mismatch after conversion: the .h5ad has sha256 " + converted +
                      ", the manifest " + m.path + " expects file.sha256 = " + m.file_sha256 + "; nothing was kept");
    }
  }
  // Checked under the temporary name, so that a file which does not open never lands in place.
  const int64_t n = check_h5ad(ready.string(), m, m.name + ": the download of " + m.file_name);
  fs::rename(ready, target);
  cleanup.done();
  std::cout << m.name << ": " << target.string() << " (" << n << " cells)\n"
            << "run-config sections: " << write_run_sections(m, dir).string() << "\n";
  return 0;
}

}  // namespace scssl::host
