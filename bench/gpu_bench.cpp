// crisp's side of the GPU benchmark (bench/gpu.py runs it beside PyTorch's torch_gpu.py): per-op
// dispatch overhead, copy bandwidth, the mish chain against the bandwidth floor, the reference
// CNN's training epoch and inference, and ResNet-50 training in float32, TF32 and bfloat16.
// Figures use the peer's names where they measure the same thing. Each piece fails soft: an
// error is printed as "error: <piece>: ..." and the others still run.
//
// Usage: gpu_bench [--only a,b] [--skip a,b] [--json PATH] [--backend cuda|cpu] [--quick]
//                  [--reps N] [--rn50-steps N] [--rn50-warmup N]
// Pieces: dispatch bandwidth mish cnn cnn_tf32 rn50_fp32 rn50_tf32_cl rn50_bf16_cl rn50_latency;
// on request (--only): rn50_fp32_cl rn50_tf32 rn50_bf16 (ResNet-50 in the other layout).
// --quick shrinks every size, for a smoke test of the code paths (e.g. --backend cpu).
#include <crisp/crisp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace crisp;

namespace {

// Pieces that run only when --only names them: ResNet-50 in the layout the figures do not use
// (float32 in the usual layout, as the peer's; TF32 and bfloat16 channels-last, as its best).
const std::set<std::string> kOnRequest{"rn50_fp32_cl", "rn50_tf32", "rn50_bf16"};

struct Config {
  std::vector<std::string> only, skip;
  std::string json_path, backend = "cuda";
  bool quick = false;
  int reps = 5;
  int rn50_steps = 30, rn50_warmup = 10;
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

// Figures of one run, in the order measured, and the errors of pieces that failed.
struct Report {
  nlohmann::ordered_json figures = nlohmann::ordered_json::object();
  void add(const std::string& name, double value, const char* unit) {
    figures[name] = value;
    std::printf("%-40s %14.4f %s\n", name.c_str(), value, unit);
    std::fflush(stdout);
  }
};

class Bench {
 public:
  Bench(Config cfg, std::shared_ptr<Backend> backend)
      : cfg_(std::move(cfg)), backend_(std::move(backend)), scope_(backend_) {}

  // Seconds per call of f: warm-up calls first, then `iters` calls between two synchronizations.
  double per_call(const std::function<void()>& f, int iters, int warm) {
    for (int i = 0; i < warm; ++i) f();
    backend_->synchronize();
    const double t0 = now_s();
    for (int i = 0; i < iters; ++i) f();
    backend_->synchronize();
    return (now_s() - t0) / iters;
  }
  // The median of cfg.reps such measurements (the warm-up runs once).
  double median_per_call(const std::function<void()>& f, int iters, int warm) {
    std::vector<double> t;
    for (int r = 0; r < cfg_.reps; ++r) t.push_back(per_call(f, iters, r == 0 ? warm : 0));
    return median(t);
  }

  // Microseconds of host time to queue one call of f, apart from the GPU's time: bursts short
  // enough not to fill the launch queue, timed up to the last launch (not its completion).
  double issue_us(const std::function<void()>& f) {
    constexpr int kBurst = 100, kBursts = 50;
    std::vector<double> t;
    for (int b = 0; b < kBursts; ++b) {
      backend_->synchronize();
      const double t0 = now_s();
      for (int i = 0; i < kBurst; ++i) f();
      t.push_back((now_s() - t0) / kBurst);
    }
    return median(t) * 1e6;
  }

