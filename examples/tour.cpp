// A tour of crisp: tensors, indexing, errors, backends and autograd.
#include <crisp/crisp.h>

#include <iostream>

using namespace crisp;

int main() {
  Tensor m({1, 2, 3, 4, 5, 6}, {2, 3});  // int64, shape [2, 3]
  Tensor f({1.f, 2.f, 3.f}, {3}, f32);   // explicit dtype
  Tensor s = m.sum(1);                   // [6, 15]
  Tensor g = f.cast(i64);
  try {
    f + g;  // dtype mismatch: throws, traced to this line
  } catch (const Error& e) {
    std::cout << e.what() << "\n";
  }
  float v = f[0].item<float>();                   // waits for the data
  std::vector<float> all = f.to_vector<float>();  // waits for the data

  // Indexing: negative indices, slices (_ = open end), ellipsis, axis permutation.
  Tensor x = arange(0, 24, 1, f32).reshape({2, 3, 4});
  Tensor a = m[1, 2], b = m[0, -1], c = m[-1, 0];  // 0-d tensors
  Tensor row = m[0], col = m[Ellipsis, 0], last = m[Ellipsis, -1];
  Tensor part = x[0, Slice(_, 3)], swapped = x[Permute(0, 2, 1)];
  Tensor y = m;
  y[0, 0] = 100;  // copy-on-write: m is unchanged

  // Backends: a default, and a scope for a stretch of code.
  auto cpu = Backend::cpu();
  Backend::set_default(cpu);
  Tensor on_cpu = cpu->use([&] { return x + 3; });
  Tensor back = on_cpu - 3;

  // Autograd: closures and handles, no explicit graph.
  std::optional<Tensor> grad;
  Tensor w = Tensor({1.0, 2.0, 3.0}).on_grad([&](const Tensor& gr) { grad = gr; });
  Tensor loss = w.pow(2).sum().sqrt();
  loss.backward();

  std::cout << "sum " << s.to_vector<int64_t>()[1] << ", f[0] " << v << ", " << all.size()
            << " floats, m[1, 2] " << a.item<int64_t>() << ", y[0, 0] " << y[0, 0].item<int64_t>()
            << ", m[0, 0] " << m[0, 0].item<int64_t>() << ", grad[2] "
            << grad->to_vector<double>()[2] << "\n";
  (void)b, (void)c, (void)row, (void)col, (void)last, (void)part, (void)swapped, (void)back;
  return 0;
}
