// The one JSON library of the host and the tools (nlohmann-json), with the conventions of the run
// folder files (docs/run-folder.md): keys keep their written order, a number that is NaN or
// infinite is written as null and read back as NaN, and text that is not UTF-8 is written with
// replacement characters instead of failing the write.
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <optional>
#include <string>

namespace scssl::runfolder {

using Json = nlohmann::ordered_json;

// `json` as text: indented by `indent` spaces, or on one line when indent < 0.
std::string dump_json(const Json& json, int indent = 2);

// Parses a file; BadData naming the file and the parser's position when it is not JSON.
Json read_json_file(const std::string& path);

// A number member: NaN when absent or null. BadData (naming `what`) when it holds something else.
double number_or_nan(const Json& object, const char* key, const std::string& what);
// A string member: nullopt when absent or null. BadData (naming `what`) when it holds something
// else.
std::optional<std::string> optional_text(const Json& object, const char* key,
                                         const std::string& what);

// null for NaN and infinities, the number otherwise.
inline Json number_or_null(double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); }
inline Json text_or_null(const std::optional<std::string>& s) {
  return s ? Json(*s) : Json(nullptr);
}

}  // namespace scssl::runfolder
