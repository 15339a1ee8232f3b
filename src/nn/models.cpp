// The ready-made models of models.h.
#include "crisp/models.h"

#include <memory>
#include <utility>

namespace crisp::models {

namespace {

int64_t fc_size(int64_t final_channels, int64_t image_size) {
  int64_t s = image_size;
  for (int i = 0; i < 3; ++i) s /= 2;  // each 2x2 pool floors
  return final_channels * s * s;
}

}  // namespace

ReferenceCNN::ReferenceCNN(int64_t in_channels, int64_t image_size, int64_t final_channels,
                           int64_t classes, double dropout, Loc loc)
    : fc_inputs(fc_size(final_channels, image_size)) {
  CallScope scope("ReferenceCNN", loc);
  check(in_channels > 0 && final_channels > 0 && classes > 0,
        "channel and class counts must be positive, got in_channels=", in_channels,
        " final_channels=", final_channels, " classes=", classes);
  check(image_size >= 8, "images must be at least 8x8 (three 2x2 poolings), got ", image_size);
  const int64_t channels[] = {in_channels, 20, 50, final_channels};
  nn::Sequential* blocks[] = {&*conv1, &*conv2, &*conv3};
  // Each block is conv, ReLU, 2x2 max-pool, computed as conv, pool, ReLU: ReLU is monotonic, so
  // it commutes with max, and the values and gradients are the same on a quarter of the elements.
  for (int i = 0; i < 3; ++i) {
    blocks[i]->add<nn::Conv2d>(channels[i], channels[i + 1], 5, nn::ConvArgs{.padding = 2});
    blocks[i]->add<nn::MaxPool2d>(2, 2);
    blocks[i]->add<nn::ReLU>();
  }
  linear1->add<nn::Linear>(fc_inputs, fc_inputs / 2);
  linear1->add<nn::Dropout>(dropout);
  linear1->add<nn::ReLU>();
  linear2->add<nn::Linear>(fc_inputs / 2, fc_inputs / 4);
  linear2->add<nn::Dropout>(dropout);
  linear3->add<nn::Linear>(fc_inputs / 4, classes);
  linear3->add<nn::Dropout>(dropout);
}

Tensor ReferenceCNN::operator()(const Tensor& x, Loc loc) {
  CallScope scope("ReferenceCNN", loc);
  Tensor h = conv3(conv2(conv1(x)));
  h = h.reshape({-1, fc_inputs});
  return log_softmax(linear3(linear2(linear1(h))), 1);
}

MLP::MLP(int64_t in_features, std::vector<int64_t> hidden, int64_t out_features, double dropout,
         Loc loc) {
  CallScope scope("MLP", loc);
  check(in_features > 0 && out_features > 0, "feature counts must be positive, got ", in_features,
        " and ", out_features);
  layers->add<nn::Flatten>();
  int64_t width = in_features;
  for (int64_t h : hidden) {
    check(h > 0, "hidden widths must be positive, got ", h);
    layers->add<nn::Linear>(width, h);
    layers->add<nn::ReLU>();
    if (dropout > 0) layers->add<nn::Dropout>(dropout);
    width = h;
  }
  layers->add<nn::Linear>(width, out_features);
}

Tensor MLP::operator()(const Tensor& x, Loc loc) {
  CallScope scope("MLP", loc);
  return layers(x);
}

}  // namespace crisp::models
