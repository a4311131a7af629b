// What docs/reliability.md promises: a crash or a kill inside an isolated run is recorded in its
// run.json with the stage and plugin (run.isolate); a run killed at any point leaves a complete
// folder or one marked incomplete, and a killed training resumes from its checkpoint; and clear
// words for zero epochs, an empty data set, missing labels, one-category columns and a full disk.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "runfolder/metrics.hpp"
#include "runfolder/records.hpp"
#include "scssl/anndata/anndata.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using scssl::test::repo_file;
using scssl::test::run_command;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A run config over a data file of the repository: PCA unless a method config is included.
std::string write_config(const std::string& name, const std::string& data,
                         const std::string& evaluators, const std::string& method = "pca") {
  const std::string path = scssl::test::temp_dir("cfg-" + name) + "/" + name + ".toml";
  std::ofstream(path) << "[run]\nname = \"" << name << "\"\n"
                      << "[dataset]\nplugin = \"h5ad\"\npath = \"" << repo_file(data) << "\"\n"
                      << "batch_key = \"batch\"\nlabel_key = \"cell_type\"\n"
                      << "[method]\nplugin = \"" << method << "\"\n"
                      << "[evaluation]\nevaluators = " << evaluators << "\n";
  return path;
}

const char* kKang = "tests/data/reference/kang_ctrl_stim.h5ad";

// The one run folder under `out`.
std::string only_folder(const std::string& out) {
  std::vector<std::string> dirs;
  for (const auto& e : fs::directory_iterator(out))
    if (e.is_directory()) dirs.push_back(e.path().string());
  EXPECT_EQ(dirs.size(), 1u) << out;
  return dirs.empty() ? "" : dirs.front();
}

scssl::runfolder::RunRecord record_of(const std::string& dir) {
  return scssl::runfolder::read_run_record(dir + "/run.json");
}

// `scssl-host run ARGS --output OUT` with OUT a new folder, returned in `out`.
scssl::test::CommandResult run_into(const std::string& name, const std::string& args,
                                    std::string& out) {
  out = scssl::test::temp_dir(name);
  return run_command(scssl::test::host_command("run " + args + " --output " + out));
}

// An isolated PCA run on the Kang data scored by one evaluator (fixture plugins included); returns
// the command's result, and its run folder in `dir`.
scssl::test::CommandResult isolated_run(const std::string& name, const std::string& evaluator,
                                        std::string& dir) {
  const std::string out = scssl::test::temp_dir("isolated-" + name);
  const auto r = run_command(scssl::test::host_command(
      "--plugins " + std::string(SCSSL_TEST_FIXTURE_DIR) + " --quiet run " +
      write_config(name, kKang, "[\"" + evaluator + "\"]") + " --set run.isolate=true --output " +
      out));
  dir = only_folder(out);
  return r;
}

// run.json of `dir` says failed, with `error` in its error, in `stage` of `plugin`.
void expect_failure_recorded(const std::string& dir, const std::string& error,
                             const std::string& stage, const std::string& plugin) {
  const auto record = record_of(dir);
  EXPECT_EQ(record.status, scssl::runfolder::RunStatus::failed);
  EXPECT_TRUE(contains(record.error.value_or(""), error)) << record.error.value_or("(no error)");
  EXPECT_EQ(record.stage.value_or(""), stage);
  EXPECT_EQ(record.plugin.value_or(""), plugin);
  EXPECT_FALSE(record.finished.empty());
}

}  // namespace

// ---- run.isolate -------------------------------------------------------------------------------

