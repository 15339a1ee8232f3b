// Checkpoints: safetensors round trips, metadata, groups, atomic saves, validation of malformed
// files (by hand and by fuzzing), and a file written by PyTorch's safetensors.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "testing.h"

namespace crisp::testing {

namespace fs = std::filesystem;

namespace {

// A fresh directory under the test temp dir, removed afterwards.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::path(::testing::TempDir()) /
            ("crisp_io_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path_)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  fs::path path_;
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::string& bytes) {
  // A new file each time: truncating one with unwritten data makes ext4 flush it to disk.
  fs::remove(path);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file from a header text and data bytes.
std::string make_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i)
    out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string header_of(const std::string& file) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | static_cast<unsigned char>(file[static_cast<size_t>(i)]);
  return file.substr(8, n);
}

template <class T>
void expect_same_values(const Tensor& a, const Tensor& b, const std::string& what) {
  std::vector<T> va = a.to_vector<T>(), vb = b.to_vector<T>();
  ASSERT_EQ(va.size(), vb.size()) << what;
  for (size_t i = 0; i < va.size(); ++i)
    EXPECT_EQ(std::memcmp(&va[i], &vb[i], sizeof(T)), 0) << what << " at " << i;
}

void expect_same(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_TRUE(b.defined()) << what;
  EXPECT_EQ(a.dtype(), b.dtype()) << what;
  EXPECT_EQ(a.shape(), b.shape()) << what;
  visit_dtype(a.dtype(), [&](auto v) {
    using T = decltype(v);
    if constexpr (std::is_same_v<T, bool>)
      EXPECT_EQ(a.to_vector<bool>(), b.to_vector<bool>()) << what;
    else
      expect_same_values<T>(a, b, what);
  });
}

// One tensor of every dtype and several shapes, with random values.
State sample_state() {
  State s;
  s.set("f32", randn({3, 4}));
  s.set("f64.scalar", randn({}, f64));
  s.set("i64", randint(-1000000, 1000000, {5}, i64));
  s.set("i32", randint(-70000, 70000, {2, 1, 3}, i32));
  s.set("f16", randn({7}).cast(f16));
  s.set("bf16", randn({2, 2}).cast(bf16));
  s.set("u8", randint(0, 256, {4, 4}, i64).cast(u8));
  s.set("b8", rand({6}) > 0.5);
  s.set("empty", zeros({0, 3}));
  s.set("empty.i64", zeros({2, 0, 4}, i64));
  s.set("strided", randn({4, 3}).t());  // non-contiguous: written contiguous
  return s;
}

}  // namespace

TEST(Io, RoundTripsEveryDtypeAndShapeInOrder) {
  manual_seed(11);
  TempDir dir;
  const State s = sample_state();
  save(dir.file("a.safetensors"), s);
  const Checkpoint ck = load(dir.file("a.safetensors"));
  EXPECT_EQ(ck.tensors.names(), s.names());
  for (const auto& [name, t] : s) expect_same(t, ck.tensors.at(name), name);
  EXPECT_TRUE(ck.metadata.is_object());
  EXPECT_TRUE(ck.metadata.empty());
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"a.safetensors"});
}

TEST(Io, WritesTheReferenceLayout) {
  TempDir dir;
  save(dir.file("a.safetensors"),
       State{{"w", Tensor({1.f, 2.f}, {2})}, {"b", Tensor({3.0}, {})}, {"k", Tensor({7, 8, 9})}},
       {{"step", 3}});
  const std::string file = read_bytes(dir.file("a.safetensors"));
  const std::string header = header_of(file);
  EXPECT_EQ((8 + header.size()) % 8, 0u);  // data 8-byte aligned, padded with spaces
  EXPECT_EQ(header.find_first_not_of(' ', header.rfind('}') + 1), std::string::npos);
  const auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j["w"]["dtype"], "F32");
  EXPECT_EQ(j["w"]["shape"], nlohmann::json::array({2}));
  EXPECT_EQ(j["w"]["data_offsets"], nlohmann::json::array({0, 8}));
  EXPECT_EQ(j["b"]["dtype"], "F64");
  EXPECT_EQ(j["b"]["shape"], nlohmann::json::array());
  EXPECT_EQ(j["b"]["data_offsets"], nlohmann::json::array({8, 16}));
  EXPECT_EQ(j["k"]["data_offsets"], nlohmann::json::array({16, 40}));
  EXPECT_EQ(j["__metadata__"]["crisp"], "{\"step\":3}");
  ASSERT_EQ(file.size(), 8 + header.size() + 40);
  float w[2];
  std::memcpy(w, file.data() + 8 + header.size(), 8);
  EXPECT_EQ(w[0], 1.f);
  EXPECT_EQ(w[1], 2.f);
}

