// The checkpoint reader (docs/method-spec.md §21): files written by PyTorch itself
// (tests/data/tensor_files, tools/fixtures/make_tensor_file_fixtures.py) read to the exact values
// PyTorch had, hostile and broken files refused with one BadData naming the fault, and
// load_tensors with its name map.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "scssl/params.hpp"
#include "scssl/tensor_file.hpp"

using namespace scssl;

namespace {

std::string fixture(const std::string& name) {
  return std::string(SCSSL_SOURCE_DIR) + "/tests/data/tensor_files/" + name;
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

TensorFile read_bytes(const std::string& bytes, const std::string& name = "mem.pt") {
  return read_tensor_file(bytes.data(), bytes.size(), name);
}

// The message of the BadData that `f` throws; a test failure if it throws nothing or another type.
std::string bad_data(const std::function<void()>& f) {
  try {
    f();
  } catch (const BadData& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a BadData: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no error";
  return "";
}
std::string bad_bytes(const std::string& bytes, const std::string& name = "mem.pt") {
  return bad_data([&] { read_bytes(bytes, name); });
}

#define EXPECT_HAS(text, part)                                       \
  do {                                                               \
    const std::string has_text_ = (text);                            \
    EXPECT_NE(has_text_.find(part), std::string::npos) << has_text_; \
  } while (0)

// ---------------------------------------------------------------------------------------------
// Building zips and pickles by hand.

std::string le(uint64_t v, int bytes) {
  std::string s(static_cast<std::size_t>(bytes), '\0');
  for (int i = 0; i < bytes; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>(v >> (8 * i));
  return s;
}

uint32_t crc32(const std::string& data) {
  uint32_t crc = 0xFFFFFFFF;
  for (const char c : data) {
    crc ^= static_cast<unsigned char>(c);
    for (int k = 0; k < 8; ++k) crc = crc & 1 ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
  }
  return ~crc;
}

// A zip of stored (method 0) entries, or entries marked with another method.
std::string make_zip(const std::vector<std::pair<std::string, std::string>>& entries,
                     uint16_t method = 0) {
  std::string out, central;
  for (const auto& [name, data] : entries) {
    const std::string common = le(method, 2) + le(0, 4) + le(crc32(data), 4) + le(data.size(), 4) +
                               le(data.size(), 4) + le(name.size(), 2) + le(0, 2);
    // Then comment length, disk, internal and external attributes.
    central += le(0x02014b50, 4) + le(20, 2) + le(20, 2) + le(0, 2) + common + le(0, 10) +
               le(out.size(), 4) + name;
    out += le(0x04034b50, 4) + le(20, 2) + le(0, 2) + common + name + data;
  }
  const std::size_t cd_offset = out.size();
  out += central;
  out += le(0x06054b50, 4) + le(0, 4) + le(entries.size(), 2) + le(entries.size(), 2) +
         le(central.size(), 4) + le(cd_offset, 4) + le(0, 2);
  return out;
}

std::string floats(const std::vector<float>& values) {
  std::string s(values.size() * 4, '\0');
  std::memcpy(s.data(), values.data(), s.size());
  return s;
}

// Pickle pieces (protocol 2).
const std::string kProto = "\x80\x02";
std::string text(const std::string& s) { return "X" + le(s.size(), 4) + s; }
std::string integer(int64_t v) {
  if (v >= 0 && v < 256) return "K" + le(static_cast<uint64_t>(v), 1);
  return "\x8a\x08" + le(static_cast<uint64_t>(v), 8);  // LONG1
}
std::string global(const std::string& module, const std::string& name) {
  return "c" + module + "\n" + name + "\n";
}
std::string int_tuple(const std::vector<int64_t>& values) {
  std::string s = "(";
  for (const int64_t v : values) s += integer(v);
  return s + "t";
}
// torch._utils._rebuild_tensor_v2(storage, offset, shape, strides, False, OrderedDict()).
std::string tensor_call(const std::string& key, int64_t numel, int64_t offset,
                        const std::vector<int64_t>& shape, const std::vector<int64_t>& strides,
                        const std::string& type = "FloatStorage") {
  return global("torch._utils", "_rebuild_tensor_v2") + "((" + text("storage") +
         global("torch", type) + text(key) + text("cpu") + integer(numel) + "tQ" + integer(offset) +
         int_tuple(shape) + int_tuple(strides) + "\x89" + global("collections", "OrderedDict") +
         ")Rt" + "R";
}
// {name: value} as the whole pickle.
std::string dict_pickle(const std::string& name, const std::string& value) {
  return kProto + "}" + text(name) + value + "s.";
}
// An archive around a pickle, with storage "0" holding six floats 0..5.
std::string archive(const std::string& pickle,
                    std::vector<std::pair<std::string, std::string>> extra = {}) {
  std::vector<std::pair<std::string, std::string>> entries = {
      {"archive/data.pkl", pickle}, {"archive/data/0", floats({0, 1, 2, 3, 4, 5})}};
  entries.insert(entries.end(), extra.begin(), extra.end());
  return make_zip(entries);
}

// ---------------------------------------------------------------------------------------------
// expected.txt: what PyTorch had in each accepted fixture.

struct ExpectedTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::vector<std::string> values;
};
struct ExpectedFile {
  std::vector<ExpectedTensor> tensors;
  std::vector<std::string> skipped;
};

std::vector<std::string> split(const std::string& line, char by) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = line.find(by, start);
    parts.push_back(line.substr(start, end - start));
    if (end == std::string::npos) return parts;
    start = end + 1;
  }
}

std::map<std::string, ExpectedFile> expected_files() {
  std::map<std::string, ExpectedFile> files;
  std::ifstream in(fixture("expected.txt"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const std::vector<std::string> f = split(line, '\t');
    if (f[0] == "skipped") {
      files[f[1]].skipped.push_back(f[2]);
      continue;
    }
    ExpectedTensor t{f[2], f[3], {}, {}};
    if (!f[4].empty())
      for (const std::string& n : split(f[4], ',')) t.shape.push_back(std::stoll(n));
    if (!f[5].empty()) t.values = split(f[5], ' ');
    files[f[1]].tensors.push_back(t);
  }
  return files;
}

std::string dtype_name(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat32:
      return "float32";
    case torch::kInt64:
      return "int64";
    case torch::kInt32:
      return "int32";
    case torch::kInt16:
      return "int16";
    case torch::kInt8:
      return "int8";
    case torch::kUInt8:
      return "uint8";
    case torch::kBool:
      return "bool";
    default:
      return "other";
  }
}

void expect_values(const ExpectedTensor& want, const torch::Tensor& got) {
  ASSERT_EQ(dtype_name(got.scalar_type()), want.dtype);
  ASSERT_EQ(got.sizes().vec(), want.shape);
  ASSERT_TRUE(got.is_contiguous());
  ASSERT_EQ(static_cast<std::size_t>(got.numel()), want.values.size());
  for (std::size_t i = 0; i < want.values.size(); ++i) {
    if (want.dtype == "float32") {
      // Exact: the same bits (-0.0 and infinities included).
      const float expected = static_cast<float>(std::strtod(want.values[i].c_str(), nullptr));
      const float value = got.data_ptr<float>()[i];
      uint32_t a = 0, b = 0;
      std::memcpy(&a, &expected, 4);
      std::memcpy(&b, &value, 4);
      EXPECT_EQ(a, b) << want.name << "[" << i << "]: " << value << " vs " << want.values[i];
    } else {
      const torch::Tensor as_long = got.to(torch::kInt64).contiguous();
      EXPECT_EQ(as_long.data_ptr<int64_t>()[i], std::stoll(want.values[i]))
          << want.name << "[" << i << "]";
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Files PyTorch wrote: every tensor, dtype, shape and value, and every skipped entry, in order.

TEST(TensorFile, ReadsEveryFixtureAsPyTorchWroteIt) {
  const auto files = expected_files();
  ASSERT_GE(files.size(), 11u);
  for (const auto& [name, want] : files) {
    SCOPED_TRACE(name);
    const TensorFile file = read_tensor_file(fixture(name));
    EXPECT_EQ(file.path, fixture(name));
    ASSERT_EQ(file.tensors.size(), want.tensors.size());
    for (std::size_t i = 0; i < want.tensors.size(); ++i) {
      EXPECT_EQ(file.tensors[i].first, want.tensors[i].name);
      expect_values(want.tensors[i], file.tensors[i].second);
    }
    EXPECT_EQ(file.skipped, want.skipped);
  }
}

TEST(TensorFile, StateDictWithBatchNorm) {
  const TensorFile file = read_tensor_file(fixture("state_dict.pt"));
  std::vector<std::string> names;
  for (const auto& entry : file.tensors) names.push_back(entry.first);
  EXPECT_EQ(names, (std::vector<std::string>{"encoder.weight", "encoder.bias", "norm.weight",
                                             "norm.bias", "norm.running_mean", "norm.running_var",
                                             "norm.num_batches_tracked"}));
  // The OrderedDict's BUILD with _metadata is accepted and listed as skipped.
  EXPECT_EQ(file.skipped, std::vector<std::string>{"_metadata"});
  const torch::Tensor* tracked = file.find("norm.num_batches_tracked");
  ASSERT_NE(tracked, nullptr);
  EXPECT_EQ(tracked->scalar_type(), torch::kInt64);
  EXPECT_EQ(tracked->item<int64_t>(), 1);
  EXPECT_EQ(file.find("norm.nothing"), nullptr);
}

TEST(TensorFile, FloatTypesBecomeFloat32IntegersStay) {
  const TensorFile file = read_tensor_file(fixture("dtypes.pt"));
  for (const char* name : {"f16", "bf16", "f64"})
    EXPECT_EQ(file.find(name)->scalar_type(), torch::kFloat32);
  EXPECT_EQ(file.find("i64")->scalar_type(), torch::kInt64);
  EXPECT_EQ(file.find("i64")->data_ptr<int64_t>()[2], (int64_t{1} << 62) + 5);
  EXPECT_EQ(file.find("u8")->scalar_type(), torch::kUInt8);
  EXPECT_EQ(file.find("bool")->scalar_type(), torch::kBool);
  EXPECT_TRUE(torch::equal(*file.find("bool"), torch::eye(2).to(torch::kBool)));
  EXPECT_EQ(file.find("f16")->data_ptr<float>()[1], -0.333251953125f);
  EXPECT_TRUE(std::isinf(file.find("f16")->data_ptr<float>()[5]));
  EXPECT_EQ(file.find("bf16")->data_ptr<float>()[1], 3.140625f);
  EXPECT_EQ(file.find("f64")->data_ptr<float>()[0], 0.1f);
}

TEST(TensorFile, ViewsOfASharedStorageAreHonouredAndOwned) {
  const TensorFile file = read_tensor_file(fixture("views.pt"));
  const torch::Tensor base = torch::arange(24, torch::kFloat32) * 0.5;
  EXPECT_TRUE(torch::equal(*file.find("base"), base));
  EXPECT_TRUE(torch::equal(*file.find("slice"), base.slice(0, 5, 11)));
  const torch::Tensor matrix = base.slice(0, 4, 16).view({3, 4});
  EXPECT_TRUE(torch::equal(*file.find("matrix"), matrix));
  const torch::Tensor& transposed = *file.find("transposed");
  EXPECT_TRUE(transposed.is_contiguous());
  EXPECT_EQ(transposed.sizes().vec(), (std::vector<int64_t>{4, 3}));
  EXPECT_TRUE(torch::equal(transposed, matrix.t()));
  EXPECT_TRUE(torch::equal(*file.find("strided"), base.slice(0, 1, 24, 3)));
  EXPECT_TRUE(torch::equal(*file.find("expanded"), torch::full({2, 3}, 7.25f)));
  EXPECT_TRUE(torch::equal(*file.find("half_transposed"),
                           (torch::arange(6, torch::kFloat32).view({2, 3}) / 4).t()));
  // Every tensor has memory of its own: writing one leaves the others as they were.
  file.find("base")->fill_(-1);
  EXPECT_TRUE(torch::equal(*file.find("slice"), base.slice(0, 5, 11)));
}

TEST(TensorFile, ParametersSavedDirectly) {
  const TensorFile file = read_tensor_file(fixture("parameters.pt"));
  EXPECT_TRUE(
      torch::equal(*file.find("p"), torch::tensor({1.5f, -2.0f, 0.25f, 3.0f}).view({2, 2})));
  EXPECT_FALSE(file.find("p")->requires_grad());
  EXPECT_TRUE(torch::equal(*file.find("frozen"), torch::tensor({4.0f})));
  // torch.save(parameter): one tensor with the empty name.
  const TensorFile lone = read_tensor_file(fixture("lone_parameter.pt"));
  ASSERT_EQ(lone.tensors.size(), 1u);
  EXPECT_EQ(lone.tensors[0].first, "");
  EXPECT_TRUE(torch::equal(lone.tensors[0].second, torch::tensor({{0.5f, -1.0f, 2.0f}})));
}

TEST(TensorFile, NestedCheckpointWithOptimizerState) {
  const TensorFile file = read_tensor_file(fixture("scbert_like.pt"));
  for (const char* name :
       {"model_state_dict.to_out.weight", "model_state_dict.to_out.bias",
        "optimizer_state_dict.state.0.step", "optimizer_state_dict.state.0.exp_avg",
        "optimizer_state_dict.state.1.exp_avg_sq"})
    EXPECT_NE(file.find(name), nullptr) << name;
  const torch::Tensor& step = *file.find("model_state_dict.step");
  EXPECT_EQ(step.dim(), 0);
  EXPECT_EQ(step.scalar_type(), torch::kInt64);
  EXPECT_EQ(step.item<int64_t>(), 7);
  EXPECT_TRUE(
      torch::equal(*file.find("model_state_dict.pos_scale"), torch::tensor({0.1f, 0.2f, 0.3f})));
  EXPECT_EQ(file.find("optimizer_state_dict.state.0.exp_avg")->sizes().vec(),
            (std::vector<int64_t>{2, 3}));
  for (const char* name :
       {"epoch", "losses", "model_state_dict._metadata", "optimizer_state_dict.param_groups.0.lr",
        "optimizer_state_dict.param_groups.0.betas", "optimizer_state_dict.param_groups.0.params"})
    EXPECT_NE(std::find(file.skipped.begin(), file.skipped.end(), name), file.skipped.end())
        << name;
}

TEST(TensorFile, SafetensorsWithMetadata) {
  const TensorFile file = read_tensor_file(fixture("mixed.safetensors"));
  EXPECT_EQ(file.skipped, std::vector<std::string>{"__metadata__"});
  EXPECT_TRUE(torch::equal(*file.find("half"), torch::tensor({{0.5f, -1.25f}, {3.0f, 1024.0f}})));
  EXPECT_TRUE(torch::equal(*file.find("brain"), torch::tensor({1.0f, -2.5f, 0.0078125f})));
  EXPECT_EQ(file.find("ids")->data_ptr<int64_t>()[0], int64_t{1} << 40);
  EXPECT_EQ(file.find("mask")->scalar_type(), torch::kBool);
  EXPECT_EQ(file.find("empty")->sizes().vec(), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(file.find("scalar")->dim(), 0);
}

TEST(TensorFile, ReadsFromMemoryTheSameAsFromTheFile) {
  const std::string bytes = file_bytes(fixture("scbert_like.pt"));
  const TensorFile a = read_bytes(bytes, "in memory");
  const TensorFile b = read_tensor_file(fixture("scbert_like.pt"));
  EXPECT_EQ(a.path, "in memory");
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (std::size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_EQ(a.tensors[i].first, b.tensors[i].first);
    EXPECT_TRUE(torch::equal(a.tensors[i].second, b.tensors[i].second));
  }
  EXPECT_EQ(a.skipped, b.skipped);
  // At an odd address (storages no longer aligned): the same values.
  const std::string shifted = "x" + bytes;
  const TensorFile c = read_tensor_file(shifted.data() + 1, bytes.size(), "shifted");
  for (std::size_t i = 0; i < a.tensors.size(); ++i)
    EXPECT_TRUE(torch::equal(a.tensors[i].second, c.tensors[i].second));
}

TEST(TensorFile, HandMadeArchiveOfOneTensor) {
  // The test's own zip and pickle writers, checked once on a good file.
  const TensorFile file =
      read_bytes(archive(dict_pickle("w", tensor_call("0", 6, 1, {2, 2}, {1, 2}))));
  ASSERT_EQ(file.tensors.size(), 1u);
  EXPECT_TRUE(torch::equal(file.tensors[0].second, torch::tensor({{1.0f, 3.0f}, {2.0f, 4.0f}})));
}

// ---------------------------------------------------------------------------------------------
// Refusals.

TEST(TensorFileRefusals, MissingFileIsAnIoErrorNamingThePath) {
  const std::string path = fixture("no_such_file.pt");
  try {
    read_tensor_file(path);
    FAIL() << "no error";
  } catch (const IoError& e) {
    EXPECT_HAS(std::string(e.what()), path);
  }
  EXPECT_THROW(read_tensor_file(fixture("")), IoError);  // a folder
}

TEST(TensorFileRefusals, ForbiddenGlobalsAreNamedNeverRun) {
  const std::string path = fixture("namespace_args.pt");
  const std::string m = bad_data([&] { read_tensor_file(path); });
  EXPECT_HAS(m, path + ": the pickle refers to argparse.Namespace");
  EXPECT_HAS(m, "only state dicts of tensors are read");
  EXPECT_HAS(bad_data([] { read_tensor_file(fixture("os_system.pt")); }), "os.system");
  // Protocol 4's STACK_GLOBAL names it too.
  const std::string stack_global =
      "\x80\x04\x8c\x08"
      "builtins"
      "\x8c\x04"
      "eval"
      "\x93)R.";
  EXPECT_HAS(bad_bytes(archive(stack_global)), "builtins.eval");
  // A torch global that is not one of the few state dicts use.
  EXPECT_HAS(bad_bytes(archive(kProto + global("torch._utils", "_rebuild_qtensor") + ".")),
             "torch._utils._rebuild_qtensor");
  EXPECT_HAS(bad_bytes(archive(kProto + global("torch", "UntypedStorage") + ".")),
             "torch.UntypedStorage");
}

TEST(TensorFileRefusals, CompressedEntry) {
  const std::string m = bad_data([] { read_tensor_file(fixture("deflated.pt")); });
  EXPECT_HAS(m, "entry 'plain_dict/data.pkl' is compressed (zip method 8, deflate)");
  // Marked as compressed by the test's own writer: the method is refused before any byte is read.
  EXPECT_HAS(bad_bytes(make_zip({{"a/data.pkl", kProto + "}."}}, 12)), "bzip2");
}

TEST(TensorFileRefusals, TruncatedAtManyPoints) {
  for (const char* name : {"plain_dict.pt", "mixed.safetensors", "scbert_like.pt"}) {
    const std::string bytes = file_bytes(fixture(name));
    for (const std::size_t keep :
         {std::size_t{1}, std::size_t{3}, std::size_t{9}, std::size_t{30}, std::size_t{100},
          bytes.size() / 2, bytes.size() - 23, bytes.size() - 5, bytes.size() - 1}) {
      SCOPED_TRACE(std::string(name) + " cut to " + std::to_string(keep));
      const std::string m = bad_bytes(bytes.substr(0, keep), name);
      EXPECT_EQ(m.rfind(std::string(name) + ": ", 0), 0u) << m;
    }
  }
  const std::string zip = file_bytes(fixture("plain_dict.pt"));
  EXPECT_HAS(bad_bytes(zip.substr(0, zip.size() - 1)), "end-of-central-directory");
  EXPECT_HAS(bad_bytes(std::string()), "mem.pt: is empty");
  const std::string st = file_bytes(fixture("mixed.safetensors"));
  EXPECT_HAS(bad_bytes(st.substr(0, 100)), "but only 92 bytes follow");
  EXPECT_HAS(bad_bytes(st.substr(0, st.size() - 1)), "outside its data buffer");
  // A pickle cut short: no STOP.
  EXPECT_HAS(bad_bytes(archive(kProto + "}")), "ends before its STOP opcode");
  EXPECT_HAS(bad_bytes(archive(kProto + "X" + le(16, 4) + "abc")), "truncated");
}

TEST(TensorFileRefusals, OffsetsAndSizesOutsideTheFile) {
  const std::string good = file_bytes(fixture("plain_dict.pt"));
  const auto central = [&](const std::string& entry) {
    // The central directory header of `entry` ("PK\1\2" ... name at +46).
    for (std::size_t at = good.find("PK\x01\x02"); at != std::string::npos;
         at = good.find("PK\x01\x02", at + 1))
      if (good.compare(at + 46, entry.size(), entry) == 0) return at;
    ADD_FAILURE() << "no central header for " << entry;
    return std::size_t{0};
  };
  std::string bytes = good;
  bytes.replace(central("plain_dict/data.pkl") + 42, 4, le(0x7FFFFFF0, 4));
  EXPECT_HAS(bad_bytes(bytes),
             "entry 'plain_dict/data.pkl' has no local header at offset 2147483632");
  bytes = good;
  const std::size_t storage = central("plain_dict/data/0");
  bytes.replace(storage + 20, 8, le(0x7FFFFFF0, 4) + le(0x7FFFFFF0, 4));
  EXPECT_HAS(bad_bytes(bytes), "entry 'plain_dict/data/0' (2147483632 bytes at offset");
  EXPECT_HAS(bad_bytes(bytes), "reaches past the end of the file");
  bytes = good;
  bytes.replace(storage + 16, 4, le(0x12345678, 4));
  EXPECT_HAS(bad_bytes(bytes), "entry 'plain_dict/data/0' is damaged: its CRC-32");
  // The ZIP64 end record's central directory offset past the end.
  bytes = good;
  const std::size_t record = bytes.rfind("PK\x06\x06");
  ASSERT_NE(record, std::string::npos);
  bytes.replace(record + 48, 8, le(uint64_t{1} << 60, 8));
  EXPECT_HAS(bad_bytes(bytes), "outside the file");
  // An entry count no central directory of that size can hold.
  bytes = good;
  bytes.replace(record + 32, 8, le(uint64_t{1} << 40, 8));
  EXPECT_HAS(bad_bytes(bytes), "claims 1099511627776 entries");
  // safetensors: a tensor's bytes outside the buffer, or fewer than dtype and shape need.
  const auto safetensors = [](const std::string& header, std::size_t data_bytes) {
    return le(header.size(), 8) + header + std::string(data_bytes, '\0');
  };
  EXPECT_HAS(bad_bytes(safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4)),
             "safetensors tensor 'a' at bytes [0, 8) outside its data buffer of 4 bytes");
  EXPECT_HAS(bad_bytes(safetensors(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)),
             "of 8 bytes, but float32 of shape [3] takes 12");
  EXPECT_HAS(bad_bytes(le(uint64_t{1} << 62, 8) + "{}"), "declares a safetensors header of");
}

TEST(TensorFileRefusals, AbsurdSizes) {
  // A storage declaring 2^60 elements in a 24-byte entry: refused before anything is allocated.
  EXPECT_HAS(bad_bytes(archive(dict_pickle("w", tensor_call("0", int64_t{1} << 60, 0, {1}, {1})))),
             "storage '0' declares 1152921504606846976 float32 elements, but its entry "
             "'archive/data/0' holds only 24 bytes");
  // A view reaching past its storage.
  EXPECT_HAS(bad_bytes(archive(dict_pickle("w", tensor_call("0", 6, 0, {100}, {1})))),
             "tensor 'w' (shape [100], strides [1], offset 0) reaches past the end of its storage "
             "of 6 elements");
  EXPECT_HAS(bad_bytes(archive(dict_pickle("w", tensor_call("0", 6, 5, {2}, {1})))),
             "reaches past the end");
  // Huge sizes with stride 0 fit one element, but would need terabytes once materialised.
  EXPECT_HAS(
      bad_bytes(archive(dict_pickle("w", tensor_call("0", 6, 0, {1 << 20, 1 << 20}, {0, 0})))),
      "have more elements than the");
  EXPECT_HAS(bad_bytes(archive(dict_pickle(
                 "w", tensor_call("0", 6, 0, {int64_t{1} << 40, int64_t{1} << 40}, {0, 0})))),
             "more than 2^63 elements");
  EXPECT_HAS(bad_bytes(archive(dict_pickle("w", tensor_call("0", 6, 0, std::vector<int64_t>(65, 1),
                                                            std::vector<int64_t>(65, 0))))),
             "the size of a tensor has 65 dimensions, more than 64");
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})";
  EXPECT_HAS(bad_bytes(le(header.size(), 8) + header), "with more than 2^63 elements");
}

TEST(TensorFileRefusals, DeepNesting) {
  // 10 000 nested lists: [[[...]]].
  std::string p = kProto;
  for (int i = 0; i < 10000; ++i) p += "]";
  for (int i = 0; i < 9999; ++i) p += "a";
  EXPECT_HAS(bad_bytes(archive(p + ".")), "nests containers deeper than 64 levels");
  // A list that holds itself.
  EXPECT_HAS(bad_bytes(archive(kProto + "]q" + le(0, 1) + "h" + le(0, 1) + "a.")),
             "deeper than 64");
  // safetensors: 10 000 nested arrays in the metadata.
  const std::string header =
      R"({"__metadata__":)" + std::string(10000, '[') + std::string(10000, ']') + "}";
  EXPECT_HAS(bad_bytes(le(header.size(), 8) + header), "nested deeper than 64 levels");
}

TEST(TensorFileRefusals, SharedReferencesThatWouldNeverEnd) {
  // L0 = [1]; Li = [L(i-1), L(i-1)]: 60 levels, 2^60 paths.
  std::string p = kProto +
                  "]K\x01"
                  "aq" +
                  le(0, 1);
  for (int i = 1; i <= 60; ++i)
    p += "]h" + le(static_cast<uint64_t>(i - 1), 1) + "ah" + le(static_cast<uint64_t>(i - 1), 1) +
         "aq" + le(static_cast<uint64_t>(i), 1);
  EXPECT_HAS(bad_bytes(archive(p + ".")), "refer to each other so often");
  // One list of 1000 numbers under 100 000 keys: each listing scans it again.
  std::string q = kProto + "(";
  for (int i = 0; i < 1000; ++i) q += "K\x01";
  q += "lq" + le(0, 1) + "}(";
  for (int i = 0; i < 100000; ++i) q += "J" + le(static_cast<uint64_t>(i), 4) + "h" + le(0, 1);
  EXPECT_HAS(bad_bytes(archive(q + "u.")), "refer to each other so often");
}

TEST(TensorFileRefusals, BrokenPickles) {
  // Memo index never stored.
  EXPECT_HAS(bad_bytes(archive(kProto + "h\x07.")),
             "asks for memo entry 7, which the pickle never stored");
  // Stack underflow, with and without a MARK in the way.
  EXPECT_HAS(bad_bytes(archive(kProto + "a.")), "finds too few objects on the pickle stack");
  EXPECT_HAS(bad_bytes(archive(kProto + "](a.")), "finds too few objects");
  EXPECT_HAS(bad_bytes(archive(kProto + "K\x01t.")), "has no MARK to go back to");
  EXPECT_HAS(bad_bytes(archive(kProto + ".")), "STOP");
  // Wrong types on the stack.
  EXPECT_HAS(bad_bytes(archive(kProto + "]K\x01K\x02s.")), "is a list, not a dict");
  EXPECT_HAS(bad_bytes(archive(kProto + "K\x01)R.")), "calls an integer as if it were a function");
  EXPECT_HAS(bad_bytes(archive(kProto + global("collections", "OrderedDict") + "K\x01R.")),
             "the arguments of a call is an integer, not a tuple");
  EXPECT_HAS(bad_bytes(archive(kProto + global("collections", "OrderedDict") + "]\x85R.")),
             "calls OrderedDict with arguments a state dict does not use");
  EXPECT_HAS(bad_bytes(archive(kProto + global("torch._utils", "_rebuild_parameter") + "N\x85R.")),
             "with 1 arguments instead of 3");
  std::string bad_size = tensor_call("0", 6, 0, {2}, {1});
  bad_size.replace(bad_size.find("(K\x02t"), 4, text("2"));
  EXPECT_HAS(bad_bytes(archive(dict_pickle("w", bad_size))), "the size of a tensor is a string");
  EXPECT_HAS(bad_bytes(archive(kProto + text("storage") + "Q.")), "a persistent id is a string");
  // Opcodes outside the subset, and other protocols.
  EXPECT_HAS(bad_bytes(archive(kProto + "I1\n.")), "opcode 0x49 'I'");
  EXPECT_HAS(bad_bytes(archive("\x80\x01}.")), "protocol 1");
  // A storage whose entry is missing; a dict with one name twice.
  EXPECT_HAS(bad_bytes(archive(dict_pickle("w", tensor_call("5", 6, 0, {2}, {1})))),
             "the pickle refers to storage '5', but the archive has no entry 'archive/data/5'");
  EXPECT_HAS(bad_bytes(archive(kProto + "}(" + text("a") + "K\x01" + text("a") + "K\x02u.")),
             "holds two entries named 'a'");
  // A dict key that is neither a string nor an integer.
  EXPECT_HAS(bad_bytes(archive(kProto + "}G" + std::string(8, '\0') + "K\x01s.")),
             "a dict key under '' is a float");
}

TEST(TensorFileRefusals, NotACheckpoint) {
  EXPECT_HAS(bad_bytes("hello, world"), "is neither a torch.save zip archive nor a safetensors");
  EXPECT_HAS(bad_bytes(kProto + "\x8a\x0al\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."), "bare pickle");
  EXPECT_HAS(bad_bytes(make_zip({{"readme.txt", "hi"}})), "without a '<folder>/data.pkl'");
  EXPECT_HAS(bad_bytes(archive(kProto + "}.", {{"archive/constants.pkl", kProto + "}."}})),
             "TorchScript");
  EXPECT_HAS(bad_bytes(archive(kProto + "}.", {{"archive/byteorder", "big"}})),
             "byte order as 'big'");
  EXPECT_EQ(read_bytes(archive(kProto + "}.", {{"archive/byteorder", "little"}})).tensors.size(),
            0u);
  EXPECT_HAS(bad_bytes(make_zip({{"a/data.pkl", kProto + "}."}, {"a/data.pkl", kProto + "}."}})),
             "two entries named 'a/data.pkl'");
  const auto safetensors = [](const std::string& header) { return le(header.size(), 8) + header; };
  EXPECT_HAS(bad_bytes(safetensors(R"({"a":{"dtype":"F8_E4M3","shape":[],"data_offsets":[0,1]}})")),
             "dtype 'F8_E4M3', which is not read");
  EXPECT_HAS(bad_bytes(safetensors(R"({"a":{"dtype":"F32","shape":[]},"b":1})")),
             "safetensors tensor 'a' without data_offsets");
  EXPECT_HAS(bad_bytes(safetensors(R"({"__metadata__":{},"__metadata__":{}})")),
             "names '__metadata__' twice");
  EXPECT_HAS(bad_bytes(safetensors(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})")),
             "is not a non-negative integer");
  EXPECT_HAS(bad_bytes(safetensors(R"({"a" 1})")), "not valid JSON at byte 13 (expected ':')");
  EXPECT_HAS(bad_bytes(safetensors(R"({"__metadata__":{"x":"\ud800"}})")), "lone high surrogate");
  EXPECT_HAS(bad_bytes(safetensors(R"({} x)")), "something follows");
}

// ---------------------------------------------------------------------------------------------
// load_tensors: names, shapes, dtypes, and nothing changed by a refused file.

namespace {

struct NetImpl : torch::nn::Module {
  NetImpl(int64_t out = 3) {
    encoder = register_module("encoder", torch::nn::Linear(4, out));
    norm = register_module("norm", torch::nn::BatchNorm1d(out));
  }
  torch::nn::Linear encoder{nullptr};
  torch::nn::BatchNorm1d norm{nullptr};
};

struct SmallImpl : torch::nn::Module {
  SmallImpl() {
    to_out = register_module("to_out", torch::nn::Linear(3, 2));
    pos_scale = register_buffer("pos_scale", torch::zeros({3}, torch::kFloat64));
    step = register_buffer("step", torch::zeros({}, torch::kInt64));
  }
  torch::nn::Linear to_out{nullptr};
  torch::Tensor pos_scale, step;
};

struct AttentionImpl : torch::nn::Module {
  AttentionImpl() {
    encoder = register_module("encoder", torch::nn::Embedding(6, 4));
    self_attn = register_module("self_attn", torch::nn::MultiheadAttention(4, 2));
  }
  torch::nn::Embedding encoder{nullptr};
  torch::nn::MultiheadAttention self_attn{nullptr};
};

std::map<std::string, torch::Tensor> snapshot(const torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> s;
  for (const auto& p : m.named_parameters()) s[p.key()] = p.value().detach().clone();
  for (const auto& b : m.named_buffers()) s[b.key()] = b.value().clone();
  return s;
}
bool same(const std::map<std::string, torch::Tensor>& a,
          const std::map<std::string, torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, t] : a)
    if (!torch::equal(t, b.at(name))) return false;
  return true;
}

}  // namespace

