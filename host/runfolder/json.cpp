#include "runfolder/json.hpp"

#include "runfolder/files.hpp"
#include "scssl/params.hpp"

namespace scssl::runfolder {

std::string dump_json(const Json& json, int indent) {
  return json.dump(indent, ' ', false, Json::error_handler_t::replace);
}

Json read_json_file(const std::string& path) {
  const std::string text = read_text_file(path);
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& e) {
    // e.what() reads "[json.exception.parse_error.101] parse error at line 1, column 9: ..."
    std::string why = e.what();
    const size_t at = why.find("] ");
    if (at != std::string::npos) why.erase(0, at + 2);
    throw BadData(path + ": not valid JSON (" + why + ")");
  }
}

double number_or_nan(const Json& object, const char* key, const std::string& what) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nan("");
  if (!it->is_number()) throw BadData(what + ": '" + key + "' must be a number or null");
  return it->get<double>();
}

std::optional<std::string> optional_text(const Json& object, const char* key,
                                         const std::string& what) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) throw BadData(what + ": '" + key + "' must be a string or null");
  return it->get<std::string>();
}

}  // namespace scssl::runfolder
