#include "scssl/plugin_meta.hpp"

#include <set>
#include <sstream>
#include <stdexcept>

#include "scssl/abi_sized.hpp"

namespace scssl {

const char* kind_name(scssl_kind kind) {
  switch (kind) {
    case SCSSL_KIND_DATASET:
      return "dataset";
    case SCSSL_KIND_AUGMENTATION:
      return "augmentation";
    case SCSSL_KIND_METHOD:
      return "method";
    case SCSSL_KIND_EVALUATOR:
      return "evaluator";
  }
  return "unknown";
}

namespace {

std::string text(const char* s) { return s ? s : ""; }

// sizeof() of the kind's function table in this build, 0 for an unknown kind.
uint32_t table_size_of(int32_t kind) {
  switch (kind) {
    case SCSSL_KIND_DATASET:
      return sizeof(scssl_dataset_table);
    case SCSSL_KIND_AUGMENTATION:
      return sizeof(scssl_augmentation_table);
    case SCSSL_KIND_METHOD:
      return sizeof(scssl_method_table);
    case SCSSL_KIND_EVALUATOR:
      return sizeof(scssl_evaluator_table);
  }
  return 0;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\t')
      out += "\\t";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    const char c = s[++i];
    out += c == 't' ? '\t' : c == 'n' ? '\n' : c;
  }
  return out;
}

std::vector<std::string> split_tabs(const std::string& s) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t tab; (tab = s.find('\t', start)) != std::string::npos; start = tab + 1)
    parts.push_back(unescape(s.substr(start, tab - start)));
  parts.push_back(unescape(s.substr(start)));
  return parts;
}

std::string number(double v) {
  std::ostringstream out;
  out.precision(17);
  out << v;
  return out.str();
}

}  // namespace

PluginMeta meta_from_info(const scssl_plugin_info* given) {
  if (given == nullptr)
    throw std::invalid_argument("the entry point returned no plugin description");
  PluginMeta m;
  m.abi_version = given->abi_version;
  if (given->magic != SCSSL_MAGIC || given->abi_version != SCSSL_ABI_VERSION) return m;
  const scssl_plugin_info info = read_sized(given);
  m.abi_minor = info.abi_minor;
  m.info_size = info.struct_size;
  m.kind = info.kind;
  m.name = text(info.name);
  m.version = text(info.version);
  m.summary = text(info.summary);
  m.torch_version = text(info.build.torch_version);
  m.cxx_stdlib = text(info.build.cxx_stdlib);
  m.compiler = text(info.build.compiler);
  m.requirements = info.requirements;
  if (info.table != nullptr) m.table_size = *static_cast<const uint32_t*>(info.table);
  if (info.n_params < 0 || (info.n_params > 0 && info.params == nullptr))
    throw std::invalid_argument("its parameter list is malformed (" +
                                std::to_string(info.n_params) + " entries at " +
                                (info.params ? "an address" : "NULL") + ")");
  if (info.n_params > 0) m.param_spec_size = info.params[0].struct_size;
  for (int64_t i = 0; i < info.n_params; ++i)
    m.params.push_back(rule_from_c(read_sized_at(info.params, i, "its parameter list")));
  if (info.n_metrics < 0 || (info.n_metrics > 0 && info.metrics == nullptr))
    throw std::invalid_argument("its metric list is malformed");
  if (info.n_metrics > 0) m.metric_spec_size = info.metrics[0].struct_size;
  for (int64_t i = 0; i < info.n_metrics; ++i) {
    const scssl_metric_spec s = read_sized_at(info.metrics, i, "its metric list");
    m.metrics.push_back({text(s.name), s.group, s.higher_is_better != 0, text(s.help)});
  }
  return m;
}

