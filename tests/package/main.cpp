// Built by an outside CMake project through find_package(crisp): the DESIGN.md API example.
#include <crisp/crisp.h>

#include <cstdio>

using namespace crisp;

int main() {
  Tensor m({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor f({1.f, 2.f, 3.f}, {3}, f32);
  Tensor s = m.sum(1);
  std::optional<Tensor> grad;
  Tensor x = Tensor({1.0, 2.0, 3.0}).on_grad([&](const Tensor& g) { grad = g; });
  Tensor loss = x.pow(2).sum().sqrt();
  loss.backward();
  const bool ok = s.to_vector<int64_t>() == std::vector<int64_t>{6, 15} && grad.has_value() &&
                  f[0].item<float>() == 1.f;
  std::puts(ok ? "package ok" : "package FAILED");
  return ok ? 0 : 1;
}
