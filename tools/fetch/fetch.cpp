#include "fetch.hpp"

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/wait.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "runfolder/files.hpp"
#include "scssl/anndata/anndata.hpp"
#include "scssl/params.hpp"

namespace fs = std::filesystem;

namespace scssl::fetch {

namespace {

// ---- SHA-256 (OpenSSL's libcrypto)
// ---------------------------------------------------------------

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
      throw Error(SCSSL_ERR_INTERNAL, "libcrypto cannot compute SHA-256");
  }
  void update(const void* data, size_t n) {
    if (EVP_DigestUpdate(ctx_.get(), data, n) != 1)
      throw Error(SCSSL_ERR_INTERNAL, "SHA-256 update failed");
  }
  std::string hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), digest, &size) != 1)
      throw Error(SCSSL_ERR_INTERNAL, "SHA-256 failed");
    std::string out;
    char byte[3];
    for (unsigned int i = 0; i < size; ++i) {
      std::snprintf(byte, sizeof byte, "%02x", digest[i]);
      out += byte;
    }
    return out;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
};

// ---- manifest ----------------------------------------------------------------------------------

class ManifestReader {
 public:
  ManifestReader(const std::string& file, const toml::table& root) : file_(file), root_(root) {}

  [[noreturn]] void fail(const std::string& key, const std::string& problem) const {
    throw InvalidArgument(file_ + ": '" + key + "' " + problem + " (schema: docs/datasets.md)");
  }

  const toml::node& node(const std::string& key) const {
    const toml::node* n = root_.at_path(key).node();
    if (n == nullptr) fail(key, "is missing");
    return *n;
  }

  std::string text(const std::string& key) const {
    if (const auto* s = node(key).as_string()) return s->get();
    fail(key, "must be a string (\"\" when unknown)");
  }

  int64_t count(const std::string& key) const {
    const auto* i = node(key).as_integer();
    if (i == nullptr || i->get() < 0) fail(key, "must be a whole number, 0 when unknown");
    return i->get();
  }

  std::string text_or(const std::string& key, const std::string& fallback) const {
    return root_.at_path(key).node() ? text(key) : fallback;
  }

 private:
  std::string file_;
  const toml::table& root_;
};

toml::table parse_toml(const std::string& path) {
  try {
    return toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw InvalidArgument(path + ":" + std::to_string(e.source().begin.line) + ": " +
                          std::string(e.description()));
  }
}

bool is_hex64(const std::string& s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// ---- downloads (libcurl) and converters ---------------------------------------------------------

size_t write_to_file(char* data, size_t size, size_t count, void* file) {
  return std::fwrite(data, size, count, static_cast<FILE*>(file)) * size;
}

// Downloads `url` (http, https, ftp or file) into `target`, following redirects; transient network
// failures are tried twice more. IoError with libcurl's message when it fails.
void download(const std::string& url, const fs::path& target) {
  static const bool ready = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  std::unique_ptr<CURL, void (*)(CURL*)> curl(ready ? curl_easy_init() : nullptr,
                                              curl_easy_cleanup);
  if (!curl) throw Error(SCSSL_ERR_INTERNAL, "libcurl could not be initialised");
  char message[CURL_ERROR_SIZE] = "";
  CURLcode code = CURLE_OK;
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(target.c_str(), "wb"), std::fclose);
    if (!file) throw IoError("cannot write " + target.string() + ": " + std::strerror(errno));
    curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl.get(), CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, message);
    curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, write_to_file);
    curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, file.get());
    message[0] = '\0';
    code = curl_easy_perform(curl.get());
    if (std::fflush(file.get()) != 0 && code == CURLE_OK) code = CURLE_WRITE_ERROR;
    const bool transient = code == CURLE_COULDNT_CONNECT || code == CURLE_OPERATION_TIMEDOUT ||
                           code == CURLE_RECV_ERROR || code == CURLE_SEND_ERROR ||
                           code == CURLE_PARTIAL_FILE;
    if (!transient) break;
  }
  if (code != CURLE_OK)
    throw IoError("could not download " + url + ": " +
                  (message[0] ? message : curl_easy_strerror(code)));
}

