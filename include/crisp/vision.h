// Vision models: ResNet-18/34/50/101/152 with torchvision's architecture, names and init.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "crisp/nn.h"

namespace crisp::vision {

// conv3x3 (stride) -> bn1 -> relu -> conv3x3 -> bn2, plus the shortcut, then relu.
class BasicBlock : public nn::Module {
 public:
  static constexpr int64_t expansion = 1;
  // downsample: the shortcut's 1x1 convolution and batch norm, when shape changes (else null).
  BasicBlock(int64_t inplanes, int64_t planes, int64_t stride = 1,
             std::shared_ptr<nn::Sequential> downsample = nullptr, Loc loc = Loc::current());
  Tensor operator()(const Tensor& x, Loc loc = Loc::current()) { return forward(x, loc); }
  Tensor forward(const Tensor& x, Loc loc = Loc::current());
  Child<nn::Conv2d> conv1;
  Child<nn::BatchNorm2d> bn1;
  Child<nn::Conv2d> conv2;
  Child<nn::BatchNorm2d> bn2;
  std::shared_ptr<nn::Sequential> downsample;
};

// conv1x1 -> bn1 -> relu -> conv3x3 (stride) -> bn2 -> relu -> conv1x1 (x4) -> bn3, plus the
// shortcut, then relu. The stride sits on the 3x3 convolution (ResNet v1.5, as torchvision).
class Bottleneck : public nn::Module {
 public:
  static constexpr int64_t expansion = 4;
  Bottleneck(int64_t inplanes, int64_t planes, int64_t stride = 1,
             std::shared_ptr<nn::Sequential> downsample = nullptr, Loc loc = Loc::current());
  Tensor operator()(const Tensor& x, Loc loc = Loc::current()) { return forward(x, loc); }
  Tensor forward(const Tensor& x, Loc loc = Loc::current());
  Child<nn::Conv2d> conv1;
  Child<nn::BatchNorm2d> bn1;
  Child<nn::Conv2d> conv2;
  Child<nn::BatchNorm2d> bn2;
  Child<nn::Conv2d> conv3;
  Child<nn::BatchNorm2d> bn3;
  std::shared_ptr<nn::Sequential> downsample;
};

// torchvision.models.ResNet: conv1 (7x7, stride 2) -> bn1 -> relu -> maxpool (3x3, stride 2)
// -> layer1..layer4 -> adaptive average pool -> flatten -> fc. Parameter and buffer names match
// torchvision's state_dict ("layer1.0.conv1.weight", "layer2.0.downsample.0.weight", "fc.bias"),
// so its checkpoints load. Init as torchvision: convolutions kaiming-normal (fan_out, relu),
// batch norms weight 1 and bias 0, fc PyTorch's default Linear init.
class ResNet : public nn::Module {
 public:
  // depth 18 or 34 (BasicBlock), 50, 101 or 152 (Bottleneck).
  explicit ResNet(int depth, int64_t num_classes = 1000, Loc loc = Loc::current());
  // Images [N, 3, H, W] (H, W >= 32 keeps every stage non-empty) -> logits [N, num_classes].
  Tensor operator()(const Tensor& x, Loc loc = Loc::current()) { return forward(x, loc); }
  Tensor forward(const Tensor& x, Loc loc = Loc::current());

  const int depth;
  const bool bottleneck;
  Child<nn::Conv2d> conv1;
  Child<nn::BatchNorm2d> bn1;
  Child<nn::MaxPool2d> maxpool;
  Child<nn::Sequential> layer1, layer2, layer3, layer4;
  Child<nn::AdaptiveAvgPool2d> avgpool;
  Child<nn::Linear> fc;
};

std::shared_ptr<ResNet> resnet18(int64_t num_classes = 1000, Loc loc = Loc::current());
std::shared_ptr<ResNet> resnet34(int64_t num_classes = 1000, Loc loc = Loc::current());
std::shared_ptr<ResNet> resnet50(int64_t num_classes = 1000, Loc loc = Loc::current());
std::shared_ptr<ResNet> resnet101(int64_t num_classes = 1000, Loc loc = Loc::current());
std::shared_ptr<ResNet> resnet152(int64_t num_classes = 1000, Loc loc = Loc::current());

}  // namespace crisp::vision