  void dispatch() {
    const int iters = cfg_.quick ? 2000 : 10000;
    Tensor x = ones({1}), y = ones({1});
    report_.add("us_per_add_1elem_async",
                median_per_call([&] { Tensor z = x + 1; }, iters, 100) * 1e6, "us/op");
    report_.add("us_per_add_tensor_1elem",
                median_per_call([&] { Tensor z = x + y; }, iters, 100) * 1e6, "us/op");
    // Unary and binary ops in turn (three ops per call).
    report_.add("us_per_op_exp_mul_sub_1elem",
                median_per_call([&] { Tensor z = exp(x) * y - 1; }, iters, 100) * 1e6 / 3, "us/op");
    // Above the CUDA backend's queue of small ops: one launch per op.
    Tensor x8k = ones({8192});
    report_.add("us_per_add_8192elem_async",
                median_per_call([&] { Tensor z = x8k + 1; }, iters, 100) * 1e6, "us/op");
    report_.add("us_issue_add_1elem", issue_us([&] { Tensor z = x + 1; }), "us/op");
    report_.add("us_issue_add_tensor_1elem", issue_us([&] { Tensor z = x + y; }), "us/op");
    report_.add("us_issue_neg_1elem", issue_us([&] { Tensor z = -x; }), "us/op");
    Tensor a = randn({64, 64});
    report_.add("us_per_matmul64_async",
                median_per_call([&] { Tensor z = matmul(a, a); }, iters, 100) * 1e6, "us/op");
    backend_->report_profile("dispatch");
  }

  int64_t big_n() const { return cfg_.quick ? int64_t{1} << 20 : int64_t{1} << 28; }

  double copy_gbps(const Tensor& big) {
    const double s = median_per_call([&] { Tensor c = big.clone(); }, 10, 3);
    return 2.0 * 4.0 * static_cast<double>(big.numel()) / s / 1e9;
  }

  void bandwidth() {
    Tensor big = randn({big_n()});
    copy_gbps_ = copy_gbps(big);
    report_.add("copy_GBps", copy_gbps_, "GB/s");
    const double s = median_per_call([&] { Tensor c = big + 1.0; }, 10, 3);
    report_.add("add_scalar_GBps", 2.0 * 4.0 * static_cast<double>(big.numel()) / s / 1e9, "GB/s");
    upload_overlap();
  }

  // A data loader's copies beside the training step: uploads of 16 batches of 64 x 784 floats
  // from pageable host memory, alone, after a queued chain of products taking about as long on
  // the GPU, and that chain alone. Overlap: the share of the shorter one hidden behind the other
  // (0% when the uploads wait for the queued work, 100% when either hides the other).
  void upload_overlap() {
    std::vector<std::vector<float>> host(16, std::vector<float>(64 * 784));
    for (size_t b = 0; b < host.size(); ++b)
      for (size_t i = 0; i < host[b].size(); ++i) host[b][i] = static_cast<float>((i + b) % 255);
    auto uploads = [&] {
      for (const std::vector<float>& h : host) Tensor t(h, {64, 784});
    };
    Tensor w = randn({2048, 2048});
    int products = 1;
    auto chain = [&] {
      Tensor y = w;
      for (int i = 0; i < products; ++i) y = matmul(y, w) * (1.0 / 45);
    };
    const double upload_s = median_per_call(uploads, 5, 2);
    products = std::max(1, static_cast<int>(std::lround(upload_s / median_per_call(chain, 5, 2))));
    const double chain_s = median_per_call(chain, 5, 2);
    const double both_s = median_per_call(
        [&] {
          chain();
          uploads();
        },
        5, 2);
    report_.add("upload_16x200KB_us", upload_s * 1e6, "us");
    report_.add("upload_beside_compute_chain_us", chain_s * 1e6, "us");
    report_.add("upload_beside_compute_both_us", both_s * 1e6, "us");
    report_.add("upload_beside_compute_overlap_pct",
                100.0 * (upload_s + chain_s - both_s) / std::min(upload_s, chain_s), "%");
  }

  void mish_chain() {
    Tensor big = randn({big_n()});
    auto chain = [](const Tensor& t) { return t * tanh(softplus(t)); };
    // Right before timing: both forms agree with a float64 reference on a slice.
    {
      Tensor head = big[Slice(0, 4096)];
      Tensor ref = chain(head.cast(f64));
      for (const Tensor& got : {chain(head), mish(head)}) {
        const double err = (got.cast(f64) - ref).abs().max().item<double>();
        if (!(err < 1e-5)) fail("mish differs from the float64 reference by ", err);
      }
    }
    if (copy_gbps_ <= 0) copy_gbps_ = copy_gbps(big);
    const double floor_ms = 2.0 * 4.0 * static_cast<double>(big.numel()) / (copy_gbps_ * 1e9) * 1e3;
    report_.add("mish_eager_ms", median_per_call([&] { Tensor y = chain(big); }, 10, 3) * 1e3,
                "ms");
    report_.add("mish_fused_ms", median_per_call([&] { Tensor y = mish(big); }, 10, 3) * 1e3, "ms");
    report_.add("mish_floor_ms", floor_ms, "ms (bytes / measured copy bandwidth)");
  }

