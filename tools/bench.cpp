// crisp bench: the reference CNN's training epoch and inference timings, measured the way
// torch_cpu_seed_cnn.py measures PyTorch's, as JSON for bench/cnn_epoch.py.
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "commands.h"
#include "common.h"

namespace crisp::cli {

namespace {

nlohmann::json stats(const std::vector<double>& v) {
  return {{"min", *std::min_element(v.begin(), v.end())},
          {"median", median(v)},
          {"max", *std::max_element(v.begin(), v.end())},
          {"all", v}};
}

}  // namespace

int bench_command(const std::vector<std::string>& argv) {
  Args a("crisp bench", "[options]",
         "Trains the reference CNN on Fashion-MNIST (batch 64, Adam lr 1e-3, shuffled) and times\n"
         "the epoch, then classifies the test images in batches of 512 and one at a time. The\n"
         "options and the JSON printed at the end mirror torch_cpu_seed_cnn.py's, so that\n"
         "bench/cnn_epoch.py can set the two side by side.");
  a.option("data", "DIR", data::kFashionMnistDir, "Fashion-MNIST's directory")
      .option("epochs", "N", "1", "training epochs, each timed")
      .option("batch-size", "N", "64", "training batch size")
      .option("max-batches", "N", "0", "time only N batches per epoch and extrapolate (0: all)")
      .option("warmup-batches", "N", "0", "untimed batches before the timed ones")
      .option("reps", "N", "3", "repeats of each inference measurement")
      .option("single", "N", "1000", "images classified one at a time per repeat")
      .option("seed", "S", "0", "seed")
      .option("workers", "N", "1", "threads preparing batches")
      .option("backend", "NAME", "", "cpu or cuda (default: cuda when there is a GPU)")
      .option("json", "FILE", "", "write the results there instead of to stdout")
      .flag("no-train", "skip training")
      .flag("no-infer", "skip the inference timings");
  if (!a.parse(argv)) return 0;
  const int64_t epochs = a.integer("epochs", 1, 1000);
  const int64_t batch = a.integer("batch-size", 1, 1 << 20);
  const int64_t max_batches = a.integer("max-batches", 0, INT64_MAX);
  const int64_t warmup = a.integer("warmup-batches", 0, INT64_MAX);
  const int reps = static_cast<int>(a.integer("reps", 1, 1000));
  const int64_t single = a.integer("single", 1, 1'000'000);
  const uint64_t seed = static_cast<uint64_t>(a.integer("seed", 0, INT64_MAX));
  const int workers = static_cast<int>(a.integer("workers", 0, 256));
  auto backend = pick_backend(a.str("backend"));
  Backend::set_default(backend);

  nlohmann::json r;
  r["backend"] = backend->name();
  const char* threads = std::getenv("CRISP_NUM_THREADS");
  r["env"] = {{"CRISP_NUM_THREADS", threads ? threads : ""}};
  auto t0 = std::chrono::steady_clock::now();
  const Splits data = load_dataset("fashion-mnist", a.str("data"));
  r["load_s"] = seconds_since(t0);
  std::fprintf(stderr, "data loaded in %.2fs\n", r["load_s"].get<double>());

  manual_seed(seed);
  Model model = make_model("cnn", data.channels, data.size, data.classes);
  model.module->to(backend);
  r["params"] = model.module->num_parameters();

  if (!a.flag_set("no-train")) {
    auto opt = make_optimizer("adam", model, 1e-3);
    data::DataLoader loader(data.train, {.batch_size = static_cast<size_t>(batch),
                                         .shuffle = true,
                                         .seed = seed,
                                         .workers = workers});
    const int64_t total = static_cast<int64_t>(loader.size());
    r["epochs"] = nlohmann::json::array();
    for (int64_t e = 1; e <= epochs; ++e) {
      model.module->train();
      int64_t b = 0, timed = 0;
      double last_loss = 0;
      auto start = std::chrono::steady_clock::now();
      for (auto it = loader.begin(); it != loader.end(); ++it, ++b) {
        if (b == warmup) start = std::chrono::steady_clock::now();
        if (max_batches && b >= warmup + max_batches) break;
        last_loss = train_step(model, *opt, *it).loss;
        if (b >= warmup) ++timed;
      }
      const double dt = seconds_since(start);
      nlohmann::json ep = {{"epoch", e},
                           {"timed_batches", timed},
                           {"batches_per_epoch", total},
                           {"timed_s", dt},
                           {"s_per_batch", timed ? dt / static_cast<double>(timed) : 0.0},
                           {"last_loss", last_loss}};
      const double full = timed ? dt / static_cast<double>(timed) * static_cast<double>(total) : 0;
      ep[timed == total ? "epoch_s" : "epoch_s_extrapolated"] = full;
      if (timed == total) {
        auto t1 = std::chrono::steady_clock::now();
        ep["test_acc"] = evaluate(model, *data.test).accuracy;
        ep["eval_s"] = seconds_since(t1);
      }
      std::fprintf(stderr, "%s\n", ep.dump().c_str());
      r["epochs"].push_back(ep);
    }
  }

  if (!a.flag_set("no-infer")) {
    const Tensor& images = data.test->inputs();
    r["infer_10k_bs512_s"] = stats(time_batched(model, images, 512, reps));
    std::fprintf(stderr, "infer 10k bs512 s: %s\n", r["infer_10k_bs512_s"].dump().c_str());
    std::vector<double> per_rep;
    for (int i = 0; i < reps; ++i) {
      double sum = 0;
      for (double s : time_single(model, images, single)) sum += s;
      per_rep.push_back(sum);
    }
    // Seconds per thousand images are milliseconds per image.
    r["infer_1k_bs1_s"] = stats(per_rep);
    r["infer_bs1_ms_per_image"] = median(per_rep) * 1000 / static_cast<double>(single);
    std::fprintf(stderr, "infer bs1 ms/image: %.3f\n", r["infer_bs1_ms_per_image"].get<double>());
  }

  const std::string text = r.dump(1);
  if (a.given("json")) {
    std::ofstream f(a.str("json"));
    f << text << "\n";
    if (!f) throw RuntimeError("cannot write " + a.str("json"));
  } else {
    std::printf("%s\n", text.c_str());
  }
  return 0;
}

}  // namespace crisp::cli
