#include "cli.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <iostream>

namespace scssl::cli {

namespace {
std::shared_ptr<spdlog::sinks::stderr_color_sink_mt>& console_sink() {
  static std::shared_ptr<spdlog::sinks::stderr_color_sink_mt> sink;
  return sink;
}
}  // namespace

void install_console_logger() {
  auto& sink = console_sink();
  sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  sink->set_pattern("[%H:%M:%S] %^%l%$ %v");
  sink->set_level(spdlog::level::info);
  auto console = std::make_shared<spdlog::logger>("scssl", sink);
  console->set_level(spdlog::level::debug);
  spdlog::set_default_logger(console);
}

void set_console_level(bool quiet, bool verbose) {
  if (console_sink())
    console_sink()->set_level(quiet     ? spdlog::level::warn
                              : verbose ? spdlog::level::debug
                                        : spdlog::level::info);
}

bool parse_command(const std::vector<std::string>& args, const po::options_description& options,
                   const po::positional_options_description& positional, po::variables_map& values,
                   const std::string& usage) {
  bool help = false, quiet = false, verbose = false;
  po::options_description common("common options");
  common.add_options()("help,h", po::bool_switch(&help), "this help")(
      "quiet,q", po::bool_switch(&quiet), "only warnings and errors")(
      "verbose,v", po::bool_switch(&verbose), "debug output");
  po::options_description all;
  all.add(options).add(common);
  po::store(po::command_line_parser(args).options(all).positional(positional).run(), values);
  if (values.count("help") && values["help"].as<bool>()) {
    std::cout << usage << "\n\n" << options << "\n" << common;
    return false;
  }
  po::notify(values);
  if (quiet || verbose) set_console_level(quiet, verbose);
  return true;
}

int guarded(const std::function<int()>& body) {
  try {
    return body();
  } catch (const po::error& e) {
    spdlog::error("{}", e.what());
    return 2;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}

int tool_main(int argc, char** argv, const std::string& program,
              const std::function<int(const std::vector<std::string>& args)>& command) {
  install_console_logger();
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 1 && args[0] == "--version") {
    std::cout << program << " " << SCSSL_VERSION << "\n";
    return 0;
  }
  return guarded([&] { return command(args); });
}

}  // namespace scssl::cli
