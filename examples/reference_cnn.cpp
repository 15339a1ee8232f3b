// The reference CNN (seed 001) trained on Fashion-MNIST with crisp's functional API and a
// hand-written Adam.
//
// Usage: reference_cnn [--epochs N] [--limit N] [--test-limit N] [--data DIR]
// The model, initialization, optimizer and batching follow the PyTorch reference script
// (torch_cpu_seed_cnn.py) so that accuracy and speed can be compared one to one.
#include <crisp/crisp.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

using namespace crisp;
namespace fs = std::filesystem;

namespace {

// ---- Fashion-MNIST: gzipped IDX files ----

std::vector<uint8_t> read_gzip(const fs::path& path) {
  if (!fs::exists(path))
    throw std::runtime_error(path.string() +
                             " not found: run scripts/setup.sh (installs dataset-fashion-mnist) or "
                             "pass --data DIR");
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path.string());
  std::vector<uint8_t> out;
  std::vector<uint8_t> chunk(1 << 20);
  for (;;) {
    int n = gzread(f, chunk.data(), static_cast<unsigned>(chunk.size()));
    if (n < 0) {
      int code = 0;
      std::string msg = gzerror(f, &code);
      gzclose(f);
      throw std::runtime_error(path.string() + ": gzip error: " + msg);
    }
    if (n == 0) break;
    out.insert(out.end(), chunk.begin(), chunk.begin() + n);
  }
  gzclose(f);
  return out;
}

// IDX headers are big-endian 32-bit integers.
uint32_t be32(const std::vector<uint8_t>& b, size_t at) {
  return uint32_t{b[at]} << 24 | uint32_t{b[at + 1]} << 16 | uint32_t{b[at + 2]} << 8 |
         uint32_t{b[at + 3]};
}

// Images as f32 [n, 1, rows, cols] scaled to [0, 1], like the reference script.
Tensor load_images(const fs::path& path) {
  std::vector<uint8_t> b = read_gzip(path);
  if (b.size() < 16 || be32(b, 0) != 2051)
    throw std::runtime_error(path.string() + ": not an IDX image file (magic 2051)");
  const int64_t n = be32(b, 4), rows = be32(b, 8), cols = be32(b, 12);
  if (rows != 28 || cols != 28 || b.size() != 16 + static_cast<size_t>(n * rows * cols))
    throw std::runtime_error(path.string() + ": expected " + std::to_string(n) +
                             " images of 28x28 pixels, the file's size does not match");
  std::vector<float> px(b.begin() + 16, b.end());
  for (float& v : px) v /= 255.0f;
  return Tensor(px, {n, 1, rows, cols});
}

Tensor load_labels(const fs::path& path) {
  std::vector<uint8_t> b = read_gzip(path);
  if (b.size() < 8 || be32(b, 0) != 2049)
    throw std::runtime_error(path.string() + ": not an IDX label file (magic 2049)");
  const int64_t n = be32(b, 4);
  if (b.size() != 8 + static_cast<size_t>(n))
    throw std::runtime_error(path.string() + ": header says " + std::to_string(n) +
                             " labels, the file's size does not match");
  std::vector<int64_t> labels(b.begin() + 8, b.end());
  for (int64_t l : labels)
    if (l > 9) throw std::runtime_error(path.string() + ": label " + std::to_string(l) + " > 9");
  return Tensor(labels, {n});
}

// ---- the model ----

// A parameter with Adam's two moment estimates beside it.
struct Param {
  Tensor value, m, v;
};

// PyTorch's default for Conv2d and Linear: kaiming_uniform(a=sqrt(5)) for the weight and the same
// bound for the bias, which both come to U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
std::vector<Param> layer(Shape weight_shape, Generator& gen) {
  int64_t fan_in = 1;
  for (size_t i = 1; i < weight_shape.size(); ++i) fan_in *= weight_shape[i];
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  std::vector<Param> out;
  for (Shape shape : {weight_shape, Shape{weight_shape[0]}}) {
    Tensor w = uniform(shape, -bound, bound, f32, &gen);
    w.requires_grad_();
    out.push_back({w, zeros(shape), zeros(shape)});
  }
  return out;
}

