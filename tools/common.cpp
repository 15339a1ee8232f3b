// Datasets, models and backends by name, for the crisp commands.
#include "common.h"

#include <crisp/data.h>
#include <crisp/models.h>
#include <crisp/optim.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace crisp::cli {

namespace fs = std::filesystem;

std::string default_data_dir(const std::string& dataset) {
  if (dataset == "fashion-mnist") return data::kFashionMnistDir;
  return "/usr/share/datasets/" + dataset;
}

void dataset_geometry(const std::string& name, int64_t& channels, int64_t& size, int64_t& classes) {
  if (name == "cifar10") {
    channels = 3, size = 32, classes = 10;
  } else if (name == "fashion-mnist" || name == "mnist") {
    channels = 1, size = 28, classes = 10;
  } else {
    throw UsageError("unknown dataset '" + name + "' (one of fashion-mnist, mnist, cifar10)");
  }
}

namespace {

bool exists_any(const fs::path& dir, const std::string& file) {
  return fs::exists(dir / file) || fs::exists(dir / (file + ".gz"));
}

void require_files(const std::string& name, const std::string& dir) {
  const fs::path d = dir;
  std::string how;
  bool ok = false;
  if (name == "cifar10") {
    ok = fs::exists(d / "data_batch_1.bin") || fs::exists(d / "cifar-10-batches-bin");
    how =
        "download the binary version (cifar-10-binary.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html), unpack it and pass --data DIR";
  } else {
    ok = exists_any(d, "train-images-idx3-ubyte") && exists_any(d, "t10k-images-idx3-ubyte");
    how = name == "fashion-mnist"
              ? "install it with 'sudo apt-get install dataset-fashion-mnist' (scripts/setup.sh "
                "does) or pass --data DIR"
              : "put the four IDX files (train-images-idx3-ubyte.gz, ...) there or pass --data DIR";
  }
  if (!ok) throw RuntimeError(name + " not found in " + dir + ": " + how);
}

std::shared_ptr<data::TensorDataset> first(std::shared_ptr<data::TensorDataset> ds, int64_t n) {
  if (n <= 0 || n >= static_cast<int64_t>(ds->size())) return ds;
  return std::make_shared<data::TensorDataset>(ds->inputs()[Slice(0, n)].contiguous(),
                                               ds->targets()[Slice(0, n)].contiguous());
}

}  // namespace

Splits load_dataset(const std::string& name, const std::string& dir, int64_t limit,
                    int64_t test_limit, bool need_train) {
  Splits s;
  dataset_geometry(name, s.channels, s.size, s.classes);
  require_files(name, dir);
  auto read = [&](bool train) {
    if (name == "cifar10") return data::cifar10(dir, train);
    if (name == "mnist") return data::mnist(dir, train);
    return data::fashion_mnist(dir, train);
  };
  if (need_train) s.train = first(read(true), limit);
  s.test = first(read(false), test_limit);
  return s;
}

Tensor Model::loss(const Tensor& out, const Tensor& target) const {
  return log_probs ? nll_loss(out, target) : cross_entropy(out, target);
}

Model make_model(const std::string& name, int64_t channels, int64_t size, int64_t classes) {
  Model m;
  m.name = name;
  if (name == "cnn") {
    auto cnn = std::make_unique<models::ReferenceCNN>(channels, size, 500, classes, 0.3);
    models::ReferenceCNN* p = cnn.get();
    m.forward = [p](const Tensor& x) { return (*p)(x); };
    m.module = std::move(cnn);
    m.log_probs = true;
  } else if (name == "mlp") {
    auto mlp = std::make_unique<models::MLP>(channels * size * size, std::vector<int64_t>{256, 128},
                                             classes, 0.2);
    models::MLP* p = mlp.get();
    m.forward = [p](const Tensor& x) { return (*p)(x); };
    m.module = std::move(mlp);
  } else {
    throw UsageError("unknown model '" + name + "' (one of cnn, mlp)");
  }
  return m;
}

