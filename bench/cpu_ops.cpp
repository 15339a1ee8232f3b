// CPU micro-benchmark, crisp's side: prints one JSON object of median timings (seconds).
// bench/cpu_ops.py runs it beside PyTorch and prints the ratios.
#include <cblas.h>
#include <crisp/crisp.h>
#include "cpu/loops.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

using namespace crisp;

namespace {

double seconds(const std::function<void()>& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Median over repeats of f's time (after one warm-up run).
double median_time(int repeats, const std::function<void()>& f) {
  f();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) t.push_back(seconds(f));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int reps = quick ? 3 : 15;
  std::vector<std::pair<std::string, double>> out;

  // Per-op dispatch overhead: a chain of 1-element adds, read once at the end.
  {
    Tensor a = ones({1}), b = ones({1});
    const int n = quick ? 1000 : 20000;
    double t = median_time(reps, [&] {
      Tensor c = a;
      for (int i = 0; i < n; ++i) c = c + b;
      c.wait();
    });
    out.push_back({"dispatch_add_1elem_us", t / n * 1e6});
  }

  // Elementwise add over 16M floats, and the memory-bandwidth floor for the same traffic
  // (read two arrays, write one) from a plain parallel loop.
  {
    const int64_t n = int64_t{1} << 24;
    Tensor a = rand({n}), b = rand({n});
    double t = median_time(reps, [&] { (a + b).wait(); });
    out.push_back({"add_16M_ms", t * 1e3});
    std::vector<float> x(n, 1.f), y(n, 2.f), z(n);
    double floor = median_time(reps, [&] {
      cpu::parallel_for(n, n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) z[i] = x[i] + y[i];
      });
    });
    out.push_back({"add_16M_floor_ms", floor * 1e3});
    out.push_back({"add_16M_GBps", 3.0 * 4 * n / t / 1e9});
  }

  // 1024^3 matmul, and OpenBLAS called directly on the same sizes.
  {
    const int n = 1024;
    Tensor a = randn({n, n}), b = randn({n, n});
    double t = median_time(reps, [&] { matmul(a, b).wait(); });
    out.push_back({"matmul_1024_ms", t * 1e3});
    std::vector<float> x(n * n, 0.5f), y(n * n, 0.25f), z(n * n);
    openblas_set_num_threads(num_threads());  // crisp keeps BLAS single-threaded itself
    double direct = median_time(reps, [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, x.data(), n, y.data(), n,
                  0.f, z.data(), n);
    });
    openblas_set_num_threads(1);
    out.push_back({"matmul_1024_openblas_ms", direct * 1e3});
  }

  // Forward + backward of each conv layer of the reference CNN at batch 64.
  {
    struct Layer {
      const char* name;
      int64_t cin, cout, hw;
    };
    for (Layer l :
         {Layer{"conv1", 1, 20, 28}, Layer{"conv2", 20, 50, 14}, Layer{"conv3", 50, 500, 7}}) {
      Tensor x = randn({64, l.cin, l.hw, l.hw});
      Tensor w = (randn({l.cout, l.cin, 5, 5}) * 0.05).requires_grad_();
      Tensor bias = zeros({l.cout}).requires_grad_();
      Tensor xg = x.detach().requires_grad_();
      double t = median_time(quick ? 2 : 7, [&] {
        Tensor y = conv2d(xg, w, bias, {.padding = {2}});
        y.backward(ones(y.shape()));
        w.grad().wait();
        w.zero_grad();
        bias.zero_grad();
        xg.zero_grad();
      });
      out.push_back({std::string(l.name) + "_fwd_bwd_ms", t * 1e3});
    }
  }

  std::printf("{");
  for (size_t i = 0; i < out.size(); ++i)
    std::printf("%s\"%s\": %.6g", i ? ", " : "", out[i].first.c_str(), out[i].second);
  std::printf(", \"threads\": %d}\n", num_threads());
  return 0;
}