TEST(LoadTensors, StateDictIntoAModule) {
  const TensorFile file = read_tensor_file(fixture("state_dict.pt"));
  NetImpl net;
  load_tensors(net, file, {});
  EXPECT_TRUE(torch::equal(net.encoder->weight, *file.find("encoder.weight")));
  EXPECT_TRUE(torch::equal(net.norm->running_var, *file.find("norm.running_var")));
  EXPECT_EQ(net.norm->num_batches_tracked.scalar_type(), torch::kInt64);
  EXPECT_EQ(net.norm->num_batches_tracked.item<int64_t>(), 1);
  EXPECT_TRUE(net.encoder->weight.requires_grad());  // still a trainable parameter
}

TEST(LoadTensors, PrefixChoosesTheModelOfANestedCheckpoint) {
  const TensorFile file = read_tensor_file(fixture("scbert_like.pt"));
  SmallImpl small;
  small.to_out->to(torch::kFloat64);  // converted to the module's dtype on copy
  TensorNameMap names;
  names.prefix = "model_state_dict.";
  load_tensors(small, file, names);
  EXPECT_TRUE(
      torch::allclose(small.pos_scale, torch::tensor({0.1, 0.2, 0.3}, torch::kFloat64), 0, 1e-7));
  EXPECT_EQ(small.step.scalar_type(), torch::kInt64);
  EXPECT_EQ(small.step.item<int64_t>(), 7);
  EXPECT_EQ(small.to_out->weight.scalar_type(), torch::kFloat64);
  EXPECT_TRUE(torch::equal(small.to_out->weight.to(torch::kFloat32),
                           *file.find("model_state_dict.to_out.weight")));
  // Without the prefix the optimiser's tensors match nothing.
  SmallImpl other;
  EXPECT_HAS(bad_data([&] { load_tensors(other, file, {}); }),
             "tensor 'model_state_dict.pos_scale' matches no parameter or buffer");
}

