// Parameter schemas (ABI 2): parsing, constraints, the checks the host runs on a plugin's schema,
// the C view, and the plugin note's text form.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "scssl/params.hpp"
#include "scssl/plugin_meta.hpp"

using namespace scssl;

namespace {

const std::vector<ParamSpec> kSpecs = {
    ParamSpec("k", SCSSL_PARAM_INT, "11", "neighbours").at_least(1),
    ParamSpec("rate", SCSSL_PARAM_FLOAT, "0.5", "a rate").above(0).below(1),
    {"on", SCSSL_PARAM_BOOL, "true", "a switch"},
    ParamSpec("key", SCSSL_PARAM_STRING, "cell_type", "a column").nonempty(),
    {"batches", SCSSL_PARAM_STRING_LIST, "a, b,c", "a list"},
    ParamSpec("mode", SCSSL_PARAM_STRING, "zero", "a choice").one_of({"zero", "keep"}),
    ParamSpec("resolutions", SCSSL_PARAM_FLOAT_LIST, "0.1, 0.5,1", "a float list").above(0),
};

ParamSet defaults() { return ParamSet::defaults(kSpecs, "test plugin"); }

std::vector<ParamRule> rules(const std::vector<ParamSpec>& specs) {
  std::vector<ParamRule> out;
  for (const auto& s : specs) out.push_back(rule_from_c(s.c_spec()));
  return out;
}

std::string refusal(ParamSet& p, const std::string& name, ParamValue value) {
  try {
    p.set(name, std::move(value));
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Params, DefaultsParseWithTheirTypes) {
  ParamSet p = defaults();
  EXPECT_EQ(p.get_int("k"), 11);
  EXPECT_DOUBLE_EQ(p.get_float("rate"), 0.5);
  EXPECT_TRUE(p.get_bool("on"));
  EXPECT_EQ(p.get_string("key"), "cell_type");
  EXPECT_EQ(p.get_list("batches"), (StringList{"a", "b", "c"}));
  EXPECT_EQ(p.get_float_list("resolutions"), (FloatList{0.1, 0.5, 1.0}));
}

TEST(Params, NumbersAreAcceptedWhereTheyLoseNothing) {
  ParamSet p = defaults();
  // An integer for a float parameter is that float, bounds included.
  EXPECT_EQ(refusal(p, "rate", int64_t{0}), refusal(p, "rate", 0.0));
  EXPECT_NE(refusal(p, "rate", int64_t{0}), "");
  p.set("resolutions", 2.0);  // one number is a one-item list
  EXPECT_EQ(p.get_float_list("resolutions"), (FloatList{2.0}));
  p.set("resolutions", int64_t{3});
  EXPECT_EQ(p.get_float_list("resolutions"), (FloatList{3.0}));
}

TEST(Params, WrongTypeNamesParameterAndBothTypes) {
  ParamSet p = defaults();
  const std::string e = refusal(p, "k", std::string("eleven"));
  EXPECT_NE(e.find("parameter 'k' of test plugin must be an int, got a string (eleven)"),
            std::string::npos)
      << e;
}

TEST(Params, BoundsChoicesAndEmptinessAreChecked) {
  ParamSet p = defaults();
  EXPECT_EQ(refusal(p, "k", int64_t{0}), "parameter 'k' of test plugin must be at least 1, got 0");
  EXPECT_EQ(refusal(p, "k", int64_t{1}), "");
  EXPECT_EQ(refusal(p, "rate", 1.0), "parameter 'rate' of test plugin must be in (0, 1), got 1");
  EXPECT_EQ(refusal(p, "rate", 0.0), "parameter 'rate' of test plugin must be in (0, 1), got 0");
  EXPECT_EQ(refusal(p, "mode", std::string("fancy")),
            "parameter 'mode' of test plugin must be one of {zero, keep}, got \"fancy\"");
  EXPECT_EQ(refusal(p, "key", std::string()),
            "parameter 'key' of test plugin must be non-empty, got \"\"");
  EXPECT_EQ(refusal(p, "resolutions", FloatList{0.5, -1.0}),
            "parameter 'resolutions' of test plugin must be above 0, got -1");
  EXPECT_EQ(
      refusal(p, "resolutions", FloatList{std::numeric_limits<double>::infinity()}),
      "parameter 'resolutions' of test plugin must be above 0, got inf (not a finite number)");
  EXPECT_EQ(p.get_int("k"), 1);  // refused values leave the last good one
}

TEST(Params, UnknownParameterListsTheKnownOnes) {
  ParamSet p = defaults();
  const std::string e = refusal(p, "kk", int64_t{3});
  EXPECT_NE(e.find("unknown parameter 'kk' for test plugin"), std::string::npos) << e;
  EXPECT_NE(e.find("known: batches, k, key, mode, on, rate, resolutions"), std::string::npos) << e;
}

TEST(Params, RequiredParametersMustBeSet) {
  const std::vector<ParamSpec> specs = {
      ParamSpec("path", SCSSL_PARAM_STRING, "", "the file").required().nonempty()};
  EXPECT_EQ(schema_problem(rules(specs)), "");  // a required parameter's default is never used
  ParamSet p = ParamSet::defaults(specs, "reader");
  try {
    p.check_required();
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()), "parameter 'path' of reader is required (the file)");
  }
  p.set("path", std::string("x.h5ad"));
  EXPECT_NO_THROW(p.check_required());
}

