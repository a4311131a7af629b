#include "runfolder/records.hpp"

#include "runfolder/files.hpp"
#include "scssl/params.hpp"

namespace scssl::runfolder {

namespace {

constexpr RunStatus kStatuses[] = {RunStatus::running, RunStatus::ok, RunStatus::failed,
                                   RunStatus::pending};

template <class T>
T value_or(const Json& j, const char* key, T fallback) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? fallback : it->get<T>();
}

template <class T>
std::optional<T> optional_member(const Json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  return it->get<T>();
}

template <class T>
Json member_or_null(const std::optional<T>& v) {
  return v ? Json(*v) : Json(nullptr);
}

// nlohmann's messages start with "[json.exception.type_error.302] "; the rest is the sentence.
std::string without_prefix(const std::string& what) {
  const size_t at = what.find("] ");
  return at == std::string::npos ? what : what.substr(at + 2);
}

template <class T>
T read_record(const std::string& path) {
  const Json j = read_json_file(path);
  if (!j.is_object()) throw BadData(path + ": must hold a JSON object");
  try {
    return j.get<T>();
  } catch (const Json::exception& e) {
    throw BadData(path + ": " + without_prefix(e.what()));
  } catch (const BadData& e) {
    throw BadData(path + ": " + e.what());
  }
}

}  // namespace

void to_json(Json& j, const PluginRecord& p) {
  j = Json{{"kind", p.kind}, {"name", p.name}, {"version", p.version}, {"path", p.path}};
}
void from_json(const Json& j, PluginRecord& p) {
  p.kind = value_or<std::string>(j, "kind", "");
  p.name = value_or<std::string>(j, "name", "");
  p.version = value_or<std::string>(j, "version", "");
  p.path = value_or<std::string>(j, "path", "");
}

void to_json(Json& j, const ModalitySummary& m) {
  j = Json{{"name", m.name}, {"features_in", m.features_in}, {"features_kept", m.features_kept}};
}
void from_json(const Json& j, ModalitySummary& m) {
  m.name = j.at("name").get<std::string>();
  m.features_in = value_or<int64_t>(j, "features_in", 0);
  m.features_kept = value_or<int64_t>(j, "features_kept", 0);
}

void to_json(Json& j, const DataSummary& d) {
  j = Json{{"n_cells", d.n_cells},
           {"modalities", d.modalities},
           {"n_reference", d.n_reference},
           {"n_query", d.n_query},
           {"protocol", member_or_null(d.protocol)},
           {"query_modality", member_or_null(d.query_modality)}};
}
void from_json(const Json& j, DataSummary& d) {
  d.n_cells = value_or<int64_t>(j, "n_cells", 0);
  d.modalities = value_or<std::vector<ModalitySummary>>(j, "modalities", {});
  d.n_reference = value_or<int64_t>(j, "n_reference", 0);
  d.n_query = value_or<int64_t>(j, "n_query", 0);
  d.protocol = optional_member<std::string>(j, "protocol");
  d.query_modality = optional_member<std::string>(j, "query_modality");
}

void to_json(Json& j, const EmbeddingRecord& e) {
  j = Json{{"dim", e.dim},
           {"file", member_or_null(e.file)},
           {"h5ad", member_or_null(e.h5ad)},
           {"obsm_key", e.obsm_key}};
}
void from_json(const Json& j, EmbeddingRecord& e) {
  e.dim = value_or<int64_t>(j, "dim", 0);
  e.file = optional_member<std::string>(j, "file");
  e.h5ad = optional_member<std::string>(j, "h5ad");
  e.obsm_key = value_or<std::string>(j, "obsm_key", "");
}

void to_json(Json& j, const NeighborRecord& n) {
  j = Json{{"backend", n.backend}, {"k", n.k}, {"chosen_by", n.chosen_by}};
  if (n.chosen_by == "measured")
    j["predicted_seconds"] = Json{{"exact", number_or_null(n.predicted_exact_seconds)},
                                  {"hnsw", number_or_null(n.predicted_hnsw_seconds)}};
}
void from_json(const Json& j, NeighborRecord& n) {
  n.backend = value_or<std::string>(j, "backend", "");
  n.k = value_or<int64_t>(j, "k", 0);
  n.chosen_by = value_or<std::string>(j, "chosen_by", "");
  if (j.contains("predicted_seconds")) {
    const Json& p = j.at("predicted_seconds");
    n.predicted_exact_seconds = number_or_nan(p, "exact", "neighbors.predicted_seconds");
    n.predicted_hnsw_seconds = number_or_nan(p, "hnsw", "neighbors.predicted_seconds");
  }
}

void to_json(Json& j, const StageTiming& s) {
  j = Json{{"stage", s.stage},
           {"wall_seconds", number_or_null(s.wall_seconds)},
           {"peak_rss_mb", number_or_null(s.peak_rss_mb)},
           {"end_rss_mb", number_or_null(s.end_rss_mb)}};
}
void from_json(const Json& j, StageTiming& s) {
  s.stage = j.at("stage").get<std::string>();
  const std::string what = "stage '" + s.stage + "'";
  s.wall_seconds = number_or_nan(j, "wall_seconds", what);
  s.peak_rss_mb = number_or_nan(j, "peak_rss_mb", what);
  s.end_rss_mb = number_or_nan(j, "end_rss_mb", what);
}

