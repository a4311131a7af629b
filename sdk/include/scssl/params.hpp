// Typed plugin parameters: the C++ view of scssl_param_spec / scssl_params.
// Used by plugins (to read their parameters) and by the host (to validate config values against a
// plugin's schema before anything is created). No torch here, so the host's CLI stays light.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "scssl/abi.h"

namespace scssl {

// An error with the status it crosses the C boundary as. The message is one sentence for a user.
class Error : public std::runtime_error {
 public:
  Error(scssl_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  scssl_status status() const { return status_; }

 private:
  scssl_status status_;
};

struct InvalidArgument : Error {
  explicit InvalidArgument(const std::string& m) : Error(SCSSL_ERR_INVALID_ARGUMENT, m) {}
};
struct BadData : Error {
  explicit BadData(const std::string& m) : Error(SCSSL_ERR_BAD_DATA, m) {}
};
struct IoError : Error {
  explicit IoError(const std::string& m) : Error(SCSSL_ERR_IO, m) {}
};

using StringList = std::vector<std::string>;
using FloatList = std::vector<double>;
using ParamValue = std::variant<bool, int64_t, double, std::string, StringList, FloatList>;

const char* param_type_name(scssl_param_type type);
// Plugin, parameter and metric names: lower-case letters, digits and '_', at least one.
bool is_identifier(const std::string& name);
scssl_param_type param_type_of(const ParamValue& value);

// One parameter of a plugin's schema, in owned form: what a plugin declares (through ParamSpec)
// and what the host reads from the plugin note. The host checks every value against it.
struct ParamRule {
  std::string name;
  scssl_param_type type = SCSSL_PARAM_STRING;
  std::string default_text;
  std::string help;
  uint32_t flags = 0;  // scssl_param_flag bits
  double minimum = 0;
  double maximum = 0;
  StringList choices;

  bool has(scssl_param_flag flag) const { return (flags & flag) != 0; }
  // The constraints in words, e.g. "at least 1", "in (0, 1)", "one of {zero, keep}"; "" if none.
  std::string constraint_text() const;
};

// Reads a schema entry written by a plugin of this or another ABI-2 minor version.
ParamRule rule_from_c(const scssl_param_spec& spec);
// The first problem of a schema ("" when none): names, types, bounds, choices, defaults.
std::string schema_problem(const std::vector<ParamRule>& rules);
// Throws InvalidArgument when `value` (already of the rule's type) breaks its bounds or choices:
// "parameter 'k' of method plugin 'moco' must be at least 1, got 0".
void check_param_value(const ParamRule& rule, const ParamValue& value, const std::string& owner);

// What a plugin class lists in `static std::vector<scssl::ParamSpec> parameters()`. The strings
// must have static storage (literals). Constraints chain:
//   {"k", SCSSL_PARAM_INT, "15", "neighbours per cell"} -> ParamSpec(...).at_least(1)
class ParamSpec {
 public:
  ParamSpec(const char* name, scssl_param_type type, const char* default_text, const char* help);
  ParamSpec& at_least(double v);  // value >= v
  ParamSpec& above(double v);     // value > v
  ParamSpec& at_most(double v);   // value <= v
  ParamSpec& below(double v);     // value < v
  ParamSpec& one_of(std::vector<const char*> choices);
  ParamSpec& required();  // the config must set it
  ParamSpec& nonempty();  // strings and lists must not be empty
  ParamSpec& with_default(const char* default_text);
  const char* name() const { return spec_.name; }
  // The C view; valid while this object lives unchanged.
  scssl_param_spec c_spec() const;

 private:
  scssl_param_spec spec_;
  std::vector<const char*> choices_;
};

// The C++ form of one metric an evaluator reports (`static std::vector<scssl::MetricSpec>
// metrics()`).
struct MetricSpec {
  MetricSpec(const char* name, scssl_metric_group group, bool higher_is_better, const char* help)
      : name(name), group(group), higher_is_better(higher_is_better), help(help) {}
  const char* name;
  scssl_metric_group group;
  bool higher_is_better;
  const char* help;
  scssl_metric_spec c_spec() const;
};

// Parses a value written as in scssl_param_spec::default_text. Throws InvalidArgument naming
// `what`.
ParamValue parse_param_text(scssl_param_type type, std::string_view text, const std::string& what);
// The inverse, for `describe` and resolved configs: lists as "a,b", floats in shortest round-trip
// form.
std::string format_param(const ParamValue& value);

// Converts a value to the schema's type where that loses nothing (an integer for a float
// parameter); otherwise throws InvalidArgument naming the parameter and both types.
ParamValue coerce_param(const std::string& name, scssl_param_type type, ParamValue value,
                        const std::string& owner);

// The complete, validated parameters of one plugin instance.
class ParamSet {
 public:
  ParamSet() = default;
  // All defaults of a schema (checked with schema_problem first); throws InvalidArgument if a
  // default does not parse (a plugin bug).
  static ParamSet defaults(const std::vector<ParamRule>& rules, const std::string& owner);
  static ParamSet defaults(const std::vector<ParamSpec>& specs, const std::string& owner);
  // Copies a C view (what a plugin receives) into owned values.
  static ParamSet from_c(const scssl_params* params);

  // Sets one value; unknown names, wrong types and values outside the rule's bounds or choices
  // throw InvalidArgument naming `owner`.
  void set(const std::string& name, ParamValue value);
  // Throws InvalidArgument naming the first required parameter that was never set.
  void check_required() const;

  bool has(const std::string& name) const { return values_.count(name) != 0; }
  bool get_bool(const std::string& name) const { return get<bool>(name); }
  int64_t get_int(const std::string& name) const { return get<int64_t>(name); }
  double get_float(const std::string& name) const { return get<double>(name); }
  const std::string& get_string(const std::string& name) const { return get<std::string>(name); }
  const StringList& get_list(const std::string& name) const { return get<StringList>(name); }
  const FloatList& get_float_list(const std::string& name) const { return get<FloatList>(name); }

  const std::map<std::string, ParamValue>& values() const { return values_; }

  // A C view of the values, valid until this object changes or dies.
  const scssl_params* c_view() const;

 private:
  template <class T>
  const T& get(const std::string& name) const {
    auto it = values_.find(name);
    if (it == values_.end()) throw InvalidArgument("parameter '" + name + "' is not set");
    if (auto* v = std::get_if<T>(&it->second)) return *v;
    throw InvalidArgument("parameter '" + name + "' is a " +
                          param_type_name(param_type_of(it->second)) + ", not the type asked for");
  }

  std::string owner_;
  std::map<std::string, ParamRule> rules_;  // empty for a set read from the C side
  std::map<std::string, scssl_param_type> types_;
  std::map<std::string, ParamValue> values_;
  std::set<std::string> set_names_;  // set through set(), not defaults
  // Backing store of c_view().
  mutable std::vector<scssl_param_value> c_values_;
  mutable std::vector<std::vector<const char*>> c_lists_;
  mutable scssl_params c_params_{};
};

}  // namespace scssl
