// Command-line options of the crisp program: declared per command, parsed, and --help from them.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace crisp::cli {

// Joins the pieces into one string (ostream formatting).
template <class... A>
std::string cat(const A&... pieces) {
  std::ostringstream s;
  (s << ... << pieces);
  return s.str();
}

// A mistake in how the program was called: reported in one line, exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A failure while running (missing dataset, unreadable file): one line, exit status 1.
struct RuntimeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Args {
 public:
  // command is what the user typed ("crisp train"); synopsis follows it in the usage line.
  Args(std::string command, std::string synopsis, std::string description);

  // --name VALUE (or --name=VALUE), with a default shown in --help ("" means none).
  Args& option(const std::string& name, const std::string& metavar, const std::string& fallback,
               const std::string& help);
  // --name, no value.
  Args& flag(const std::string& name, const std::string& help);
  // Options left out of --help (testing hooks).
  Args& hidden(const std::string& name, const std::string& metavar);
  // A positional argument; the last one may take the rest (min_count..unbounded).
  Args& positional(const std::string& name, const std::string& help, bool rest = false,
                   size_t min_count = 1);

  // False when --help was asked for (the help text is printed); throws UsageError otherwise.
  bool parse(const std::vector<std::string>& argv);

  std::string help() const;
  const std::string& command() const { return command_; }

  // Sets an option as if it had been given (a resumed run takes its checkpoint's settings).
  void set(const std::string& name, const std::string& value) { set_[name] = value; }
  bool given(const std::string& name) const;  // set on the command line (not a default)
  bool flag_set(const std::string& name) const;
  std::string str(const std::string& name) const;
  std::optional<std::string> maybe(const std::string& name) const;
  int64_t integer(const std::string& name, int64_t min, int64_t max) const;
  double real(const std::string& name, double min, double max) const;
  // One of the listed words.
  std::string choice(const std::string& name, const std::vector<std::string>& allowed) const;
  const std::vector<std::string>& rest() const { return rest_; }
  // Every option as given or defaulted, for the record in a checkpoint.
  std::map<std::string, std::string> values() const;

 private:
  struct Spec {
    std::string name, metavar, fallback, help;
    bool takes_value = true, hidden = false;
  };
  struct Positional {
    std::string name, help;
    bool rest;
    size_t min_count;
  };
  const Spec* find(const std::string& name) const;
  [[noreturn]] void usage_error(const std::string& what) const;

  std::string command_, synopsis_, description_;
  std::vector<Spec> specs_;
  std::vector<Positional> positionals_;
  std::map<std::string, std::string> set_;
  std::map<std::string, std::string> named_positionals_;
  std::vector<std::string> rest_;
};

}  // namespace crisp::cli