struct Model {
  std::vector<Param> p;  // conv1..3 then linear1..3, each weight then bias
  Generator dropout_gen;

  explicit Model(Generator& init_gen, uint64_t seed) : dropout_gen(seed + 1) {
    for (Shape w : {Shape{20, 1, 5, 5}, Shape{50, 20, 5, 5}, Shape{500, 50, 5, 5},
                    Shape{2250, 4500}, Shape{1125, 2250}, Shape{10, 1125}}) {
      auto l = layer(w, init_gen);
      p.insert(p.end(), l.begin(), l.end());
    }
  }

  // Log-probabilities [n, 10] of images [n, 1, 28, 28].
  Tensor operator()(const Tensor& x, bool training) {
    Tensor h = x;
    for (int i = 0; i < 3; ++i) {  // 28 -> 14 -> 7 -> 3
      h = conv2d(h, p[2 * i].value, p[2 * i + 1].value, {.padding = {2}});
      h = max_pool2d(relu(h), {.kernel = {2, 2}});
    }
    h = flatten(h, 1);  // [n, 4500]
    h = relu(dropout(linear(h, 3), 0.3, training, &dropout_gen));
    h = dropout(linear(h, 4), 0.3, training, &dropout_gen);
    h = dropout(linear(h, 5), 0.3, training, &dropout_gen);
    return log_softmax(h, 1);
  }

  // x @ W^T + b with W stored [out, in] as PyTorch does.
  Tensor linear(const Tensor& x, int i) {
    return matmul(x, transpose(p[2 * i].value)) + p[2 * i + 1].value;
  }
};

// ---- Adam, as torch.optim.Adam (no weight decay, no amsgrad) ----

struct Adam {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  int64_t step_count = 0;

  void step(std::vector<Param>& params) {
    NoGrad no_grad;
    ++step_count;
    const double bc1 = 1 - std::pow(beta1, static_cast<double>(step_count));
    const double bc2 = 1 - std::pow(beta2, static_cast<double>(step_count));
    for (Param& p : params) {
      Tensor g = p.value.grad();
      if (!g.defined()) continue;
      p.m = p.m * beta1 + g * (1 - beta1);
      p.v = p.v * beta2 + g * g * (1 - beta2);
      Tensor denom = sqrt(p.v) / std::sqrt(bc2) + eps;
      // The update makes a new leaf; its gradient starts empty, as after zero_grad().
      Tensor updated = p.value.detach() - p.m / denom * (lr / bc1);
      updated.requires_grad_();
      p.value = updated;
    }
  }
};

// ---- training and evaluation ----

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

double evaluate(Model& model, const Tensor& x, const Tensor& y, int64_t batch = 512) {
  NoGrad no_grad;
  const int64_t n = x.shape()[0];
  const std::vector<int64_t> labels = y.to_vector<int64_t>();
  int64_t correct = 0;
  for (int64_t i = 0; i < n; i += batch) {
    const int64_t end = std::min(n, i + batch);
    std::vector<int64_t> pred = argmax(model(x[Slice(i, end)], false), 1).to_vector<int64_t>();
    for (int64_t j = 0; j < end - i; ++j) correct += pred[j] == labels[i + j];
  }
  return static_cast<double>(correct) / static_cast<double>(n);
}

void train_epoch(Model& model, Adam& opt, const Tensor& x, const Tensor& y, int64_t batch,
                 Generator& shuffle_gen, int epoch) {
  const int64_t n = x.shape()[0];
  const int64_t batches = (n + batch - 1) / batch;  // the last partial batch is kept
  const Tensor perm = randperm(n, &shuffle_gen);
  double loss_sum = 0;
  int64_t loss_count = 0, images = 0;
  auto window = std::chrono::steady_clock::now();
  for (int64_t b = 0; b < batches; ++b) {
    const Tensor idx = perm[Slice(b * batch, std::min(n, (b + 1) * batch))];
    const Tensor xb = index_select(x, 0, idx), yb = index_select(y, 0, idx);
    Tensor loss = nll_loss(model(xb, true), yb);
    loss.backward();
    opt.step(model.p);
    loss_sum += loss.item<float>();
    ++loss_count;
    images += idx.shape()[0];
    if ((b + 1) % 100 == 0 || b + 1 == batches) {
      const double dt = seconds_since(window);
      std::printf("epoch %d  batch %4lld/%lld  loss %.4f  %.0f images/s\n", epoch,
                  static_cast<long long>(b + 1), static_cast<long long>(batches),
                  loss_sum / static_cast<double>(loss_count), static_cast<double>(images) / dt);
      std::fflush(stdout);
      loss_sum = 0, loss_count = 0, images = 0;
      window = std::chrono::steady_clock::now();
    }
  }
}

