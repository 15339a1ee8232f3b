// crisp train: trains a model on a dataset, with checkpoints that resume exactly, a CSV of
// metrics, the per-step losses and a PNG plot.
#include <crisp/io.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "commands.h"
#include "common.h"
#include "plot.h"

namespace crisp::cli {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kFormat = "crisp-train/1";

// Settings a resumed run must keep, or its loss curve would not be the interrupted run's.
const std::vector<std::string> kLocked = {"model",     "dataset", "batch", "lr",
                                          "optimizer", "seed",    "limit"};

volatile std::sig_atomic_t g_interrupted = 0;
void on_interrupt(int) {
  g_interrupted = 1;
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C stops at once
}

Args make_args() {
  Args a("crisp train", "[--model cnn|mlp] [--dataset NAME] [options]",
         "Trains a model on a dataset, printing per-epoch loss, accuracy and time. Writes\n"
         "OUT/checkpoint.safetensors (model, optimizer state and where training stands, so\n"
         "--resume continues exactly), OUT/metrics.csv, OUT/steps.csv (per-step loss) and\n"
         "OUT/metrics.png (loss and accuracy per epoch).");
  a.option("model", "NAME", "cnn", "cnn (the reference CNN) or mlp")
      .option("dataset", "NAME", "fashion-mnist", "fashion-mnist, mnist or cifar10")
      .option("data", "DIR", "", "where the dataset's files are (default: its Debian directory)")
      .option("epochs", "N", "1", "epochs to train (in all, when resuming)")
      .option("batch", "N", "64", "batch size")
      .option("lr", "RATE", "1e-3", "learning rate")
      .option("optimizer", "NAME", "adam", "adam, adamw or sgd (momentum 0.9)")
      .option("seed", "S", "0", "seed of initialization, data order and dropout")
      .option("limit", "N", "0", "train on the first N examples only (0: all)")
      .option("test-limit", "N", "0", "test on the first N examples only (0: all)")
      .option("out", "DIR", "runs/MODEL-DATASET", "where the outputs go")
      .option("resume", "CKPT", "", "continue the run saved in CKPT")
      .option("save-every", "N", "500", "also save a checkpoint every N steps (0: epochs only)")
      .option("backend", "NAME", "", "cpu or cuda (default: cuda when there is a GPU)")
      .option("workers", "N", "1", "threads preparing batches ahead of training")
      .option("log-every", "N", "100", "print a progress line every N steps when not on a terminal")
      .hidden("stop-after", "N");  // exits after step N without saving, as a crash would
  return a;
}

struct StepRow {
  int64_t step, epoch, batch;
  double loss;
  int64_t correct, size;
};

std::vector<StepRow> read_steps(const std::string& path) {
  std::vector<StepRow> rows;
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);  // header
  while (std::getline(f, line)) {
    StepRow r{};
    char comma;
    std::istringstream s(line);
    if (s >> r.step >> comma >> r.epoch >> comma >> r.batch >> comma >> r.loss >> comma >>
        r.correct >> comma >> r.size)
      rows.push_back(r);
  }
  return rows;
}

// Keeps the header and the first `keep` data rows of a CSV file (none when it is missing).
void truncate_csv(const std::string& path, const std::string& header, size_t keep) {
  std::ifstream f(path);
  std::string text = header + "\n", line;
  std::getline(f, line);
  for (size_t i = 0; i < keep && std::getline(f, line); ++i) text += line + "\n";
  f.close();
  write_file_atomic(path, text);
}

struct EpochRow {
  double train_loss, train_acc, test_loss, test_acc;
};

void write_plot(const std::string& dir, const std::vector<EpochRow>& epochs,
                int64_t steps_per_epoch) {
  const std::vector<StepRow> steps = read_steps(dir + "/steps.csv");
  // Running means over windows of about a twentieth of an epoch, at the window's end.
  const size_t window = static_cast<size_t>(std::max<int64_t>(1, steps_per_epoch / 20));
  Series loss_w{"train, running mean", {}, {158, 202, 225}, {}, 2};
  Series acc_w = loss_w;
  for (size_t i = 0; i + window <= steps.size(); i += window) {
    double l = 0, c = 0, n = 0;
    for (size_t j = i; j < i + window; ++j)
      l += steps[j].loss, c += steps[j].correct, n += static_cast<double>(steps[j].size);
    const StepRow& last = steps[i + window - 1];
    const double x = static_cast<double>(last.epoch - 1) +
                     static_cast<double>(last.batch) / static_cast<double>(steps_per_epoch);
    loss_w.x.push_back(x), loss_w.y.push_back(l / static_cast<double>(window));
    acc_w.x.push_back(x), acc_w.y.push_back(100 * c / n);
  }
  Series train_loss{"train, epoch mean", {}, {31, 119, 180}};
  Series test_loss{"test", {}, {214, 39, 40}};
  Series train_acc = train_loss, test_acc = test_loss;
  for (const EpochRow& e : epochs) {
    train_loss.y.push_back(e.train_loss), test_loss.y.push_back(e.test_loss);
    train_acc.y.push_back(100 * e.train_acc), test_acc.y.push_back(100 * e.test_acc);
  }
  plot_epochs(dir + "/metrics.png", {{"loss", {loss_w, train_loss, test_loss}, false},
                                     {"accuracy (%)", {acc_w, train_acc, test_acc}, true, true}});
}