TEST(Params, MalformedSchemasAreNamed) {
  auto problem = [](std::vector<ParamSpec> specs) { return schema_problem(rules(specs)); };
  EXPECT_EQ(problem(kSpecs), "");
  EXPECT_NE(problem({{"k", SCSSL_PARAM_INT, "1.5", ""}}).find("its default breaks its own schema"),
            std::string::npos);
  EXPECT_EQ(problem({{"k", SCSSL_PARAM_INT, "1", ""}, {"k", SCSSL_PARAM_INT, "2", ""}}),
            "parameter 'k' is declared twice");
  EXPECT_EQ(problem({ParamSpec("k", SCSSL_PARAM_INT, "1", "").at_least(2).at_most(1)}),
            "parameter 'k' has a minimum (2) above its maximum (1)");
  EXPECT_NE(problem({ParamSpec("k", SCSSL_PARAM_INT, "0", "").at_least(1)})
                .find("must be at least 1, got 0"),
            std::string::npos);
  EXPECT_EQ(problem({ParamSpec("s", SCSSL_PARAM_STRING, "a", "").at_least(1)}),
            "parameter 's' is a string but has numeric bounds");
  EXPECT_EQ(problem({ParamSpec("n", SCSSL_PARAM_INT, "1", "").one_of({"a"})}),
            "parameter 'n' is an int but lists allowed choices");
  EXPECT_NE(problem({{"Bad", SCSSL_PARAM_INT, "1", ""}}).find("not made of lower-case"),
            std::string::npos);
  EXPECT_EQ(problem({{"t", static_cast<scssl_param_type>(9), "1", ""}}),
            "parameter 't' has unknown type 9");
}

TEST(Params, CViewRoundTrips) {
  ParamSet p = defaults();
  p.set("batches", StringList{"x", "y"});
  p.set("resolutions", FloatList{0.25, 4.0});
  ParamSet back = ParamSet::from_c(p.c_view());
  EXPECT_EQ(back.values(), p.values());
}

TEST(Params, FloatsAreFormattedShortestFirst) {
  EXPECT_EQ(format_param(0.1), "0.1");
  EXPECT_EQ(format_param(1e4), "10000");
  EXPECT_EQ(format_param(StringList{"a", "b"}), "a,b");
  EXPECT_EQ(format_param(FloatList{0.1, 2}), "0.1,2");
  EXPECT_EQ(std::get<double>(parse_param_text(SCSSL_PARAM_FLOAT, "1e-4", "x")), 1e-4);
}

// The plugin note carries the whole description; reading it back gives the same description.
TEST(PluginNote, TextRoundTripsEveryField) {
  PluginMeta m;
  m.abi_version = SCSSL_ABI_VERSION;
  m.abi_minor = SCSSL_ABI_MINOR;
  m.kind = SCSSL_KIND_EVALUATOR;
  m.name = "my_metric";
  m.version = "1.2.0";
  m.summary = "tabs\tand\nnewlines and \\ backslashes survive";
  m.torch_version = "1.13.0";
  m.cxx_stdlib = "libstdc++ cxx11-abi";
  m.compiler = "gcc 12.2.0";
  m.requirements = SCSSL_NEEDS_LABELS | SCSSL_NEEDS_UNINTEGRATED;
  m.params = rules(kSpecs);
  m.metrics = {{"score", SCSSL_GROUP_BIO, true, "a score"}, {"loss", SCSSL_GROUP_OTHER, false, ""}};
  m.info_size = sizeof(scssl_plugin_info);
  m.table_size = sizeof(scssl_evaluator_table);
  m.param_spec_size = sizeof(scssl_param_spec);
  m.metric_spec_size = sizeof(scssl_metric_spec);
  const std::string note = meta_to_note(m);
  EXPECT_EQ(meta_to_note(meta_from_note(note)), note);
  const PluginMeta back = meta_from_note(note);
  EXPECT_EQ(back.summary, m.summary);
  EXPECT_EQ(back.params.size(), kSpecs.size());
  EXPECT_EQ(back.params[5].choices, (StringList{"zero", "keep"}));
  EXPECT_EQ(back.params[1].maximum, 1.0);
  EXPECT_EQ(meta_problem(back, {"1.13.0", "libstdc++ cxx11-abi", "gcc 12.2.0"}), "");
}

TEST(PluginNote, UnreadableNotesNameTheLine) {
  auto why = [](const std::string& text) {
    try {
      meta_from_note(text);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(why(""), "it is empty");
  EXPECT_EQ(why("hello\n"), "line 1 is not the header 'scssl-plugin-note 1'");
  EXPECT_EQ(why("scssl-plugin-note 1\nabi 2.x\n"), "line 2 has 'x' where a number belongs");
  EXPECT_EQ(why("scssl-plugin-note 1\nabi 2.0\ncolour blue\n"),
            "line 3 has the unknown key 'colour'");
  EXPECT_EQ(why("scssl-plugin-note 1\nabi 2.0\nparam k\t2\n"),
            "line 3 does not hold the 8 columns of a parameter");
}