void to_json(Json& j, const Versions& v) {
  j = Json{{"scssl", v.scssl},
           {"abi", v.abi},
           {"libtorch", v.libtorch},
           {"blas", v.blas},
           {"distance_kernels", v.distance_kernels}};
}
void from_json(const Json& j, Versions& v) {
  v.scssl = value_or<std::string>(j, "scssl", "");
  v.abi = value_or<int64_t>(j, "abi", 0);
  v.libtorch = value_or<std::string>(j, "libtorch", "");
  v.blas = value_or<std::string>(j, "blas", "");
  v.distance_kernels = value_or<std::string>(j, "distance_kernels", "");
}

void to_json(Json& j, const SweepRun& r) {
  Json labels = Json::object();
  for (const auto& [name, value] : r.labels) labels[name] = value;
  j = Json{{"id", r.id},
           {"dir", r.dir},
           {"seed", r.seed},
           {"protocol", r.protocol},
           {"labels", labels},
           {"status", r.status},
           {"error", member_or_null(r.error)}};
}
void from_json(const Json& j, SweepRun& r) {
  r.id = value_or<std::string>(j, "id", "");
  r.dir = value_or<std::string>(j, "dir", "");
  r.seed = value_or<int64_t>(j, "seed", 0);
  r.protocol = value_or<std::string>(j, "protocol", "");
  r.labels.clear();
  if (const auto it = j.find("labels"); it != j.end() && !it->is_null())
    for (const auto& [name, value] : it->items())
      r.labels.emplace_back(name, value.get<std::string>());
  r.status = value_or<RunStatus>(j, "status", RunStatus::pending);
  r.error = optional_member<std::string>(j, "error");
}

const char* status_name(RunStatus status) {
  switch (status) {
    case RunStatus::running:
      return "running";
    case RunStatus::ok:
      return "ok";
    case RunStatus::failed:
      return "failed";
    case RunStatus::pending:
      break;
  }
  return "pending";
}

RunStatus status_from_name(const std::string& name, const std::string& what) {
  for (RunStatus s : kStatuses)
    if (name == status_name(s)) return s;
  throw BadData(what + ": '" + name + "' is not a run status (running, ok, failed, pending)");
}

void to_json(Json& j, const RunStatus& s) { j = status_name(s); }
void from_json(const Json& j, RunStatus& s) {
  s = status_from_name(j.get<std::string>(), "status");
}

void to_json(Json& j, const RunRecord& r) {
  j = Json{{"status", r.status},
           {"error", member_or_null(r.error)},
           {"stage", member_or_null(r.stage)},
           {"plugin", member_or_null(r.plugin)},
           {"name", r.name},
           {"config", r.config},
           {"command", r.command},
           {"seed", r.seed},
           {"threads", r.threads},
           {"started", r.started},
           {"finished", r.finished},
           {"wall_seconds", number_or_null(r.wall_seconds)},
           {"peak_rss_mb", number_or_null(r.peak_rss_mb)},
           {"host", r.host},
           {"versions", r.versions},
           {"plugins", r.plugins},
           {"data", member_or_null(r.data)},
           {"embedding", member_or_null(r.embedding)},
           {"neighbors", member_or_null(r.neighbors)},
           {"stages", r.stages}};
}

void from_json(const Json& j, RunRecord& r) {
  r.status = j.at("status").get<RunStatus>();
  r.error = optional_member<std::string>(j, "error");
  r.stage = optional_member<std::string>(j, "stage");
  r.plugin = optional_member<std::string>(j, "plugin");
  r.name = value_or<std::string>(j, "name", "");
  r.config = value_or<std::string>(j, "config", "");
  r.command = value_or<std::string>(j, "command", "");
  r.seed = value_or<int64_t>(j, "seed", 0);
  r.threads = value_or<int64_t>(j, "threads", 0);
  r.started = value_or<std::string>(j, "started", "");
  r.finished = value_or<std::string>(j, "finished", "");
  r.wall_seconds = number_or_nan(j, "wall_seconds", "run record");
  r.peak_rss_mb = number_or_nan(j, "peak_rss_mb", "run record");
  r.host = value_or<std::string>(j, "host", "");
  r.versions = value_or<Versions>(j, "versions", {});
  r.plugins = value_or<std::vector<PluginRecord>>(j, "plugins", {});
  r.data = optional_member<DataSummary>(j, "data");
  r.embedding = optional_member<EmbeddingRecord>(j, "embedding");
  r.neighbors = optional_member<NeighborRecord>(j, "neighbors");
  r.stages = value_or<std::vector<StageTiming>>(j, "stages", {});
}

void to_json(Json& j, const SweepRecord& s) {
  j = Json{{"name", s.name}, {"sweep_file", s.sweep_file}, {"axes", s.axes}, {"runs", s.runs}};
}

void from_json(const Json& j, SweepRecord& s) {
  s.name = value_or<std::string>(j, "name", "");
  s.sweep_file = value_or<std::string>(j, "sweep_file", "");
  s.axes = value_or<std::vector<std::string>>(j, "axes", {});
  if (!j.contains("runs")) throw BadData("has no \"runs\" list");
  s.runs = j.at("runs").get<std::vector<SweepRun>>();
}

RunRecord read_run_record(const std::string& path) { return read_record<RunRecord>(path); }

void write_run_record(const std::string& path, const RunRecord& record) {
  write_file_atomic(path, dump_json(Json(record)) + "\n");
}

SweepRecord read_sweep_record(const std::string& path) { return read_record<SweepRecord>(path); }

void write_sweep_record(const std::string& path, const SweepRecord& record) {
  write_file_atomic(path, dump_json(Json(record)) + "\n");
}

}  // namespace scssl::runfolder
