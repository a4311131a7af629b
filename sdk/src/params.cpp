#include "scssl/params.hpp"

#include <charconv>
#include <cmath>

#include "scssl/abi_sized.hpp"

namespace scssl {

const char* param_type_name(scssl_param_type type) {
  switch (type) {
    case SCSSL_PARAM_BOOL:
      return "bool";
    case SCSSL_PARAM_INT:
      return "int";
    case SCSSL_PARAM_FLOAT:
      return "float";
    case SCSSL_PARAM_STRING:
      return "string";
    case SCSSL_PARAM_STRING_LIST:
      return "string list";
    case SCSSL_PARAM_FLOAT_LIST:
      return "float list";
  }
  return "unknown type";
}

scssl_param_type param_type_of(const ParamValue& value) {
  switch (value.index()) {
    case 0:
      return SCSSL_PARAM_BOOL;
    case 1:
      return SCSSL_PARAM_INT;
    case 2:
      return SCSSL_PARAM_FLOAT;
    case 3:
      return SCSSL_PARAM_STRING;
    case 4:
      return SCSSL_PARAM_STRING_LIST;
    default:
      return SCSSL_PARAM_FLOAT_LIST;
  }
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Items of a comma-separated list, trimmed; "" is the empty list.
std::vector<std::string_view> split_items(std::string_view t) {
  std::vector<std::string_view> items;
  if (t.empty()) return items;
  for (size_t start = 0;;) {
    const size_t comma = t.find(',', start);
    items.push_back(trim(t.substr(start, comma - start)));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return items;
}

bool parse_double(std::string_view t, double& out) {
  // strtod instead of from_chars<double>: GCC 10 and older lack the floating-point overload.
  const std::string s(t);
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return !s.empty() && end == s.c_str() + s.size() && !std::isnan(out);
}

std::string shortest(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, end);
}

// "an int", "a float list", ...
std::string with_article(scssl_param_type t) {
  return std::string(t == SCSSL_PARAM_INT ? "an " : "a ") + param_type_name(t);
}

bool numeric(scssl_param_type t) {
  return t == SCSSL_PARAM_INT || t == SCSSL_PARAM_FLOAT || t == SCSSL_PARAM_FLOAT_LIST;
}

bool textual(scssl_param_type t) { return t == SCSSL_PARAM_STRING || t == SCSSL_PARAM_STRING_LIST; }

}  // namespace

bool is_identifier(const std::string& name) {
  if (name.empty()) return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

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
      double v = 0;
      if (!parse_double(t, v)) return fail();
      return v;
    }
    case SCSSL_PARAM_STRING:
      return std::string(text);
    case SCSSL_PARAM_STRING_LIST: {
      StringList items;
      for (auto item : split_items(t)) items.emplace_back(item);
      return items;
    }
    case SCSSL_PARAM_FLOAT_LIST: {
      FloatList items;
      for (auto item : split_items(t)) {
        double v = 0;
        if (!parse_double(item, v)) return fail();
        items.push_back(v);
      }
      return items;
    }
  }
  return fail();
}

