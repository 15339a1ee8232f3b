// DataLoader: epoch orders as pure functions of (seed, epoch), batches prepared by worker threads
// into a bounded window and handed out in order.
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

#include "core/tensor_impl.h"
#include "core/thread_pool.h"
#include "crisp/data.h"

namespace crisp::data {

namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t mix(uint64_t a, uint64_t b, uint64_t c) {
  uint64_t s = a;
  uint64_t h = splitmix64(s);
  s = h ^ b;
  h = splitmix64(s);
  s = h ^ c;
  return splitmix64(s);
}

// Uniform in [0, bound) without modulo bias (Lemire's method).
uint64_t bounded(uint64_t& state, uint64_t bound) {
  __uint128_t m = static_cast<__uint128_t>(splitmix64(state)) * bound;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < bound) {
    const uint64_t threshold = -bound % bound;
    while (low < threshold) {
      m = static_cast<__uint128_t>(splitmix64(state)) * bound;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

// Distinct streams for the epoch order and the per-batch transform generators.
constexpr uint64_t kOrderStream = 0x6f72646572ull;
constexpr uint64_t kBatchStream = 0x6261746368ull;

}  // namespace

namespace detail {

// Where the next loop starts; shared with running loops so a finished one can advance it even
// after the loader is gone.
struct LoaderCursor {
  std::mutex mutex;
  uint64_t epoch = 0;
  size_t batch = 0;
  uint64_t generation = 0;  // bumped by set_epoch/start_at, so a stale loop does not advance it
};

// One loop over one epoch: the workers and the window of prepared batches.
struct LoaderRun {
  std::shared_ptr<const Dataset> dataset;
  LoaderOptions options;
  std::shared_ptr<Backend> backend;
  std::shared_ptr<LoaderCursor> cursor;
  uint64_t generation;
  std::vector<int64_t> order;
  uint64_t epoch;
  size_t next, end;  // the batch the loop holds (or waits for); one past the last
  Batch current;
  bool has_current = false;

  struct Result {
    Batch batch;
    std::exception_ptr error;
  };
  std::mutex mutex;
  std::condition_variable work_cv, ready_cv;
  std::map<size_t, Result> ready;
  size_t claimed = 0;  // the next batch a worker takes
  size_t window = 1;   // batches ready or in preparation ahead of the one the loop holds
  bool stop = false;
  std::vector<std::thread> threads;

  ~LoaderRun() {
    {
      std::lock_guard lock(mutex);
      stop = true;
    }
    work_cv.notify_all();
    for (auto& t : threads) t.join();
  }

  Batch make(size_t b) const {
    BackendScope scope(backend);
    const size_t bs = options.batch_size;
    const size_t first = b * bs, last = std::min(first + bs, order.size());
    std::vector<int64_t> indices(order.begin() + static_cast<ptrdiff_t>(first),
                                 order.begin() + static_cast<ptrdiff_t>(last));
    Batch batch = dataset->get_batch(indices);
    if (options.transform) {
      Generator gen(mix(options.seed ^ kBatchStream, epoch, b));
      batch = options.transform(std::move(batch), gen);
    }
    for (Tensor* t : {&batch.input, &batch.target}) {
      if (!t->defined()) continue;
      // Computed here, by the worker, when on the CPU. Moved without waiting: waiting on a
      // device would wait for the training step queued there, which the copy overlaps.
      if (t->backend()->is_cpu()) t->wait();
      *t = t->to(backend);
    }
    return batch;
  }

  void work() {
    SerialScope serial;  // the pool's cores belong to the training loop
    while (true) {
      size_t b;
      {
        std::unique_lock lock(mutex);
        // The loop holds batch `next`; up to `window` batches after it may be prepared.
        work_cv.wait(lock, [&] { return stop || (claimed < end && claimed <= next + window); });
        if (stop) return;
        b = claimed++;
      }
      Result r;
      try {
        r.batch = make(b);
      } catch (...) {
        r.error = std::current_exception();
      }
      {
        std::lock_guard lock(mutex);
        ready.emplace(b, std::move(r));
      }
      ready_cv.notify_all();
    }
  }

  void start() {
    claimed = next;
    const int workers = options.workers;
    window = static_cast<size_t>(std::max(1, workers) * options.prefetch);
    for (int i = 0; i < workers; ++i) threads.emplace_back([this] { work(); });
  }

  // Moves to the following batch; false past the last.
  bool advance() {
    {
      std::lock_guard lock(mutex);
      ++next;
    }
    work_cv.notify_all();
    return next < end;
  }

  // Receives batch `next`, or rethrows what preparing it threw.
  void fetch() {
    if (threads.empty()) {
      current = make(next);
      has_current = true;
      return;
    }
    Result r;
    {
      std::unique_lock lock(mutex);
      ready_cv.wait(lock, [&] { return ready.contains(next); });
      auto it = ready.find(next);
      r = std::move(it->second);
      ready.erase(it);
    }
    work_cv.notify_all();
    if (r.error) std::rethrow_exception(r.error);
    current = std::move(r.batch);
    has_current = true;
  }

  void finished() {
    has_current = false;
    current = {};
    std::lock_guard lock(cursor->mutex);
    if (cursor->generation == generation) {
      cursor->epoch = epoch + 1;
      cursor->batch = 0;
      ++cursor->generation;
    }
  }
};

}  // namespace detail

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options, Loc loc)
    : dataset_(std::move(dataset)),
      options_(std::move(options)),
      cursor_(std::make_shared<detail::LoaderCursor>()) {
  CallScope scope("DataLoader", loc);
  check(dataset_ != nullptr, "the dataset is null");
  check(options_.batch_size > 0, "batch_size must be positive");
  check(options_.workers >= 0, "workers must be >= 0, got ", options_.workers);
  check(options_.prefetch >= 1, "prefetch must be >= 1, got ", options_.prefetch);
}

DataLoader::~DataLoader() = default;

size_t DataLoader::size() const {
  const size_t n = dataset_->size(), bs = options_.batch_size;
  return options_.drop_last ? n / bs : (n + bs - 1) / bs;
}

uint64_t DataLoader::epoch() const {
  std::lock_guard lock(cursor_->mutex);
  return cursor_->epoch;
}

void DataLoader::set_epoch(uint64_t epoch) { start_at(epoch, 0); }

void DataLoader::start_at(uint64_t epoch, size_t batch, Loc loc) {
  CallScope scope("start_at", loc);
  check(batch <= size(), "batch ", batch, " is past the end of an epoch of ", size(), " batches");
  std::lock_guard lock(cursor_->mutex);
  cursor_->epoch = epoch;
  cursor_->batch = batch;
  ++cursor_->generation;
}

std::vector<int64_t> DataLoader::order(uint64_t epoch) const {
  const size_t n = dataset_->size();
  std::vector<int64_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = static_cast<int64_t>(i);
  if (!options_.shuffle) return order;
  uint64_t state = mix(options_.seed ^ kOrderStream, epoch, 0);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[bounded(state, i)]);
  return order;
}

