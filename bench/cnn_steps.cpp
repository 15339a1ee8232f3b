// The reference CNN's training step and inference, crisp's side: the whole forward and backward
// of a batch, then each layer alone. Prints one JSON object {name: [min_ms, median_ms]};
// bench/torch_cnn_steps.py times the same pieces in PyTorch and prints the ratios.
//
// Usage: cnn_steps [--reps N] [--only SUBSTRING] [--cpu-time]
#include <crisp/crisp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

using namespace crisp;

namespace {

// Wall-clock time, or with --cpu-time the CPU time of the whole process: on a machine shared
// with other work, the latter (with one thread on each side) still compares the work done.
bool cpu_time = false;

double now_ms() {
  if (cpu_time) {
    timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_nsec) * 1e-6;
  }
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Stat {
  double min, median;
};

Stat stat(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  return {t.front(), t[t.size() / 2]};
}

// Times `timed` after `setup` (untimed) on each repeat, after two warm-up rounds.
Stat measure(int reps, const std::function<void()>& setup, const std::function<void()>& timed) {
  std::vector<double> t;
  for (int i = 0; i < reps + 2; ++i) {
    setup();
    const double t0 = now_ms();
    timed();
    const double dt = now_ms() - t0;
    if (i >= 2) t.push_back(dt);
  }
  return stat(t);
}

Tensor param(Shape shape, int64_t fan_in, Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  return uniform(shape, -bound, bound, f32, &gen).requires_grad_();
}

struct Net {
  Generator gen{0}, drop{1};
  Tensor w1 = param({20, 1, 5, 5}, 25, gen), b1 = param({20}, 25, gen);
  Tensor w2 = param({50, 20, 5, 5}, 500, gen), b2 = param({50}, 500, gen);
  Tensor w3 = param({500, 50, 5, 5}, 1250, gen), b3 = param({500}, 1250, gen);
  Tensor l1 = param({2250, 4500}, 4500, gen), c1 = param({2250}, 4500, gen);
  Tensor l2 = param({1125, 2250}, 2250, gen), c2 = param({1125}, 2250, gen);
  Tensor l3 = param({10, 1125}, 1125, gen), c3 = param({10}, 1125, gen);

  std::vector<Tensor*> params() {
    return {&w1, &b1, &w2, &b2, &w3, &b3, &l1, &c1, &l2, &c2, &l3, &c3};
  }
  void zero_grad() {
    for (Tensor* p : params()) p->zero_grad();
  }

  static Tensor conv(const Tensor& x, const Tensor& w, const Tensor& b) {
    return conv2d(x, w, b, {.padding = {2}});
  }
  static Tensor pool(const Tensor& x) { return max_pool2d(x, {.kernel = {2, 2}}); }
  static Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
    return matmul(x, transpose(w)) + b;
  }
  Tensor dropout(const Tensor& x, bool training) { return crisp::dropout(x, 0.3, training, &drop); }

  // Log-probabilities, as examples/reference_cnn.cpp computes them.
  Tensor operator()(const Tensor& x, bool training) {
    Tensor h = pool(relu(conv(x, w1, b1)));
    h = pool(relu(conv(h, w2, b2)));
    h = pool(relu(conv(h, w3, b3)));
    h = flatten(h, 1);
    h = relu(dropout(linear(h, l1, c1), training));
    h = dropout(linear(h, l2, c2), training);
    h = dropout(linear(h, l3, c3), training);
    return log_softmax(h, 1);
  }
};

}  // namespace