TEST(LoadTensors, ModulePrefixRenamesAndIgnoredParts) {
  const TensorFile file = read_tensor_file(fixture("scgpt_like.pt"));
  TensorNameMap names;
  names.renames = {{"self_attn.Wqkv.", "self_attn.in_proj_"}};
  names.ignored_prefixes = {"cls_decoder."};
  AttentionImpl model;
  load_tensors(model, file, names);
  EXPECT_TRUE(
      torch::equal(model.self_attn->in_proj_weight, *file.find("module.self_attn.Wqkv.weight")));
  EXPECT_TRUE(
      torch::equal(model.self_attn->in_proj_bias, *file.find("module.self_attn.Wqkv.bias")));
  EXPECT_TRUE(
      torch::equal(model.self_attn->out_proj->bias, *file.find("module.self_attn.out_proj.bias")));
  EXPECT_TRUE(torch::equal(model.encoder->weight, *file.find("module.encoder.weight")));

  // Each step of the map, left out, leaves an entry that matches nothing.
  AttentionImpl fresh;
  TensorNameMap no_rename = names;
  no_rename.renames.clear();
  EXPECT_HAS(bad_data([&] { load_tensors(fresh, file, no_rename); }),
             "tensor 'module.self_attn.Wqkv.weight' (read as 'self_attn.Wqkv.weight') matches no "
             "parameter or buffer");
  TensorNameMap no_ignore = names;
  no_ignore.ignored_prefixes.clear();
  EXPECT_HAS(bad_data([&] { load_tensors(fresh, file, no_ignore); }),
             "tensor 'module.cls_decoder.weight' (read as 'cls_decoder.weight') matches no");
  TensorNameMap keep_module = names;
  keep_module.strip_module_prefix = false;
  EXPECT_HAS(bad_data([&] { load_tensors(fresh, file, keep_module); }),
             "tensor 'module.encoder.weight' matches no parameter or buffer");
}

