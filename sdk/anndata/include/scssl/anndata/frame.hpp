// AnnData data frames (obs, var, raw/var) over an open file: the column reader of the
// scssl_anndata library, in every layout anndata 0.5 to 0.11 wrote (docs/hdf5.md):
//  - a group (anndata >= 0.7: `_index` attribute, `column-order`), with categorical columns as
//    groups (categories + codes, >= 0.8) or as code datasets whose `categories` attribute is an
//    object reference (0.7), and nullable integer/boolean/string columns;
//  - a compound dataset (< 0.7), with categories in uns/<column>_categories.
// Internal to this source tree, like hdf5.hpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "scssl/anndata/hdf5.hpp"

namespace scssl::anndata {

// One column of a data frame, torch-free.
struct Column {
  std::string name;
  bool categorical = false;
  std::vector<int32_t> codes;  // categorical: -1 = missing
  std::vector<std::string> categories;
  std::vector<double> values;  // numeric (integers, floats, booleans): NaN = missing
};

// A column whose encoding this reader does not know (callers may skip it when it is not needed).
struct UnsupportedColumn : BadData {
  using BadData::BadData;
};

// "a, b, c", at most `max_shown` names and then the count; "none" when empty.
std::string list_names(const std::vector<std::string>& names, size_t max_shown = 20);

// Numbers as category names: integers without a fraction, others in shortest round-trip form.
std::string format_number(double v);

// Strings -> categorical with sorted unique categories (what scanpy's sanitize does on write).
// mask (optional): non-zero marks a missing entry.
Column categorical_from_strings(std::string name, const std::vector<std::string>& strings,
                                const std::vector<uint8_t>* mask = nullptr);
// Numbers -> categorical with the sorted distinct values as names (NaN = missing).
Column categorical_from_numbers(const Column& numeric);

class Frame {
 public:
  // key is "obs", "var", "raw/var" or "raw.var"; root is needed for pre-0.7 categories in uns.
  // BadData naming the file when the frame is missing or malformed.
  Frame(const h5::Group& root, const std::string& key);

  const std::string& key() const { return key_; }
  int64_t n_rows() const { return n_rows_; }
  const std::vector<std::string>& columns() const { return columns_; }
  bool has_column(const std::string& name) const;

  // The row names (strings, or numbers formatted as by format_number).
  std::vector<std::string> index() const;

  // BadData "<file>: <frame> has no column '<name>' (columns: ...)" when absent;
  // UnsupportedColumn when its encoding is unknown; BadData when it does not have one entry a row.
  Column column(const std::string& name) const;

 private:
  void open_group(h5::Group g);
  void open_compound(h5::Dataset d);
  Column group_column(const std::string& name) const;
  Column compound_column(const std::string& name) const;

  h5::Group root_;
  std::string key_;
  bool is_group_ = true;
  h5::Group group_;
  h5::Dataset compound_;
  std::string index_name_;
  std::vector<std::string> columns_;
  int64_t n_rows_ = 0;
};

}  // namespace scssl::anndata
