// scssl-host report: reads run and sweep folders and writes, per data set, the scIB, annotation and
// modality tables and the compute cost as CSV, plus one self-contained HTML page of charts
// (see docs/report.md).
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace scssl::host {

struct ReportOptions {
  std::vector<std::string> inputs;  // run folders, sweep folders, folders holding either
  std::string output;
  std::string title = "scSSL-Bench report";
  bool min_max_scale = false;
  // Labels that make a table row (seeds are always averaged); empty: every label but the data set.
  std::vector<std::string> rows;
  int64_t layout_cells = 2000;  // cells per 2-d embedding layout; 0: no embedding plots
  std::string assets;           // folder of report.js and vendor/; empty: found next to the program
};

// Writes the tables and report.html into options.output and returns the paths written. A folder
// that is neither a run, a sweep nor a folder of them is an InvalidArgument naming it.
std::vector<std::string> write_report(const ReportOptions& options);

// `scssl-host report DIR... --output OUT [options]`; `args` are the words after "report".
int cmd_report(const std::vector<std::string>& args);

// Exact t-SNE of the rows of `x` (float [n, d]) into float32 [n, 2]: perplexity-calibrated
// affinities, PCA initialisation, early exaggeration; deterministic for a given input.
torch::Tensor tsne_2d(const torch::Tensor& x, double perplexity = 30, int iterations = 750);

}  // namespace scssl::host