TEST(Io, MetadataRoundTrips) {
  TempDir dir;
  const nlohmann::json meta = {{"step", 1000},
                               {"lr", 0.00125},
                               {"name", "run \"7\" \xc3\xa9"},
                               {"nested", {{"a", {1, 2, 3}}, {"ok", true}, {"none", nullptr}}}};
  save(dir.file("m.safetensors"), State{{"x", ones({2})}}, meta);
  const Checkpoint ck = load(dir.file("m.safetensors"));
  EXPECT_EQ(ck.metadata, meta);
  // String entries are also plain safetensors metadata, which other tools read.
  const auto header = nlohmann::json::parse(header_of(read_bytes(dir.file("m.safetensors"))));
  EXPECT_EQ(header["__metadata__"]["name"], "run \"7\" \xc3\xa9");
  EXPECT_FALSE(header["__metadata__"].contains("step"));

  EXPECT_CRISP_ERROR(save(dir.file("bad.safetensors"), State{}, nlohmann::json::array({1})),
                     "metadata must be a JSON object");
  EXPECT_CRISP_ERROR(save(dir.file("bad.safetensors"), State{}, {{"bad", "\xff\xfe"}}),
                     "cannot write the header as JSON");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"m.safetensors"});
}

TEST(Io, GroupsFlattenAndComeBackUnderTheirName) {
  TempDir dir;
  manual_seed(3);
  State model{{"layer.weight", randn({3, 2})}, {"layer.bias", randn({3})}};
  State opt{{"layer.weight.m", randn({3, 2})}, {"step", Tensor({5}, {})}};
  const std::string path = dir.file("run.safetensors");
  // The DESIGN.md line, with State values built here.
  save(path, {{"model", model}, {"opt", opt}}, {{"step", 1000}});
  auto ckpt = load(path);
  EXPECT_EQ(ckpt.tensors.names(),
            (std::vector<std::string>{"model.layer.weight", "model.layer.bias",
                                      "opt.layer.weight.m", "opt.step"}));
  EXPECT_EQ(ckpt.metadata["step"], 1000);
  const State m = ckpt["model"];
  EXPECT_EQ(m.names(), model.names());
  for (const auto& [name, t] : model) expect_same(t, m.at(name), name);
  expect_same(opt.at("step"), ckpt["opt"].at("step"), "step");
  EXPECT_TRUE(ckpt["missing"].empty());

  // A braced State and a braced group list both pick the right overload.
  save(path, {{"w", ones({2})}, {"v", zeros({1})}});
  EXPECT_EQ(load(path).tensors.names(), (std::vector<std::string>{"w", "v"}));
  save(path, {{"g", State{{"w", ones({2})}}}});
  EXPECT_EQ(load(path).tensors.names(), std::vector<std::string>{"g.w"});

  EXPECT_CRISP_ERROR(
      save(path, {{"a", State{{"b.c", ones({1})}}}, {"a.b", State{{"c", ones({1})}}}}),
      "two tensors are named \"a.b.c\"");
  EXPECT_CRISP_ERROR(save(path, {{"", model}}), "a group has an empty name");
  EXPECT_CRISP_ERROR(save(path, State{{"u", Tensor()}}), "tensor \"u\" is undefined");
  EXPECT_CRISP_ERROR(save(path, State{{"__metadata__", ones({1})}}), "cannot be named");
  EXPECT_CRISP_ERROR(save(path, State{{"", ones({1})}}), "empty name");
}

TEST(Io, FailedSaveLeavesNoFileAndKeepsTheOldCheckpoint) {
  TempDir dir;
  // A directory that does not exist.
  EXPECT_CRISP_ERROR(save(dir.file("missing/x.safetensors"), State{{"w", ones({2})}}),
                     "cannot create");
  EXPECT_TRUE(dir.entries().empty());

  // A tensor whose data fails to compute: found while writing, after the file was opened.
  const std::string path = dir.file("ck.safetensors");
  save(path, State{{"w", Tensor({1.f, 2.f})}});
  const std::string before = read_bytes(path);
  State bad{{"w", Tensor({4.f, 5.f})}, {"q", Tensor({4, 5}) / Tensor({1, 0})}};
  EXPECT_CRISP_ERROR(save(path, bad), "tensor \"q\" could not be computed");
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"ck.safetensors"});

  // The destination is a directory: the rename fails, the temporary file goes.
  fs::create_directory(dir.file("d.safetensors"));
  EXPECT_CRISP_ERROR(save(dir.file("d.safetensors"), State{{"w", ones({2})}}), "cannot rename");
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"ck.safetensors", "d.safetensors"}));
  EXPECT_TRUE(fs::is_empty(dir.file("d.safetensors")));

  // A read-only directory (when not running as root, which ignores permissions).
  if (::geteuid() != 0) {
    fs::create_directory(dir.file("ro"));
    fs::permissions(dir.file("ro"), fs::perms::owner_read | fs::perms::owner_exec);
    EXPECT_CRISP_ERROR(save(dir.file("ro/x.safetensors"), State{{"w", ones({2})}}),
                       "cannot create");
    EXPECT_TRUE(fs::is_empty(dir.file("ro")));
    fs::permissions(dir.file("ro"), fs::perms::owner_all);
  }
}