std::string meta_to_note(const PluginMeta& m) {
  std::ostringstream out;
  out << "scssl-plugin-note 1\n"
      << "abi " << m.abi_version << "." << m.abi_minor << "\n"
      << "kind " << m.kind << "\n"
      << "name " << escape(m.name) << "\n"
      << "version " << escape(m.version) << "\n"
      << "summary " << escape(m.summary) << "\n"
      << "torch " << escape(m.torch_version) << "\n"
      << "stdlib " << escape(m.cxx_stdlib) << "\n"
      << "compiler " << escape(m.compiler) << "\n"
      << "requirements " << m.requirements << "\n"
      << "sizes " << m.info_size << " " << m.table_size << " " << m.param_spec_size << " "
      << m.metric_spec_size << "\n";
  for (const ParamRule& p : m.params) {
    std::string choices;
    for (const auto& c : p.choices) choices += (choices.empty() ? "" : ",") + c;
    out << "param " << escape(p.name) << "\t" << p.type << "\t" << p.flags << "\t"
        << number(p.minimum) << "\t" << number(p.maximum) << "\t" << escape(choices) << "\t"
        << escape(p.default_text) << "\t" << escape(p.help) << "\n";
  }
  for (const MetricRule& r : m.metrics)
    out << "metric " << escape(r.name) << "\t" << r.group << "\t" << (r.higher_is_better ? 1 : 0)
        << "\t" << escape(r.help) << "\n";
  return out.str();
}

