// crisp eval: test accuracy, batch throughput and single-image latency of a checkpoint.
#include <crisp/io.h>

#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "common.h"

namespace crisp::cli {

namespace {

// The model's tensors: the "model." group of a crisp train checkpoint, or every tensor of a
// plain state dict (one saved from PyTorch, say).
State model_state(const Checkpoint& ckpt) {
  for (const auto& [name, t] : ckpt.tensors)
    if (name.starts_with("model.")) return ckpt.tensors.under("model");
  return ckpt.tensors;
}

}  // namespace

int eval_command(const std::vector<std::string>& argv) {
  Args a("crisp eval", "CKPT [--dataset NAME] [options]",
         "Scores a checkpoint on a dataset's test split: accuracy, throughput at a batch size\n"
         "(images/s over the whole split) and the median latency of single images. A checkpoint\n"
         "written by crisp train knows its model and dataset; for any other (a PyTorch state\n"
         "dict of the same model, say) give --model and --dataset.");
  a.positional("CKPT", "a .safetensors checkpoint")
      .option("model", "NAME", "", "cnn or mlp (default: the checkpoint's)")
      .option("dataset", "NAME", "", "fashion-mnist, mnist or cifar10 (default: the checkpoint's)")
      .option("data", "DIR", "", "where the dataset's files are (default: its Debian directory)")
      .option("batch", "N", "512", "batch size of the throughput measurement")
      .option("repeats", "N", "3", "timed passes over the test split (the median is reported)")
      .option("single", "N", "200", "images timed one at a time")
      .option("test-limit", "N", "0", "use the first N test images only (0: all)")
      .option("backend", "NAME", "", "cpu or cuda (default: cuda when there is a GPU)");
  if (!a.parse(argv)) return 0;
  const std::string path = a.str("CKPT");
  const int64_t batch = a.integer("batch", 1, 1 << 20);
  const int repeats = static_cast<int>(a.integer("repeats", 1, 1000));
  const int64_t single = a.integer("single", 0, 1'000'000);
  const int64_t test_limit = a.integer("test-limit", 0, INT64_MAX);
  if (a.given("model")) a.choice("model", kModels);
  if (a.given("dataset")) a.choice("dataset", kDatasets);
  auto backend = pick_backend(a.str("backend"));
  Backend::set_default(backend);

  if (!std::filesystem::exists(path)) throw RuntimeError("no checkpoint at " + path);
  const Checkpoint ckpt = load(path);
  const nlohmann::json& m = ckpt.metadata;
  auto from_meta = [&](const char* key) -> std::string {
    if (a.given(key)) return a.str(key);
    if (m.contains(key) && m[key].is_string()) return m[key].get<std::string>();
    throw UsageError(std::string("crisp eval: ") + path + " does not say which " + key +
                     " it holds: pass --" + key);
  };
  const std::string model_name = from_meta("model"), dataset = from_meta("dataset");
  if (m.contains("model") && m["model"].is_string() && m["model"] != model_name)
    throw UsageError("crisp eval: " + path + " holds a " + m["model"].get<std::string>() +
                     " model, not " + model_name);
  std::string data_dir = a.given("data") ? a.str("data") : default_data_dir(dataset);
  if (!a.given("data") && m.value("dataset", "") == dataset && m.contains("args") &&
      m["args"].contains("data"))
    data_dir = m["args"]["data"].get<std::string>();

  const Splits data = load_dataset(dataset, data_dir, 0, test_limit, false);
  Model model = make_model(model_name, data.channels, data.size, data.classes);
  model.module->to(backend);
  model.module->load_state(model_state(ckpt));
  model.module->eval();

  std::printf("%s: %s on %s", path.c_str(), model_name.c_str(), dataset.c_str());
  if (m.contains("epoch") && m.contains("step"))
    std::printf(", trained %lld epochs (%lld steps)",
                static_cast<long long>(m["epoch"].get<int64_t>()),
                static_cast<long long>(m["step"].get<int64_t>()));
  std::printf(", on %s\n", backend->name().c_str());

  const Score score = evaluate(model, *data.test, static_cast<size_t>(batch));
  const int64_t n = static_cast<int64_t>(data.test->size());
  std::printf("test accuracy %.2f%% (%lld images), test loss %.4f\n", 100 * score.accuracy,
              static_cast<long long>(n), score.loss);
  const Tensor& images = data.test->inputs();
  const double t = median(time_batched(model, images, batch, repeats));
  std::printf("batch %lld: %lld images in %.3f s (median of %d), %.0f images/s\n",
              static_cast<long long>(batch), static_cast<long long>(n), t, repeats,
              static_cast<double>(n) / t);
  if (single > 0) {
    const std::vector<double> s = time_single(model, images, single);
    std::printf("single image: median latency %.3f ms (over %zu images)\n", 1e3 * median(s),
                s.size());
  }
  return 0;
}

}  // namespace crisp::cli
