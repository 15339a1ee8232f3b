// Data: datasets, the loader's order, resumption, workers and shutdown, IDX and CIFAR files,
// transforms by hand values, and the progress bar.
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "core/thread_pool.h"
#include "testing.h"

namespace crisp::testing {

namespace fs = std::filesystem;
using data::Batch;
using data::DataLoader;
using data::LoaderOptions;
using data::TensorDataset;

namespace {

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::path(::testing::TempDir()) /
            ("crisp_data_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

void write_bytes(const std::string& path, const std::string& bytes, bool gzip = false) {
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
    gzclose(f);
    return;
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

// An IDX file: magic, big-endian dimensions, then the element bytes as given.
std::string idx(unsigned char type, const std::vector<uint32_t>& dims, const std::string& body) {
  std::string s{'\0', '\0', static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims) s += be32(d);
  return s + body;
}

// Examples 0..n-1: input [n, 2] = (i, -i), target i.
std::shared_ptr<TensorDataset> counting(int64_t n) {
  Tensor ids = arange(0, static_cast<double>(n));
  return std::make_shared<TensorDataset>(stack({ids, -ids}, 1), ids);
}

std::vector<std::vector<int64_t>> targets_of(DataLoader& loader) {
  std::vector<std::vector<int64_t>> out;
  for (const Batch& b : loader) out.push_back(b.target.to_vector<int64_t>());
  return out;
}

// A dataset whose get_batch counts calls and can fail at one index.
class Probe : public data::Dataset {
 public:
  explicit Probe(size_t n, int64_t fail_at = -1) : n_(n), fail_at_(fail_at) {}
  size_t size() const override { return n_; }
  data::Example get(size_t i) const override {
    if (static_cast<int64_t>(i) == fail_at_)
      throw std::runtime_error("bad example " + std::to_string(i));
    return {Tensor({static_cast<float>(i)}, {1}), Tensor({static_cast<int64_t>(i)}, {})};
  }
  Batch get_batch(const std::vector<int64_t>& indices) const override {
    ++calls;
    if (in_parallel()) ++serial_calls;  // parallel work started here would run serially
    return Dataset::get_batch(indices);
  }
  mutable std::atomic<int> calls{0}, serial_calls{0};

 private:
  size_t n_;
  int64_t fail_at_;
};

}  // namespace

// ---- datasets ----

TEST(Data, TensorDatasetGathersExamplesAndBatches) {
  auto ds = counting(5);
  EXPECT_EQ(ds->size(), 5u);
  data::Example e = ds->get(3);
  EXPECT_EQ(e.input.to_vector<int64_t>(), (std::vector<int64_t>{3, -3}));
  EXPECT_EQ(e.target.item<int64_t>(), 3);
  Batch b = ds->get_batch({4, 0, 4});
  EXPECT_EQ(b.input.shape(), (Shape{3, 2}));
  EXPECT_EQ(b.input.to_vector<int64_t>(), (std::vector<int64_t>{4, -4, 0, 0, 4, -4}));
  EXPECT_EQ(b.target.to_vector<int64_t>(), (std::vector<int64_t>{4, 0, 4}));
  EXPECT_CRISP_ERROR(TensorDataset(zeros({3, 2}), zeros({4})),
                     "inputs have 3 examples but targets have 4");
  EXPECT_CRISP_ERROR(TensorDataset(scalar(1), Tensor()), "need an axis of examples");
  EXPECT_THROW(ds->get_batch({5}), Error);
  // Unlabeled data.
  TensorDataset unlabeled(ones({4, 3}), Tensor());
  EXPECT_FALSE(unlabeled.get_batch({1, 2}).target.defined());
}

TEST(Data, DefaultGetBatchStacksExamples) {
  Probe p(6);
  Batch b = p.get_batch({5, 1});
  EXPECT_EQ(b.input.shape(), (Shape{2, 1}));
  EXPECT_EQ(b.input.to_vector<float>(), (std::vector<float>{5, 1}));
  EXPECT_EQ(b.target.to_vector<int64_t>(), (std::vector<int64_t>{5, 1}));
}

// ---- loader ----

TEST(Data, LoaderBatchCountsWithAndWithoutDropLast) {
  auto ds = counting(10);
  DataLoader keep(ds, {.batch_size = 3});
  DataLoader drop(ds, {.batch_size = 3, .drop_last = true});
  EXPECT_EQ(keep.size(), 4u);
  EXPECT_EQ(drop.size(), 3u);
  auto k = targets_of(keep);
  ASSERT_EQ(k.size(), 4u);
  EXPECT_EQ(k[0], (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(k[3], (std::vector<int64_t>{9}));
  EXPECT_EQ(targets_of(drop).size(), 3u);
  DataLoader exact(ds, {.batch_size = 5, .drop_last = true});
  EXPECT_EQ(targets_of(exact).size(), 2u);
  EXPECT_EQ(DataLoader(counting(2), {.batch_size = 5, .drop_last = true}).size(), 0u);
  EXPECT_CRISP_ERROR(DataLoader(ds, {.batch_size = 0}), "batch_size must be positive");
  EXPECT_CRISP_ERROR(DataLoader(ds, {.workers = -1}), "workers must be >= 0");
  EXPECT_CRISP_ERROR(DataLoader(nullptr), "the dataset is null");
}

TEST(Data, ShuffleVisitsEveryIndexOnceInAnOrderFixedBySeedAndEpoch) {
  auto ds = counting(103);
  LoaderOptions o{.batch_size = 10, .shuffle = true, .seed = 5};
  DataLoader a(ds, o), b(ds, o);
  LoaderOptions o2 = o;
  o2.seed = 6;
  DataLoader c(ds, o2);

  std::vector<std::vector<int64_t>> epochs;
  for (int e = 0; e < 3; ++e) {
    EXPECT_EQ(a.epoch(), static_cast<uint64_t>(e));  // a full loop moves to the next epoch
    std::vector<int64_t> seen;
    for (const auto& batch : targets_of(a)) seen.insert(seen.end(), batch.begin(), batch.end());
    std::vector<int64_t> sorted = seen;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> all(103);
    std::iota(all.begin(), all.end(), 0);
    EXPECT_EQ(sorted, all) << "epoch " << e;
    EXPECT_NE(seen, all) << "epoch " << e << " is not shuffled";
    EXPECT_EQ(seen, a.order(static_cast<uint64_t>(e)));
    epochs.push_back(seen);
  }
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
  // Another loader with the same seed repeats the orders; another seed does not.
  for (int e = 0; e < 3; ++e)
    EXPECT_EQ(b.order(static_cast<uint64_t>(e)), epochs[static_cast<size_t>(e)]);
  EXPECT_NE(c.order(0), epochs[0]);
  b.set_epoch(2);
  std::vector<int64_t> seen;
  for (const auto& batch : targets_of(b)) seen.insert(seen.end(), batch.begin(), batch.end());
  EXPECT_EQ(seen, epochs[2]);
  EXPECT_EQ(b.epoch(), 3u);
}

TEST(Data, StartAtResumesWithTheSameRemainingBatches) {
  auto ds = counting(50);
  LoaderOptions o{.batch_size = 7, .shuffle = true, .seed = 9, .workers = 2};
  DataLoader full(ds, o);
  full.set_epoch(4);
  const auto all = targets_of(full);
  ASSERT_EQ(all.size(), 8u);

  DataLoader resumed(ds, o);
  resumed.start_at(4, 3);
  std::vector<std::vector<int64_t>> rest;
  std::vector<size_t> indices;
  for (auto it = resumed.begin(); it != resumed.end(); ++it) {
    rest.push_back(it->target.to_vector<int64_t>());
    indices.push_back(it.batch_index());
    EXPECT_EQ(it.epoch(), 4u);
  }
  EXPECT_EQ(rest, std::vector<std::vector<int64_t>>(all.begin() + 3, all.end()));
  EXPECT_EQ(indices, (std::vector<size_t>{3, 4, 5, 6, 7}));
  EXPECT_EQ(resumed.epoch(), 5u);
  // The start position applies to one loop: the next runs epoch 5 from its start.
  EXPECT_EQ(targets_of(resumed).size(), 8u);
  // Starting at the end of an epoch runs nothing and moves on.
  resumed.start_at(7, resumed.size());
  EXPECT_TRUE(targets_of(resumed).empty());
  EXPECT_EQ(resumed.epoch(), 8u);
  EXPECT_CRISP_ERROR(resumed.start_at(0, 9), "batch 9 is past the end of an epoch of 8 batches");
}

TEST(Data, WorkersGiveTheSameBatchesInTheSameOrder) {
  auto ds = counting(61);
  data::Transform noisy = [](Batch b, Generator& g) {
    b.input = b.input.cast(f32) + rand(b.input.shape(), f32, &g);
    return b;
  };
  std::vector<std::vector<float>> reference;
  for (int workers : {0, 1, 4}) {
    DataLoader loader(ds, {.batch_size = 4,
                           .shuffle = true,
                           .seed = 3,
                           .workers = workers,
                           .prefetch = 3,
                           .transform = noisy});
    std::vector<std::vector<float>> got;
    for (int e = 0; e < 2; ++e)
      for (const Batch& b : loader) got.push_back(b.input.to_vector<float>());
    if (reference.empty())
      reference = got;
    else
      EXPECT_EQ(got, reference) << workers << " workers";
  }
}

TEST(Data, PrefetchRunsAheadButStaysBounded) {
  auto probe = std::make_shared<Probe>(40);
  DataLoader loader(probe, {.batch_size = 2, .workers = 2, .prefetch = 2});
  auto it = loader.begin();
  // Holding batch 0, the workers prepare up to workers * prefetch = 4 batches after it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (probe->calls < 5 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(probe->calls, 5);
  ++it;
  const auto deadline2 = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (probe->calls < 6 && std::chrono::steady_clock::now() < deadline2)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(probe->calls, 6);
  EXPECT_EQ(it->target.to_vector<int64_t>(), (std::vector<int64_t>{2, 3}));
}

// A worker's own parallel work runs on the worker, so the loop's ops never find the CPU
// backend's thread pool taken (and run serially for it).
TEST(Data, WorkersLeaveTheThreadPoolToTheTrainingLoop) {
  auto probe = std::make_shared<Probe>(20);
  DataLoader loader(probe, {.batch_size = 2, .workers = 2});
  int batches = 0;
  for (const auto& b : loader) batches += b.input.defined() ? 1 : 0;
  EXPECT_EQ(batches, 10);
  EXPECT_EQ(probe->calls, 10);
  EXPECT_EQ(probe->serial_calls, 10);
  EXPECT_FALSE(in_parallel());
}

TEST(Data, BreakingOutEarlyStopsTheWorkersAndKeepsTheEpoch) {
  auto probe = std::make_shared<Probe>(1000);
  DataLoader loader(probe, {.batch_size = 1, .workers = 4, .prefetch = 4});
  int n = 0;
  for (const Batch& b : loader) {
    (void)b;
    if (++n == 2) break;
  }
  const int calls = probe->calls;
  EXPECT_LE(calls, 2 + 16 + 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(probe->calls, calls);  // nothing runs after the loop ended
  EXPECT_EQ(loader.epoch(), 0u);
  // The next loop starts the epoch again.
  EXPECT_EQ(loader.begin()->target.to_vector<int64_t>(), (std::vector<int64_t>{0}));
  // An iterator may outlive its loader.
  DataLoader::Iterator kept;
  {
    DataLoader temp(probe, {.batch_size = 3, .workers = 2});
    kept = temp.begin();
  }
  ++kept;
  EXPECT_EQ(kept->target.to_vector<int64_t>(), (std::vector<int64_t>{3, 4, 5}));
}

TEST(Data, WorkerExceptionsReachTheLoopAtTheirBatch) {
  for (int workers : {0, 3}) {
    auto probe = std::make_shared<Probe>(20, 9);
    DataLoader loader(probe, {.batch_size = 4, .workers = workers});
    std::vector<int64_t> firsts;
    try {
      for (const Batch& b : loader) firsts.push_back(b.target.to_vector<int64_t>()[0]);
      ADD_FAILURE() << "expected the dataset's exception";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "bad example 9");
    }
    EXPECT_EQ(firsts, (std::vector<int64_t>{0, 4})) << workers << " workers";
  }
  // A transform's crisp::Error arrives as itself.
  DataLoader bad(counting(8),
                 {.batch_size = 4, .workers = 2, .transform = data::Transform([](Batch b) {
                                                   b.input = b.input.reshape({7});
                                                   return b;
                                                 })});
  EXPECT_THROW(bad.begin(), Error);
}

class DataBackends : public BackendTest {};
INSTANTIATE_TEST_SUITE_P(Backends, DataBackends, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

// Data held on the CPU; the loop runs under this backend: batches arrive here, transformed
// here, with the same values as on the CPU.
TEST_P(DataBackends, BatchesArriveOnTheLoopsBackend) {
  auto cpu = Backend::cpu();
  auto ds = cpu->use([] {
    manual_seed(5);
    return std::make_shared<TensorDataset>(rand({40, 2, 6, 6}), arange(0, 40));
  });
  LoaderOptions o{.batch_size = 8,
                  .shuffle = true,
                  .seed = 2,
                  .workers = 2,
                  .transform = data::Compose({data::RandomCrop(4, 1), data::RandomHorizontalFlip(),
                                              data::Normalize({0.5, 0.4}, {0.2, 0.3})})};
  DataLoader here(ds, o), reference(ds, o);
  std::vector<std::vector<float>> want;
  cpu->use([&] {
    for (const Batch& b : reference) want.push_back(b.input.to_vector<float>());
  });
  size_t k = 0;
  for (const Batch& b : here) {
    EXPECT_EQ(b.input.backend(), Backend::current());
    EXPECT_EQ(b.target.backend(), Backend::current());
    EXPECT_EQ(b.input.shape(), (Shape{8, 2, 4, 4}));
    ASSERT_LT(k, want.size());
    expect_close(b.input, std::vector<double>(want[k].begin(), want[k].end()), 1e-6);
    ++k;
  }
  EXPECT_EQ(k, 5u);
}

// Batches large enough to be copied in chunks beside the loop's work, read only after several
// later steps have been queued.
TEST_P(DataBackends, LargeBatchesMovedWithoutTransformKeepTheirValues) {
  auto cpu = Backend::cpu();
  Tensor images = cpu->use([] { return rand({96, 1, 64, 64}); });
  auto ds = std::make_shared<TensorDataset>(images, cpu->use([] { return arange(0, 96); }));
  DataLoader loader(ds, {.batch_size = 16, .shuffle = true, .seed = 3, .workers = 2});
  std::vector<Batch> got;
  std::vector<Tensor> sums;
  for (const Batch& b : loader) {
    got.push_back(b);
    sums.push_back((b.input * 2).sum());  // work behind each copy
  }
  ASSERT_EQ(got.size(), 6u);
  for (size_t k = 0; k < got.size(); ++k) {
    EXPECT_EQ(got[k].input.backend(), Backend::current());
    const Tensor want = cpu->use([&] { return index_select(images, 0, got[k].target.to(cpu)); });
    EXPECT_EQ(got[k].input.to_vector<float>(), want.to_vector<float>()) << "batch " << k;
    const double twice = 2.0 * want.sum().item<double>();
    EXPECT_NEAR(sums[k].item<double>(), twice, 1e-5 * twice) << "batch " << k;
  }
}

// ---- transforms ----

TEST(Data, NormalizeUsesPerChannelMeanAndStd) {
  Tensor x({1.f, 2.f, 3.f, 4.f, 10.f, 20.f, 30.f, 40.f}, {1, 2, 2, 2});
  Generator g(0);
  Batch b = data::Normalize({2, 20}, {0.5, 10})({x, Tensor({1}, {1})}, g);
  EXPECT_EQ(b.input.to_vector<float>(), (std::vector<float>{-2, 0, 2, 4, -1, 0, 1, 2}));
  EXPECT_EQ(b.target.to_vector<int64_t>(), std::vector<int64_t>{1});
  EXPECT_CRISP_ERROR(data::Normalize({1, 2}, {1}), "mean and std need the same");
  EXPECT_CRISP_ERROR(data::Normalize({1}, {0}), "std values must be nonzero");
  EXPECT_THROW(data::Normalize({1, 2, 3}, {1, 1, 1})({x, Tensor()}, g), Error);
}

TEST(Data, RandomHorizontalFlipFlipsWholeExamplesWithProbabilityP) {
  manual_seed(1);
  Tensor x = randn({64, 2, 3, 4});
  Generator g(4);
  auto same = [](const Tensor& a, const Tensor& b) {
    return a.to_vector<float>() == b.to_vector<float>();
  };
  EXPECT_TRUE(same(data::RandomHorizontalFlip(1.0)({x, Tensor()}, g).input, flip(x, {3})));
  EXPECT_TRUE(same(data::RandomHorizontalFlip(0.0)({x, Tensor()}, g).input, x));
  Tensor y = data::RandomHorizontalFlip(0.5)({x, Tensor()}, g).input;
  int flipped = 0;
  for (int64_t i = 0; i < 64; ++i) {
    const bool f = same(y[i], flip(x[i], {2})), kept = same(y[i], x[i]);
    EXPECT_TRUE(f || kept) << i;
    flipped += f;
  }
  EXPECT_GT(flipped, 16);
  EXPECT_LT(flipped, 48);
  // The same generator state gives the same choices.
  Generator g1(9), g2(9);
  EXPECT_TRUE(same(data::RandomHorizontalFlip()({x, Tensor()}, g1).input,
                   data::RandomHorizontalFlip()({x, Tensor()}, g2).input));
  EXPECT_CRISP_ERROR(data::RandomHorizontalFlip(1.5), "p must be in [0, 1]");
}

TEST(Data, RandomCropCutsAWindowOfThePaddedImagePerExample) {
  // Example i, channel c holds 100 * c + 10 * row + col + 1, so every window is recognizable.
  const int64_t n = 32;
  std::vector<float> v;
  for (int64_t i = 0; i < n; ++i)
    for (int c = 0; c < 2; ++c)
      for (int r = 0; r < 4; ++r)
        for (int q = 0; q < 4; ++q) v.push_back(static_cast<float>(100 * c + 10 * r + q + 1));
  Tensor x(v, {n, 2, 4, 4});
  Generator g(2);
  Tensor y = data::RandomCrop(3, 1)({x, Tensor()}, g).input;
  ASSERT_EQ(y.shape(), (Shape{n, 2, 3, 3}));
  std::set<std::pair<int, int>> offsets;
  const std::vector<float> out = y.to_vector<float>();
  for (int64_t i = 0; i < n; ++i) {
    // Find the offset (in the padded 6x6 image) this example's window came from.
    bool found = false;
    for (int top = 0; top <= 3 && !found; ++top)
      for (int left = 0; left <= 3 && !found; ++left) {
        bool match = true;
        for (int c = 0; c < 2; ++c)
          for (int r = 0; r < 3; ++r)
            for (int q = 0; q < 3; ++q) {
              const int pr = top + r - 1, pq = left + q - 1;  // unpadded coordinates
              const float want = (pr < 0 || pr > 3 || pq < 0 || pq > 3)
                                     ? 0.f
                                     : static_cast<float>(100 * c + 10 * pr + pq + 1);
              match &= out[static_cast<size_t>(((i * 2 + c) * 3 + r) * 3 + q)] == want;
            }
        if (match) {
          found = true;
          offsets.insert({top, left});
        }
      }
    EXPECT_TRUE(found) << "example " << i;
  }
  EXPECT_GT(offsets.size(), 6u);  // offsets vary between examples
  // A crop of the full size without padding is the identity.
  EXPECT_EQ(data::RandomCrop(4)({x, Tensor()}, g).input.to_vector<float>(), v);
  EXPECT_CRISP_ERROR(data::RandomCrop(0), "crop size must be positive");
  EXPECT_THROW(data::RandomCrop(5)({x, Tensor()}, g), Error);
  EXPECT_THROW(data::RandomCrop(2)({ones({4, 4}), Tensor()}, g), Error);
}

TEST(Data, TransformsComposeInOrder) {
  Tensor x({1.f, 2.f, 3.f}, {1, 1, 1, 3});
  data::Transform t =
      data::Compose({data::Normalize({1}, {2}), data::RandomHorizontalFlip(1.0), [](Batch b) {
                       b.input = b.input * 10;
                       return b;
                     }});
  Generator g(0);
  EXPECT_EQ(t({x, Tensor()}, g).input.to_vector<float>(), (std::vector<float>{10, 5, 0}));
  EXPECT_EQ(data::Transform()({x, Tensor()}).input.to_vector<float>(),
            (std::vector<float>{1, 2, 3}));
  EXPECT_FALSE(static_cast<bool>(data::Transform()));
}

// ---- files ----

TEST(Data, ReadIdxReadsRawAndGzipFilesOfEveryType) {
  TempDir dir;
  const std::string u8body = {1, 2, 3, 4, 5, static_cast<char>(255)};
  for (bool gz : {false, true}) {
    const std::string p = dir.file(gz ? "a.idx.gz" : "a.idx");
    write_bytes(p, idx(0x08, {2, 3}, u8body), gz);
    Tensor t = data::read_idx(p);
    EXPECT_EQ(t.dtype(), u8);
    EXPECT_EQ(t.shape(), (Shape{2, 3}));
    EXPECT_EQ(t.to_vector<uint8_t>(), (std::vector<uint8_t>{1, 2, 3, 4, 5, 255}));
  }
  write_bytes(dir.file("i8"),
              idx(0x09, {3}, {static_cast<char>(0xff), 0x7f, static_cast<char>(0x80)}));
  EXPECT_EQ(data::read_idx(dir.file("i8")).to_vector<int32_t>(),
            (std::vector<int32_t>{-1, 127, -128}));
  write_bytes(dir.file("i16"),
              idx(0x0B, {2}, {static_cast<char>(0xff), static_cast<char>(0xfe), 0x01, 0x00}));
  EXPECT_EQ(data::read_idx(dir.file("i16")).to_vector<int32_t>(), (std::vector<int32_t>{-2, 256}));
  write_bytes(dir.file("i32"), idx(0x0C, {1, 1}, be32(0xfffffff6)));
  EXPECT_EQ(data::read_idx(dir.file("i32")).to_vector<int32_t>(), std::vector<int32_t>{-10});
  write_bytes(dir.file("f32"), idx(0x0D, {1}, be32(0x3fc00000)), true);
  EXPECT_EQ(data::read_idx(dir.file("f32")).to_vector<float>(), std::vector<float>{1.5f});
  write_bytes(dir.file("f64"), idx(0x0E, {1}, be32(0xc0040000) + be32(0)));
  EXPECT_EQ(data::read_idx(dir.file("f64")).to_vector<double>(), std::vector<double>{-2.5});
}

TEST(Data, ReadIdxRejectsBadFiles) {
  TempDir dir;
  const std::string p = dir.file("bad.idx");
  auto expect_bad = [&](const std::string& bytes, const std::string& text, bool gz = false) {
    write_bytes(p, bytes, gz);
    EXPECT_CRISP_ERROR(data::read_idx(p), text);
  };
  expect_bad(std::string(2, '\0'), "too short for an IDX header");
  expect_bad(idx(0x08, {2}, "ab").replace(0, 1, "\x01"), "not an IDX file");
  expect_bad(idx(0x07, {2}, "ab"), "not an IDX file");
  expect_bad(idx(0x08, {}, ""), "not an IDX file");
  expect_bad(idx(0x08, {2, 3}, "").substr(0, 9), "ends inside the header of 2 dimensions");
  expect_bad(idx(0x08, {2, 3}, "abcde"),
             "truncated: dimensions [2, 3] need 6 bytes of data but the file holds 5");
  expect_bad(idx(0x08, {2, 3}, "abcde"), "truncated", true);
  expect_bad(idx(0x08, {2, 3}, "abcdefg"), "holds more data than dimensions [2, 3] need");
  expect_bad(idx(0x0E, {0xffffffff, 0xffffffff, 0xffffffff}, ""), "are too large");
  {
    // A gzip stream cut short.
    write_bytes(p, idx(0x08, {64}, std::string(64, 'z')), true);
    std::string gz;
    {
      std::ifstream in(p, std::ios::binary);
      gz.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    expect_bad(gz.substr(0, gz.size() - 12), "");
  }
  EXPECT_CRISP_ERROR(data::read_idx(dir.file("none.idx")), "no such file");
}

TEST(Data, MnistFromIdxFilesAndClearErrorWhenMissing) {
  TempDir dir;
  std::string pixels;
  for (int i = 0; i < 3 * 28 * 28; ++i) pixels += static_cast<char>(i % 256);
  write_bytes(dir.file("t10k-images-idx3-ubyte.gz"), idx(0x08, {3, 28, 28}, pixels), true);
  write_bytes(dir.file("t10k-labels-idx1-ubyte"), idx(0x08, {3}, {7, 2, 1}));
  auto ds = data::mnist(dir.file(""), false);
  EXPECT_EQ(ds->inputs().shape(), (Shape{3, 1, 28, 28}));
  EXPECT_EQ(ds->inputs().dtype(), f32);
  EXPECT_EQ(ds->targets().to_vector<int64_t>(), (std::vector<int64_t>{7, 2, 1}));
  const std::vector<float> v = ds->inputs()[0, 0, 0].to_vector<float>();
  EXPECT_FLOAT_EQ(v[0], 0.f);
  EXPECT_FLOAT_EQ(v[5], 5.f / 255.f);
  const float second = ds->inputs()[1, 0, 0, 0].item<float>();
  EXPECT_FLOAT_EQ(second, static_cast<float>(784 % 256) / 255.f);
  EXPECT_CRISP_ERROR(data::fashion_mnist(dir.file(""), true),
                     "cannot find train-images-idx3-ubyte.gz (or train-images-idx3-ubyte)");
  EXPECT_CRISP_ERROR(data::fashion_mnist(dir.file(""), true), "dataset-fashion-mnist");
  write_bytes(dir.file("t10k-labels-idx1-ubyte"), idx(0x08, {4}, {7, 2, 1, 0}));
  EXPECT_CRISP_ERROR(data::mnist(dir.file(""), false), "holds 3 images but");
}

TEST(Data, FashionMnistWhenInstalled) {
  if (!fs::exists(std::string(data::kFashionMnistDir) + "/t10k-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  auto test = data::fashion_mnist(data::kFashionMnistDir, false);
  EXPECT_EQ(test->inputs().shape(), (Shape{10000, 1, 28, 28}));
  EXPECT_EQ(test->targets().shape(), Shape{10000});
  EXPECT_EQ(test->targets().dtype(), i64);
  EXPECT_EQ(test->targets()[0].item<int64_t>(), 9);  // an ankle boot
  EXPECT_GE(test->inputs().min().item<float>(), 0.f);
  EXPECT_LE(test->inputs().max().item<float>(), 1.f);
}

TEST(Data, CifarBinaryFiles) {
  TempDir dir;
  // Record k: label k % 10, pixel j = (k + j) % 256.
  auto record = [](int k, std::string labels) {
    for (int j = 0; j < 3072; ++j) labels += static_cast<char>((k + j) % 256);
    return labels;
  };
  fs::create_directory(dir.file("cifar-10-batches-bin"));
  int k = 0;
  for (int f = 1; f <= 5; ++f) {
    std::string bytes;
    for (int r = 0; r < 2; ++r, ++k) bytes += record(k, std::string(1, static_cast<char>(k % 10)));
    write_bytes(dir.file("cifar-10-batches-bin/data_batch_" + std::to_string(f) + ".bin"), bytes);
  }
  write_bytes(dir.file("cifar-10-batches-bin/test_batch.bin"), record(50, "\x03"));
  auto train = data::cifar10(dir.file(""), true);
  EXPECT_EQ(train->inputs().shape(), (Shape{10, 3, 32, 32}));
  EXPECT_EQ(train->targets().to_vector<int64_t>(),
            (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  // Channel-major records: example 7, channel 1, row 2, column 5 is byte 1024 + 64 + 5.
  const float pixel = train->inputs()[7, 1, 2, 5].item<float>();
  EXPECT_FLOAT_EQ(pixel, static_cast<float>((7 + 1093) % 256) / 255.f);
  auto test = data::cifar10(dir.file("cifar-10-batches-bin"), false);
  EXPECT_EQ(test->inputs().shape(), (Shape{1, 3, 32, 32}));
  EXPECT_EQ(test->targets().to_vector<int64_t>(), std::vector<int64_t>{3});

  write_bytes(dir.file("train.bin"), record(0, "\x02\x55") + record(1, "\x13\x07"));
  auto fine = data::cifar100(dir.file(""), true);
  EXPECT_EQ(fine->targets().to_vector<int64_t>(), (std::vector<int64_t>{85, 7}));
  EXPECT_EQ(data::cifar100(dir.file(""), true, false)->targets().to_vector<int64_t>(),
            (std::vector<int64_t>{2, 19}));
  const float last = fine->inputs()[1, 2, 31, 31].item<float>();
  EXPECT_FLOAT_EQ(last, static_cast<float>(3072 % 256) / 255.f);

  write_bytes(dir.file("train.bin"), record(0, "\x02\x55") + "x");
  EXPECT_CRISP_ERROR(data::cifar100(dir.file(""), true),
                     "is not a whole number of CIFAR-100 records");
  write_bytes(dir.file("train.bin"), record(0, "\x02\x65"));
  EXPECT_CRISP_ERROR(data::cifar100(dir.file(""), true), "has label 101, outside [0, 100)");
  EXPECT_CRISP_ERROR(data::cifar10(dir.file("nowhere"), false), "cannot find test_batch.bin");
}

// ---- progress ----

TEST(Data, ProgressBarIsSilentWithoutATerminalAndShowsRateAndLoss) {
  ::testing::internal::CaptureStderr();
  {
    data::ProgressBar bar(10, "train");
    bar.update(2, 1.0);
    bar.update(1, 0.5);
    EXPECT_EQ(bar.done(), 3u);
    EXPECT_DOUBLE_EQ(bar.mean_loss(), 0.75);
    const std::string text = bar.text();
    EXPECT_NE(text.find("train ["), std::string::npos) << text;
    EXPECT_NE(text.find("3/10  30%"), std::string::npos) << text;
    EXPECT_NE(text.find("it/s"), std::string::npos) << text;
    EXPECT_NE(text.find("ETA"), std::string::npos) << text;
    EXPECT_NE(text.find("loss 0.75"), std::string::npos) << text;
    bar.update(7);
    EXPECT_EQ(bar.text().find("ETA"), std::string::npos);
  }
  const std::string err = ::testing::internal::GetCapturedStderr();
  if (!isatty(STDERR_FILENO)) {
    EXPECT_EQ(err, "");
  }
}

}  // namespace crisp::testing
