#include "runfolder/files.hpp"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "scssl/params.hpp"

namespace fs = std::filesystem;

namespace scssl::runfolder {

void write_atomically(const std::string& path,
                      const std::function<void(const std::string& tmp)>& write) {
  const fs::path p(path);
  const std::string tmp =
      (p.parent_path() / ("." + p.filename().string() + ".tmp-" + std::to_string(getpid())))
          .string();
  try {
    write(tmp);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw IoError("cannot write '" + path + "': " + ec.message());
  }
}

namespace {

// "cannot write 'PATH': <the system's reason>", with what a full disk means.
[[noreturn]] void cannot_write(const std::string& path, int error) {
  const bool full = error == ENOSPC || error == EFBIG;
  throw IoError("cannot write '" + path + "': " + std::strerror(error) +
                (full ? " (the disk is full or a file-size limit was reached)" : ""));
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& content) {
  write_atomically(path, [&](const std::string& tmp) {
    errno = 0;
    std::ofstream out(tmp, std::ios::binary);
    if (out) out << content << std::flush;
    if (out) out.close();
    if (!out) cannot_write(path, errno ? errno : EIO);
  });
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot read '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string create_run_directory(const std::string& output_dir, const std::string& name) {
  std::error_code ec;
  fs::create_directories(output_dir, ec);
  if (ec) throw IoError("cannot create output folder '" + output_dir + "': " + ec.message());
  char stamp[32];
  std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  const fs::path base = fs::path(output_dir) / (name + "-" + stamp);
  for (int i = 1; i < 1000; ++i) {
    fs::path dir = i == 1 ? base : fs::path(base.string() + "-" + std::to_string(i));
    // create_directory is false when the folder exists: an earlier run is never reused.
    if (fs::create_directory(dir, ec)) return dir.lexically_normal().string();
    if (ec) throw IoError("cannot create run folder '" + dir.string() + "': " + ec.message());
  }
  throw IoError("too many runs named '" + base.string() + "'");
}

std::string claim_run_directory(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw IoError("cannot create run folder '" + dir + "': " + ec.message());
  if (!fs::is_empty(dir, ec))
    throw IoError("run folder '" + dir + "' is not empty; earlier results are never overwritten");
  return fs::path(dir).lexically_normal().string();
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string csv_field_value(const std::string& field, const std::string& where) {
  if (field.empty() || field.front() != '"') return field;
  if (field.size() < 2 || field.back() != '"')
    throw BadData(where + ": a quoted field is not closed");
  std::string out;
  for (size_t i = 1; i + 1 < field.size(); ++i) {
    out += field[i];
    if (field[i] == '"') ++i;  // "" stands for one quote
  }
  return out;
}

std::string csv_number(double v) {
  if (!std::isfinite(v)) return "nan";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace scssl::runfolder
