// CPU kernels for embedding lookups and their scatter-add gradient.
#include "cpu/nn_util.h"

namespace crisp::cpu {

namespace {

template <class C>
void embedding(const Array& idx_a, const Array& w_a, Array& out_a) {
  ContiguousAs<int64_t> idx(idx_a);
  ContiguousAs<C> w(w_a);
  Result<C> out(out_a);
  const int64_t V = w_a.shape[0], D = w_a.shape[1], M = idx_a.numel();
  BadIndex bad;
  parallel_for(M, M * D, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      const int64_t i = idx[m];
      if (i < 0 || i >= V) {
        bad.note(i);
        std::fill_n(out.data() + m * D, D, C(0));
        continue;
      }
      std::copy_n(w.data() + i * D, D, out.data() + m * D);
    }
  });
  if (bad.seen) fail("index ", bad.value.load(), " is out of range for ", V, " embeddings");
  out.finish();
}

template <class C>
void embedding_backward(const Array& g_a, const Array& idx_a, Array& dw_a) {
  ContiguousAs<C> g(g_a);
  ContiguousAs<int64_t> idx(idx_a);
  Result<C> dw(dw_a);
  const int64_t V = dw_a.shape[0], D = dw_a.shape[1], M = idx_a.numel();
  std::fill_n(dw.data(), V * D, C(0));
  // Split over columns: every thread sees every index, so duplicates never race.
  parallel_for(D, M * D, [&](int64_t d0, int64_t d1) {
    for (int64_t m = 0; m < M; ++m) {
      const int64_t i = idx[m];
      if (i < 0 || i >= V) continue;
      C* dst = dw.data() + i * D;
      const C* src = g.data() + m * D;
      for (int64_t d = d0; d < d1; ++d) dst[d] += src[d];
    }
  });
  dw.finish();
}

}  // namespace

void run_embedding(const Op& op, In in, Out out) {
  const DType dt = op.kind == OpKind::embedding ? in[1].dtype : in[0].dtype;
  with_compute_type(op, dt, [&]<class C>() {
    switch (op.kind) {
      case OpKind::embedding:
        return embedding<C>(in[0], in[1], out[0]);
      case OpKind::embedding_backward:
        return embedding_backward<C>(in[0], in[1], out[0]);
      default:
        unsupported(op, dt);
    }
  });
}

}  // namespace crisp::cpu
