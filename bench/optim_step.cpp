// One optimizer step over the reference CNN's 13.3M parameters, crisp's side, and the memory
// floor it is held to: the bytes a fused update must move (Adam: read p, g, m, v and write
// p, m, v, 28 bytes per float32 parameter) over the copy bandwidth measured here beyond the
// last-level cache. Prints one JSON object; bench/torch_optim_step.py times PyTorch beside it.
//
// Usage: optim_step [--reps N]
#include <crisp/crisp.h>
#include <crisp/models.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace crisp;

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Minimum and median over reps runs, after two warm-up runs.
std::pair<double, double> measure(int reps, const std::function<void()>& f) {
  std::vector<double> t;
  for (int i = 0; i < reps + 2; ++i) {
    const double t0 = now_ms();
    f();
    if (i >= 2) t.push_back(now_ms() - t0);
  }
  std::sort(t.begin(), t.end());
  return {t.front(), t[t.size() / 2]};
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 20;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--reps") reps = std::atoi(argv[i + 1]);

  models::ReferenceCNN model;
  auto params = model.parameters();
  int64_t n = 0;
  for (const auto& p : params) n += p.tensor->numel();
  {
    Tensor loss = scalar(0.0f);
    for (const auto& p : params) loss = loss + (*p.tensor * 0.5f).sum();
    loss.backward();
  }

  // Copy bandwidth with a working set (2 x 4 x 53 MB) beyond the cache, as a step's is.
  const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const size_t count = 4 * static_cast<size_t>(n);
  std::unique_ptr<float[]> src(new float[count]), dst(new float[count]);
  std::fill_n(src.get(), count, 1.0f);
  std::fill_n(dst.get(), count, 2.0f);
  const double copy_ms = measure(std::max(reps / 2, 3), [&] {
                           std::vector<std::thread> pool;
                           for (int k = 0; k < threads; ++k)
                             pool.emplace_back([&, k] {
                               const size_t b = count * k / threads, e = count * (k + 1) / threads;
                               std::memcpy(dst.get() + b, src.get() + b, (e - b) * sizeof(float));
                             });
                           for (auto& t : pool) t.join();
                         }).first;
  const double gbps = 2.0 * count * sizeof(float) / copy_ms / 1e6;

  std::printf("{\"params\": %lld, \"threads\": %d, \"copy_gbps\": %.2f", static_cast<long long>(n),
              threads, gbps);
  auto run = [&](const char* name, optim::Optimizer& opt, int arrays) {
    const auto [lo, med] = measure(reps, [&] { opt.step(); });
    std::printf(",\n \"%s\": [%.3f, %.3f, %.3f]", name, lo, med, arrays * 4.0 * n / gbps / 1e6);
  };
  {
    optim::Adam opt(params, {.lr = 1e-6});
    run("Adam", opt, 7);
  }
  {
    optim::AdamW opt(params, {.lr = 1e-6});
    run("AdamW", opt, 7);
  }
  {
    optim::Adam opt(params, {.lr = 1e-6, .amsgrad = true});
    run("Adam amsgrad", opt, 9);
  }
  {
    optim::SGD opt(params, {.lr = 1e-6, .momentum = 0.9});
    run("SGD momentum", opt, 5);
  }
  {
    optim::RMSprop opt(params, {.lr = 1e-6});
    run("RMSprop", opt, 5);
  }
  std::printf("}\n");
}
