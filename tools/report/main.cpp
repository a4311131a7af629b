// scssl-report: tables and one HTML page from run and sweep folders (docs/report.md).
// `scssl-host report ...` forwards here with the same words.
#include <iostream>
#include <sstream>

#include "cli.hpp"
#include "report.hpp"

namespace po = boost::program_options;
using namespace scssl;

namespace {

const char* kUsage =
    "Usage: scssl-report DIR... --output OUT [--min-max-scale] [--rows LABELS] [--title TEXT]\n"
    "\n"
    "Reads run folders, sweep folders and `evaluate` result folders (or folders holding them) and\n"
    "writes per data set the scIB, annotation and modality tables and the compute cost as CSV, "
    "and\n"
    "report.html: one offline page of charts with a UMAP map of each row's embedding\n"
    "(docs/report.md).";

std::vector<std::string> comma_list(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string s; std::getline(in, s, ',');)
    if (!s.empty()) out.push_back(s);
  return out;
}

int report_command(const std::vector<std::string>& args) {
  report::ReportOptions options;
  std::string rows;
  po::options_description opts("report options");
  opts.add_options()("inputs", po::value(&options.inputs)->composing(),
                     "run folders, sweep folders, or folders holding them")(
      "output,o", po::value(&options.output)->required(), "folder for the tables and report.html")(
      "title", po::value(&options.title), "the page's title")(
      "min-max-scale", po::bool_switch(&options.min_max_scale),
      "also scale each scIB metric to [0, 1] across the runs of a data set")(
      "rows", po::value(&rows),
      "comma-separated labels that make a row (default: every label but dataset)")(
      "layout-cells", po::value(&options.layout_cells),
      "cells per embedding map, 0 for none (default 2000)")(
      "assets", po::value(&options.assets),
      "folder of report.js and vendor/ (default: next to the program)");
  po::positional_options_description pos;
  pos.add("inputs", -1);
  po::variables_map vm;
  if (!cli::parse_command(args, opts, pos, vm, kUsage)) return 0;
  if (options.inputs.empty()) throw po::error("report needs at least one run or sweep folder");
  options.rows = comma_list(rows);
  for (const auto& path : report::write_report(options)) std::cout << path << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::tool_main(argc, argv, "scssl-report", report_command);
}
