// Ready-made models: the reference CNN of the Fashion-MNIST benchmark and a small MLP.
#pragma once

#include <cstdint>
#include <vector>

#include "crisp/nn.h"

namespace crisp::models {

// The benchmark CNN (torch_cpu_seed_cnn.py's SeedCNN): three blocks of Conv2d(5x5, padding 2),
// ReLU and 2x2 max-pooling (channels in -> 20 -> 50 -> final; each block pools before its ReLU,
// which gives the same values and gradients on a quarter of the elements), then
//   linear1: Linear(fc, fc/2), Dropout, ReLU
//   linear2: Linear(fc/2, fc/4), Dropout
//   linear3: Linear(fc/4, classes), Dropout
// and log-softmax, where fc = final * (size/8)^2 (28x28 images: 4500 -> 2250 -> 1125 -> 10).
// Children carry PyTorch's names (conv1.0.weight, ..., linear3.0.bias), so a state_dict saved
// from SeedCNN loads with load_state.
struct ReferenceCNN : nn::Module {
  explicit ReferenceCNN(int64_t in_channels = 1, int64_t image_size = 28,
                        int64_t final_channels = 500, int64_t classes = 10, double dropout = 0.3,
                        Loc loc = Loc::current());
  // Log-probabilities [N, classes] of images [N, in_channels, size, size].
  Tensor operator()(const Tensor& x, Loc loc = Loc::current());
  const int64_t fc_inputs;
  Child<nn::Sequential> conv1{this, "conv1"}, conv2{this, "conv2"}, conv3{this, "conv3"};
  Child<nn::Sequential> linear1{this, "linear1"}, linear2{this, "linear2"},
      linear3{this, "linear3"};
};

// Flatten, then Linear and ReLU (and Dropout when dropout > 0) for each hidden width, then a
// Linear to the outputs. Returns logits (use cross_entropy). Children: layers.0, layers.1, ...
struct MLP : nn::Module {
  MLP(int64_t in_features, std::vector<int64_t> hidden, int64_t out_features, double dropout = 0,
      Loc loc = Loc::current());
  Tensor operator()(const Tensor& x, Loc loc = Loc::current());
  Child<nn::Sequential> layers{this, "layers"};
};

}  // namespace crisp::models