TEST(Io, LoadsOntoTheCurrentBackend) {
  TempDir dir;
  save(dir.file("a.safetensors"), State{{"w", ones({2})}});
  auto cpu = Backend::cpu();
  const Checkpoint ck = cpu->use([&] { return load(dir.file("a.safetensors")); });
  EXPECT_EQ(ck.tensors.at("w").backend(), cpu);
}

class IoBackends : public BackendTest {};
INSTANTIATE_TEST_SUITE_P(Backends, IoBackends, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

TEST_P(IoBackends, SavesFromAndLoadsOntoThisBackend) {
  TempDir dir;
  const State s = sample_state();  // made on this backend
  for (const auto& [name, t] : s) ASSERT_EQ(t.backend(), Backend::current()) << name;
  save(dir.file("b.safetensors"), s, {{"backend", GetParam()}});
  const Checkpoint ck = load(dir.file("b.safetensors"));
  for (const auto& [name, t] : s) {
    EXPECT_EQ(ck.tensors.at(name).backend(), Backend::current()) << name;
    expect_same(t, ck.tensors.at(name), name);
  }
  // And the same bytes load onto the CPU.
  const Checkpoint on_cpu = Backend::cpu()->use([&] { return load(dir.file("b.safetensors")); });
  for (const auto& [name, t] : s) expect_same(t, on_cpu.tensors.at(name), name);
}

TEST(Io, RejectsEachKindOfMalformedFile) {
  TempDir dir;
  const std::string p = dir.file("bad.safetensors");
  auto expect_bad = [&](const std::string& bytes, const std::string& text) {
    write_bytes(p, bytes);
    try {
      load(p);
      ADD_FAILURE() << "expected an error containing: " << text;
    } catch (const Error& e) {
      EXPECT_NE(e.message().find(text), std::string::npos) << e.message();
      EXPECT_EQ(e.message().rfind("load: ", 0), 0u) << e.message();
    }
  };
  const std::string f32x2 = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string eight(8, 'x');

  // A good file for reference.
  write_bytes(p, make_file(R"({"w":)" + f32x2 + "}", eight));
  EXPECT_EQ(load(p).tensors.at("w").shape(), Shape{2});

  expect_bad("", "the file is 0 bytes, too short");
  expect_bad("\x05\0\0", "too short");
  expect_bad(make_file("{}", "").substr(0, 9), "header length field says 2 bytes but only 1");
  {
    std::string f = make_file("{}", "");
    f[7] = '\x7f';  // a huge length
    expect_bad(f, "the file is truncated or not safetensors");
  }
  expect_bad(make_file("{", ""), "too short to hold a JSON object");
  expect_bad(make_file("{\"w\":", ""), "the header is not valid JSON");
  expect_bad(make_file("[1, 2]", ""), "the header must be a JSON object, got array");
  expect_bad(make_file(R"({"w":[1]})", ""), "tensor \"w\": expected an object");
  expect_bad(make_file(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", eight),
             "tensor \"w\": missing \"dtype\"");
  expect_bad(make_file(R"({"w":{"dtype":3,"shape":[2],"data_offsets":[0,8]}})", eight),
             "dtype must be a string");
  expect_bad(make_file(R"({"w":{"dtype":"I16","shape":[4],"data_offsets":[0,8]}})", eight),
             "tensor \"w\": dtype \"I16\" is not supported");
  expect_bad(make_file(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", eight),
             "missing \"shape\"");
  expect_bad(make_file(R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", eight),
             "shape must be an array");
  expect_bad(make_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight),
             "shape [-2] has an entry that is not a non-negative integer");
  expect_bad(make_file(R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", eight),
             "not a non-negative integer");
  expect_bad(
      make_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                eight),
      "has too many elements");
  expect_bad(make_file(R"({"w":{"dtype":"F32","shape":[2]}})", eight), "missing \"data_offsets\"");
  expect_bad(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", eight),
             "data_offsets must be two non-negative integers");
  expect_bad(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,-8]}})", eight),
             "data_offsets must be two non-negative integers");
  expect_bad(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight),
             "end before they begin");
  expect_bad(make_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight),
             "tensor \"w\": shape [3] of F32 needs 12 bytes but data_offsets [0,8] hold 8");
  expect_bad(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", eight),
             "tensor \"w\": data_offsets [8, 16] run past the end of the data (8 bytes)");
  expect_bad(
      make_file(R"({"a":)" + f32x2 + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                eight),
      "overlap tensor");
  expect_bad(make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight),
             "tensor \"w\": data_offsets [4, 8] leave bytes [0, 4) of the data unused");
  expect_bad(make_file(R"({"w":)" + f32x2 + "}", eight + "xy"),
             "the data is 10 bytes but the tensors cover only 8");
  expect_bad(make_file(R"({"__metadata__":[1],"w":)" + f32x2 + "}", eight),
             "__metadata__ must be an object");
  expect_bad(make_file(R"({"__metadata__":{"step":3},"w":)" + f32x2 + "}", eight),
             "__metadata__ entry \"step\" must be a string");
  expect_bad(make_file(R"({"__metadata__":{"crisp":"{oops"},"w":)" + f32x2 + "}", eight),
             "metadata \"crisp\" is not valid JSON");
  expect_bad(make_file(R"({"__metadata__":{"crisp":"[1]"},"w":)" + f32x2 + "}", eight),
             "metadata \"crisp\" must be a JSON object");

  EXPECT_CRISP_ERROR(load(dir.file("nothing.safetensors")), "cannot open");
  EXPECT_CRISP_ERROR(load(dir.file("")), "is not a regular file");
}

