// ResNet (torchvision's architecture): basic and bottleneck blocks, the network and its init.
#include <cmath>

#include "core/tensor_impl.h"
#include "crisp/vision.h"

namespace crisp::vision {

namespace {

nn::ConvArgs conv_args(int64_t stride, int64_t padding) {
  return nn::ConvArgs{.stride = stride, .padding = padding, .bias = false};
}

int checked_depth(int depth, Loc loc) {
  if (depth != 18 && depth != 34 && depth != 50 && depth != 101 && depth != 152) {
    CallScope scope("ResNet", loc);
    fail("depth must be 18, 34, 50, 101 or 152, got ", depth);
  }
  return depth;
}

std::vector<int64_t> blocks_per_stage(int depth) {
  switch (depth) {
    case 18:
      return {2, 2, 2, 2};
    case 34:
    case 50:
      return {3, 4, 6, 3};
    case 101:
      return {3, 4, 23, 3};
    default:
      return {3, 8, 36, 3};
  }
}

// One stage: its first block changes stride and width (through a downsampling shortcut when
// the shape changes), the others keep them. Returns the stage's output channels.
template <class Block>
int64_t make_stage(nn::Sequential& stage, int64_t inplanes, int64_t planes, int64_t blocks,
                   int64_t stride, Loc loc) {
  std::shared_ptr<nn::Sequential> downsample;
  const int64_t out = planes * Block::expansion;
  if (stride != 1 || inplanes != out) {
    downsample = std::make_shared<nn::Sequential>();
    downsample->push_back(
        std::make_shared<nn::Conv2d>(inplanes, out, 1, conv_args(stride, 0), loc));
    downsample->push_back(std::make_shared<nn::BatchNorm2d>(out, nn::BatchNormArgs{}, loc));
  }
  stage.push_back(std::make_shared<Block>(inplanes, planes, stride, downsample, loc));
  for (int64_t i = 1; i < blocks; ++i)
    stage.push_back(std::make_shared<Block>(out, planes, 1, nullptr, loc));
  return out;
}

}  // namespace

BasicBlock::BasicBlock(int64_t inplanes, int64_t planes, int64_t stride,
                       std::shared_ptr<nn::Sequential> ds, Loc loc)
    : conv1(this, "conv1", inplanes, planes, 3, conv_args(stride, 1), loc),
      bn1(this, "bn1", planes, nn::BatchNormArgs{}, loc),
      conv2(this, "conv2", planes, planes, 3, conv_args(1, 1), loc),
      bn2(this, "bn2", planes, nn::BatchNormArgs{}, loc),
      downsample(std::move(ds)) {
  if (downsample) register_module("downsample", downsample.get(), loc);
}

Tensor BasicBlock::forward(const Tensor& x, Loc loc) {
  CallScope scope("BasicBlock", loc);
  Tensor out = bn1->forward_relu(conv1(x));
  out = bn2(conv2(out));
  return add_relu(out, downsample ? (*downsample)(x) : x);
}

Bottleneck::Bottleneck(int64_t inplanes, int64_t planes, int64_t stride,
                       std::shared_ptr<nn::Sequential> ds, Loc loc)
    : conv1(this, "conv1", inplanes, planes, 1, conv_args(1, 0), loc),
      bn1(this, "bn1", planes, nn::BatchNormArgs{}, loc),
      conv2(this, "conv2", planes, planes, 3, conv_args(stride, 1), loc),
      bn2(this, "bn2", planes, nn::BatchNormArgs{}, loc),
      conv3(this, "conv3", planes, planes * expansion, 1, conv_args(1, 0), loc),
      bn3(this, "bn3", planes * expansion, nn::BatchNormArgs{}, loc),
      downsample(std::move(ds)) {
  if (downsample) register_module("downsample", downsample.get(), loc);
}

Tensor Bottleneck::forward(const Tensor& x, Loc loc) {
  CallScope scope("Bottleneck", loc);
  Tensor out = bn1->forward_relu(conv1(x));
  out = bn2->forward_relu(conv2(out));
  out = bn3(conv3(out));
  return add_relu(out, downsample ? (*downsample)(x) : x);
}

ResNet::ResNet(int depth_, int64_t num_classes, Loc loc)
    : depth(checked_depth(depth_, loc)),
      bottleneck(depth >= 50),
      conv1(this, "conv1", 3, 64, 7, conv_args(2, 3), loc),
      bn1(this, "bn1", 64, nn::BatchNormArgs{}, loc),
      maxpool(this, "maxpool", 3, 2, 1, 1, loc),
      layer1(this, "layer1"),
      layer2(this, "layer2"),
      layer3(this, "layer3"),
      layer4(this, "layer4"),
      avgpool(this, "avgpool", nn::Ints{1, 1}, loc),
      fc(this, "fc", 512 * (bottleneck ? Bottleneck::expansion : BasicBlock::expansion),
         num_classes, true, loc) {
  const std::vector<int64_t> blocks = blocks_per_stage(depth);
  nn::Sequential* stages[4] = {&*layer1, &*layer2, &*layer3, &*layer4};
  int64_t inplanes = 64;
  for (size_t i = 0; i < 4; ++i) {
    const int64_t planes = int64_t{64} << i, stride = i == 0 ? 1 : 2;
    inplanes = bottleneck
                   ? make_stage<Bottleneck>(*stages[i], inplanes, planes, blocks[i], stride, loc)
                   : make_stage<BasicBlock>(*stages[i], inplanes, planes, blocks[i], stride, loc);
  }
  // torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), std = sqrt(2 / fan_out)
  // with fan_out = out_channels * kernel area. Batch norms already start at weight 1, bias 0.
  for (auto& [name, m] : named_modules()) {
    auto* conv = dynamic_cast<nn::ConvNd*>(m);
    if (conv == nullptr) continue;
    const Shape& ws = conv->weight.shape();
    const double fan_out = static_cast<double>(ws[0] * ws[2] * ws[3]);
    conv->weight = normal(ws, 0.0, std::sqrt(2.0 / fan_out), conv->weight.dtype());
  }
}

Tensor ResNet::forward(const Tensor& x, Loc loc) {
  CallScope scope("ResNet", loc);
  check_defined(x);
  if (x.ndim() != 4 || x.shape()[1] != 3)
    fail("expected images [N, 3, H, W], got ", shape_str(x.shape()));
  Tensor y = maxpool(bn1->forward_relu(conv1(x)));
  y = (*layer4)((*layer3)((*layer2)((*layer1)(y))));
  return fc(flatten(avgpool(y), 1));
}

std::shared_ptr<ResNet> resnet18(int64_t num_classes, Loc loc) {
  return std::make_shared<ResNet>(18, num_classes, loc);
}
std::shared_ptr<ResNet> resnet34(int64_t num_classes, Loc loc) {
  return std::make_shared<ResNet>(34, num_classes, loc);
}
std::shared_ptr<ResNet> resnet50(int64_t num_classes, Loc loc) {
  return std::make_shared<ResNet>(50, num_classes, loc);
}
std::shared_ptr<ResNet> resnet101(int64_t num_classes, Loc loc) {
  return std::make_shared<ResNet>(101, num_classes, loc);
}
std::shared_ptr<ResNet> resnet152(int64_t num_classes, Loc loc) {
  return std::make_shared<ResNet>(152, num_classes, loc);
}

}  // namespace crisp::vision
