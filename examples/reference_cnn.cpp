// The reference CNN (seed 001) on Fashion-MNIST: nn modules, optim::Adam and data::DataLoader.
//
// Usage: reference_cnn [--epochs N] [--limit N] [--test-limit N] [--data DIR] [--save PATH]
// The model, initialization, optimizer and batching are those of the PyTorch peer
// (torch_cpu_seed_cnn.py); `crisp train --model cnn` runs the same model with checkpoints.
#include <crisp/crisp.h>

#include <chrono>
#include <cstdio>
#include <string>

using namespace crisp;

// conv 1 -> 20 -> 50 -> 500 (5x5, padding 2, each with ReLU and 2x2 max-pooling), then
// Linear 4500 -> 2250 -> 1125 -> 10 with dropout after each (ReLU after the first).
struct ReferenceCNN : nn::Module {
  Child<nn::Conv2d> conv1{this, "conv1", 1, 20, 5, nn::ConvArgs{.padding = 2}};
  Child<nn::Conv2d> conv2{this, "conv2", 20, 50, 5, nn::ConvArgs{.padding = 2}};
  Child<nn::Conv2d> conv3{this, "conv3", 50, 500, 5, nn::ConvArgs{.padding = 2}};
  Child<nn::Linear> linear1{this, "linear1", 4500, 2250};
  Child<nn::Linear> linear2{this, "linear2", 2250, 1125};
  Child<nn::Linear> linear3{this, "linear3", 1125, 10};
  Child<nn::MaxPool2d> pool{this, "pool", 2};
  Child<nn::Dropout> dropout{this, "dropout", 0.3};

  // Log-probabilities [N, 10] of images [N, 1, 28, 28].
  Tensor operator()(const Tensor& x) {
    Tensor h = pool(relu(conv1(x)));      // 28 -> 14
    h = pool(relu(conv2(h)));             // 14 -> 7
    h = pool(relu(conv3(h))).flatten(1);  // 7 -> 3, then [N, 4500]
    h = relu(dropout(linear1(h)));
    h = dropout(linear2(h));
    return log_softmax(dropout(linear3(h)), 1);
  }
};

double test_accuracy(ReferenceCNN& model, std::shared_ptr<data::TensorDataset> test) {
  NoGrad no_grad;
  model.eval();
  int64_t correct = 0;
  for (const data::Batch& b : data::DataLoader(test, {.batch_size = 512}))
    correct += (argmax(model(b.input), 1) == b.target).cast(i64).sum().item<int64_t>();
  model.train();
  return static_cast<double>(correct) / static_cast<double>(test->size());
}

// The first n examples of a dataset (all when n is 0).
std::shared_ptr<data::TensorDataset> first(std::shared_ptr<data::TensorDataset> ds, int64_t n) {
  if (n <= 0 || n >= static_cast<int64_t>(ds->size())) return ds;
  return std::make_shared<data::TensorDataset>(ds->inputs()[Slice(0, n)],
                                               ds->targets()[Slice(0, n)]);
}

int main(int argc, char** argv) try {
  int epochs = 1;
  int64_t limit = 0, test_limit = 0;
  std::string dir = data::kFashionMnistDir, save_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--epochs")
      epochs = std::stoi(v);
    else if (a == "--limit")
      limit = std::stoll(v);
    else if (a == "--test-limit")
      test_limit = std::stoll(v);
    else if (a == "--data")
      dir = v;
    else if (a == "--save")
      save_path = v;
    else
      throw std::runtime_error("unknown option " + a);
  }
  if (Backend::cuda_available()) Backend::set_default(Backend::cuda());

  auto train = first(data::fashion_mnist(dir, true), limit);
  auto test = first(data::fashion_mnist(dir, false), test_limit);
  manual_seed(0);
  ReferenceCNN model;
  optim::Adam opt(model.parameters(), {.lr = 1e-3});
  data::DataLoader loader(train, {.batch_size = 64, .shuffle = true});
  std::printf("%lld parameters, %zu training images\n",
              static_cast<long long>(model.num_parameters()), train->size());

  for (int epoch = 1; epoch <= epochs; ++epoch) {
    auto start = std::chrono::steady_clock::now();
    data::ProgressBar bar(loader.size(), "epoch " + std::to_string(epoch));
    for (const data::Batch& b : loader) {
      Tensor loss = nll_loss(model(b.input), b.target);
      loss.backward();
      opt.step();
      opt.zero_grad();
      bar.update(1, loss.item<float>());
    }
    bar.finish();
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    std::printf("epoch %d: train loss %.4f, %.1f s, test accuracy %.2f%%\n", epoch, bar.mean_loss(),
                took.count(), 100 * test_accuracy(model, test));
  }
  if (!save_path.empty())
    save(save_path, {{"model", model.state()}, {"opt", opt.state()}}, {{"epochs", epochs}});
  return 0;
} catch (const Error& e) {
  std::fprintf(stderr, "%s\n", e.what());
  return 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "reference_cnn: %s\n", e.what());
  return 1;
}
