// A small MLP on Fashion-MNIST: AdamW with a cosine learning-rate schedule, a checkpoint saved
// and loaded back into a fresh model.
//
// Usage: mlp [--epochs N] [--limit N] [--data DIR]
#include <crisp/crisp.h>

#include <cstdio>
#include <string>

using namespace crisp;

struct MLP : nn::Module {
  Child<nn::Flatten> flatten{this, "flatten"};
  Child<nn::Linear> fc1{this, "fc1", 784, 256};
  Child<nn::Linear> fc2{this, "fc2", 256, 128};
  Child<nn::Linear> fc3{this, "fc3", 128, 10};
  Child<nn::Dropout> dropout{this, "dropout", 0.2};

  // Logits [N, 10] of images [N, 1, 28, 28].
  Tensor operator()(const Tensor& x) {
    Tensor h = dropout(relu(fc1(flatten(x))));
    h = dropout(relu(fc2(h)));
    return fc3(h);
  }
};

double accuracy(MLP& model, const data::TensorDataset& test) {
  NoGrad no_grad;
  model.eval();
  Tensor predicted = argmax(model(test.inputs()), 1);
  model.train();
  return (predicted == test.targets()).cast(f32).mean().item<float>();
}

int main(int argc, char** argv) try {
  int epochs = 3;
  int64_t limit = 0;
  std::string dir = data::kFashionMnistDir;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--epochs")
      epochs = std::stoi(v);
    else if (a == "--limit")
      limit = std::stoll(v);
    else if (a == "--data")
      dir = v;
    else
      throw std::runtime_error("unknown option " + a);
  }
  if (Backend::cuda_available()) Backend::set_default(Backend::cuda());

  auto train = data::fashion_mnist(dir, true);
  auto test = data::fashion_mnist(dir, false);
  if (limit > 0 && limit < static_cast<int64_t>(train->size()))
    train = std::make_shared<data::TensorDataset>(train->inputs()[Slice(0, limit)],
                                                  train->targets()[Slice(0, limit)]);

  manual_seed(1);
  MLP model;
  optim::AdamW opt(model.parameters(), {.lr = 2e-3});
  data::DataLoader loader(train, {.batch_size = 128, .shuffle = true, .seed = 1});
  optim::CosineAnnealingLR schedule(opt, epochs * static_cast<int64_t>(loader.size()));

  for (int epoch = 1; epoch <= epochs; ++epoch) {
    double loss_sum = 0;
    for (const data::Batch& b : loader) {
      Tensor loss = cross_entropy(model(b.input), b.target);
      loss.backward();
      opt.step();
      opt.zero_grad();
      schedule.step();
      loss_sum += loss.item<float>();
    }
    std::printf("epoch %d: train loss %.4f, lr %.2e, test accuracy %.2f%%\n", epoch,
                loss_sum / static_cast<double>(loader.size()), opt.lr(),
                100 * accuracy(model, *test));
  }

  // A checkpoint holds the model and the optimizer; a fresh model loads the model's part.
  save("mlp.safetensors", {{"model", model.state()}, {"opt", opt.state()}}, {{"epochs", epochs}});
  Checkpoint ckpt = load("mlp.safetensors");
  MLP restored;
  restored.load_state(ckpt["model"]);
  std::printf("reloaded from mlp.safetensors (epochs %d): test accuracy %.2f%%\n",
              ckpt.metadata["epochs"].get<int>(), 100 * accuracy(restored, *test));
  return 0;
} catch (const Error& e) {
  std::fprintf(stderr, "%s\n", e.what());
  return 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "mlp: %s\n", e.what());
  return 1;
}
