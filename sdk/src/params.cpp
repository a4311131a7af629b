#include "scssl/params.hpp"

#include <charconv>
#include <cmath>

namespace scssl {

const char* param_type_name(scssl_param_type type) {
  switch (type) {
    case SCSSL_PARAM_BOOL: return "bool";
    case SCSSL_PARAM_INT: return "int";
    case SCSSL_PARAM_FLOAT: return "float";
    case SCSSL_PARAM_STRING: return "string";
    case SCSSL_PARAM_STRING_LIST: return "string list";
  }
  return "unknown type";
}

scssl_param_type param_type_of(const ParamValue& value) {
  switch (value.index()) {
    case 0: return SCSSL_PARAM_BOOL;
    case 1: return SCSSL_PARAM_INT;
    case 2: return SCSSL_PARAM_FLOAT;
    case 3: return SCSSL_PARAM_STRING;
    default: return SCSSL_PARAM_STRING_LIST;
  }
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

ParamValue parse_param_text(scssl_param_type type, std::string_view text, const std::string& what) {
  auto fail = [&]() -> ParamValue {
    throw InvalidArgument(what + ": '" + std::string(text) + "' is not a valid " +
                          param_type_name(type));
  };
  std::string_view t = trim(text);
  switch (type) {
    case SCSSL_PARAM_BOOL:
      if (t == "true" || t == "1") return true;
      if (t == "false" || t == "0") return false;
      return fail();
    case SCSSL_PARAM_INT: {
      int64_t v = 0;
      auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
      if (ec != std::errc() || end != t.data() + t.size() || t.empty()) return fail();
      return v;
    }
    case SCSSL_PARAM_FLOAT: {
      // strtod instead of from_chars<double>: GCC 10 and older lack the floating-point overload.
      std::string s(t);
      char* end = nullptr;
      double v = std::strtod(s.c_str(), &end);
      if (s.empty() || end != s.c_str() + s.size() || std::isnan(v)) return fail();
      return v;
    }
    case SCSSL_PARAM_STRING:
      return std::string(text);
    case SCSSL_PARAM_STRING_LIST: {
      StringList items;
      if (t.empty()) return items;
      size_t start = 0;
      while (true) {
        size_t comma = t.find(',', start);
        items.emplace_back(trim(t.substr(start, comma - start)));
        if (comma == std::string_view::npos) break;
        start = comma + 1;
      }
      return items;
    }
  }
  return fail();
}

std::string format_param(const ParamValue& value) {
  switch (value.index()) {
    case 0: return std::get<bool>(value) ? "true" : "false";
    case 1: return std::to_string(std::get<int64_t>(value));
    case 2: {
      // Shortest text that reads back as the same double.
      char buf[64];
      auto [end, ec] = std::to_chars(buf, buf + sizeof buf, std::get<double>(value));
      return std::string(buf, end);
    }
    case 3: return std::get<std::string>(value);
    default: {
      std::string out;
      for (const auto& item : std::get<StringList>(value)) {
        if (!out.empty()) out += ",";
        out += item;
      }
      return out;
    }
  }
}

ParamValue coerce_param(const std::string& name, scssl_param_type type, ParamValue value,
                        const std::string& owner) {
  scssl_param_type given = param_type_of(value);
  if (given == type) return value;
  if (type == SCSSL_PARAM_FLOAT && given == SCSSL_PARAM_INT)
    return static_cast<double>(std::get<int64_t>(value));
  if (type == SCSSL_PARAM_STRING_LIST && given == SCSSL_PARAM_STRING)
    return StringList{std::get<std::string>(value)};
  auto article = [](scssl_param_type t) { return t == SCSSL_PARAM_INT ? "an " : "a "; };
  throw InvalidArgument("parameter '" + name + "' of " + owner + " must be " + article(type) +
                        param_type_name(type) + ", got " + article(given) + param_type_name(given) +
                        " (" + format_param(value) + ")");
}

ParamSet ParamSet::defaults(const scssl_param_spec* specs, int64_t count, const std::string& owner) {
  ParamSet set;
  set.owner_ = owner;
  for (int64_t i = 0; i < count; ++i) {
    const scssl_param_spec& spec = specs[i];
    if (spec.name == nullptr || spec.name[0] == '\0')
      throw InvalidArgument(owner + " declares a parameter without a name");
    if (set.types_.count(spec.name))
      throw InvalidArgument(owner + " declares parameter '" + spec.name + "' twice");
    set.types_[spec.name] = spec.type;
    set.values_[spec.name] =
        parse_param_text(spec.type, spec.default_text ? spec.default_text : "",
                         "default of parameter '" + std::string(spec.name) + "' of " + owner);
  }
  return set;
}

ParamSet ParamSet::from_c(const scssl_params* params) {
  ParamSet set;
  if (params == nullptr) return set;
  for (int64_t i = 0; i < params->count; ++i) {
    const scssl_param_value& v = params->values[i];
    ParamValue value;
    switch (v.type) {
      case SCSSL_PARAM_BOOL: value = v.int_value != 0; break;
      case SCSSL_PARAM_INT: value = v.int_value; break;
      case SCSSL_PARAM_FLOAT: value = v.float_value; break;
      case SCSSL_PARAM_STRING: value = std::string(v.string_value ? v.string_value : ""); break;
      case SCSSL_PARAM_STRING_LIST: {
        StringList items;
        for (int64_t j = 0; j < v.list_length; ++j) items.emplace_back(v.list_values[j]);
        value = std::move(items);
        break;
      }
    }
    set.types_[v.name] = v.type;
    set.values_[v.name] = std::move(value);
  }
  return set;
}

void ParamSet::set(const std::string& name, ParamValue value) {
  auto it = types_.find(name);
  if (it == types_.end()) {
    std::string known;
    for (const auto& [n, t] : types_) known += (known.empty() ? "" : ", ") + n;
    throw InvalidArgument("unknown parameter '" + name + "' for " + owner_ +
                          (known.empty() ? " (it takes no parameters)" : " (known: " + known + ")"));
  }
  values_[name] = coerce_param(name, it->second, std::move(value), owner_);
}

const scssl_params* ParamSet::c_view() const {
  c_values_.clear();
  c_lists_.clear();
  c_lists_.reserve(values_.size());
  for (const auto& [name, value] : values_) {
    scssl_param_value v{};
    v.name = name.c_str();
    v.type = param_type_of(value);
    switch (value.index()) {
      case 0: v.int_value = std::get<bool>(value) ? 1 : 0; break;
      case 1: v.int_value = std::get<int64_t>(value); break;
      case 2: v.float_value = std::get<double>(value); break;
      case 3: v.string_value = std::get<std::string>(value).c_str(); break;
      default: {
        auto& ptrs = c_lists_.emplace_back();
        for (const auto& item : std::get<StringList>(value)) ptrs.push_back(item.c_str());
        v.list_values = ptrs.data();
        v.list_length = static_cast<int64_t>(ptrs.size());
      }
    }
    c_values_.push_back(v);
  }
  c_params_.values = c_values_.data();
  c_params_.count = static_cast<int64_t>(c_values_.size());
  return &c_params_;
}

}  // namespace scssl