  // The reference CNN (models::ReferenceCNN = the peer's SeedCNN) with Adam: a training epoch
  // at batch 64, inference of 10,000 images at batch 512 and one image at a time.
  void cnn(bool tf32) {
    set_allow_tf32(tf32);
    const std::string tag = tf32 ? "_tf32=True" : "_tf32=False";
    const int64_t n = cfg_.quick ? 2048 : 60000, infer_n = cfg_.quick ? 1024 : 10000;
    manual_seed(0);
    models::ReferenceCNN model;
    optim::Adam opt(model.parameters(), {.lr = 1e-3});
    Tensor X = rand({n, 1, 28, 28});
    Tensor Y = randint(0, 10, {n});
    Tensor loss;
    auto step = [&](int64_t i) {
      Tensor xb = X[Slice(i, i + 64)], yb = Y[Slice(i, i + 64)];
      loss = nll_loss(model(xb), yb);
      opt.zero_grad();
      loss.backward();
      opt.step();
    };
    for (int64_t i = 0; i < 64 * 20; i += 64) step(i);
    backend_->synchronize();
    backend_->reset_profile();  // CRISP_PROFILE tables then start at the timed epoch
    const double t0 = now_s();
    for (int64_t i = 0; i + 63 < n; i += 64) step(i);
    backend_->synchronize();
    const double epoch = now_s() - t0;
    backend_->report_profile("reference CNN training epoch" + tag);
    const float last = loss.item<float>();
    if (!std::isfinite(last)) fail("the training loss is ", last);
    report_.add("seedcnn_epoch_s" + tag, epoch, "s / epoch");

    model.eval();
    NoGrad no_grad;
    auto infer = [&] {
      for (int64_t i = 0; i < infer_n; i += 512)
        Tensor p = model(X[Slice(i, std::min(i + 512, infer_n))]).argmax(1);
    };
    report_.add("seedcnn_infer10k_b512_ms" + tag, median_per_call(infer, 1, 2) * 1e3, "ms");
    backend_->report_profile("reference CNN inference, batch 512" + tag);

    const int images = cfg_.quick ? 100 : 1000;
    std::vector<double> loops, each;
    for (int r = 0; r < 1 + 3; ++r) {
      const double l0 = now_s();
      for (int64_t i = 0; i < images; ++i) {
        const double t = now_s();
        (void)model(X[Slice(i, i + 1)]).argmax(1).item<int64_t>();
        if (r > 0) each.push_back(now_s() - t);
      }
      if (r > 0) loops.push_back((now_s() - l0) / images);
    }
    report_.add("seedcnn_single_image_us" + tag, median(loops) * 1e6, "us (mean of a loop)");
    report_.add("seedcnn_single_image_median_us" + tag, median(each) * 1e6, "us (per image)");
    backend_->report_profile("reference CNN, one image at a time" + tag);
    set_allow_tf32(false);
  }