DataLoader::Iterator DataLoader::begin() {
  auto run = std::make_shared<detail::LoaderRun>();
  run->dataset = dataset_;
  run->options = options_;
  run->backend = Backend::current();
  run->cursor = cursor_;
  {
    std::lock_guard lock(cursor_->mutex);
    run->epoch = cursor_->epoch;
    run->next = cursor_->batch;
    run->generation = cursor_->generation;
    // A start position applies to one loop only.
    cursor_->batch = 0;
  }
  run->order = order(run->epoch);
  run->end = size();
  run->next = std::min(run->next, run->end);
  if (run->next == run->end) {
    run->finished();
    return Iterator(std::move(run));
  }
  run->start();
  run->fetch();
  return Iterator(std::move(run));
}

const Batch& DataLoader::Iterator::operator*() const {
  if (!run_ || !run_->has_current) fail("DataLoader: dereferencing an iterator past the end");
  return run_->current;
}

DataLoader::Iterator& DataLoader::Iterator::operator++() {
  if (!run_ || !run_->has_current) return *this;
  run_->has_current = false;
  if (!run_->advance()) {
    run_->finished();
    return *this;
  }
  run_->fetch();
  return *this;
}

bool DataLoader::Iterator::operator==(std::default_sentinel_t) const {
  return !run_ || !run_->has_current;
}

size_t DataLoader::Iterator::batch_index() const { return run_ ? run_->next : 0; }
uint64_t DataLoader::Iterator::epoch() const { return run_ ? run_->epoch : 0; }

}  // namespace crisp::data
