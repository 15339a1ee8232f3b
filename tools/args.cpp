// Option parsing for the crisp program.
#include "args.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace crisp::cli {

Args::Args(std::string command, std::string synopsis, std::string description)
    : command_(std::move(command)),
      synopsis_(std::move(synopsis)),
      description_(std::move(description)) {}

Args& Args::option(const std::string& name, const std::string& metavar, const std::string& fallback,
                   const std::string& help) {
  specs_.push_back({name, metavar, fallback, help, true, false});
  return *this;
}

Args& Args::flag(const std::string& name, const std::string& help) {
  specs_.push_back({name, "", "", help, false, false});
  return *this;
}

Args& Args::hidden(const std::string& name, const std::string& metavar) {
  specs_.push_back({name, metavar, "", "", true, true});
  return *this;
}

Args& Args::positional(const std::string& name, const std::string& help, bool rest,
                       size_t min_count) {
  positionals_.push_back({name, help, rest, min_count});
  return *this;
}

const Args::Spec* Args::find(const std::string& name) const {
  for (const Spec& s : specs_)
    if (s.name == name) return &s;
  return nullptr;
}

void Args::usage_error(const std::string& what) const {
  throw UsageError(cat(command_, ": ", what, " (see '", command_, " --help')"));
}

bool Args::parse(const std::vector<std::string>& argv) {
  std::vector<std::string> loose;
  bool options_done = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (options_done || a.size() < 2 || a[0] != '-' || (a[1] != '-' && a != "-h")) {
      loose.push_back(a);
      continue;
    }
    if (a == "--") {
      options_done = true;
      continue;
    }
    if (a == "--help" || a == "-h") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    std::string name = a.substr(2), value;
    bool inline_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    const Spec* spec = find(name);
    if (!spec) usage_error(cat("unknown option --", name));
    if (!spec->takes_value) {
      if (inline_value) usage_error(cat("--", name, " takes no value"));
      set_.insert_or_assign(name, std::string("1"));
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= argv.size())
        usage_error(cat("--", name, " needs a value (", spec->metavar, ")"));
      value = argv[++i];
    }
    set_[name] = value;
  }

  size_t at = 0;
  for (const Positional& p : positionals_) {
    if (p.rest) {
      if (loose.size() - std::min(at, loose.size()) < p.min_count)
        usage_error(cat("missing ", p.name));
      rest_.assign(loose.begin() + static_cast<std::ptrdiff_t>(std::min(at, loose.size())),
                   loose.end());
      at = loose.size();
      break;
    }
    if (at >= loose.size()) {
      if (p.min_count == 0) continue;
      usage_error(cat("missing ", p.name));
    }
    named_positionals_[p.name] = loose[at++];
  }
  if (at < loose.size()) usage_error(cat("unexpected argument '", loose[at], "'"));
  return true;
}

std::string Args::help() const {
  std::ostringstream s;
  s << "usage: " << command_ << " " << synopsis_ << "\n\n" << description_ << "\n";
  if (!positionals_.empty()) {
    s << "\narguments:\n";
    for (const Positional& p : positionals_) {
      std::string left = "  " + p.name;
      s << left << std::string(left.size() < 24 ? 24 - left.size() : 1, ' ') << p.help << "\n";
    }
  }
  s << "\noptions:\n";
  for (const Spec& spec : specs_) {
    if (spec.hidden) continue;
    std::string left = "  --" + spec.name + (spec.metavar.empty() ? "" : " " + spec.metavar);
    s << left << std::string(left.size() < 24 ? 24 - left.size() : 1, ' ') << spec.help;
    if (!spec.fallback.empty()) s << " (default: " << spec.fallback << ")";
    s << "\n";
  }
  s << "  --help" << std::string(16, ' ') << "this text\n";
  return s.str();
}

bool Args::given(const std::string& name) const {
  return set_.contains(name) || named_positionals_.contains(name);
}

bool Args::flag_set(const std::string& name) const { return set_.contains(name); }

std::optional<std::string> Args::maybe(const std::string& name) const {
  if (auto it = named_positionals_.find(name); it != named_positionals_.end()) return it->second;
  if (auto it = set_.find(name); it != set_.end()) return it->second;
  const Spec* spec = find(name);
  if (spec && !spec->fallback.empty()) return spec->fallback;
  return std::nullopt;
}

std::string Args::str(const std::string& name) const { return maybe(name).value_or(""); }

int64_t Args::integer(const std::string& name, int64_t min, int64_t max) const {
  const std::string v = str(name);
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE)
    usage_error(cat("--", name, " needs a whole number, got '", v, "'"));
  if (x < min || x > max)
    usage_error(cat("--", name, " must be between ", min, " and ", max, ", got ", v));
  return x;
}

double Args::real(const std::string& name, double min, double max) const {
  const std::string v = str(name);
  errno = 0;
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(x))
    usage_error(cat("--", name, " needs a number, got '", v, "'"));
  if (x < min || x > max)
    usage_error(cat("--", name, " must be between ", min, " and ", max, ", got ", v));
  return x;
}

std::string Args::choice(const std::string& name, const std::vector<std::string>& allowed) const {
  const std::string v = str(name);
  if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) return v;
  std::string list;
  for (const std::string& a : allowed) list += (list.empty() ? "" : ", ") + a;
  usage_error(cat("--", name, " must be one of ", list, ", got '", v, "'"));
}

std::map<std::string, std::string> Args::values() const {
  std::map<std::string, std::string> out;
  for (const Spec& spec : specs_)
    if (auto v = maybe(spec.name)) out[spec.name] = *v;
  for (const auto& [k, v] : named_positionals_) out[k] = v;
  return out;
}

}  // namespace crisp::cli