struct Options {
  int epochs = 1;
  int64_t limit = 0;       // 0: the whole training set
  int64_t test_limit = 0;  // 0: the whole test set
  std::string data = "/usr/share/datasets/fashion-mnist";
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::printf("usage: %s [--epochs N] [--limit N] [--test-limit N] [--data DIR]\n", argv[0]);
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::runtime_error("unknown or incomplete option: " + a);
    const std::string v = argv[++i];
    try {
      if (a == "--epochs")
        o.epochs = std::stoi(v);
      else if (a == "--limit")
        o.limit = std::stoll(v);
      else if (a == "--test-limit")
        o.test_limit = std::stoll(v);
      else if (a == "--data")
        o.data = v;
      else
        throw std::runtime_error("unknown option: " + a);
    } catch (const std::logic_error&) {  // stoi's invalid_argument and out_of_range
      throw std::runtime_error(a + " needs a number, got '" + v + "'");
    }
  }
  if (o.epochs < 1) throw std::runtime_error("--epochs must be >= 1");
  if (o.limit < 0 || o.test_limit < 0) throw std::runtime_error("limits must be >= 0");
  return o;
}

int run(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  const uint64_t seed = 0;
  const fs::path dir = opt.data;

  auto t0 = std::chrono::steady_clock::now();
  Tensor xtr = load_images(dir / "train-images-idx3-ubyte.gz");
  Tensor ytr = load_labels(dir / "train-labels-idx1-ubyte.gz");
  Tensor xte = load_images(dir / "t10k-images-idx3-ubyte.gz");
  Tensor yte = load_labels(dir / "t10k-labels-idx1-ubyte.gz");
  if (xtr.shape()[0] != ytr.shape()[0] || xte.shape()[0] != yte.shape()[0])
    throw std::runtime_error("image and label counts differ");
  if (opt.limit > 0 && opt.limit < xtr.shape()[0]) {
    xtr = xtr[Slice(0, opt.limit)].contiguous();
    ytr = ytr[Slice(0, opt.limit)].contiguous();
  }
  if (opt.test_limit > 0 && opt.test_limit < xte.shape()[0]) {
    xte = xte[Slice(0, opt.test_limit)].contiguous();
    yte = yte[Slice(0, opt.test_limit)].contiguous();
  }
  std::printf("data loaded in %.2fs: train %lld, test %lld images\n", seconds_since(t0),
              static_cast<long long>(xtr.shape()[0]), static_cast<long long>(xte.shape()[0]));

  manual_seed(seed);
  Generator init_gen(seed), shuffle_gen(seed);
  Model model(init_gen, seed);
  int64_t params = 0;
  for (const Param& p : model.p) params += p.value.numel();
  std::printf("params %lld, batch 64, Adam lr 1e-3\n", static_cast<long long>(params));

  Adam adam;
  for (int epoch = 1; epoch <= opt.epochs; ++epoch) {
    auto start = std::chrono::steady_clock::now();
    train_epoch(model, adam, xtr, ytr, 64, shuffle_gen, epoch);
    const double train_s = seconds_since(start);
    start = std::chrono::steady_clock::now();
    const double acc = evaluate(model, xte, yte);
    std::printf("epoch %d: %.1f s training, %.1f s testing\n", epoch, train_s,
                seconds_since(start));
    std::printf("TEST ACCURACY %.2f%%\n", 100 * acc);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines appear at once, even through a pipe
  try {
    return run(argc, argv);
  } catch (const Error& e) {
    std::fprintf(stderr, "crisp error: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "reference_cnn: %s\n", e.what());
  }
  return 1;
}
