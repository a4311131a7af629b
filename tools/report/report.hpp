// scssl-report (also `scssl-host report`): reads run and sweep folders (docs/run-folder.md) and
// writes, per data set, the scIB, annotation and modality tables and the compute cost as CSV, plus
// one self-contained HTML page of charts whose 2-d embedding maps are UMAP layouts computed in the
// page (docs/report.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace scssl::report {

struct ReportOptions {
  std::vector<std::string> inputs;  // run folders, sweep folders, folders holding either
  std::string output;
  std::string title = "scSSL-Bench report";
  bool min_max_scale = false;
  // Labels that make a table row (seeds are always averaged); empty: every label but the data set.
  std::vector<std::string> rows;
  int64_t layout_cells = 2000;  // cells per embedding map; 0: no maps
  std::string assets;           // folder of report.js and vendor/; empty: found next to the program
};

// Writes the tables and report.html into options.output and returns the paths written. A folder
// that is neither a run, a sweep nor a folder of them is an InvalidArgument naming it.
std::vector<std::string> write_report(const ReportOptions& options);

// The neighbours UMAP starts from: for each of the n rows of `x` (row-major n x d), its `k` nearest
// rows by Euclidean distance, itself first (as umap-learn and scanpy count it). `indices` and
// `distances` receive n * k values, row by row, nearest first; ties go to the lower index. k is
// capped at n.
void nearest_neighbors(const std::vector<float>& x, int64_t n, int64_t d, int64_t k,
                       std::vector<int32_t>& indices, std::vector<float>& distances);

}  // namespace scssl::report