std::string format_param(const ParamValue& value) {
  switch (value.index()) {
    case 0:
      return std::get<bool>(value) ? "true" : "false";
    case 1:
      return std::to_string(std::get<int64_t>(value));
    case 2:
      return shortest(std::get<double>(value));  // reads back as the same double
    case 3:
      return std::get<std::string>(value);
    case 4: {
      std::string out;
      for (const auto& item : std::get<StringList>(value)) out += (out.empty() ? "" : ",") + item;
      return out;
    }
    default: {
      std::string out;
      for (double item : std::get<FloatList>(value))
        out += (out.empty() ? "" : ",") + shortest(item);
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
  if (type == SCSSL_PARAM_FLOAT_LIST && given == SCSSL_PARAM_INT)
    return FloatList{static_cast<double>(std::get<int64_t>(value))};
  if (type == SCSSL_PARAM_FLOAT_LIST && given == SCSSL_PARAM_FLOAT)
    return FloatList{std::get<double>(value)};
  throw InvalidArgument("parameter '" + name + "' of " + owner + " must be " + with_article(type) +
                        ", got " + with_article(given) + " (" + format_param(value) + ")");
}

// ---- schema rules
// ---------------------------------------------------------------------------------

std::string ParamRule::constraint_text() const {
  std::string text;
  const bool lo = has(SCSSL_PARAM_HAS_MINIMUM), hi = has(SCSSL_PARAM_HAS_MAXIMUM);
  if (lo && hi) {
    text = std::string("in ") + (has(SCSSL_PARAM_MINIMUM_EXCLUSIVE) ? "(" : "[") +
           shortest(minimum) + ", " + shortest(maximum) +
           (has(SCSSL_PARAM_MAXIMUM_EXCLUSIVE) ? ")" : "]");
  } else if (lo) {
    text = (has(SCSSL_PARAM_MINIMUM_EXCLUSIVE) ? "above " : "at least ") + shortest(minimum);
  } else if (hi) {
    text = (has(SCSSL_PARAM_MAXIMUM_EXCLUSIVE) ? "below " : "at most ") + shortest(maximum);
  }
  if (!choices.empty()) {
    std::string list;
    for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
    text += (text.empty() ? "" : "; ") + std::string("one of {") + list + "}";
  }
  if (has(SCSSL_PARAM_NONEMPTY)) text += (text.empty() ? "" : "; ") + std::string("non-empty");
  return text;
}

ParamRule rule_from_c(const scssl_param_spec& given) {
  const scssl_param_spec spec = read_sized(&given);
  ParamRule r;
  r.name = spec.name ? spec.name : "";
  r.type = static_cast<scssl_param_type>(spec.type);
  r.default_text = spec.default_text ? spec.default_text : "";
  r.help = spec.help ? spec.help : "";
  r.flags = spec.flags;
  r.minimum = spec.minimum;
  r.maximum = spec.maximum;
  for (int64_t i = 0; spec.choices != nullptr && i < spec.n_choices; ++i)
    r.choices.emplace_back(spec.choices[i] ? spec.choices[i] : "");
  return r;
}

std::string schema_problem(const std::vector<ParamRule>& rules) {
  std::set<std::string> seen;
  for (size_t i = 0; i < rules.size(); ++i) {
    const ParamRule& r = rules[i];
    const std::string p = "parameter '" + r.name + "'";
    if (!is_identifier(r.name))
      return "parameter " + std::to_string(i) + " has the name '" + r.name +
             "', which is not made of lower-case letters, digits and '_'";
    if (!seen.insert(r.name).second) return p + " is declared twice";
    if (r.type < SCSSL_PARAM_BOOL || r.type > SCSSL_PARAM_FLOAT_LIST)
      return p + " has unknown type " + std::to_string(r.type);
    const uint32_t bound_flags = SCSSL_PARAM_HAS_MINIMUM | SCSSL_PARAM_HAS_MAXIMUM;
    if ((r.flags & bound_flags) && !numeric(r.type))
      return p + " is " + with_article(r.type) + " but has numeric bounds";
    if (!r.choices.empty() && !textual(r.type))
      return p + " is " + with_article(r.type) + " but lists allowed choices";
    if ((r.has(SCSSL_PARAM_HAS_MINIMUM) && !std::isfinite(r.minimum)) ||
        (r.has(SCSSL_PARAM_HAS_MAXIMUM) && !std::isfinite(r.maximum)))
      return p + " has a bound that is not a finite number";
    if (r.has(SCSSL_PARAM_HAS_MINIMUM) && r.has(SCSSL_PARAM_HAS_MAXIMUM) && r.minimum > r.maximum)
      return p + " has a minimum (" + shortest(r.minimum) + ") above its maximum (" +
             shortest(r.maximum) + ")";
    if (r.flags >= (SCSSL_PARAM_NONEMPTY << 1))
      return p + " has unknown flags " + std::to_string(r.flags);
    if (r.has(SCSSL_PARAM_REQUIRED)) continue;  // its default is never used
    try {
      const ParamValue v = parse_param_text(r.type, r.default_text, "the default of " + p);
      check_param_value(r, v, "its plugin");
    } catch (const InvalidArgument& e) {
      return std::string("its default breaks its own schema: ") + e.what();
    }
  }
  return "";
}

void check_param_value(const ParamRule& r, const ParamValue& value, const std::string& owner) {
  auto fail = [&](const std::string& shown) {
    throw InvalidArgument("parameter '" + r.name + "' of " + owner + " must be " +
                          r.constraint_text() + ", got " + shown);
  };
  auto check_number = [&](double v, const std::string& shown) {
    // A bounded number is a quantity: infinity passes a one-sided bound but is never meant.
    const bool bounded = r.has(SCSSL_PARAM_HAS_MINIMUM) || r.has(SCSSL_PARAM_HAS_MAXIMUM);
    if (bounded && !std::isfinite(v)) fail(shown + " (not a finite number)");
    if (r.has(SCSSL_PARAM_HAS_MINIMUM) &&
        (r.has(SCSSL_PARAM_MINIMUM_EXCLUSIVE) ? !(v > r.minimum) : !(v >= r.minimum)))
      fail(shown);
    if (r.has(SCSSL_PARAM_HAS_MAXIMUM) &&
        (r.has(SCSSL_PARAM_MAXIMUM_EXCLUSIVE) ? !(v < r.maximum) : !(v <= r.maximum)))
      fail(shown);
  };
  auto check_choice = [&](const std::string& v) {
    if (!r.choices.empty() && std::find(r.choices.begin(), r.choices.end(), v) == r.choices.end())
      fail("\"" + v + "\"");
  };
  switch (value.index()) {
    case 1:
      check_number(static_cast<double>(std::get<int64_t>(value)), format_param(value));
      break;
    case 2:
      check_number(std::get<double>(value), format_param(value));
      break;
    case 3:
      if (r.has(SCSSL_PARAM_NONEMPTY) && std::get<std::string>(value).empty()) fail("\"\"");
      check_choice(std::get<std::string>(value));
      break;
    case 4:
      if (r.has(SCSSL_PARAM_NONEMPTY) && std::get<StringList>(value).empty()) fail("an empty list");
      for (const auto& item : std::get<StringList>(value)) check_choice(item);
      break;
    case 5:
      if (r.has(SCSSL_PARAM_NONEMPTY) && std::get<FloatList>(value).empty()) fail("an empty list");
      for (double item : std::get<FloatList>(value)) check_number(item, shortest(item));
      break;
    default:
      break;
  }
}

ParamSpec::ParamSpec(const char* name, scssl_param_type type, const char* default_text,
                     const char* help)
    : spec_(make_sized<scssl_param_spec>()) {
  spec_.name = name;
  spec_.type = type;
  spec_.default_text = default_text;
  spec_.help = help;
}

ParamSpec& ParamSpec::at_least(double v) {
  spec_.flags = (spec_.flags | SCSSL_PARAM_HAS_MINIMUM) & ~uint32_t(SCSSL_PARAM_MINIMUM_EXCLUSIVE);
  spec_.minimum = v;
  return *this;
}

ParamSpec& ParamSpec::above(double v) {
  spec_.flags |= SCSSL_PARAM_HAS_MINIMUM | SCSSL_PARAM_MINIMUM_EXCLUSIVE;
  spec_.minimum = v;
  return *this;
}

ParamSpec& ParamSpec::at_most(double v) {
  spec_.flags = (spec_.flags | SCSSL_PARAM_HAS_MAXIMUM) & ~uint32_t(SCSSL_PARAM_MAXIMUM_EXCLUSIVE);
  spec_.maximum = v;
  return *this;
}

ParamSpec& ParamSpec::below(double v) {
  spec_.flags |= SCSSL_PARAM_HAS_MAXIMUM | SCSSL_PARAM_MAXIMUM_EXCLUSIVE;
  spec_.maximum = v;
  return *this;
}

ParamSpec& ParamSpec::one_of(std::vector<const char*> choices) {
  choices_ = std::move(choices);
  return *this;
}

ParamSpec& ParamSpec::required() {
  spec_.flags |= SCSSL_PARAM_REQUIRED;
  return *this;
}

ParamSpec& ParamSpec::nonempty() {
  spec_.flags |= SCSSL_PARAM_NONEMPTY;
  return *this;
}

ParamSpec& ParamSpec::with_default(const char* default_text) {
  spec_.default_text = default_text;
  return *this;
}

scssl_param_spec ParamSpec::c_spec() const {
  scssl_param_spec s = spec_;
  s.choices = choices_.empty() ? nullptr : choices_.data();
  s.n_choices = static_cast<int64_t>(choices_.size());
  return s;
}

scssl_metric_spec MetricSpec::c_spec() const {
  scssl_metric_spec s = make_sized<scssl_metric_spec>();
  s.name = name;
  s.group = group;
  s.higher_is_better = higher_is_better ? 1 : 0;
  s.help = help;
  return s;
}

// ---- parameter sets
// -------------------------------------------------------------------------------

ParamSet ParamSet::defaults(const std::vector<ParamRule>& rules, const std::string& owner) {
  ParamSet set;
  set.owner_ = owner;
  for (const ParamRule& r : rules) {
    if (set.types_.count(r.name))
      throw InvalidArgument(owner + " declares parameter '" + r.name + "' twice");
    set.rules_[r.name] = r;
    set.types_[r.name] = r.type;
    const std::string what = "default of parameter '" + r.name + "' of " + owner;
    try {
      set.values_[r.name] = parse_param_text(r.type, r.default_text, what);
    } catch (const InvalidArgument&) {
      // A required parameter needs no usable default: a placeholder stands until the config
      // sets it, and check_required() refuses a config that does not.
      if (!r.has(SCSSL_PARAM_REQUIRED)) throw;
      set.values_[r.name] = parse_param_text(r.type,
                                             r.type == SCSSL_PARAM_BOOL    ? "false"
                                             : r.type == SCSSL_PARAM_INT   ? "0"
                                             : r.type == SCSSL_PARAM_FLOAT ? "0"
                                                                           : "",
                                             what);
    }
  }
  return set;
}

ParamSet ParamSet::defaults(const std::vector<ParamSpec>& specs, const std::string& owner) {
  std::vector<ParamRule> rules;
  for (const ParamSpec& s : specs) rules.push_back(rule_from_c(s.c_spec()));
  return defaults(rules, owner);
}

ParamSet ParamSet::from_c(const scssl_params* given) {
  ParamSet set;
  if (given == nullptr) return set;
  const scssl_params params = read_sized(given);
  for (int64_t i = 0; i < params.count; ++i) {
    const scssl_param_value v = read_sized_at(params.values, i, "the parameter list");
    ParamValue value;
    switch (v.type) {
      case SCSSL_PARAM_BOOL:
        value = v.int_value != 0;
        break;
      case SCSSL_PARAM_INT:
        value = v.int_value;
        break;
      case SCSSL_PARAM_FLOAT:
        value = v.float_value;
        break;
      case SCSSL_PARAM_STRING:
        value = std::string(v.string_value ? v.string_value : "");
        break;
      case SCSSL_PARAM_STRING_LIST: {
        StringList items;
        for (int64_t j = 0; j < v.list_length; ++j) items.emplace_back(v.list_values[j]);
        value = std::move(items);
        break;
      }
      case SCSSL_PARAM_FLOAT_LIST:
        value = FloatList(v.float_list_values, v.float_list_values + v.list_length);
        break;
      default:
        throw InvalidArgument(std::string("parameter '") + v.name + "' has unknown type " +
                              std::to_string(v.type));
    }
    set.types_[v.name] = static_cast<scssl_param_type>(v.type);
    set.values_[v.name] = std::move(value);
  }
  return set;
}

void ParamSet::set(const std::string& name, ParamValue value) {
  auto it = types_.find(name);
  if (it == types_.end()) {
    std::string known;
    for (const auto& [n, t] : types_) known += (known.empty() ? "" : ", ") + n;
    throw InvalidArgument(
        "unknown parameter '" + name + "' for " + owner_ +
        (known.empty() ? " (it takes no parameters)" : " (known: " + known + ")"));
  }
  ParamValue coerced = coerce_param(name, it->second, std::move(value), owner_);
  if (auto rule = rules_.find(name); rule != rules_.end())
    check_param_value(rule->second, coerced, owner_);
  values_[name] = std::move(coerced);
  set_names_.insert(name);
}

void ParamSet::check_required() const {
  for (const auto& [name, rule] : rules_)
    if (rule.has(SCSSL_PARAM_REQUIRED) && !set_names_.count(name))
      throw InvalidArgument("parameter '" + name + "' of " + owner_ + " is required" +
                            (rule.help.empty() ? std::string() : " (" + rule.help + ")"));
}

const scssl_params* ParamSet::c_view() const {
  c_values_.clear();
  c_lists_.clear();
  c_lists_.reserve(values_.size());
  for (const auto& [name, value] : values_) {
    scssl_param_value v = make_sized<scssl_param_value>();
    v.name = name.c_str();
    v.type = param_type_of(value);
    switch (value.index()) {
      case 0:
        v.int_value = std::get<bool>(value) ? 1 : 0;
        break;
      case 1:
        v.int_value = std::get<int64_t>(value);
        break;
      case 2:
        v.float_value = std::get<double>(value);
        break;
      case 3:
        v.string_value = std::get<std::string>(value).c_str();
        break;
      case 4: {
        auto& ptrs = c_lists_.emplace_back();
        for (const auto& item : std::get<StringList>(value)) ptrs.push_back(item.c_str());
        v.list_values = ptrs.data();
        v.list_length = static_cast<int64_t>(ptrs.size());
        break;
      }
      default: {
        const FloatList& items = std::get<FloatList>(value);
        v.float_list_values = items.data();
        v.list_length = static_cast<int64_t>(items.size());
      }
    }
    c_values_.push_back(v);
  }
  c_params_ = make_sized<scssl_params>();
  c_params_.values = c_values_.data();
  c_params_.count = static_cast<int64_t>(c_values_.size());
  return &c_params_;
}

}  // namespace scssl
