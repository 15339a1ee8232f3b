// Tracebacks: a per-thread stack of public calls, captured into every crisp::Error.
#include "crisp/error.h"

namespace crisp {

namespace {
thread_local std::vector<Frame> call_stack;
}

CallScope::CallScope(const char* function, const Loc& loc) {
  call_stack.push_back({function, loc.file_name(), static_cast<uint32_t>(loc.line())});
}
CallScope::~CallScope() { call_stack.pop_back(); }

std::vector<Frame> current_trace() { return call_stack; }
const char* current_function() { return call_stack.empty() ? "" : call_stack.back().function; }

Error::Error(std::string message, std::vector<Frame> trace)
    : message_(std::move(message)), trace_(std::move(trace)) {
  std::ostringstream s;
  s << message_;
  if (!trace_.empty()) {
    s << "\nTraceback (most recent call last):";
    for (const Frame& f : trace_) s << "\n  " << f.file << ":" << f.line << " in " << f.function;
  }
  text_ = s.str();
}

Error detail::error_in(std::string message, std::vector<Frame> trace) {
  if (!trace.empty() && *trace.back().function)
    message = std::string(trace.back().function) + ": " + message;
  return Error(std::move(message), std::move(trace));
}

void detail::throw_error(std::string message) {
  throw error_in(std::move(message), current_trace());
}

}  // namespace crisp
