// Data: datasets, a loader that prepares batches on background threads, the standard image
// datasets, batch transforms and a progress bar.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "crisp/error.h"
#include "crisp/random.h"
#include "crisp/tensor.h"

namespace crisp::data {

struct Example {
  Tensor input;
  Tensor target;
};

// Examples stacked along a new axis 0. target is undefined for unlabeled data.
struct Batch {
  Tensor input;
  Tensor target;
};

// A source of examples. The loader calls get and get_batch from its worker threads, several at
// once, so they must be safe to call concurrently (they are const).
class Dataset {
 public:
  virtual ~Dataset();
  virtual size_t size() const = 0;
  virtual Example get(size_t i) const = 0;
  // The examples at indices, stacked. The default stacks get(i) for each index; datasets that
  // hold whole tensors override it with one gather.
  virtual Batch get_batch(const std::vector<int64_t>& indices) const;
};

// Examples are slices along axis 0 of whole tensors; a batch is one index_select per tensor,
// computed on the backend that holds them.
class TensorDataset : public Dataset {
 public:
  // targets may be undefined (unlabeled data); otherwise its first axis matches inputs'.
  TensorDataset(Tensor inputs, Tensor targets, Loc loc = Loc::current());
  size_t size() const override;
  Example get(size_t i) const override;
  Batch get_batch(const std::vector<int64_t>& indices) const override;
  const Tensor& inputs() const { return inputs_; }
  const Tensor& targets() const { return targets_; }

 private:
  Tensor inputs_, targets_;
};

// ---- transforms ----

// A function of a batch. Random transforms draw from the generator they are given: the loader
// gives every batch its own generator, seeded from (seed, epoch, batch index), so augmented
// batches are the same whatever the number of workers, and a resumed run sees the same ones.
// Built from any callable taking (Batch, Generator&) or (Batch); the default is the identity.
class Transform {
 public:
  using Fn = std::function<Batch(Batch, Generator&)>;
  Transform() = default;
  template <class F>
  requires(!std::same_as<std::remove_cvref_t<F>, Transform> &&
           (std::invocable<const F&, Batch, Generator&> || std::invocable<const F&, Batch>))
      Transform(F f) {
    if constexpr (std::invocable<const F&, Batch, Generator&>)
      fn_ = [f = std::move(f)](Batch b, Generator& g) -> Batch { return f(std::move(b), g); };
    else
      fn_ = [f = std::move(f)](Batch b, Generator&) -> Batch { return f(std::move(b)); };
  }
  Batch operator()(Batch b, Generator& gen) const { return fn_ ? fn_(std::move(b), gen) : b; }
  // Random transforms draw from the global generator.
  Batch operator()(Batch b) const { return (*this)(std::move(b), default_generator()); }
  explicit operator bool() const { return static_cast<bool>(fn_); }

 private:
  Fn fn_;
};

// Applies transforms in order.
class Compose {
 public:
  Compose(std::vector<Transform> transforms) : transforms_(std::move(transforms)) {}
  Batch operator()(Batch b, Generator& gen) const;

 private:
  std::vector<Transform> transforms_;
};

// (input - mean[c]) / std[c] over the channel axis 1 of input [N, C, ...]; one value applies to
// every channel.
class Normalize {
 public:
  Normalize(std::vector<double> mean, std::vector<double> std, Loc loc = Loc::current());
  Batch operator()(Batch b, Generator& gen) const;

 private:
  std::vector<double> mean_, std_;
};

// Pads input [N, C, H, W] by padding zeros on each side, then cuts an [h, w] window at a random
// place, independently for each example.
class RandomCrop {
 public:
  RandomCrop(int64_t size, int64_t padding = 0, Loc loc = Loc::current());
  RandomCrop(int64_t height, int64_t width, int64_t padding, Loc loc = Loc::current());
  Batch operator()(Batch b, Generator& gen) const;

 private:
  int64_t height_, width_, padding_;
};

// Mirrors each example's input along its last axis with probability p.
class RandomHorizontalFlip {
 public:
  explicit RandomHorizontalFlip(double p = 0.5, Loc loc = Loc::current());
  Batch operator()(Batch b, Generator& gen) const;