TEST(LoadTensors, MissingTensorAndShapeMismatch) {
  const TensorFile file = read_tensor_file(fixture("state_dict.pt"));
  NetImpl net;
  net.register_parameter("extra", torch::zeros({2}));
  const std::string path = fixture("state_dict.pt");
  EXPECT_HAS(bad_data([&] { load_tensors(net, file, {}); }),
             path + ": the module's parameter 'extra' (shape [2]) has no tensor in the file");
  NetImpl narrow(2);
  EXPECT_HAS(bad_data([&] { load_tensors(narrow, file, {}); }),
             path +
                 ": tensor 'encoder.weight' has shape [3, 4], but the module's parameter "
                 "'encoder.weight' has shape [2, 4]");
  // Two file names for one module tensor.
  TensorFile twice;
  twice.path = "twice.pt";
  twice.tensors = {{"module.w", torch::zeros({1})}, {"w", torch::ones({1})}};
  torch::nn::Module one;
  one.register_parameter("w", torch::zeros({1}));
  EXPECT_HAS(bad_data([&] { load_tensors(one, twice, {}); }),
             "twice.pt: tensors 'module.w' and 'w' both stand for the module's parameter 'w'");
}

TEST(LoadTensors, ARefusedFileChangesNothing) {
  const TensorFile file = read_tensor_file(fixture("state_dict.pt"));
  // Every tensor but one fits: that one's mismatch must stop all of them.
  NetImpl net;
  net.norm->running_var.set_data(torch::ones({4}));
  const auto before = snapshot(net);
  EXPECT_HAS(bad_data([&] { load_tensors(net, file, {}); }),
             "tensor 'norm.running_var' has shape [3], but the module's buffer "
             "'norm.running_var' has shape [4]");
  EXPECT_TRUE(same(before, snapshot(net)));
  // The same with an entry at the end that matches nothing.
  NetImpl other;
  const auto other_before = snapshot(other);
  TensorFile extra = file;
  extra.tensors.emplace_back("head.weight", torch::zeros({1}));
  EXPECT_HAS(bad_data([&] { load_tensors(other, extra, {}); }), "tensor 'head.weight' matches no");
  EXPECT_TRUE(same(other_before, snapshot(other)));
}
