// The CRISP_PROFILE op table (see profile.h).
#include "cuda/profile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace crisp::cuda {

namespace {
constexpr size_t kBatch = 4096;  // ops timed between two gatherings of their events
}  // namespace

cudaEvent_t OpProfile::event() {
  std::lock_guard lock(mutex_);
  if (!free_.empty()) {
    cudaEvent_t e = free_.back();
    free_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  if (cudaEventCreate(&e) != cudaSuccess) (void)cudaGetLastError();
  return e;
}

void OpProfile::add(OpKind kind, cudaEvent_t start, cudaEvent_t stop, double host_us) {
  std::lock_guard lock(mutex_);
  pending_.push_back({kind, start, stop, host_us});
  if (pending_.size() >= kBatch) gather();
}

void OpProfile::reset() {
  std::lock_guard lock(mutex_);
  gather();
  rows_.clear();
}

void OpProfile::gather() {
  for (const Pending& p : pending_) {
    float ms = 0;
    if (cudaEventSynchronize(p.stop) != cudaSuccess ||
        cudaEventElapsedTime(&ms, p.start, p.stop) != cudaSuccess)
      (void)cudaGetLastError();
    const size_t k = static_cast<size_t>(p.kind);
    if (rows_.size() <= k) rows_.resize(k + 1);
    rows_[k].calls += 1;
    rows_[k].gpu_ms += ms;
    rows_[k].host_us += p.host_us;
    free_.push_back(p.start);
    free_.push_back(p.stop);
  }
  pending_.clear();
}

void OpProfile::report(const char* title) {
  std::lock_guard lock(mutex_);
  gather();
  std::vector<size_t> order;
  double gpu_total = 0;
  for (size_t k = 0; k < rows_.size(); ++k)
    if (rows_[k].calls) {
      order.push_back(k);
      gpu_total += rows_[k].gpu_ms;
    }
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return rows_[a].gpu_ms > rows_[b].gpu_ms; });
  std::fprintf(stderr, "\ncrisp profile (%s): %.3f ms of GPU time in ops\n", title, gpu_total);
  std::fprintf(stderr, "%-28s %10s %12s %7s %12s %12s\n", "op", "calls", "GPU ms", "%",
               "GPU us/call", "host us/call");
  for (size_t k : order) {
    const Row& r = rows_[k];
    const double n = static_cast<double>(r.calls);
    std::fprintf(stderr, "%-28s %10lld %12.3f %7.2f %12.2f %12.2f\n",
                 op_name(static_cast<OpKind>(k)), static_cast<long long>(r.calls), r.gpu_ms,
                 gpu_total > 0 ? 100 * r.gpu_ms / gpu_total : 0.0, 1e3 * r.gpu_ms / n,
                 r.host_us / n);
  }
}

OpProfile* op_profile() {
  static OpProfile* profile = [] {
    const char* v = std::getenv("CRISP_PROFILE");
    if (!v || !*v || std::string_view(v) == "0") return static_cast<OpProfile*>(nullptr);
    auto* p = new OpProfile();  // outlives every static that might still run ops
    // Registered after CUDA's runtime started (an op is running), so it runs before CUDA's
    // own exit handlers tear the runtime down.
    std::atexit([] { op_profile()->report(); });
    return p;
  }();
  return profile;
}

ProfileScope::ProfileScope(OpProfile& p, OpKind kind, cudaStream_t stream)
    : profile_(p), kind_(kind), stream_(stream) {
  start_ = p.event();
  if (cudaEventRecord(start_, stream) != cudaSuccess) (void)cudaGetLastError();
  t0_ = std::chrono::steady_clock::now();
}

ProfileScope::~ProfileScope() {
  const double host_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0_).count();
  cudaEvent_t stop = profile_.event();
  if (cudaEventRecord(stop, stream_) != cudaSuccess) (void)cudaGetLastError();
  profile_.add(kind_, start_, stop, host_us);
}

}  // namespace crisp::cuda
