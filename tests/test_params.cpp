#include <gtest/gtest.h>

#include "scssl/params.hpp"

using namespace scssl;

namespace {
const scssl_param_spec kSpecs[] = {
    {"k", SCSSL_PARAM_INT, "11", "neighbours"},
    {"rate", SCSSL_PARAM_FLOAT, "0.5", "a rate"},
    {"on", SCSSL_PARAM_BOOL, "true", "a switch"},
    {"key", SCSSL_PARAM_STRING, "cell_type", "a column"},
    {"batches", SCSSL_PARAM_STRING_LIST, "a, b,c", "a list"},
};
}

TEST(Params, DefaultsParseWithTheirTypes) {
  ParamSet p = ParamSet::defaults(kSpecs, 5, "test plugin");
  EXPECT_EQ(p.get_int("k"), 11);
  EXPECT_DOUBLE_EQ(p.get_float("rate"), 0.5);
  EXPECT_TRUE(p.get_bool("on"));
  EXPECT_EQ(p.get_string("key"), "cell_type");
  EXPECT_EQ(p.get_list("batches"), (StringList{"a", "b", "c"}));
}

TEST(Params, IntegerIsAcceptedForAFloatParameter) {
  ParamSet p = ParamSet::defaults(kSpecs, 5, "test plugin");
  p.set("rate", int64_t{2});
  EXPECT_DOUBLE_EQ(p.get_float("rate"), 2.0);
}

TEST(Params, WrongTypeNamesParameterAndBothTypes) {
  ParamSet p = ParamSet::defaults(kSpecs, 5, "test plugin");
  try {
    p.set("k", std::string("eleven"));
    FAIL() << "a string was accepted for an int parameter";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'k'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("must be an int"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("string"), std::string::npos) << e.what();
  }
}

TEST(Params, UnknownParameterListsTheKnownOnes) {
  ParamSet p = ParamSet::defaults(kSpecs, 5, "test plugin");
  try {
    p.set("kk", int64_t{3});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown parameter 'kk' for test plugin"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("known: batches, k, key, on, rate"), std::string::npos)
        << e.what();
  }
}

TEST(Params, MalformedDefaultIsRefused) {
  const scssl_param_spec bad[] = {{"k", SCSSL_PARAM_INT, "1.5", ""}};
  EXPECT_THROW(ParamSet::defaults(bad, 1, "bad plugin"), InvalidArgument);
  const scssl_param_spec twice[] = {{"k", SCSSL_PARAM_INT, "1", ""}, {"k", SCSSL_PARAM_INT, "2", ""}};
  EXPECT_THROW(ParamSet::defaults(twice, 2, "bad plugin"), InvalidArgument);
}

TEST(Params, CViewRoundTrips) {
  ParamSet p = ParamSet::defaults(kSpecs, 5, "test plugin");
  p.set("batches", StringList{"x", "y"});
  ParamSet back = ParamSet::from_c(p.c_view());
  EXPECT_EQ(back.values(), p.values());
}

TEST(Params, FloatsAreFormattedShortestFirst) {
  EXPECT_EQ(format_param(0.1), "0.1");
  EXPECT_EQ(format_param(1e4), "10000");
  EXPECT_EQ(format_param(StringList{"a", "b"}), "a,b");
  EXPECT_EQ(std::get<double>(parse_param_text(SCSSL_PARAM_FLOAT, "1e-4", "x")), 1e-4);
}
