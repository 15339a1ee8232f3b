// crisp::Error and the call-site records that let an error name the user's file and line.
#pragma once

#include <cstdint>
#include <exception>
#include <source_location>
#include <sstream>
#include <string>
#include <vector>

namespace crisp {

using Loc = std::source_location;

// One entry of a traceback: a public call and where it was made from.
struct Frame {
  const char* function;
  const char* file;
  uint32_t line;
};

class Error : public std::exception {
 public:
  Error(std::string message, std::vector<Frame> trace);
  // The message followed by the traceback, outermost call first.
  const char* what() const noexcept override { return text_.c_str(); }
  const std::string& message() const { return message_; }
  const std::vector<Frame>& trace() const { return trace_; }

 private:
  std::string message_;
  std::vector<Frame> trace_;
  std::string text_;
};

// Records a public call for the duration of its body; errors raised inside list it.
class CallScope {
 public:
  CallScope(const char* function, const Loc& loc);
  ~CallScope();
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;
};

// The calls active on this thread, outermost first.
std::vector<Frame> current_trace();
// The name of the innermost public call, or "" outside any.
const char* current_function();

namespace detail {
template <class... A>
std::string cat(const A&... a) {
  std::ostringstream s;
  (s << ... << a);
  return s.str();
}
// Error "<innermost call of trace>: <message>" with that traceback: for a failure found after
// the call that caused it returned (a GPU kernel's check, read later).
Error error_in(std::string message, std::vector<Frame> trace);
[[noreturn]] void throw_error(std::string message);
}  // namespace detail

// Throws crisp::Error "<innermost call>: <args...>" with the current traceback.
template <class... A>
[[noreturn]] void fail(const A&... a) {
  detail::throw_error(detail::cat(a...));
}

template <class... A>
void check(bool ok, const A&... a) {
  if (!ok) [[unlikely]]
    fail(a...);
}

}  // namespace crisp
