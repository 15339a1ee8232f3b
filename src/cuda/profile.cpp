// The CRISP_PROFILE op table (see profile.h).
#include "cuda/profile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string_view>
#include <utility>

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

std::string OpProfile::row(OpKind kind, std::span<const Array> in) const {
  if (!by_shape_) return op_name(kind);
  std::ostringstream r;
  r << op_name(kind);
  for (size_t i = 0; i < in.size(); ++i) r << (i ? " x " : " ") << in[i].shape;
  return r.str();
}

void OpProfile::add(std::string row, cudaEvent_t start, cudaEvent_t stop, double host_us) {
  std::lock_guard lock(mutex_);
  pending_.push_back({std::move(row), start, stop, host_us});
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
    Row& r = rows_[p.row];
    r.calls += 1;
    r.gpu_ms += ms;
    r.host_us += p.host_us;
    free_.push_back(p.start);
    free_.push_back(p.stop);
  }
  pending_.clear();
}

void OpProfile::report(const char* title) {
  std::lock_guard lock(mutex_);
  gather();
  std::vector<const std::pair<const std::string, Row>*> order;
  double gpu_total = 0;
  for (const auto& entry : rows_) {
    order.push_back(&entry);
    gpu_total += entry.second.gpu_ms;
  }
  std::sort(order.begin(), order.end(),
            [](const auto* a, const auto* b) { return a->second.gpu_ms > b->second.gpu_ms; });
  std::fprintf(stderr, "\ncrisp profile (%s): %.3f ms of GPU time in ops\n", title, gpu_total);
  std::fprintf(stderr, "%-40s %10s %12s %7s %12s %12s\n", "op", "calls", "GPU ms", "%",
               "GPU us/call", "host us/call");
  for (const auto* entry : order) {
    const Row& r = entry->second;
    const double n = static_cast<double>(r.calls);
    std::fprintf(stderr, "%-40s %10lld %12.3f %7.2f %12.2f %12.2f\n", entry->first.c_str(),
                 static_cast<long long>(r.calls), r.gpu_ms,
                 gpu_total > 0 ? 100 * r.gpu_ms / gpu_total : 0.0, 1e3 * r.gpu_ms / n,
                 r.host_us / n);
  }
}

OpProfile* op_profile() {
  static OpProfile* profile = [] {
    const char* v = std::getenv("CRISP_PROFILE");
    if (!v || !*v || std::string_view(v) == "0") return static_cast<OpProfile*>(nullptr);
    // Outlives every static that might still run ops.
    auto* p = new OpProfile(std::string_view(v) == "shapes");
    // Registered after CUDA's runtime started (an op is running), so it runs before CUDA's
    // own exit handlers tear the runtime down.
    std::atexit([] { op_profile()->report(); });
    return p;
  }();
  return profile;
}

ProfileScope::ProfileScope(OpProfile& p, std::string row, cudaStream_t stream)
    : profile_(p), row_(std::move(row)), stream_(stream) {
  start_ = p.event();
  if (cudaEventRecord(start_, stream) != cudaSuccess) (void)cudaGetLastError();
  t0_ = std::chrono::steady_clock::now();
}

ProfileScope::~ProfileScope() {
  const double host_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0_).count();
  cudaEvent_t stop = profile_.event();
  if (cudaEventRecord(stop, stream_) != cudaSuccess) (void)cudaGetLastError();
  profile_.add(std::move(row_), start_, stop, host_us);
}

}  // namespace crisp::cuda