  // ResNet-50 training on synthetic images at batch 128, SGD with momentum, as the peer;
  // channels_last: the images (and so every activation) stored channels-last.
  void rn50_train(const std::string& mode, bool channels_last) {
    set_allow_tf32(mode != "fp32");
    const int64_t batch = cfg_.quick ? 4 : 128, side = cfg_.quick ? 64 : 224;
    const int steps = cfg_.quick ? 2 : cfg_.rn50_steps, warm = cfg_.quick ? 1 : cfg_.rn50_warmup;
    manual_seed(0);
    auto model = vision::resnet50();
    optim::SGD opt(model->parameters(), {.lr = 0.1, .momentum = 0.9});
    Tensor xb = randn({batch, 3, side, side});
    if (channels_last) xb = to_channels_last(xb);
    Tensor yb = randint(0, 1000, {batch});
    Tensor loss;
    auto step = [&] {
      {
        amp::Autocast ac(bf16, mode == "bf16");
        loss = cross_entropy((*model)(xb), yb);
      }
      opt.zero_grad();
      loss.backward();
      opt.step();
    };
    // The first steps pick algorithms; a slow backend then gets fewer steps, so that every piece
    // fits the time of one call (about 10 s of warm-up, 30 s timed).
    step();
    const double t_step = per_call(step, 1, 0);
    const float first = loss.item<float>();
    if (!std::isfinite(first)) fail("the training loss is ", first);
    const int fit_warm = static_cast<int>(10 / std::max(t_step, 1e-3));
    const int fit_steps = static_cast<int>(30 / std::max(t_step, 1e-3));
    for (int i = 2; i < std::min(warm, fit_warm); ++i) step();
    const int timed_steps = std::max(3, std::min(steps, fit_steps));
    if (timed_steps < steps)
      std::printf("# %d timed steps (%.2f s per step)\n", timed_steps, t_step);
    backend_->reset_profile();  // CRISP_PROFILE tables then show the timed steps only
    // Chunks of steps, each between synchronizations; the median chunk gives the rate.
    const int chunks = std::min(3, timed_steps);
    const int per_chunk = timed_steps / chunks;
    std::vector<double> t;
    for (int c = 0; c < chunks; ++c) t.push_back(per_call(step, per_chunk, 0));
    const float last = loss.item<float>();
    if (!std::isfinite(last)) fail("the training loss is ", last);
    const std::string layout = channels_last ? "_cl=True" : "_cl=False";
    report_.add("rn50_train_img_s_" + mode + layout, static_cast<double>(batch) / median(t),
                "img/s");
    report_.add("rn50_peak_GiB_" + mode + layout,
                static_cast<double>(backend_->memory_stats().peak) / (1 << 30), "GiB");
    set_allow_tf32(false);
  }

  void rn50_latency() {
    const int64_t side = cfg_.quick ? 64 : 224;
    auto model = vision::resnet50();
    model->eval();
    NoGrad no_grad;
    Tensor xb = randn({1, 3, side, side});
    report_.add("rn50_infer_b1_ms_fp32",
                median_per_call([&] { Tensor y = (*model)(xb); }, cfg_.quick ? 3 : 50, 10) * 1e3,
                "ms");
  }

  bool wanted(const std::string& piece) const {
    if (std::find(cfg_.skip.begin(), cfg_.skip.end(), piece) != cfg_.skip.end()) return false;
    if (cfg_.only.empty()) return !kOnRequest.contains(piece);
    return std::find(cfg_.only.begin(), cfg_.only.end(), piece) != cfg_.only.end();
  }

  // Runs one piece; an exception becomes an "error:" line and a "<piece>_error" entry.
  void run(const std::string& piece, const std::function<void()>& f) {
    if (!wanted(piece)) return;
    std::printf("# %s\n", piece.c_str());
    std::fflush(stdout);
    try {
      f();
    } catch (const std::exception& e) {
      std::string what = e.what();
      std::printf("error: %s: %s\n", piece.c_str(), what.c_str());
      std::fflush(stdout);
      errors_[piece + "_error"] = what.substr(0, 2000);
      set_allow_tf32(false);
    }
  }

  nlohmann::ordered_json result() const {
    nlohmann::ordered_json j = report_.figures;
    for (const auto& e : errors_.items()) j[e.key()] = e.value();
    return j;
  }

