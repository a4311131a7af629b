#include "runfolder/metrics.hpp"

#include <cstdlib>
#include <sstream>

#include "runfolder/files.hpp"
#include "scssl/params.hpp"

namespace scssl::runfolder {

namespace {
constexpr MetricGroup kGroups[] = {MetricGroup::bio, MetricGroup::batch, MetricGroup::annotation,
                                   MetricGroup::modality, MetricGroup::other};
}  // namespace

const char* group_name(MetricGroup group) {
  switch (group) {
    case MetricGroup::bio:
      return "bio";
    case MetricGroup::batch:
      return "batch";
    case MetricGroup::annotation:
      return "annotation";
    case MetricGroup::modality:
      return "modality";
    case MetricGroup::other:
      break;
  }
  return "other";
}

MetricGroup group_from_name(const std::string& name, const std::string& what) {
  for (MetricGroup g : kGroups)
    if (name == group_name(g)) return g;
  throw BadData(what + ": '" + name +
                "' is not a metric group (bio, batch, annotation, modality, other)");
}

void to_json(Json& j, const MetricRecord& m) {
  j = Json{{"evaluator", m.evaluator},         {"metric", m.metric},
           {"group", group_name(m.group)},     {"higher_is_better", m.higher_is_better},
           {"value", number_or_null(m.value)}, {"seconds", number_or_null(m.seconds)}};
  if (!m.note.empty()) j["note"] = m.note;
}

void from_json(const Json& j, MetricRecord& m) {
  const std::string what = "metric record";
  if (!j.is_object()) throw BadData(what + " must be a JSON object");
  m.evaluator = j.at("evaluator").get<std::string>();
  m.metric = j.at("metric").get<std::string>();
  m.group = group_from_name(j.at("group").get<std::string>(), what + " '" + m.metric + "'");
  m.higher_is_better = j.value("higher_is_better", true);
  m.value = number_or_nan(j, "value", what + " '" + m.metric + "'");
  m.seconds = number_or_nan(j, "seconds", what + " '" + m.metric + "'");
  m.note = j.value("note", std::string());
}

std::string metrics_csv(const std::vector<MetricRecord>& metrics) {
  std::ostringstream out;
  out << "evaluator,metric,group,higher_is_better,value,seconds,note\n";
  for (const auto& m : metrics)
    out << m.evaluator << "," << m.metric << "," << group_name(m.group) << ","
        << (m.higher_is_better ? "true" : "false") << "," << csv_number(m.value) << ","
        << (std::isfinite(m.seconds) ? csv_number(m.seconds) : "") << "," << csv_field(m.note)
        << "\n";
  return out.str();
}

std::vector<MetricRecord> read_metrics_csv(const std::string& path) {
  std::istringstream in(read_text_file(path));
  std::string line;
  std::getline(in, line);
  if (line.rfind("evaluator,metric,group,higher_is_better,value", 0) != 0)
    throw BadData(path + ": not a metrics table (unexpected header '" + line + "')");
  std::vector<MetricRecord> out;
  for (int number = 2; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const std::string where = path + ": line " + std::to_string(number);
    // The first six fields hold no comma; the note, last, is quoted.
    std::vector<std::string> f;
    size_t start = 0;
    for (int i = 0; i < 6 && start <= line.size(); ++i) {
      const size_t comma = line.find(',', start);
      const size_t end = comma == std::string::npos ? line.size() : comma;
      f.push_back(line.substr(start, end - start));
      start = end + 1;
    }
    if (f.size() < 5) throw BadData(where + " has too few fields");
    char* end = nullptr;
    MetricRecord m;
    m.evaluator = f[0];
    m.metric = f[1];
    m.group = group_from_name(f[2], where);
    m.higher_is_better = f[3] == "true";
    m.value = std::strtod(f[4].c_str(), &end);
    if (f[4].empty() || *end != '\0') throw BadData(where + ": '" + f[4] + "' is not a number");
    if (f.size() > 5 && !f[5].empty()) m.seconds = std::strtod(f[5].c_str(), nullptr);
    if (start < line.size()) m.note = csv_field_value(line.substr(start), where);
    out.push_back(std::move(m));
  }
  return out;
}

std::string metrics_json(const std::vector<MetricRecord>& metrics) {
  return dump_json(Json(metrics)) + "\n";
}

std::vector<MetricRecord> read_metrics_json(const std::string& path) {
  const Json j = read_json_file(path);
  if (!j.is_array()) throw BadData(path + ": must hold a JSON array of metric records");
  try {
    return j.get<std::vector<MetricRecord>>();
  } catch (const Json::exception& e) {
    throw BadData(path + ": " + e.what());
  }
}

}  // namespace scssl::runfolder