 private:
  double p_;
};

// ---- loading ----

struct LoaderOptions {
  size_t batch_size = 64;
  // Visit examples in a permutation that depends only on (seed, epoch).
  bool shuffle = false;
  uint64_t seed = 0;
  // Leave out the last batch when it is smaller than batch_size.
  bool drop_last = false;
  // Threads preparing batches ahead of the loop; 0 prepares each batch on the loop's thread
  // when it is asked for.
  int workers = 1;
  // Batches each worker may have ready (or in preparation) ahead of the loop.
  int prefetch = 2;
  // Applied by the workers to each batch (with that batch's generator).
  Transform transform = {};
};

namespace detail {
struct LoaderCursor;
struct LoaderRun;
}  // namespace detail

// Batches of a dataset, for range-for:
//   data::DataLoader loader(dataset, {.batch_size = 128, .shuffle = true, .seed = 1});
//   for (int epoch = 0; epoch < 10; ++epoch)
//     for (const data::Batch& b : loader) step(b.input, b.target);
// Each loop runs one epoch. A loop that runs to the end moves the loader to the next epoch; one
// that stops early (break) leaves it on the same epoch, and its workers stop at once. Batches
// come out in the same order whatever the number of workers, on the backend that was current
// when the loop began. An exception thrown while preparing a batch is rethrown by the loop when
// it reaches that batch.
class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options = {},
             Loc loc = Loc::current());
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Batches per epoch.
  size_t size() const;
  // The epoch the next loop runs.
  uint64_t epoch() const;
  // The next loop runs this epoch from its first batch.
  void set_epoch(uint64_t epoch);
  // The next loop runs this epoch from this batch (0 <= batch <= size()): resuming a run stopped
  // after `batch` batches of the epoch gives exactly the batches it would have seen.
  void start_at(uint64_t epoch, size_t batch, Loc loc = Loc::current());
  // The order an epoch visits the examples in.
  std::vector<int64_t> order(uint64_t epoch) const;
  const LoaderOptions& options() const { return options_; }
  const Dataset& dataset() const { return *dataset_; }

  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    Iterator() = default;
    const Batch& operator*() const;
    const Batch* operator->() const { return &**this; }
    Iterator& operator++();
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const;
    // The index within its epoch of the current batch, and that epoch.
    size_t batch_index() const;
    uint64_t epoch() const;

   private:
    friend class DataLoader;
    explicit Iterator(std::shared_ptr<detail::LoaderRun> run) : run_(std::move(run)) {}
    std::shared_ptr<detail::LoaderRun> run_;
  };
  Iterator begin();
  std::default_sentinel_t end() const { return {}; }

 private:
  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions options_;
  std::shared_ptr<detail::LoaderCursor> cursor_;
};

// ---- files ----

// An IDX file (the MNIST format), gzip-compressed or raw: a tensor of its shape. Element types
// u8 -> u8, i8 and i16 -> i32, i32 -> i32, f32 -> f32, f64 -> f64.
Tensor read_idx(const std::string& path, Loc loc = Loc::current());

inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// Images f32 [N, 1, 28, 28] in [0, 1] and labels i64 [N], from the IDX files in dir
// (train-images-idx3-ubyte[.gz] and so on; t10k-* for the test split).
std::shared_ptr<TensorDataset> fashion_mnist(const std::string& dir = kFashionMnistDir,
                                             bool train = true, Loc loc = Loc::current());
std::shared_ptr<TensorDataset> mnist(const std::string& dir, bool train = true,
                                     Loc loc = Loc::current());
// Images f32 [N, 3, 32, 32] in [0, 1] and labels i64 [N], from the binary version's files
// (data_batch_1..5.bin / test_batch.bin) in dir or dir/cifar-10-batches-bin.
std::shared_ptr<TensorDataset> cifar10(const std::string& dir, bool train = true,
                                       Loc loc = Loc::current());
// From train.bin / test.bin in dir or dir/cifar-100-binary; fine (100 classes) or coarse (20)
// labels.
std::shared_ptr<TensorDataset> cifar100(const std::string& dir, bool train = true, bool fine = true,
                                        Loc loc = Loc::current());

// ---- progress ----

// A one-line progress bar on stderr: done/total, rate, time left and the running mean of the
// loss. It draws only when stderr is a terminal, at most ten times a second.
class ProgressBar {
 public:
  explicit ProgressBar(size_t total, std::string label = "");
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Advances by n steps; loss (when given) joins the running mean shown.
  void update(size_t n = 1, std::optional<double> loss = {});
  // Draws the final line and ends it; later calls do nothing.
  void finish();
  // The line as drawn now (also when stderr is not a terminal).
  std::string text() const;
  bool drawing() const { return tty_; }
  size_t done() const { return done_; }
  // The running mean of the losses passed to update (NaN before any).
  double mean_loss() const;

 private:
  void draw(bool final);

  size_t total_, done_ = 0;
  std::string label_;
  bool tty_, finished_ = false;
  double loss_sum_ = 0;
  size_t loss_count_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace crisp::data