std::shared_ptr<Backend> pick_backend(const std::string& name) {
  if (name.empty()) return Backend::cuda_available() ? Backend::cuda() : Backend::cpu();
  if (name == "cpu") return Backend::cpu();
  if (name == "cuda") {
    if (!Backend::cuda_available())
      throw RuntimeError("no CUDA device is available here: use --backend cpu");
    return Backend::cuda();
  }
  throw UsageError("unknown backend '" + name + "' (cpu or cuda)");
}

std::unique_ptr<optim::Optimizer> make_optimizer(const std::string& name, Model& model, double lr) {
  auto params = model.module->parameters();
  if (name == "adam") return std::make_unique<optim::Adam>(params, optim::AdamOptions{.lr = lr});
  if (name == "adamw") return std::make_unique<optim::AdamW>(params, optim::AdamWOptions{.lr = lr});
  if (name == "sgd")
    return std::make_unique<optim::SGD>(params, optim::SGDOptions{.lr = lr, .momentum = 0.9});
  throw UsageError("unknown optimizer '" + name + "' (adam, adamw or sgd)");
}

StepResult train_step(Model& model, optim::Optimizer& opt, const data::Batch& batch) {
  Tensor out = model.forward(batch.input);
  Tensor loss = model.loss(out, batch.target);
  loss.backward();
  opt.step();
  opt.zero_grad();
  NoGrad no_grad;
  Tensor correct = (argmax(out.detach(), 1) == batch.target).cast(i64).sum();
  return {loss.item<float>(), correct.item<int64_t>()};
}

Score evaluate(Model& model, const data::Dataset& dataset, size_t batch) {
  NoGrad no_grad;
  const bool was_training = model.module->training();
  model.module->eval();
  Tensor correct = scalar(0, i64), loss_sum = scalar(0, f64);
  for (size_t i = 0; i < dataset.size(); i += batch) {
    std::vector<int64_t> idx(std::min(batch, dataset.size() - i));
    for (size_t j = 0; j < idx.size(); ++j) idx[j] = static_cast<int64_t>(i + j);
    const data::Batch b = dataset.get_batch(idx);
    const Tensor out = model.forward(b.input);
    correct = correct + (argmax(out, 1) == b.target).cast(i64).sum();
    loss_sum = loss_sum + model.loss(out, b.target).cast(f64) * static_cast<double>(idx.size());
  }
  model.module->train(was_training);
  if (dataset.size() == 0) return {};
  const double n = static_cast<double>(dataset.size());
  return {loss_sum.item<double>() / n, static_cast<double>(correct.item<int64_t>()) / n};
}

std::vector<double> time_batched(Model& model, const Tensor& images, int64_t batch, int repeats) {
  NoGrad no_grad;
  model.module->eval();
  const int64_t n = images.shape()[0];
  argmax(model.forward(images[Slice(0, std::min(n, batch))]), 1).wait();
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    auto t = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < n; i += batch)
      argmax(model.forward(images[Slice(i, std::min(n, i + batch))]), 1).wait();
    times.push_back(seconds_since(t));
  }
  return times;
}

std::vector<double> time_single(Model& model, const Tensor& images, int64_t n) {
  NoGrad no_grad;
  model.module->eval();
  n = std::min(n, images.shape()[0]);
  for (int64_t i = 0; i < std::min<int64_t>(10, n); ++i)
    argmax(model.forward(images[Slice(i, i + 1)]), 1).wait();
  std::vector<double> times;
  for (int64_t i = 0; i < n; ++i) {
    auto t = std::chrono::steady_clock::now();
    argmax(model.forward(images[Slice(i, i + 1)]), 1).wait();
    times.push_back(seconds_since(t));
  }
  return times;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << text;
    f.flush();
    if (!f) throw RuntimeError("cannot write " + tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw RuntimeError("cannot write " + path + ": " + ec.message());
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return "";
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace crisp::cli