// Runs `program` (looked up on PATH) with `args`, its standard output into `output_file`; its
// messages are captured for the error. IoError naming the program when it is missing or fails.
void convert(const std::string& program, const std::vector<std::string>& args,
             const fs::path& output_file, const std::string& what) {
  int messages[2];
  if (pipe(messages) != 0) throw IoError("cannot start " + program + ": " + std::strerror(errno));
  std::cout.flush();
  const pid_t pid = fork();
  if (pid < 0) throw IoError("cannot start " + program + ": " + std::strerror(errno));
  if (pid == 0) {
    const int out = open(output_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0) _exit(126);
    dup2(out, STDOUT_FILENO);
    dup2(messages[1], STDERR_FILENO);
    close(messages[0]);
    std::vector<char*> argv = {const_cast<char*>(program.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp(program.c_str(), argv.data());
    _exit(127);
  }
  close(messages[1]);
  std::string said;
  char buf[4096];
  for (ssize_t n; (n = read(messages[0], buf, sizeof buf)) > 0;)
    said.append(buf, static_cast<size_t>(n));
  close(messages[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  while (!said.empty() && (said.back() == '\n' || said.back() == '\r')) said.pop_back();
  if (code == 0) return;
  if (code == 127)
    throw IoError(program + " is needed to " + what +
                  " but was not found (install it, e.g. `apt-get install " + program + "`)");
  throw IoError("could not " + what + ": " + program + " failed (exit code " +
                std::to_string(code) + ")" + (said.empty() ? "" : ": " + said));
}

// ---- checks on the result ----------------------------------------------------------------------

// Opens the file as an AnnData .h5ad without reading its matrix and checks what a run will need:
// the obs columns of the batches and labels, the chosen matrix and the modality column. Returns
// the number of cells.
int64_t check_h5ad(const std::string& path, const DatasetManifest& m, const std::string& shown_as) {
  try {
    const anndata::Summary file = anndata::inspect(path);
    auto need_column = [&](const std::string& key, const char* what) {
      if (!key.empty() && std::find(file.obs_columns.begin(), file.obs_columns.end(), key) ==
                              file.obs_columns.end())
        throw BadData("obs has no column '" + key + "' (the manifest's dataset." + what + ")");
    };
    need_column(m.batch_key, "batch_key");
    need_column(m.label_key, "label_key");
    if (!file.has_matrix(m.layer))
      throw BadData("has no '" + anndata::Summary::matrix_key(m.layer) +
                    "' (the manifest's dataset.layer is \"" + m.layer + "\")");
    if (!m.modality_key.empty() && m.modalities.size() > 1 && file.n_vars >= 0 &&
        std::find(file.var_columns.begin(), file.var_columns.end(), m.modality_key) ==
            file.var_columns.end())
      throw BadData("var has no column '" + m.modality_key +
                    "' (the manifest's dataset.modality_key)");
    if (m.n_cells > 0 && file.n_obs != m.n_cells)
      throw BadData("has " + std::to_string(file.n_obs) + " cells, the manifest " + m.path +
                    " expects n_cells = " + std::to_string(m.n_cells));
    return file.n_obs;
  } catch (const Error& e) {
    // The AnnData layer names the temporary file; the user knows the data set by its final name.
    std::string message = e.what();
    if (message.compare(0, path.size(), path) == 0) message = message.substr(path.size() + 2);
    throw BadData(shown_as + " is not a usable .h5ad: " + message);
  }
}

// Removes the temporary files of a fetch (and the target folder when this fetch created it and
// left it empty) unless the fetch finished.
class Cleanup {
 public:
  explicit Cleanup(fs::path created_dir) : created_dir_(std::move(created_dir)) {}
  ~Cleanup() {
    std::error_code ec;
    for (const auto& f : files_) fs::remove(f, ec);
    if (!done_ && !created_dir_.empty() && fs::is_empty(created_dir_, ec))
      fs::remove(created_dir_, ec);
  }
  Cleanup(const Cleanup&) = delete;
  Cleanup& operator=(const Cleanup&) = delete;
  const fs::path& add(fs::path p) { return files_.emplace_back(std::move(p)); }
  void done() { done_ = true; }

 private:
  std::vector<fs::path> files_;
  fs::path created_dir_;
  bool done_ = false;
};

std::string human_size(int64_t bytes) {
  char buf[32];
  if (bytes >= (int64_t{1} << 30))
    std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / 1073741824.0);
  else if (bytes >= (int64_t{1} << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / 1048576.0);
  else
    std::snprintf(buf, sizeof buf, "%lld bytes", static_cast<long long>(bytes));
  return buf;
}

// DIR/<name>.dataset.toml: the manifest's run-config sections with the path of the fetched file,
// so that a run config can `include` it. Written through a temporary name; unchanged files stay.
fs::path write_run_sections(const DatasetManifest& m, const fs::path& dir) {
  const toml::table manifest = parse_toml(m.path);
  toml::table sections;
  for (const char* name : {"dataset", "preprocess", "evaluation"})
    if (const toml::table* t = manifest[name].as_table()) sections.insert(name, *t);
  sections["dataset"].as_table()->insert_or_assign("path", m.file_name);
  std::ostringstream text;
  text << "# Written by `scssl-fetch " << m.path << "`.\n"
       << "# Use it from a run config: include = [\"" << (dir / (m.name + ".dataset.toml")).string()
       << "\"]\n# (paths in [dataset] are relative to this file).\n\n"
       << sections << "\n";
  const fs::path target = dir / (m.name + ".dataset.toml");
  std::ifstream old(target);
  std::stringstream current;
  current << old.rdbuf();
  if (old && current.str() == text.str()) return target;
  runfolder::write_file_atomic(target.string(), text.str());
  return target;
}

}  // namespace

std::string sha256_hex(const std::string& bytes) {
  Sha256 h;
  h.update(bytes.data(), bytes.size());
  return h.hex();
}

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot read " + path);
  Sha256 h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) throw IoError("error while reading " + path);
  return h.hex();
}

DatasetManifest load_manifest(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw InvalidArgument("manifest '" + path + "' does not exist");
  const toml::table root = parse_toml(path);
  ManifestReader r(path, root);
  DatasetManifest m;
  m.path = path;
  if (r.count("schema") != 1) r.fail("schema", "must be 1 (the only version this program reads)");
  m.name = r.text("name");
  if (m.name.empty() || m.name.find('/') != std::string::npos || m.name[0] == '.')
    r.fail("name", "must be a plain folder name");
  m.title = r.text("title");
  const auto* mods = r.node("modalities").as_array();
  if (mods == nullptr || mods->empty()) r.fail("modalities", "must be a non-empty list of names");
  for (const auto& mod : *mods) {
    if (!mod.is_string()) r.fail("modalities", "must list names");
    m.modalities.push_back(mod.as_string()->get());
  }
  m.n_cells = r.count("n_cells");
  m.n_features = r.count("n_features");
  m.licence = r.text("licence");
  r.text("preprocessing");
  m.citation = r.text("publication.citation");
  m.doi = r.text("publication.doi");
  m.page = r.text("source.page");
  m.url = r.text("source.url");
  m.format = r.text("source.format");
  if (m.format != "h5ad" && m.format != "h5ad.gz" && m.format != "zip")
    r.fail("source.format",
           "is \"" + m.format + "\", which fetch cannot convert (known: h5ad, h5ad.gz, zip)");
  m.member = r.text_or("source.member", "");
  if (m.format == "zip" && m.member.empty())
    r.fail("source.member", "must name the .h5ad inside the zip");
  m.sha256 = r.text("source.sha256");
  m.size_bytes = r.count("source.size_bytes");
  m.file_name = r.text("file.name");
  if (m.file_name.empty() || m.file_name.find('/') != std::string::npos || m.file_name[0] == '.')
    r.fail("file.name", "must be a plain file name");
  m.file_sha256 = r.text_or("file.sha256", "");
  if (!m.sha256.empty() && !is_hex64(m.sha256))
    r.fail("source.sha256", "must be 64 lower-case hex digits (\"\" when unknown)");
  if (!m.file_sha256.empty() && !is_hex64(m.file_sha256))
    r.fail("file.sha256", "must be 64 lower-case hex digits (\"\" when unknown)");
  if (r.text("dataset.plugin") != "h5ad")
    r.fail("dataset.plugin", "must be \"h5ad\" (fetch makes .h5ad files)");
  if (root.at_path("dataset.path").node())
    r.fail("dataset.path", "must not be set (fetch writes it)");
  m.batch_key = r.text("dataset.batch_key");
  m.label_key = r.text("dataset.label_key");
  m.modality_key = r.text_or("dataset.modality_key", "");
  m.layer = r.text_or("dataset.layer", "");
  return m;
}

int fetch_dataset(const std::string& manifest_path, const std::string& into, bool force) {
  const DatasetManifest m = load_manifest(manifest_path);
  // Default: a folder named after the data set next to its manifest, as the bundled ones lie.
  const fs::path dir =
      into.empty() ? fs::absolute(manifest_path).parent_path() / m.name : fs::absolute(into);
  const fs::path target = dir / m.file_name;
  // The checksum that the finished file must have, where the manifest knows it.
  const std::string final_sum = !m.file_sha256.empty() ? m.file_sha256
                                : m.format == "h5ad"   ? m.sha256
                                                       : "";

  std::error_code ec;
  if (fs::exists(target, ec) && !force) {
    const std::string actual = sha256_file(target.string());
    if (!final_sum.empty() && actual != final_sum)
      throw BadData(target.string() + " exists but its sha256 is " + actual + ", the manifest " +
                    m.path + " expects " + final_sum +
                    "; it was left as it is (--force replaces it)");
    int64_t n = 0;
    try {
      n = check_h5ad(target.string(), m, target.string());
    } catch (const BadData& e) {
      throw BadData(std::string(e.what()) + "; it was left as it is (--force replaces it)");
    }
    std::cout << m.name << ": " << target.string() << " is already present (" << n << " cells); ";
    if (final_sum.empty())
      std::cout << "its sha256 " << actual << " is not pinned in " << m.path
                << ": add\n  [file] sha256 = \"" << actual
                << "\"\nthere once you trust this copy.\n";
    else
      std::cout << "sha256 matches, nothing to do.\n";
    std::cout << "run-config sections: " << write_run_sections(m, dir).string() << "\n";
    return 0;
  }
  if (m.url.empty())
    throw InvalidArgument(m.name + ": no public download of " + m.file_name + " is known (" +
                          m.path + ": source.url is \"\"). Get it as described at " +
                          (m.page.empty() ? std::string("the publication") : m.page) +
                          ", put it at " + target.string() + " and run fetch again to check it.");

  const bool created = !fs::exists(dir, ec);
  fs::create_directories(dir, ec);
  if (ec) throw IoError("cannot create " + dir.string() + ": " + ec.message());
  Cleanup cleanup(created ? dir : fs::path());
  const std::string tag = std::to_string(getpid());
  const fs::path part = cleanup.add(dir / ("." + m.file_name + ".download-" + tag));

  std::cout << m.name << ": downloading " << m.url
            << (m.size_bytes > 0 ? " (" + human_size(m.size_bytes) + ")" : std::string()) << "\n";
  download(m.url, part);
  const std::string got = sha256_file(part.string());
  if (m.sha256.empty()) {
    std::cout << "  sha256 of the download: " << got << "\n  not pinned in " << m.path
              << ": after checking the data, add\n  [source] sha256 = \"" << got << "\"\n";
  } else if (got != m.sha256) {
    throw BadData(m.name + ": checksum mismatch for " + m.url + ": the download has sha256 " + got +
                  ", the manifest " + m.path + " expects " + m.sha256 + "; nothing was kept");
  } else {
    std::cout << "  sha256 ok (" << got << ")\n";
  }

  fs::path ready = part;
  if (m.format != "h5ad") {
    ready = cleanup.add(dir / ("." + m.file_name + ".convert-" + tag));
    if (m.format == "h5ad.gz")
      convert("gzip", {"-dc", part.string()}, ready, "decompress the download");
    else
      convert("unzip", {"-p", part.string(), m.member}, ready,
              "extract '" + m.member + "' from the download");
    fs::remove(part, ec);
    if (!m.file_sha256.empty()) {
      const std::string converted = sha256_file(ready.string());
      if (converted != m.file_sha256)
        throw BadData(m.name + ": checksum mismatch after conversion: the .h5ad has sha256 " +
                      converted + ", the manifest " + m.path +
                      " expects file.sha256 = " + m.file_sha256 + "; nothing was kept");
    }
  }
  // Checked under the temporary name, so that a file which does not open never lands in place.
  const int64_t n = check_h5ad(ready.string(), m, m.name + ": the download of " + m.file_name);
  fs::rename(ready, target);
  cleanup.done();
  std::cout << m.name << ": " << target.string() << " (" << n << " cells)\n"
            << "run-config sections: " << write_run_sections(m, dir).string() << "\n";
  return 0;
}

}  // namespace scssl::fetch
