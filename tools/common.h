// What the crisp commands share: datasets by name, models by name, backends, timing, files.
#pragma once

#include <crisp/crisp.h>
#include <crisp/data.h>
#include <crisp/optim.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "args.h"

namespace crisp::cli {

inline const std::vector<std::string> kDatasets = {"fashion-mnist", "mnist", "cifar10"};
inline const std::vector<std::string> kModels = {"cnn", "mlp"};

// The directory a dataset is read from when --data is not given.
std::string default_data_dir(const std::string& dataset);

struct Splits {
  std::shared_ptr<data::TensorDataset> train, test;
  int64_t channels = 0, size = 0, classes = 0;  // images are [channels, size, size]
};
// Reads a dataset by name; a missing directory or file throws RuntimeError saying how to get it.
// limit / test_limit > 0 keep only the first that many examples.
Splits load_dataset(const std::string& name, const std::string& dir, int64_t limit = 0,
                    int64_t test_limit = 0, bool need_train = true);
// Input shape and class count of a dataset, without reading it.
void dataset_geometry(const std::string& name, int64_t& channels, int64_t& size, int64_t& classes);

// A model chosen by name, with its forward pass and whether it returns log-probabilities
// (nll_loss) or logits (cross_entropy).
struct Model {
  std::string name;
  std::unique_ptr<nn::Module> module;
  std::function<Tensor(const Tensor&)> forward;
  bool log_probs = false;
  Tensor loss(const Tensor& out, const Tensor& target) const;
};
Model make_model(const std::string& name, int64_t channels, int64_t size, int64_t classes);

// "cpu", "cuda" or "" (CUDA when available, else the CPU).
std::shared_ptr<Backend> pick_backend(const std::string& name);

// "adam", "adamw" or "sgd" (with momentum 0.9) over the model's parameters.
std::unique_ptr<optim::Optimizer> make_optimizer(const std::string& name, Model& model, double lr);

// One optimization step on a batch: forward, loss, backward, update. Returns the batch's loss
// and how many of its examples the model got right (before the update).
struct StepResult {
  float loss;
  int64_t correct;
};
StepResult train_step(Model& model, optim::Optimizer& opt, const data::Batch& batch);

// Mean loss and top-1 accuracy of the model on a dataset, in eval mode, in batches.
struct Score {
  double loss = 0, accuracy = 0;
};
Score evaluate(Model& model, const data::Dataset& dataset, size_t batch = 512);

// Seconds to classify all of images in batches of batch (model in eval mode), one entry per
// repeat, after one warm-up batch.
std::vector<double> time_batched(Model& model, const Tensor& images, int64_t batch, int repeats);
// Seconds to classify each of the first n images one at a time, after ten warm-up images.
std::vector<double> time_single(Model& model, const Tensor& images, int64_t n);

double seconds_since(std::chrono::steady_clock::time_point t);
double median(std::vector<double> v);

// Writes text to path through a temporary file and a rename (never a half-written file).
void write_file_atomic(const std::string& path, const std::string& text);
std::string read_file(const std::string& path);

}  // namespace crisp::cli