 private:
  Config cfg_;
  std::shared_ptr<Backend> backend_;
  BackendScope scope_;
  Report report_;
  nlohmann::ordered_json errors_ = nlohmann::ordered_json::object();
  double copy_gbps_ = 0;
};

// Why Backend::cuda() cannot start: its error message.
std::string no_cuda_reason() {
  try {
    Backend::cuda();
    return "no device found";
  } catch (const Error& e) {
    return e.message();
  }
}

int usage(const char* msg) {
  std::fprintf(stderr,
               "gpu_bench: %s\nusage: gpu_bench [--only a,b] [--skip a,b] [--json PATH] "
               "[--backend cuda|cpu] [--quick] [--reps N] [--rn50-steps N] [--rn50-warmup N]\n"
               "pieces: dispatch bandwidth mish cnn cnn_tf32 rn50_fp32 rn50_tf32 rn50_bf16 "
               "rn50_latency\n",
               msg);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) return {};
      return argv[++i];
    };
    if (a == "--only") {
      cfg.only = split_list(value());
    } else if (a == "--skip") {
      cfg.skip = split_list(value());
    } else if (a == "--json") {
      cfg.json_path = value();
    } else if (a == "--backend") {
      cfg.backend = value();
    } else if (a == "--quick") {
      cfg.quick = true;
    } else if (a == "--reps" || a == "--rn50-steps" || a == "--rn50-warmup") {
      const std::string v = value();
      const int n = std::atoi(v.c_str());
      if (n < 1) return usage(("bad value for " + a + ": '" + v + "'").c_str());
      (a == "--reps" ? cfg.reps : a == "--rn50-steps" ? cfg.rn50_steps : cfg.rn50_warmup) = n;
    } else if (a == "--help" || a == "-h") {
      usage("crisp's GPU benchmark figures");
      return 0;
    } else {
      return usage(("unknown argument '" + a + "'").c_str());
    }
  }

  const std::vector<std::string> pieces{
      "dispatch",  "bandwidth", "mish",         "cnn",          "cnn_tf32",     "rn50_fp32",
      "rn50_tf32", "rn50_bf16", "rn50_fp32_cl", "rn50_tf32_cl", "rn50_bf16_cl", "rn50_latency"};
  for (const auto* list : {&cfg.only, &cfg.skip})
    for (const std::string& p : *list)
      if (std::find(pieces.begin(), pieces.end(), p) == pieces.end())
        return usage(("unknown piece '" + p + "'").c_str());

  std::shared_ptr<Backend> backend;
  if (cfg.backend == "cuda") {
    if (!Backend::cuda_available()) {
      std::printf(
          "error: no CUDA device (%s); nothing to measure. For a smoke test of the code paths: "
          "gpu_bench --backend cpu --quick\n",
          no_cuda_reason().c_str());
      return 3;
    }
    try {
      backend = Backend::cuda();
    } catch (const std::exception& e) {
      std::printf("error: the CUDA backend failed to start: %s\n", e.what());
      return 3;
    }
  } else if (cfg.backend == "cpu") {
    backend = Backend::cpu();
  } else {
    return usage(("unknown backend '" + cfg.backend + "'").c_str());
  }
  std::printf("# gpu_bench on %s%s\n", backend->name().c_str(), cfg.quick ? " (quick sizes)" : "");

  Bench b(cfg, backend);
  b.run("dispatch", [&] { b.dispatch(); });
  b.run("bandwidth", [&] { b.bandwidth(); });
  b.run("mish", [&] { b.mish_chain(); });
  b.run("cnn", [&] { b.cnn(false); });
  b.run("cnn_tf32", [&] { b.cnn(true); });
  for (const char* mode : {"fp32", "tf32", "bf16"}) {
    b.run(std::string("rn50_") + mode, [&] { b.rn50_train(mode, false); });
    b.run(std::string("rn50_") + mode + "_cl", [&] { b.rn50_train(mode, true); });
  }
  b.run("rn50_latency", [&] { b.rn50_latency(); });

  const nlohmann::ordered_json j = b.result();
  std::printf("JSON %s\n", j.dump().c_str());
  if (!cfg.json_path.empty()) {
    FILE* f = std::fopen(cfg.json_path.c_str(), "w");
    if (!f) {
      std::printf("error: cannot write %s\n", cfg.json_path.c_str());
      return 1;
    }
    std::fputs(j.dump(1).c_str(), f);
    std::fclose(f);
  }
  return 0;
}