int main(int argc, char** argv) {
  int reps = 20;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--cpu-time") == 0) cpu_time = true;
    if (i + 1 < argc && std::strcmp(argv[i], "--reps") == 0) reps = std::atoi(argv[i + 1]);
    if (i + 1 < argc && std::strcmp(argv[i], "--only") == 0) only = argv[i + 1];
  }
  std::vector<std::pair<std::string, Stat>> out;
  auto want = [&](const std::string& name) {
    return only.empty() || name.find(only) != std::string::npos;
  };
  auto record = [&](const std::string& name, Stat s) {
    out.push_back({name, s});
    std::fprintf(stderr, "%-16s min %8.3f  median %8.3f ms\n", name.c_str(), s.min, s.median);
  };

  Net net;
  Generator data(2);
  const int64_t B = 64;
  const Tensor x = rand({B, 1, 28, 28}, f32, &data);
  const Tensor y = randint(0, 10, {B}, i64, &data);

  // The whole step: forward in training mode, then backward (no optimizer).
  if (want("step")) {
    Tensor loss;
    record("step_fwd",
           measure(
               reps, [&] { net.zero_grad(); }, [&] { loss = nll_loss(net(x, true), y); }));
    record("step_bwd", measure(
                           reps,
                           [&] {
                             net.zero_grad();
                             loss = nll_loss(net(x, true), y);
                           },
                           [&] {
                             loss.backward();
                             net.l1.grad().wait();
                           }));
  }
  if (want("infer")) {
    NoGrad no_grad;
    const Tensor xb = rand({512, 1, 28, 28}, f32, &data);
    record("infer512", measure(
                           reps, [] {}, [&] { argmax(net(xb, false), 1).wait(); }));
    const Tensor x1 = rand({1, 1, 28, 28}, f32, &data);
    record("infer1", measure(
                         reps * 10, [] {}, [&] { argmax(net(x1, false), 1).wait(); }));
  }

  // Each layer alone, on an input of the shape it sees in the model, with a random upstream
  // gradient. Inputs need a gradient except the images.
  struct Layer {
    std::string name;
    Shape in;
    bool input_grad;
    std::function<Tensor(const Tensor&)> f;
  };
  const std::vector<Layer> layers{
      {"conv1",
       {B, 1, 28, 28},
       false,
       [&](const Tensor& h) { return Net::conv(h, net.w1, net.b1); }},
      {"relu1", {B, 20, 28, 28}, true, [](const Tensor& h) { return relu(h); }},
      {"pool1", {B, 20, 28, 28}, true, Net::pool},
      {"conv2",
       {B, 20, 14, 14},
       true,
       [&](const Tensor& h) { return Net::conv(h, net.w2, net.b2); }},
      {"relu2", {B, 50, 14, 14}, true, [](const Tensor& h) { return relu(h); }},
      {"pool2", {B, 50, 14, 14}, true, Net::pool},
      {"conv3", {B, 50, 7, 7}, true, [&](const Tensor& h) { return Net::conv(h, net.w3, net.b3); }},
      {"relu3", {B, 500, 7, 7}, true, [](const Tensor& h) { return relu(h); }},
      {"pool3", {B, 500, 7, 7}, true, Net::pool},
      {"fc1", {B, 4500}, true, [&](const Tensor& h) { return Net::linear(h, net.l1, net.c1); }},
      {"drop1", {B, 2250}, true, [&](const Tensor& h) { return net.dropout(h, true); }},
      {"relu4", {B, 2250}, true, [](const Tensor& h) { return relu(h); }},
      {"fc2", {B, 2250}, true, [&](const Tensor& h) { return Net::linear(h, net.l2, net.c2); }},
      {"drop2", {B, 1125}, true, [&](const Tensor& h) { return net.dropout(h, true); }},
      {"fc3", {B, 1125}, true, [&](const Tensor& h) { return Net::linear(h, net.l3, net.c3); }},
      {"drop3", {B, 10}, true, [&](const Tensor& h) { return net.dropout(h, true); }},
      {"lsm_nll", {B, 10}, true, [&](const Tensor& h) { return nll_loss(log_softmax(h, 1), y); }},
  };
  for (const Layer& l : layers) {
    if (!want(l.name)) continue;
    Tensor in = randn(l.in, f32, &data);
    if (l.input_grad) in.requires_grad_();
    Tensor g = randn(l.f(in).shape(), f32, &data), h;
    record(l.name + "_fwd", measure(
                                reps, [] {}, [&] { l.f(in).wait(); }));
    record(l.name + "_bwd", measure(
                                reps,
                                [&] {
                                  net.zero_grad();
                                  in.zero_grad();
                                  h = l.f(in);
                                },
                                [&] {
                                  h.backward(g);
                                  for (Tensor* p : net.params())
                                    if (p->grad().defined()) p->grad().wait();
                                  if (in.grad().defined()) in.grad().wait();
                                }));
  }

  std::printf("{");
  for (size_t i = 0; i < out.size(); ++i)
    std::printf("%s\"%s\": [%.5g, %.5g]", i ? ", " : "", out[i].first.c_str(), out[i].second.min,
                out[i].second.median);
  std::printf("}\n");
  return 0;
}