// Thousands of corruptions of a valid file: each loads or throws crisp::Error, never anything
// else (the sanitizer build turns any out-of-bounds access into a failure).
TEST(Io, FuzzedFilesLoadOrThrowCrispErrors) {
  TempDir dir;
  const std::string good_path = dir.file("good.safetensors");
  save(good_path,
       State{{"a", Tensor({1.f, 2.f, 3.f, 4.f}, {2, 2})},
             {"b", Tensor({1, 2}, {2}, i32)},
             {"c", Tensor({true, false})},
             {"d", zeros({0, 2}, f16)},
             {"e", Tensor({2.5}, {})}},
       {{"step", 7}, {"tag", "x"}});
  const std::string good = read_bytes(good_path);
  const std::string header = header_of(good);
  const std::string p = dir.file("fuzz.safetensors");
  std::mt19937_64 rng(1234);
  int loaded = 0, rejected = 0;
  auto attempt = [&](const std::string& bytes) {
    write_bytes(p, bytes);
    try {
      const Checkpoint ck = load(p);
      for (const auto& [name, t] : ck.tensors) (void)t.to_vector<double>();
      ++loaded;
    } catch (const Error&) {
      ++rejected;
    }
  };
  // Truncation at every length.
  for (size_t n = 0; n < good.size(); ++n) attempt(good.substr(0, n));
  // Random byte changes anywhere.
  for (int i = 0; i < 1500; ++i) {
    std::string f = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) f[rng() % f.size()] = static_cast<char>(rng());
    attempt(f);
  }
  // The length field: nearby and random values.
  for (int i = 0; i < 300; ++i) {
    std::string f = good;
    uint64_t n = header.size();
    n = i < 100 ? n + static_cast<uint64_t>(i) - 50 : rng() >> (rng() % 64);
    for (int k = 0; k < 8; ++k)
      f[static_cast<size_t>(k)] = static_cast<char>((n >> (8 * k)) & 0xff);
    attempt(f);
  }
  // JSON-aware edits: digits, structural characters and deletions inside the header, with the
  // length field kept consistent.
  const std::string alphabet = "0123456789-+.eE{}[],:\" \\ntfalsu";
  const std::string data = good.substr(8 + header.size());
  for (int i = 0; i < 1200; ++i) {
    std::string h = header;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < edits; ++k) {
      const size_t at = rng() % h.size();
      switch (rng() % 3) {
        case 0:
          h[at] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          h.insert(at, 1, alphabet[rng() % alphabet.size()]);
          break;
        default:
          h.erase(at, 1 + rng() % 6);
          break;
      }
      if (h.empty()) h.push_back('{');
    }
    std::string d = data;
    if (rng() % 4 == 0) d.resize(rng() % (d.size() + 9));
    attempt(make_file(h, d));
  }
  EXPECT_GT(loaded, 0);
  EXPECT_GT(rejected, 2000);
}