// c_crash segfaults inside evaluate(); c_killed sends itself SIGKILL, as the out-of-memory killer
// would: the child's crash handler records the first, the parent the second.
TEST(Isolation, ACrashOrAKillInAPluginEndsTheChildAndIsRecorded) {
  struct Case {
    const char* evaluator;
    int signal;
    const char* error;
  };
  for (const Case& c :
       {Case{"c_crash", SIGSEGV,
             "crashed (SIGSEGV, a segmentation fault) inside evaluate() of evaluator plugin "
             "'c_crash'"},
        Case{"c_killed", SIGKILL,
             "the run's process was ended by SIGKILL during stage 'evaluate:c_killed' (evaluator "
             "plugin 'c_killed'); SIGKILL cannot be caught: the kernel's out-of-memory killer "
             "sends it"}}) {
    std::string dir;
    const auto r = isolated_run(c.evaluator, c.evaluator, dir);
    EXPECT_EQ(r.exit_code, 128 + c.signal) << r.output;
    expect_failure_recorded(dir, c.error, std::string("evaluate:") + c.evaluator,
                            std::string("evaluator plugin '") + c.evaluator + "'");
    EXPECT_TRUE(contains(r.output, "recorded in " + dir + "/run.json")) << r.output;
    // What the run wrote before is kept.
    EXPECT_TRUE(fs::exists(dir + "/embedding.h5"));
    EXPECT_TRUE(contains(scssl::test::read_text(dir + "/config.resolved.toml"), "isolate = true"));
  }
}

// HDF5 1.10 crashes on these files (tests/data/corrupt/README.md); the crash is named as HDF5's,
// also where it happens in the C library's memcpy that HDF5 called.
TEST(Isolation, HDF5CrashingOnACorruptFileIsNamedAndRecorded) {
  for (const char* file : {"tests/data/corrupt/hdf5_crash_in_object_header.h5ad",
                           "tests/data/corrupt/hdf5_crash_in_memcpy.h5ad"}) {
    const std::string out = scssl::test::temp_dir("hdf5-crash");
    const auto r = run_command(scssl::test::host_command(
        "--quiet run " + write_config("corrupt", file, "[\"silhouette_label\"]") +
        " --set run.isolate=true --output " + out));
    // An HDF5 release that refuses the file instead ends the run with an error naming it.
    const bool crashed = r.exit_code != 1;
    if (crashed) {
      EXPECT_EQ(r.exit_code, 128 + SIGSEGV) << r.output;
    }
    expect_failure_recorded(only_folder(out),
                            crashed ? "the HDF5 library crashed (SIGSEGV, a segmentation fault) "
                                      "while reading " +
                                          repo_file(file) +
                                          " (HDF5 1.10 has known crashes on corrupt files: the "
                                          "file is probably corrupt) inside load() of dataset "
                                          "plugin 'h5ad'"
                                    : repo_file(file),
                            "load", "dataset plugin 'h5ad'");
  }
}

TEST(Isolation, AnIsolatedRunThatWorksIsLikeAnyOther) {
  std::string dir;
  const auto r = isolated_run("fine", "silhouette_label", dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "run folder: " + dir)) << r.output;
  const auto record = record_of(dir);
  EXPECT_EQ(record.status, scssl::runfolder::RunStatus::ok);
  EXPECT_FALSE(record.stage.has_value());  // only a run under way or a failed one names a stage
  EXPECT_FALSE(scssl::runfolder::read_metrics_json(dir + "/metrics.json").empty());
}

// ---- killed at random points -------------------------------------------------------------------

