// A checker for the subset of JSON Schema that docs/schema/*.json use: type, enum, required,
// properties, additionalProperties, items and minimum (plus the annotations $schema, title and
// description). Any other keyword is reported as unsupported, so a schema cannot drift past
// what is checked.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace scssl::test {

class SchemaChecker {
 public:
  explicit SchemaChecker(nlohmann::ordered_json schema) : schema_(std::move(schema)) {}

  // Problems of `value`, one line each naming the JSON path; empty when it conforms.
  std::vector<std::string> check(const nlohmann::ordered_json& value) const {
    std::vector<std::string> problems;
    check(schema_, value, "$", problems);
    return problems;
  }

 private:
  using Json = nlohmann::ordered_json;

  static bool has_type(const Json& v, const std::string& type) {
    if (type == "object") return v.is_object();
    if (type == "array") return v.is_array();
    if (type == "string") return v.is_string();
    if (type == "boolean") return v.is_boolean();
    if (type == "null") return v.is_null();
    if (type == "number") return v.is_number();
    if (type == "integer") return v.is_number_integer();
    return false;
  }

  static void check(const Json& schema, const Json& v, const std::string& path,
                    std::vector<std::string>& problems) {
    for (const auto& [key, rule] : schema.items()) {
      if (key == "$schema" || key == "title" || key == "description") continue;
      if (key == "type") {
        bool ok = false;
        for (const auto& t : rule.is_array() ? rule : Json::array({rule}))
          ok |= has_type(v, t.get<std::string>());
        if (!ok) problems.push_back(path + ": " + v.dump() + " is not of type " + rule.dump());
      } else if (key == "enum") {
        if (std::find(rule.begin(), rule.end(), v) == rule.end())
          problems.push_back(path + ": " + v.dump() + " is not one of " + rule.dump());
      } else if (key == "minimum") {
        if (v.is_number() && v.get<double>() < rule.get<double>())
          problems.push_back(path + ": " + v.dump() + " is below " + rule.dump());
      } else if (key == "required") {
        if (v.is_object())
          for (const auto& name : rule)
            if (!v.contains(name.get<std::string>()))
              problems.push_back(path + ": misses " + name.dump());
      } else if (key == "properties") {
        if (v.is_object())
          for (const auto& [name, sub] : rule.items())
            if (v.contains(name)) check(sub, v.at(name), path + "." + name, problems);
      } else if (key == "additionalProperties") {
        if (!v.is_object()) continue;
        const Json& known =
            schema.contains("properties") ? schema.at("properties") : Json::object();
        for (const auto& [name, item] : v.items()) {
          if (known.contains(name)) continue;
          if (rule.is_boolean()) {
            if (!rule.get<bool>())
              problems.push_back(path + ": has no field '" + name + "' in the schema");
          } else {
            check(rule, item, path + "." + name, problems);
          }
        }
      } else if (key == "items") {
        if (v.is_array())
          for (size_t i = 0; i < v.size(); ++i)
            check(rule, v[i], path + "[" + std::to_string(i) + "]", problems);
      } else {
        problems.push_back(path + ": the schema uses '" + key +
                           "', which this checker does not support");
      }
    }
  }

  Json schema_;
};

// A JSON file as parsed by the run-folder library's JSON type (keys in written order).
inline nlohmann::ordered_json json_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::ordered_json::parse(text.str());
}

// The problems of the JSON file `file` against the schema file `schema`, one per line; "" when it
// conforms.
inline std::string schema_problems(const std::string& schema, const std::string& file) {
  const SchemaChecker checker(json_file(schema));
  std::string out;
  for (const auto& p : checker.check(json_file(file))) out += file + ": " + p + "\n";
  return out;
}

}  // namespace scssl::test