// tests/fixtures/torch_small.safetensors, written by safetensors.torch.save_file
// (tests/fixtures/make_torch_fixture.py); the values are the ones that script prints.
TEST(Io, ReadsAFileWrittenByPyTorch) {
  const std::string path =
      (fs::path(__FILE__).parent_path() / "fixtures" / "torch_small.safetensors").string();
  if (!fs::exists(path)) GTEST_SKIP() << "fixture not found at " << path;
  const Checkpoint ck = load(path);
  const State& t = ck.tensors;
  EXPECT_EQ(ck.metadata, (nlohmann::json{{"format", "pt"}, {"note", "made by PyTorch"}}));
  EXPECT_EQ(t.size(), 10u);

  EXPECT_EQ(t.at("f32_2d").dtype(), f32);
  EXPECT_EQ(t.at("f32_2d").shape(), (Shape{2, 3}));
  EXPECT_EQ(t.at("f32_2d").to_vector<float>(),
            (std::vector<float>{-0.1467950940132141f, 0.7861412763595581f, 0.9468216300010681f,
                                -1.1143440008163452f, 1.6907901763916016f, -0.8948279023170471f}));
  EXPECT_EQ(t.at("f64").dtype(), f64);
  EXPECT_EQ(t.at("f64").to_vector<double>(),
            (std::vector<double>{-0.3556250270062136, 1.2323857451651945, 0.13817266368739245,
                                 -1.6821984860536687}));
  EXPECT_EQ(t.at("i64").dtype(), i64);
  EXPECT_EQ(t.at("i64").to_vector<int64_t>(), (std::vector<int64_t>{-3, 0, 5, int64_t{1} << 40}));
  EXPECT_EQ(t.at("i32").dtype(), i32);
  EXPECT_EQ(t.at("i32").shape(), (Shape{2, 2}));
  EXPECT_EQ(t.at("i32").to_vector<int32_t>(), (std::vector<int32_t>{7, -8, 9, 2147483647}));
  EXPECT_EQ(t.at("bf16").dtype(), bf16);
  EXPECT_EQ(t.at("bf16").to_vector<float>(), (std::vector<float>{1.5f, -2.25f, 299008.f}));
  EXPECT_EQ(t.at("f16").dtype(), f16);
  EXPECT_EQ(t.at("f16").to_vector<float>(),
            (std::vector<float>{0.5f, -1.f, 65504.f, 5.960464477539063e-08f}));
  EXPECT_EQ(t.at("u8").dtype(), u8);
  EXPECT_EQ(t.at("u8").to_vector<uint8_t>(), (std::vector<uint8_t>{0, 1, 128, 255}));
  EXPECT_EQ(t.at("bool").dtype(), bool_);
  EXPECT_EQ(t.at("bool").to_vector<bool>(), (std::vector<bool>{true, false, true}));
  EXPECT_EQ(t.at("scalar").shape(), Shape{});
  EXPECT_EQ(t.at("scalar").item<float>(), 3.25f);
  EXPECT_EQ(t.at("empty").shape(), (Shape{0, 5}));
  EXPECT_EQ(t.at("empty").dtype(), f32);
}

// Writes the file tests/fixtures/torch_interop.py reads with PyTorch; by itself it checks that
// the file loads back. The values are simple formulas the script recomputes.
TEST(Io, WritesAFileForPyTorch) {
  TempDir dir;
  const char* env = std::getenv("CRISP_INTEROP_OUT");
  const std::string path = env ? std::string(env) : dir.file("interop.safetensors");
  State s;
  s.set("f32", (arange(0, 12, 1, f32) * 0.5 - 1).reshape({3, 4}));
  s.set("f64", arange(0, 5, 1, f64) / 3.0);
  s.set("i64", arange(0, 6) * 1000000007 - 3);
  s.set("i32", (arange(0, 4, 1, i32) - 2) * 1000);
  s.set("f16", (arange(0, 4, 1, f32) * 0.25).cast(f16));
  s.set("bf16", (arange(0, 4, 1, f32) - 1.5).cast(bf16));
  s.set("u8", (arange(0, 5) * 60).cast(u8));
  s.set("bool", arange(0, 5) > 2);
  s.set("scalar", scalar(-7.5));
  s.set("empty", zeros({0, 3}));
  s.set("transposed", arange(0, 6, 1, f32).reshape({2, 3}).t());
  save(path, s, {{"step", 42}, {"format", "pt"}});
  const Checkpoint ck = load(path);
  for (const auto& [name, t] : s) expect_same(t, ck.tensors.at(name), name);
}

}  // namespace crisp::testing