namespace {

// scssl-host run of VICReg on the bundled Kang data into exactly `dir`, as a child process whose
// output is discarded; returns its pid.
pid_t start_run(const std::string& dir, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> words = {SCSSL_TEST_HOST,
                                    "--plugins",
                                    SCSSL_TEST_PLUGIN_DIR,
                                    "--quiet",
                                    "run",
                                    repo_file("configs/methods/vicreg.toml"),
                                    "--run-dir",
                                    dir,
                                    "--set",
                                    "train.epochs=4",
                                    "--set",
                                    "train.checkpoint_every=1",
                                    "--set",
                                    "run.threads=1",
                                    "--set",
                                    "evaluation.query_batches=[]",
                                    "--set",
                                    "evaluation.evaluators=[\"silhouette_label\",\"ilisi\"]"};
  words.insert(words.end(), extra.begin(), extra.end());
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (auto& w : words) argv.push_back(w.data());
    argv.push_back(nullptr);
    if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

int wait_for(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

// Every result file a folder holds is whole; the folder is complete exactly when run.json says
// ok, and then every result is there. Returns run.json's status ("none" without one).
std::string check_folder(const std::string& dir) {
  if (!fs::exists(dir)) return "none";
  const bool ok = fs::exists(dir + "/run.json") &&
                  record_of(dir).status == scssl::runfolder::RunStatus::ok;  // throws if cut off
  const std::string copy = dir + "/kang2018_pbmc_ctrl_stim_4samples.h5ad";
  if (ok) {
    for (const char* f : {"/metrics.json", "/metrics.csv", "/embedding.h5", "/history.csv"})
      EXPECT_TRUE(fs::exists(dir + f)) << dir << f;
  }
  if (fs::exists(dir + "/metrics.json")) {
    EXPECT_FALSE(scssl::runfolder::read_metrics_json(dir + "/metrics.json").empty());
  }
  if (fs::exists(dir + "/metrics.csv")) {
    EXPECT_FALSE(scssl::runfolder::read_metrics_csv(dir + "/metrics.csv").empty());
  }
  if (fs::exists(dir + "/embedding.h5")) {
    EXPECT_EQ(scssl::anndata::read_embedding_h5(dir + "/embedding.h5").rows, 1556);
  }
  if (fs::exists(copy)) {
    EXPECT_EQ(scssl::anndata::read_obsm(copy, "X_vicreg").rows, 1556);
  }
  if (!fs::exists(dir + "/run.json")) return "none";
  return scssl::runfolder::status_name(record_of(dir).status);
}

}  // namespace

TEST(KilledRuns, LeaveACompleteOrAMarkedFolderAndTrainingResumes) {
  const std::string out = scssl::test::temp_dir("killed");
  // The uninterrupted run: how long a run takes, and the embedding a resumed one must give.
  const auto t0 = std::chrono::steady_clock::now();
  const std::string whole = out + "/whole";
  ASSERT_EQ(wait_for(start_run(whole)), 0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(check_folder(whole), "ok");
  const torch::Tensor expected = scssl::test::run_embedding(whole);

  auto resume_and_compare = [&](const std::string& killed) {
    const std::string resumed = killed + "-resumed";
    ASSERT_EQ(wait_for(start_run(resumed, {"--set", "train.resume_from=" + killed + "/checkpoints"})),
              0);
    EXPECT_EQ(check_folder(resumed), "ok");
    EXPECT_TRUE(scssl::test::run_embedding(resumed).allclose(expected, 0, 1e-6)) << killed;
  };

  // Killed at random moments of a whole run (several seeds).
  int resumed = 0;
  for (unsigned seed : {1u, 2u, 3u, 4u, 5u}) {
    std::mt19937 rng(seed);
    const auto delay = std::chrono::duration<double>(
        std::uniform_real_distribution<double>(0.0, seconds)(rng));
    const std::string dir = out + "/seed" + std::to_string(seed);
    const pid_t pid = start_run(dir);
    std::this_thread::sleep_for(delay);
    kill(pid, SIGKILL);
    wait_for(pid);
    const std::string status = check_folder(dir);
    SCOPED_TRACE("seed " + std::to_string(seed) + " killed after " +
                 std::to_string(delay.count()) + " s: run.json " + status);
    EXPECT_TRUE(status == "none" || status == "running" || status == "ok") << status;
    if (status == "running" && fs::exists(dir + "/checkpoints/checkpoint.pt")) {
      resume_and_compare(dir);
      ++resumed;
    }
  }
  // And once certainly during training, right after the first checkpoint.
  const std::string dir = out + "/after-checkpoint";
  const pid_t pid = start_run(dir);
  while (!fs::exists(dir + "/checkpoints/checkpoint.pt") && waitpid(pid, nullptr, WNOHANG) == 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGKILL);
  wait_for(pid);
  EXPECT_EQ(check_folder(dir), "running");
  EXPECT_EQ(record_of(dir).stage.value_or(""), "fit");
  resume_and_compare(dir);
  std::cout << "killed runs resumed at random points: " << resumed << "\n";
}

// ---- clear words -------------------------------------------------------------------------------

TEST(Words, ZeroEpochsIsSaid) {
  std::string out;
  const auto r = run_into("zero-epochs",
                          repo_file("configs/methods/vicreg.toml") +
                              " --set train.epochs=0 --set evaluation.evaluators=[] "
                              "--set evaluation.query_batches=[]",
                          out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "train.epochs is 0: method 'vicreg' runs no training epoch, so "
                                 "a method that learns its embedding embeds with its untrained, "
                                 "randomly initialised weights"))
      << r.output;
}

TEST(Words, AnEmptyDataSetHasNoCells) {
  const std::string data = "tests/data/degenerate/no_cells.h5ad";
  std::string out;
  const auto r = run_into("empty", write_config("empty", data, "[\"silhouette_label\"]"), out);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "dataset plugin 'h5ad' (" + repo_file(data) +
                                     "): the data set has no cells"))
      << r.output;
  EXPECT_EQ(record_of(only_folder(out)).stage.value_or(""), "load");
}

