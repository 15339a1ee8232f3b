// crisp ckpt: list, show, rename and remove the tensors of a safetensors checkpoint. Edits are
// written through crisp::save, which replaces the file atomically.
#include <crisp/io.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>

#include "commands.h"
#include "common.h"

namespace crisp::cli {

namespace {

constexpr const char* kCkptUsage =
    "usage: crisp ckpt SUBCOMMAND CKPT ...\n"
    "\n"
    "Lists and edits the named tensors of a .safetensors checkpoint (crisp's, PyTorch's or\n"
    "Hugging Face's). A NAME that is not a tensor's full name stands for every tensor under it:\n"
    "'opt' is every 'opt.*' tensor.\n"
    "\n"
    "subcommands:\n"
    "  ls CKPT                  each tensor's name, dtype, shape and bytes; the metadata\n"
    "  cat CKPT NAME            a tensor's values (long ones shortened)\n"
    "  rename CKPT OLD NEW      renames a tensor, or every tensor under a prefix\n"
    "  rm CKPT NAME...          removes tensors (e.g. 'rm run.safetensors opt' before shipping)\n"
    "\n"
    "'crisp ckpt SUBCOMMAND --help' describes one.\n";

Checkpoint open(const std::string& path) {
  if (!std::filesystem::exists(path)) throw RuntimeError("no checkpoint at " + path);
  return load(path);
}

// The names a NAME argument stands for: itself, or every "NAME.*".
std::vector<std::string> matching(const State& s, const std::string& name) {
  if (s.contains(name)) return {name};
  std::vector<std::string> out;
  for (const auto& [n, t] : s)
    if (n.starts_with(name + ".")) out.push_back(n);
  return out;
}

std::string shape_text(const Shape& shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

int ls(const std::vector<std::string>& argv) {
  Args a("crisp ckpt ls", "CKPT",
         "Lists a checkpoint's tensors (name, dtype, shape, bytes) and "
         "its metadata.");
  a.positional("CKPT", "a .safetensors file");
  if (!a.parse(argv)) return 0;
  const Checkpoint ckpt = open(a.str("CKPT"));
  size_t width = 4;
  for (const auto& [name, t] : ckpt.tensors) width = std::max(width, name.size());
  std::printf("%-*s  %-8s  %-20s  %12s\n", static_cast<int>(width), "name", "dtype", "shape",
              "bytes");
  size_t total = 0;
  for (const auto& [name, t] : ckpt.tensors) {
    const size_t bytes = static_cast<size_t>(t.numel()) * itemsize(t.dtype());
    total += bytes;
    std::printf("%-*s  %-8s  %-20s  %12zu\n", static_cast<int>(width), name.c_str(),
                std::string(dtype_name(t.dtype())).c_str(), shape_text(t.shape()).c_str(), bytes);
  }
  std::printf("%zu tensors, %zu bytes\n", ckpt.tensors.size(), total);
  if (!ckpt.metadata.empty()) std::printf("metadata:\n%s\n", ckpt.metadata.dump(2).c_str());
  return 0;
}

int cat(const std::vector<std::string>& argv) {
  Args a("crisp ckpt cat", "CKPT NAME [--max N]",
         "Prints a tensor's values, shortened to the "
         "first and last N/2 when it has more than N.");
  a.positional("CKPT", "a .safetensors file")
      .positional("NAME", "the tensor's full name")
      .option("max", "N", "20", "values shown at most");
  if (!a.parse(argv)) return 0;
  const int64_t max = a.integer("max", 1, INT64_MAX);
  const Checkpoint ckpt = open(a.str("CKPT"));
  const std::string name = a.str("NAME");
  if (!ckpt.tensors.contains(name)) {
    const auto under = matching(ckpt.tensors, name);
    throw RuntimeError(
        "no tensor named '" + name + "' in " + a.str("CKPT") +
        (under.empty() ? " (see crisp ckpt ls)" : " (it is a prefix: try " + under[0] + ")"));
  }
  const Tensor& t = ckpt.tensors.at(name);
  std::printf("%s  %s  %s\n", name.c_str(), std::string(dtype_name(t.dtype())).c_str(),
              shape_text(t.shape()).c_str());
  const bool real = is_floating(t.dtype());
  const std::vector<double> v = t.cast(f64).to_vector<double>();
  const int64_t n = static_cast<int64_t>(v.size());
  auto put = [&](int64_t i) {
    if (real)
      std::printf("%.7g", v[static_cast<size_t>(i)]);
    else
      std::printf("%lld", static_cast<long long>(v[static_cast<size_t>(i)]));
  };
  std::printf("[");
  const int64_t head = n <= max ? n : (max + 1) / 2, tail = n <= max ? 0 : max / 2;
  for (int64_t i = 0; i < head; ++i) std::printf(i ? ", " : ""), put(i);
  if (tail) {
    std::printf(", ... (%lld more) ...", static_cast<long long>(n - head - tail));
    for (int64_t i = n - tail; i < n; ++i) std::printf(", "), put(i);
  }
  std::printf("]\n");
  if (real && n > 0) {
    double lo = v[0], hi = v[0], sum = 0;
    for (double x : v) lo = std::min(lo, x), hi = std::max(hi, x), sum += x;
    std::printf("min %.7g  max %.7g  mean %.7g\n", lo, hi, sum / static_cast<double>(n));
  }
  return 0;
}

int rename(const std::vector<std::string>& argv) {
  Args a("crisp ckpt rename", "CKPT OLD NEW",
         "Renames a tensor, or every tensor under a prefix (OLD.x becomes NEW.x); the file is\n"
         "replaced atomically.");
  a.positional("CKPT", "a .safetensors file")
      .positional("OLD", "a tensor's name or a prefix")
      .positional("NEW", "its new name");
  if (!a.parse(argv)) return 0;
  const std::string path = a.str("CKPT"), from = a.str("OLD"), to = a.str("NEW");
  if (to.empty()) throw UsageError("crisp ckpt rename: the new name is empty");
  const Checkpoint ckpt = open(path);
  const std::vector<std::string> names = matching(ckpt.tensors, from);
  if (names.empty()) throw RuntimeError("no tensor named '" + from + "' (or under it) in " + path);
  const std::set<std::string> moving(names.begin(), names.end());
  State out;
  for (const auto& [name, t] : ckpt.tensors) {
    const std::string renamed = moving.contains(name) ? to + name.substr(from.size()) : name;
    if (out.contains(renamed) ||
        (renamed != name && ckpt.tensors.contains(renamed) && !moving.contains(renamed)))
      throw RuntimeError("'" + renamed + "' already exists in " + path + ": nothing renamed");
    out.set(renamed, t);
  }
  save(path, out, ckpt.metadata);
  std::printf("renamed %zu tensor%s in %s\n", names.size(), names.size() == 1 ? "" : "s",
              path.c_str());
  return 0;
}

int rm(const std::vector<std::string>& argv) {
  Args a("crisp ckpt rm", "CKPT NAME...",
         "Removes tensors (each NAME a tensor's name or a prefix); the file is replaced\n"
         "atomically. Nothing is removed unless every NAME matches.");
  a.positional("CKPT", "a .safetensors file").positional("NAME", "names or prefixes", true, 1);
  if (!a.parse(argv)) return 0;
  const std::string path = a.str("CKPT");
  Checkpoint ckpt = open(path);
  std::set<std::string> gone;
  for (const std::string& name : a.rest()) {
    const std::vector<std::string> names = matching(ckpt.tensors, name);
    if (names.empty())
      throw RuntimeError("no tensor named '" + name + "' (or under it) in " + path +
                         ": nothing removed");
    gone.insert(names.begin(), names.end());
  }
  for (const std::string& name : gone) ckpt.tensors.erase(name);
  save(path, ckpt.tensors, ckpt.metadata);
  std::printf("removed %zu tensor%s from %s, %zu left\n", gone.size(), gone.size() == 1 ? "" : "s",
              path.c_str(), ckpt.tensors.size());
  return 0;
}

}  // namespace

int ckpt_command(const std::vector<std::string>& argv) {
  if (argv.empty()) throw UsageError("crisp ckpt: missing subcommand (see 'crisp ckpt --help')");
  const std::string sub = argv[0];
  if (sub == "--help" || sub == "-h" || sub == "help") {
    std::fputs(kCkptUsage, stdout);
    return 0;
  }
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (sub == "ls") return ls(rest);
  if (sub == "cat") return cat(rest);
  if (sub == "rename" || sub == "mv") return rename(rest);
  if (sub == "rm") return rm(rest);
  throw UsageError("crisp ckpt: unknown subcommand '" + sub +
                   "' (ls, cat, rename or rm; see 'crisp ckpt --help')");
}

}  // namespace crisp::cli
