// What scssl-host and the tool programs (scssl-sweep, scssl-report, scssl-fetch) share on the
// command line: the terminal logger, `--help` for every command, and one exit-code convention
// (0 done, 1 failed with one message, 2 usage error).
#pragma once

#include <boost/program_options.hpp>

#include <functional>
#include <string>
#include <vector>

namespace scssl::cli {

namespace po = boost::program_options;

// Installs the terminal logger (stderr, "[time] level message") at level info. It passes
// everything and the terminal filters, so a run's log file (added by the run) keeps debug lines.
void install_console_logger();
// info by default, warn with quiet, debug with verbose.
void set_console_level(bool quiet, bool verbose);

// Parses the words of one command against `options` plus the options every command takes
// (--help, --quiet, --verbose), and sets the terminal's level. With --help it prints `usage`, a
// blank line and the options, and returns false: the caller then exits with 0. Usage errors
// throw po::error.
bool parse_command(const std::vector<std::string>& args, const po::options_description& options,
                   const po::positional_options_description& positional, po::variables_map& values,
                   const std::string& usage);

// Runs `body` and turns what it throws into one logged message: exit code 2 for a usage error
// (po::error), 1 for anything else.
int guarded(const std::function<int()>& body);

// main() of a tool program: installs the logger, answers --version with `program` and the
// project's version, and runs `command` on the words after the program name, guarded.
int tool_main(int argc, char** argv, const std::string& program,
              const std::function<int(const std::vector<std::string>& args)>& command);

}  // namespace scssl::cli