TEST(Words, MissingLabelsAreCountedAndTheirTreatmentSaid) {
  std::string out;
  const auto r = run_into("missing-labels",
                          write_config("missing", "tests/data/degenerate/missing_labels.h5ad",
                                       "[\"silhouette_label\", \"ilisi\"]"),
                          out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "30 of 240 cells have no label (obs column 'cell_type'): they "
                                 "are trained on and embedded like every cell, and the evaluators "
                                 "that use labels (silhouette_label) leave them out of the scores"))
      << r.output;
  // The log of the run folder keeps it.
  EXPECT_TRUE(contains(scssl::test::read_text(only_folder(out) + "/run.log"), "30 of 240 cells"));
}

TEST(Words, AColumnWithOneCategoryIsSaid) {
  const std::string scib = "[\"silhouette_label\", \"ilisi\", \"pcr_comparison\"]";
  for (const auto& [name, words] : std::vector<std::pair<std::string, std::string>>{
           {"one_batch",
            "obs column 'batch' (the batches) has one category, 'ctrl101': there is no batch "
            "effect to correct"},
           {"one_label",
            "obs column 'cell_type' (the labels) has one category, 'CD4 T': the "
            "bio-conservation metrics have no cell types to tell apart"}}) {
    std::string out;
    const auto r = run_into(
        name, write_config(name, "tests/data/degenerate/" + name + ".h5ad", scib), out);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(contains(r.output, words)) << r.output;
  }
}

// A file-size limit stands in for a full disk: writes fail with EFBIG as they would with ENOSPC.
TEST(Words, AFullDiskIsSaidAndNoHalfFileIsLeft) {
  const std::string out = scssl::test::temp_dir("disk-full");
  const std::string sentinel = out + "/earlier-results.txt";
  std::ofstream(sentinel) << "keep me\n";
  const auto r = run_command(
      "bash -c \"trap '' XFSZ; ulimit -f 64; exec " +
      scssl::test::host_command("--quiet run " +
                                write_config("full", kKang, "[\"silhouette_label\"]") +
                                " --output " + out) +
      "\"");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "the disk is full or a file-size limit was reached")) << r.output;
  std::string dir;
  for (const auto& e : fs::directory_iterator(out))
    if (e.is_directory()) dir = e.path().string();
  ASSERT_FALSE(dir.empty());
  EXPECT_EQ(record_of(dir).status, scssl::runfolder::RunStatus::failed);
  // The file that did not fit is not there under its name, nor is its temporary.
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    EXPECT_FALSE(name.find(".tmp-") != std::string::npos) << name;
    if (name == "embedding.h5") {
      EXPECT_NO_THROW(scssl::anndata::read_embedding_h5(e.path().string()));
    }
  }
  EXPECT_EQ(scssl::test::read_text(sentinel), "keep me\n");
}
