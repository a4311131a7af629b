// File helpers for run folders: every result file is written under a temporary name and renamed
// into place, so a crash never leaves a half-written file and never clobbers an existing one.
// Shared by scssl-host and the tools that read run folders (docs/run-folder.md).
#pragma once

#include <functional>
#include <string>

namespace scssl::runfolder {

// Runs `write` on a temporary path in the same folder as `path`, then renames it to `path`; the
// temporary is removed when `write` throws. IoError when the rename fails.
void write_atomically(const std::string& path,
                      const std::function<void(const std::string& tmp)>& write);
// Writes `content` to `path` the same way.
void write_file_atomic(const std::string& path, const std::string& content);

// A whole file as text (IoError when it cannot be read).
std::string read_text_file(const std::string& path);

// Creates <output_dir>/<name>-<timestamp> (with -2, -3, ... if taken) and returns its path.
std::string create_run_directory(const std::string& output_dir, const std::string& name);
// Creates `dir` (parents included) for a run whose folder is chosen by the caller (a sweep); an
// existing folder must be empty, so earlier results are never overwritten.
std::string claim_run_directory(const std::string& dir);

// A CSV field, quoted when it holds a comma, a quote or a line break.
std::string csv_field(const std::string& s);
// The inverse for one whole field (a quoted one may hold commas); BadData naming `where` when a
// quote is not closed.
std::string csv_field_value(const std::string& field, const std::string& where);
// A number for a CSV file: 17 significant digits (round-trips a double), "nan" for NaN and
// infinities, as pandas reads them.
std::string csv_number(double v);

}  // namespace scssl::runfolder
