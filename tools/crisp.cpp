// The crisp program: train, evaluate and benchmark models, and list or edit checkpoints.
#include <crisp/error.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "args.h"
#include "commands.h"

namespace {

constexpr const char* kUsage =
    "usage: crisp COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  train    train a model on a dataset (checkpoint, metrics.csv, metrics.png)\n"
    "  eval     test accuracy, batch throughput and single-image latency of a checkpoint\n"
    "  ckpt     list, show, rename and remove the tensors of a checkpoint\n"
    "  bench    time the reference CNN (training epoch, inference) for bench/cnn_epoch.py\n"
    "\n"
    "'crisp COMMAND --help' describes a command. Example:\n"
    "  crisp train --model cnn --dataset fashion-mnist --epochs 1\n";

// crisp::Error's message without its traceback (set CRISP_TRACEBACK=1 for the whole of it).
std::string one_line(const crisp::Error& e) {
  const char* env = std::getenv("CRISP_TRACEBACK");
  if (env && *env && std::string(env) != "0") return e.what();
  return e.message();
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines appear at once, even through a pipe
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  std::string name = "crisp";
  try {
    if (command == "--help" || command == "-h" || command == "help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    name = "crisp " + command;
    if (command == "train") return crisp::cli::train_command(args);
    if (command == "eval") return crisp::cli::eval_command(args);
    if (command == "ckpt") return crisp::cli::ckpt_command(args);
    if (command == "bench") return crisp::cli::bench_command(args);
    throw crisp::cli::UsageError("crisp: unknown command '" + command +
                                 "' (train, eval, ckpt or bench; see 'crisp --help')");
  } catch (const crisp::cli::UsageError& e) {
    const std::string what = e.what();
    if (what.starts_with("crisp"))
      std::fprintf(stderr, "%s\n", what.c_str());
    else
      std::fprintf(stderr, "%s: %s (see '%s --help')\n", name.c_str(), what.c_str(), name.c_str());
    return 2;
  } catch (const crisp::cli::RuntimeError& e) {
    std::fprintf(stderr, "%s: %s\n", name.c_str(), e.what());
  } catch (const crisp::Error& e) {
    std::fprintf(stderr, "%s: %s\n", name.c_str(), one_line(e).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name.c_str(), e.what());
  }
  return 1;
}
