// Built by an outside CMake project through find_package(crisp): the DESIGN.md API example.
#include <crisp/crisp.h>

#include <cstdio>
#include <filesystem>

using namespace crisp;

struct MyModel : nn::Module {
  Param some{this, "some", Tensor({1.0f})};
  Param other{this, "customName", zeros({7})};
  Child<nn::Linear> layer{this, "layer", 3, 7};
  Tensor operator()(const Tensor& in) { return some * (layer(in) + other); }
};

int main() {
  Tensor m({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor f({1.f, 2.f, 3.f}, {3}, f32);
  Tensor s = m.sum(1);
  std::optional<Tensor> grad;
  Tensor x = Tensor({1.0, 2.0, 3.0}).on_grad([&](const Tensor& g) { grad = g; });
  Tensor loss = x.pow(2).sum().sqrt();
  loss.backward();
  bool ok = s.to_vector<int64_t>() == std::vector<int64_t>{6, 15} && grad.has_value() &&
            f[0].item<float>() == 1.f;

  MyModel model;
  optim::Adam opt(model.parameters(), {.lr = 1e-3});
  const Tensor in = randn({4, 3});
  const float before = model(in).pow(2).mean().item<float>();
  for (int i = 0; i < 20; ++i) {
    loss = model(in).pow(2).mean();
    loss.backward();
    opt.step();
    opt.zero_grad();
  }
  ok = ok && model(in).pow(2).mean().item<float>() < before;

  const std::string path =
      (std::filesystem::temp_directory_path() / "crisp_package_run.safetensors").string();
  save(path, {{"model", model.state()}, {"opt", opt.state()}}, {{"step", 1000}});
  auto ckpt = load(path);
  MyModel restored;
  restored.load_state(ckpt["model"]);
  ok = ok && ckpt.metadata["step"] == 1000 &&
       restored(in).to_vector<float>() == model(in).to_vector<float>();
  std::filesystem::remove(path);

  std::puts(ok ? "package ok" : "package FAILED");
  return ok ? 0 : 1;
}