std::vector<EpochRow> read_metrics(const std::string& path, size_t keep) {
  std::vector<EpochRow> rows;
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  while (rows.size() < keep && std::getline(f, line)) {
    std::istringstream s(line);
    double epoch, secs, test_secs;
    char c;
    EpochRow r{};
    if (s >> epoch >> c >> r.train_loss >> c >> r.train_acc >> c >> r.test_loss >> c >>
        r.test_acc >> c >> secs >> c >> test_secs)
      rows.push_back(r);
  }
  return rows;
}

}  // namespace

int train_command(const std::vector<std::string>& argv) {
  Args a = make_args();
  if (!a.parse(argv)) return 0;

  // A resumed run takes its settings from the checkpoint; only the ones that do not change the
  // computation may be given again differently.
  std::optional<Checkpoint> ckpt;
  if (a.given("resume")) {
    const std::string path = a.str("resume");
    if (!fs::exists(path)) throw RuntimeError("no checkpoint at " + path);
    ckpt = load(path);
    const json& m = ckpt->metadata;
    if (!m.contains("format") || m["format"] != kFormat || !m.contains("args"))
      throw RuntimeError(path + " was not written by crisp train (no training position in it)");
    for (const auto& [key, value] : m["args"].items()) {
      const std::string v = value.get<std::string>();
      const bool locked = std::find(kLocked.begin(), kLocked.end(), key) != kLocked.end();
      if (a.given(key) && locked && a.str(key) != v)
        throw UsageError("crisp train: --" + key + " " + a.str(key) + " differs from the " +
                         "checkpoint's " + v + "; a resumed run keeps its settings");
      // Where the run happens may change: the outputs, the backend.
      if (!a.given(key) && key != "out" && key != "backend") a.set(key, v);
    }
    if (!a.given("out")) a.set("out", fs::path(path).parent_path().string());
  }

  const std::string model_name = a.choice("model", kModels);
  const std::string dataset = a.choice("dataset", kDatasets);
  const int64_t epochs = a.integer("epochs", 1, 1'000'000);
  const int64_t batch = a.integer("batch", 1, 1 << 20);
  const double lr = a.real("lr", 0, 1e3);
  const std::string opt_name = a.choice("optimizer", {"adam", "adamw", "sgd"});
  const int64_t seed = a.integer("seed", 0, INT64_MAX);
  const int64_t limit = a.integer("limit", 0, INT64_MAX);
  const int64_t test_limit = a.integer("test-limit", 0, INT64_MAX);
  const int64_t save_every = a.integer("save-every", 0, INT64_MAX);
  const int64_t workers = a.integer("workers", 0, 256);
  const int64_t log_every = a.integer("log-every", 1, INT64_MAX);
  const int64_t stop_after = a.given("stop-after") ? a.integer("stop-after", 1, INT64_MAX) : 0;
  const std::string data_dir = a.given("data") ? a.str("data") : default_data_dir(dataset);
  const std::string out = a.given("out") ? a.str("out") : "runs/" + model_name + "-" + dataset;
  auto backend = pick_backend(a.str("backend"));
  Backend::set_default(backend);

  // Nothing is written before the arguments and the data have been checked.
  auto t0 = std::chrono::steady_clock::now();
  const Splits data = load_dataset(dataset, data_dir, limit, test_limit);
  std::printf("%s: %zu training and %zu test images of %lldx%lldx%lld, read in %.1f s\n",
              dataset.c_str(), data.train->size(), data.test->size(),
              static_cast<long long>(data.channels), static_cast<long long>(data.size),
              static_cast<long long>(data.size), seconds_since(t0));
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw RuntimeError("cannot create " + out + ": " + ec.message());

  manual_seed(static_cast<uint64_t>(seed));
  Model model = make_model(model_name, data.channels, data.size, data.classes);
  model.module->to(backend);
  model.module->train();
  auto opt = make_optimizer(opt_name, model, lr);
  data::DataLoader loader(data.train, {.batch_size = static_cast<size_t>(batch),
                                       .shuffle = true,
                                       .seed = static_cast<uint64_t>(seed),
                                       .workers = static_cast<int>(workers)});
  const int64_t per_epoch = static_cast<int64_t>(loader.size());

  // Where training stands: the epoch in progress (0-based), batches done in it, steps done, and
  // the sums behind the epoch's train loss and accuracy.
  int64_t epoch = 0, batch_pos = 0, step = 0, correct = 0, seen = 0;
  double loss_sum = 0, epoch_seconds = 0;
  std::vector<EpochRow> history;
  const std::string steps_path = out + "/steps.csv", metrics_path = out + "/metrics.csv";
  const std::string steps_header = "step,epoch,batch,loss,correct,size";
  const std::string metrics_header =
      "epoch,train_loss,train_accuracy,test_loss,test_accuracy,train_seconds,test_seconds";

  if (ckpt) {
    const json& m = ckpt->metadata;
    model.module->load_state(ckpt->tensors.under("model"));
    opt->load_state(ckpt->tensors.under("opt"));
    epoch = m.at("epoch").get<int64_t>();
    batch_pos = m.at("batch").get<int64_t>();
    step = m.at("step").get<int64_t>();
    const json& p = m.at("partial");
    loss_sum = p.at("loss_sum").get<double>();
    correct = p.at("correct").get<int64_t>();
    seen = p.at("seen").get<int64_t>();
    epoch_seconds = p.at("seconds").get<double>();
    default_generator().set_state(
        {m.at("rng").at("seed").get<uint64_t>(), m.at("rng").at("offset").get<uint64_t>()});
    if (batch_pos > per_epoch)
      throw RuntimeError("the checkpoint stands at batch " + std::to_string(batch_pos) +
                         " of an epoch of " + std::to_string(per_epoch) + " batches");
    // Rows logged after the checkpoint was saved are recomputed, so they go.
    truncate_csv(steps_path, steps_header, static_cast<size_t>(step));
    history = read_metrics(metrics_path, static_cast<size_t>(epoch));
    truncate_csv(metrics_path, metrics_header, history.size());
    std::printf("resuming %s at epoch %lld, batch %lld/%lld (step %lld)\n", a.str("resume").c_str(),
                static_cast<long long>(epoch + 1), static_cast<long long>(batch_pos),
                static_cast<long long>(per_epoch), static_cast<long long>(step));
  } else {
    write_file_atomic(steps_path, steps_header + "\n");
    write_file_atomic(metrics_path, metrics_header + "\n");
  }

  std::map<std::string, std::string> args = a.values();
  args.erase("resume");
  args.erase("stop-after");
  args["out"] = out;
  auto save_checkpoint = [&] {
    const Generator::State rng = default_generator().state();
    json meta = {{"format", kFormat},
                 {"model", model_name},
                 {"dataset", dataset},
                 {"epoch", epoch},
                 {"batch", batch_pos},
                 {"step", step},
                 {"seed", seed},
                 {"args", args},
                 {"rng", {{"seed", rng.seed}, {"offset", rng.offset}}},
                 {"partial",
                  {{"loss_sum", loss_sum},
                   {"correct", correct},
                   {"seen", seen},
                   {"seconds", epoch_seconds}}}};
    if (!history.empty()) meta["test_accuracy"] = history.back().test_acc;
    save(out + "/checkpoint.safetensors", {{"model", model.module->state()}, {"opt", opt->state()}},
         meta);
  };

  std::ofstream steps_file(steps_path, std::ios::app);
  if (!steps_file) throw RuntimeError("cannot write " + steps_path);
  const bool tty = isatty(2);
  std::signal(SIGINT, on_interrupt);
  std::printf("%s on %s, %lld parameters, %s lr %g, batch %lld, %lld batches per epoch, %s\n",
              model_name.c_str(), dataset.c_str(),
              static_cast<long long>(model.module->num_parameters()), opt_name.c_str(), lr,
              static_cast<long long>(batch), static_cast<long long>(per_epoch),
              backend->name().c_str());
  std::fflush(stdout);

  bool ran = false;
  for (; epoch < epochs; ++epoch) {
    ran = true;
    loader.start_at(static_cast<uint64_t>(epoch), static_cast<size_t>(batch_pos));
    data::ProgressBar bar(static_cast<size_t>(per_epoch - batch_pos),
                          "epoch " + std::to_string(epoch + 1) + "/" + std::to_string(epochs));
    auto start = std::chrono::steady_clock::now();
    auto window_start = start;
    int64_t window_images = 0;
    for (auto it = loader.begin(); it != loader.end(); ++it) {
      const data::Batch& b = *it;
      const StepResult r = train_step(model, *opt, b);
      const int64_t n = b.target.shape()[0];
      ++step, ++batch_pos;
      loss_sum += r.loss, correct += r.correct, seen += n, window_images += n;
      char row[160];
      std::snprintf(row, sizeof row, "%lld,%lld,%lld,%.9g,%lld,%lld\n",
                    static_cast<long long>(step), static_cast<long long>(epoch + 1),
                    static_cast<long long>(batch_pos), static_cast<double>(r.loss),
                    static_cast<long long>(r.correct), static_cast<long long>(n));
      steps_file << row;
      steps_file.flush();
      bar.update(1, r.loss);
      if (!tty && (step % log_every == 0 || batch_pos == per_epoch)) {
        std::printf("epoch %lld  batch %lld/%lld  loss %.4f  accuracy %.2f%%  %.0f images/s\n",
                    static_cast<long long>(epoch + 1), static_cast<long long>(batch_pos),
                    static_cast<long long>(per_epoch), loss_sum / static_cast<double>(batch_pos),
                    100.0 * static_cast<double>(correct) / static_cast<double>(seen),
                    static_cast<double>(window_images) / seconds_since(window_start));
        std::fflush(stdout);
        window_start = std::chrono::steady_clock::now();
        window_images = 0;
      }
      if (stop_after && step >= stop_after) {
        std::printf("stopping after step %lld without saving (--stop-after)\n",
                    static_cast<long long>(step));
        return 0;
      }
      const bool interrupted = g_interrupted != 0;
      if ((save_every && step % save_every == 0) || interrupted) {
        epoch_seconds += seconds_since(start);
        start = std::chrono::steady_clock::now();
        save_checkpoint();
      }
      if (interrupted) {
        bar.finish();
        std::fprintf(stderr, "crisp train: interrupted; continue with: crisp train --resume %s\n",
                     (out + "/checkpoint.safetensors").c_str());
        return 130;
      }
    }
    bar.finish();
    epoch_seconds += seconds_since(start);

    start = std::chrono::steady_clock::now();
    const Score test = evaluate(model, *data.test);
    const double test_seconds = seconds_since(start);
    const double denom = static_cast<double>(std::max<int64_t>(1, batch_pos));
    const EpochRow row{loss_sum / denom,
                       seen ? static_cast<double>(correct) / static_cast<double>(seen) : 0.0,
                       test.loss, test.accuracy};
    history.push_back(row);
    std::printf(
        "epoch %lld/%lld  train loss %.4f  train accuracy %.2f%%  test loss %.4f  "
        "test accuracy %.2f%%  time %.1f s (+%.1f s test)\n",
        static_cast<long long>(epoch + 1), static_cast<long long>(epochs), row.train_loss,
        100 * row.train_acc, row.test_loss, 100 * row.test_acc, epoch_seconds, test_seconds);
    std::fflush(stdout);
    {
      std::ofstream f(metrics_path, std::ios::app);
      f.precision(9);
      f << epoch + 1 << "," << row.train_loss << "," << row.train_acc << "," << row.test_loss << ","
        << row.test_acc << "," << epoch_seconds << "," << test_seconds << "\n";
      if (!f) throw RuntimeError("cannot write " + metrics_path);
    }
    write_plot(out, history, per_epoch);

    batch_pos = 0, correct = 0, seen = 0, loss_sum = 0, epoch_seconds = 0;
    // The position saved is the start of the next epoch.
    ++epoch;
    save_checkpoint();
    --epoch;
  }

  if (!ran) {
    std::printf(
        "nothing to do: the checkpoint has finished %lld epoch%s (ask for more with "
        "--epochs)\n",
        static_cast<long long>(epoch), epoch == 1 ? "" : "s");
    return 0;
  }
  std::printf(
      "test accuracy %.2f%%\nwrote %s/checkpoint.safetensors, metrics.csv, steps.csv, "
      "metrics.png\n",
      100 * history.back().test_acc, out.c_str());
  return 0;
}

}  // namespace crisp::cli
