// Typed plugin parameters: the C++ view of scssl_param_spec / scssl_params.
// Used by plugins (to read their parameters) and by the host (to validate config values against a
// plugin's schema before anything is created). No torch here, so the host's CLI stays light.
#pragma once

#include <cstdint>
#include <map>
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
using ParamValue = std::variant<bool, int64_t, double, std::string, StringList>;

const char* param_type_name(scssl_param_type type);
scssl_param_type param_type_of(const ParamValue& value);

// Parses a value written as in scssl_param_spec::default_text. Throws InvalidArgument naming `what`.
ParamValue parse_param_text(scssl_param_type type, std::string_view text, const std::string& what);
// The inverse, for `describe` and resolved configs: lists as "a,b", floats in shortest round-trip form.
std::string format_param(const ParamValue& value);

// Converts a value to the schema's type where that loses nothing (an integer for a float parameter);
// otherwise throws InvalidArgument naming the parameter and both types.
ParamValue coerce_param(const std::string& name, scssl_param_type type, ParamValue value,
                        const std::string& owner);

// The complete, validated parameters of one plugin instance.
class ParamSet {
 public:
  ParamSet() = default;
  // All defaults of a schema; throws InvalidArgument if a default does not parse (a plugin bug).
  static ParamSet defaults(const scssl_param_spec* specs, int64_t count, const std::string& owner);
  // Copies a C view (what a plugin receives) into owned values.
  static ParamSet from_c(const scssl_params* params);

  // Sets one value; unknown names and wrong types throw InvalidArgument naming `owner`.
  void set(const std::string& name, ParamValue value);

  bool has(const std::string& name) const { return values_.count(name) != 0; }
  bool get_bool(const std::string& name) const { return get<bool>(name); }
  int64_t get_int(const std::string& name) const { return get<int64_t>(name); }
  double get_float(const std::string& name) const { return get<double>(name); }
  const std::string& get_string(const std::string& name) const { return get<std::string>(name); }
  const StringList& get_list(const std::string& name) const { return get<StringList>(name); }

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
  std::map<std::string, scssl_param_type> types_;
  std::map<std::string, ParamValue> values_;
  // Backing store of c_view().
  mutable std::vector<scssl_param_value> c_values_;
  mutable std::vector<std::vector<const char*>> c_lists_;
  mutable scssl_params c_params_{};
};

}  // namespace scssl
