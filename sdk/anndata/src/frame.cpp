#include "scssl/anndata/frame.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <unordered_map>

namespace scssl::anndata {

using h5::Dataset;
using h5::Group;
using h5::Kind;
using h5::TypeClass;

std::string list_names(const std::vector<std::string>& names, size_t max_shown) {
  if (names.empty()) return "none";
  std::string s;
  for (size_t i = 0; i < names.size() && i < max_shown; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > max_shown) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return s;
}

// Numbers as category names: integers without a fraction, others in shortest round-trip form.
std::string format_number(double v) {
  char buf[64];
  if (std::fabs(v) < 1e15 && v == std::floor(v)) {
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
    return buf;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

// Strings -> categorical with sorted unique categories (what scanpy's sanitize does on write).
// mask (optional): true marks a missing entry.
Column categorical_from_strings(std::string name, const std::vector<std::string>& strings,
                                const std::vector<uint8_t>* mask) {
  Column c;
  c.name = std::move(name);
  c.categorical = true;
  std::unordered_map<std::string, int32_t> first_code;
  std::vector<int32_t> raw(strings.size(), -1);
  std::vector<std::string> uniques;
  for (size_t i = 0; i < strings.size(); ++i) {
    if (mask && (*mask)[i]) continue;
    auto [it, inserted] = first_code.emplace(strings[i], static_cast<int32_t>(uniques.size()));
    if (inserted) uniques.push_back(strings[i]);
    raw[i] = it->second;
  }
  std::vector<int32_t> order(uniques.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return uniques[a] < uniques[b]; });
  std::vector<int32_t> rank(uniques.size());
  for (size_t r = 0; r < order.size(); ++r) rank[order[r]] = static_cast<int32_t>(r);
  c.codes.resize(strings.size());
  for (size_t i = 0; i < raw.size(); ++i) c.codes[i] = raw[i] < 0 ? -1 : rank[raw[i]];
  for (int32_t o : order) c.categories.push_back(std::move(uniques[o]));
  return c;
}

// Numbers -> categorical with the sorted distinct values as names (NaN = missing).
Column categorical_from_numbers(const Column& numeric) {
  Column c;
  c.name = numeric.name;
  c.categorical = true;
  std::vector<double> distinct;
  for (double v : numeric.values)
    if (!std::isnan(v)) distinct.push_back(v);
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  for (double v : distinct) c.categories.push_back(format_number(v));
  c.codes.resize(numeric.values.size());
  for (size_t i = 0; i < numeric.values.size(); ++i) {
    const double v = numeric.values[i];
    c.codes[i] = std::isnan(v)
                     ? -1
                     : static_cast<int32_t>(std::lower_bound(distinct.begin(), distinct.end(), v) -
                                            distinct.begin());
  }
  return c;
}

namespace {

// Category names: strings, or numbers/booleans formatted (pandas allows any category dtype).
std::vector<std::string> category_names(const Dataset& d) {
  d.length_1d();
  const TypeClass cls = d.type().cls;
  if (cls == TypeClass::String) return d.read_strings();
  if (cls == TypeClass::Integer || cls == TypeClass::Float || cls == TypeClass::Bool) {
    std::vector<double> v = d.read_vector<double>();
    std::vector<std::string> names;
    for (double x : v)
      names.push_back(cls == TypeClass::Bool ? (x != 0 ? "True" : "False") : format_number(x));
    return names;
  }
  d.fail("holds " + d.type().describe() + " data, which cannot be category names");
}

// Codes of a categorical column, checked against the number of categories.
std::vector<int32_t> read_codes(const Dataset& d, size_t n_categories, int64_t n_rows) {
  const int64_t n = d.length_1d();
  if (n != n_rows)
    d.fail("has " + std::to_string(n) + " entries but there are " + std::to_string(n_rows) +
           " rows");
  if (d.type().cls != TypeClass::Integer)
    d.fail("holds " + d.type().describe() + " data; categorical codes must be integers");
  std::vector<int32_t> codes = d.read_vector<int32_t>();
  for (size_t i = 0; i < codes.size(); ++i)
    if (codes[i] < -1 || codes[i] >= static_cast<int64_t>(n_categories))
      d.fail("has code " + std::to_string(codes[i]) + " at row " + std::to_string(i) +
             " but only " + std::to_string(n_categories) + " categories");
  return codes;
}

std::vector<uint8_t> read_mask(const Dataset& d, int64_t n_rows) {
  if (d.length_1d() != n_rows) d.fail("does not have one entry per row");
  std::vector<uint8_t> mask = d.read_vector<uint8_t>();
  for (auto& m : mask) m = m != 0;
  return mask;
}

// ---- dataframes (obs, var, raw/var) ------------------------------------------------------------

std::vector<std::string> format_all(const std::vector<double>& v) {
  std::vector<std::string> out;
  out.reserve(v.size());
  for (double x : v) out.push_back(format_number(x));
  return out;
}

std::vector<std::string> names_of_index(const Dataset& d) {
  d.length_1d();
  const TypeClass cls = d.type().cls;
  if (cls == TypeClass::String) return d.read_strings();
  if (cls == TypeClass::Integer || cls == TypeClass::Float)
    return format_all(d.read_vector<double>());
  d.fail("holds " + d.type().describe() + " data, which cannot be an index of names");
}

}  // namespace

// ---- Frame
// -----------------------------------------------------------------------------------------

Frame::Frame(const Group& root, const std::string& key) : root_(root), key_(key) {
  const std::string& file = root.file();
  switch (root.kind(key)) {
    case Kind::Group:
      open_group(root.group(key));
      break;
    case Kind::Dataset:
      open_compound(root.dataset(key));
      break;
    case Kind::Missing:
      throw BadData(file + ": there is no '" + key + "' (is this an AnnData .h5ad file?)");
    default:
      throw BadData(file + ": '" + key + "' is neither a group nor a dataset");
  }
}

bool Frame::has_column(const std::string& name) const {
  return std::find(columns_.begin(), columns_.end(), name) != columns_.end();
}

std::vector<std::string> Frame::index() const {
  if (is_group_) return names_of_index(group_.dataset(index_name_));
  return compound_.field_type(index_name_).cls == TypeClass::String
             ? compound_.read_field_strings(index_name_)
             : format_all(compound_.read_field_vector<double>(index_name_));
}

Column Frame::column(const std::string& name) const {
  if (!has_column(name))
    throw BadData(root_.file() + ": " + key_ + " has no column '" + name +
                  "' (columns: " + list_names(columns_) + ")");
  Column c = is_group_ ? group_column(name) : compound_column(name);
  const size_t n = c.categorical ? c.codes.size() : c.values.size();
  if (static_cast<int64_t>(n) != n_rows_)
    throw BadData(root_.file() + ": column '" + key_ + "/" + name + "' has " + std::to_string(n) +
                  " entries but " + key_ + " has " + std::to_string(n_rows_) + " rows");
  return c;
}

void Frame::open_group(Group g) {
  group_ = std::move(g);
  is_group_ = true;
  // anndata >= 0.7 names the index dataset in `_index`; older writers used "index".
  if (group_.has_attr("_index")) {
    index_name_ = group_.attr_string("_index");
  } else if (group_.has_dataset("_index")) {
    index_name_ = "_index";
  } else if (group_.has_dataset("index")) {
    index_name_ = "index";
  } else {
    group_.fail("has no index (no '_index' attribute and no '_index' dataset)");
  }
  n_rows_ = group_.dataset(index_name_).length_1d();
  if (group_.has_attr("column-order")) {
    columns_ = group_.attr_strings("column-order");
    for (const auto& c : columns_)
      if (!group_.has(c))
        group_.fail("lists column '" + c + "' in column-order but has no such member");
  } else {
    for (auto& c : group_.children())
      if (c != index_name_ && c != "__categories") columns_.push_back(std::move(c));
  }
}

void Frame::open_compound(Dataset d) {
  compound_ = std::move(d);
  is_group_ = false;
  n_rows_ = compound_.length_1d();
  if (compound_.type().cls != TypeClass::Compound)
    compound_.fail("is a dataset but not a table (compound dataset) of columns");
  std::vector<std::string> fields = compound_.field_names();
  if (fields.empty()) compound_.fail("has no fields");
  index_name_ =
      std::find(fields.begin(), fields.end(), "index") != fields.end() ? "index" : fields[0];
  for (auto& f : fields)
    if (f != index_name_) columns_.push_back(std::move(f));
}

Column Frame::group_column(const std::string& name) const {
  Column c;
  c.name = name;
  const Kind kind = group_.kind(name);
  if (kind == Kind::Group) {
    Group g = group_.group(name);
    const std::string enc = g.attr_string_or("encoding-type", "");
    if (enc == "categorical") {
      c.categorical = true;
      c.categories = category_names(g.dataset("categories"));
      c.codes = read_codes(g.dataset("codes"), c.categories.size(), n_rows_);
      return c;
    }
    if (enc == "nullable-integer" || enc == "nullable-boolean") {
      Dataset values = g.dataset("values");
      if (values.length_1d() != n_rows_) values.fail("does not have one entry per row");
      c.values = values.read_vector<double>();
      std::vector<uint8_t> mask = read_mask(g.dataset("mask"), n_rows_);
      for (size_t i = 0; i < mask.size(); ++i)
        if (mask[i]) c.values[i] = std::nan("");
      return c;
    }
    if (enc == "nullable-string-array") {
      Dataset values = g.dataset("values");
      if (values.length_1d() != n_rows_) values.fail("does not have one entry per row");
      std::vector<uint8_t> mask = read_mask(g.dataset("mask"), n_rows_);
      return categorical_from_strings(name, values.read_strings(), &mask);
    }
    throw UnsupportedColumn(root_.file() + ": column '" + g.key() + "' has encoding '" + enc +
                            "', which this reader does not support");
  }
  if (kind != Kind::Dataset)
    throw UnsupportedColumn(root_.file() + ": column '" + key_ + "/" + name +
                            "' is neither a group nor a dataset");
  Dataset d = group_.dataset(name);
  if (d.has_attr("categories") && d.attr_type("categories").cls == TypeClass::Reference) {
    // anndata 0.7: integer codes whose attribute points at the categories in __categories.
    c.categorical = true;
    c.categories = category_names(d.attr_reference("categories"));
    c.codes = read_codes(d, c.categories.size(), n_rows_);
    return c;
  }
  if (d.rank() != 1)
    throw UnsupportedColumn(root_.file() + ": column '" + d.key() + "' is not 1-dimensional");
  switch (d.type().cls) {
    case TypeClass::String:
      return categorical_from_strings(name, d.read_strings());
    case TypeClass::Integer:
    case TypeClass::Float:
    case TypeClass::Bool:
    case TypeClass::Enum:
      c.values = d.read_vector<double>();
      return c;
    default:
      throw UnsupportedColumn(root_.file() + ": column '" + d.key() + "' holds " +
                              d.type().describe() + " data, which this reader does not support");
  }
}

Column Frame::compound_column(const std::string& name) const {
  Column c;
  c.name = name;
  const TypeClass cls = compound_.field_type(name).cls;
  // Before 0.7 categories lived in uns/<column>_categories and the field held the codes.
  const std::string categories_key = "uns/" + name + "_categories";
  if (root_.has_dataset(categories_key)) {
    c.categorical = true;
    c.categories = category_names(root_.dataset(categories_key));
    if (cls != TypeClass::Integer)
      compound_.fail("(field '" + name + "') has categories in " + categories_key + " but holds " +
                     compound_.field_type(name).describe() + " codes");
    c.codes = compound_.read_field_vector<int32_t>(name);
    for (size_t i = 0; i < c.codes.size(); ++i)
      if (c.codes[i] < -1 || c.codes[i] >= static_cast<int64_t>(c.categories.size()))
        compound_.fail("(field '" + name + "') has code " + std::to_string(c.codes[i]) +
                       " at row " + std::to_string(i) + " but only " +
                       std::to_string(c.categories.size()) + " categories");
    return c;
  }
  switch (cls) {
    case TypeClass::String:
      return categorical_from_strings(name, compound_.read_field_strings(name));
    case TypeClass::Integer:
    case TypeClass::Float:
    case TypeClass::Bool:
    case TypeClass::Enum:
      c.values = compound_.read_field_vector<double>(name);
      return c;
    default:
      throw UnsupportedColumn(root_.file() + ": field '" + name + "' of '" + key_ + "' holds " +
                              compound_.field_type(name).describe() +
                              " data, which this reader does not support");
  }
}

}  // namespace scssl::anndata