PluginMeta meta_from_note(const std::string& note) {
  PluginMeta m;
  std::istringstream in(note);
  std::string line;
  int number_of_line = 0;
  bool header = false;
  auto bad = [&](const std::string& why) {
    throw std::invalid_argument("line " + std::to_string(number_of_line) + " " + why);
  };
  // A whole field as a number: "12x" and "" are refused.
  auto to_number = [&](const std::string& s, auto parse) {
    size_t used = 0;
    try {
      const auto v = parse(s, &used);
      if (used == s.size()) return v;
    } catch (const std::logic_error&) {
    }
    bad("has '" + s + "' where a number belongs");
    return decltype(parse(s, &used)){};
  };
  auto to_u64 = [&](const std::string& s) {
    return to_number(s, [](const std::string& t, size_t* used) { return std::stoull(t, used); });
  };
  auto to_double = [&](const std::string& s) {
    return to_number(s, [](const std::string& t, size_t* used) { return std::stod(t, used); });
  };
  while (std::getline(in, line)) {
    ++number_of_line;
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    const std::string key = line.substr(0, space);
    const std::string value = space == std::string::npos ? "" : line.substr(space + 1);
    if (!header) {
      if (line != "scssl-plugin-note 1") bad("is not the header 'scssl-plugin-note 1'");
      header = true;
    } else if (key == "abi") {
      const size_t dot = value.find('.');
      if (dot == std::string::npos) bad("has no minor version");
      m.abi_version = static_cast<uint32_t>(to_u64(value.substr(0, dot)));
      m.abi_minor = static_cast<uint32_t>(to_u64(value.substr(dot + 1)));
    } else if (key == "kind") {
      m.kind = static_cast<int32_t>(to_u64(value));
    } else if (key == "name") {
      m.name = unescape(value);
    } else if (key == "version") {
      m.version = unescape(value);
    } else if (key == "summary") {
      m.summary = unescape(value);
    } else if (key == "torch") {
      m.torch_version = unescape(value);
    } else if (key == "stdlib") {
      m.cxx_stdlib = unescape(value);
    } else if (key == "compiler") {
      m.compiler = unescape(value);
    } else if (key == "requirements") {
      m.requirements = to_u64(value);
    } else if (key == "sizes") {
      std::istringstream sizes(value);
      if (!(sizes >> m.info_size >> m.table_size >> m.param_spec_size >> m.metric_spec_size))
        bad("does not hold four sizes");
    } else if (key == "param") {
      const auto f = split_tabs(value);
      if (f.size() != 8) bad("does not hold the 8 columns of a parameter");
      ParamRule p;
      p.name = f[0];
      p.type = static_cast<scssl_param_type>(to_u64(f[1]));
      p.flags = static_cast<uint32_t>(to_u64(f[2]));
      p.minimum = to_double(f[3]);
      p.maximum = to_double(f[4]);
      for (size_t start = 0; !f[5].empty();) {
        const size_t comma = f[5].find(',', start);
        p.choices.push_back(f[5].substr(start, comma - start));
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
      p.default_text = f[6];
      p.help = f[7];
      m.params.push_back(std::move(p));
    } else if (key == "metric") {
      const auto f = split_tabs(value);
      if (f.size() != 4) bad("does not hold the 4 columns of a metric");
      m.metrics.push_back({f[0], static_cast<int32_t>(to_u64(f[1])), f[2] == "1", f[3]});
    } else {
      bad("has the unknown key '" + key + "'");
    }
  }
  if (!header) throw std::invalid_argument("it is empty");
  if (m.abi_version == 0) throw std::invalid_argument("it names no ABI version");
  return m;
}

std::string describe_fingerprint(const std::string& torch_version, const std::string& cxx_stdlib,
                                 const std::string& compiler) {
  return (torch_version.empty() ? std::string("no LibTorch") : "LibTorch " + torch_version) + ", " +
         (cxx_stdlib.empty() ? std::string("no C++ library") : cxx_stdlib) + ", " +
         (compiler.empty() ? std::string("unknown compiler") : compiler);
}

std::string meta_problem(const PluginMeta& m, const BuildFingerprint& host) {
  if (m.abi_version != SCSSL_ABI_VERSION)
    return "built for scssl ABI version " + std::to_string(m.abi_version) +
           ", this host uses version " + std::to_string(SCSSL_ABI_VERSION) +
           "; rebuild the plugin against this SDK";
  // Same minor version: every struct must have exactly this build's size, or the header was
  // edited without a version change and no field can be trusted.
  if (m.abi_minor == SCSSL_ABI_MINOR) {
    auto layout = [&](const char* what, uint32_t theirs, uint32_t ours) {
      return "its " + std::string(what) + " is " + std::to_string(theirs) + " bytes where ABI " +
             std::to_string(SCSSL_ABI_VERSION) + "." + std::to_string(SCSSL_ABI_MINOR) + " has " +
             std::to_string(ours) + "; it was built against a modified scssl/abi.h";
    };
    if (m.info_size != sizeof(scssl_plugin_info))
      return layout("scssl_plugin_info", m.info_size, sizeof(scssl_plugin_info));
    if (m.table_size != 0 && table_size_of(m.kind) != 0 && m.table_size != table_size_of(m.kind))
      return layout("function table", m.table_size, table_size_of(m.kind));
    if (!m.params.empty() && m.param_spec_size != sizeof(scssl_param_spec))
      return layout("scssl_param_spec", m.param_spec_size, sizeof(scssl_param_spec));
    if (!m.metrics.empty() && m.metric_spec_size != sizeof(scssl_metric_spec))
      return layout("scssl_metric_spec", m.metric_spec_size, sizeof(scssl_metric_spec));
  }
  // A plain-C plugin names no LibTorch and no C++ library: it shares neither with the host.
  const bool torch_differs = !m.torch_version.empty() && m.torch_version != host.torch_version;
  const bool stdlib_differs = !m.cxx_stdlib.empty() && m.cxx_stdlib != host.cxx_stdlib;
  if (torch_differs || stdlib_differs)
    return "built with " + describe_fingerprint(m.torch_version, m.cxx_stdlib, m.compiler) +
           ", but this host uses " +
           describe_fingerprint(host.torch_version, host.cxx_stdlib, host.compiler) +
           "; rebuild the plugin against this host's SDK";
  if (m.kind < SCSSL_KIND_DATASET || m.kind > SCSSL_KIND_EVALUATOR)
    return "unknown plugin kind " + std::to_string(m.kind);
  if (!is_identifier(m.name))
    return "plugin name '" + m.name + "' is not made of lower-case letters, digits and '_'";
  const std::string who = "plugin '" + m.name + "'";
  if (m.version.empty()) return who + " has no version";
  if (m.summary.empty()) return who + " has no summary";
  if (m.table_size == 0) return who + " has no function table";
  if (std::string schema = schema_problem(m.params); !schema.empty())
    return who + " has a malformed parameter schema: " + schema;
  if (m.kind == SCSSL_KIND_EVALUATOR) {
    if (m.metrics.empty()) return who + " declares no metrics";
    std::set<std::string> seen;
    for (size_t i = 0; i < m.metrics.size(); ++i) {
      const MetricRule& r = m.metrics[i];
      if (!is_identifier(r.name))
        return who + ": metric " + std::to_string(i) + " has the name '" + r.name +
               "', which is not made of lower-case letters, digits and '_'";
      if (!seen.insert(r.name).second) return who + ": metric '" + r.name + "' is declared twice";
      if (r.group < SCSSL_GROUP_BIO || r.group > SCSSL_GROUP_OTHER)
        return who + ": metric '" + r.name + "' has unknown group " + std::to_string(r.group);
    }
  } else if (!m.metrics.empty()) {
    return who + " is a " + kind_name(static_cast<scssl_kind>(m.kind)) +
           " plugin but declares metrics";
  }
  return "";
}

}  // namespace scssl
