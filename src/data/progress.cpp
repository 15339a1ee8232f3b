// ProgressBar: a throttled one-line display on stderr, drawn only on a terminal.
#include <unistd.h>

#include <cmath>
#include <cstdio>

#include "crisp/data.h"

namespace crisp::data {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kRedrawInterval = std::chrono::milliseconds(100);
constexpr int kBarWidth = 24;

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  return buf;
}

}  // namespace

ProgressBar::ProgressBar(size_t total, std::string label)
    : total_(total),
      label_(std::move(label)),
      tty_(::isatty(STDERR_FILENO) == 1),
      start_(Clock::now()),
      last_draw_(start_ - kRedrawInterval) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(size_t n, std::optional<double> loss) {
  if (finished_) return;
  done_ += n;
  if (loss) {
    loss_sum_ += *loss;
    ++loss_count_;
  }
  const bool last = total_ > 0 && done_ >= total_;
  if (tty_ && !last && Clock::now() - last_draw_ >= kRedrawInterval) draw(false);
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  if (tty_) draw(true);
}

double ProgressBar::mean_loss() const {
  return loss_count_ ? loss_sum_ / static_cast<double>(loss_count_) : std::nan("");
}

std::string ProgressBar::text() const {
  const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0;
  std::string line;
  if (!label_.empty()) line.append(label_).append(" ");
  char buf[128];
  if (total_ > 0) {
    const double frac = std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_));
    const int filled = static_cast<int>(frac * kBarWidth);
    line.append("[").append(static_cast<size_t>(filled), '=');
    if (filled < kBarWidth)
      line.append(">").append(static_cast<size_t>(kBarWidth - filled - 1), ' ');
    line.append("]");
    std::snprintf(buf, sizeof buf, " %zu/%zu %3d%%", done_, total_, static_cast<int>(frac * 100));
  } else {
    std::snprintf(buf, sizeof buf, "%zu", done_);
  }
  line += buf;
  std::snprintf(buf, sizeof buf, " %.1f it/s", rate);
  line += buf;
  if (total_ > 0 && done_ < total_) {
    const double left = rate > 0 ? static_cast<double>(total_ - done_) / rate : NAN;
    line.append(" ETA ").append(format_duration(left));
  } else {
    line.append(" ").append(format_duration(elapsed));
  }
  if (loss_count_) {
    std::snprintf(buf, sizeof buf, " loss %.4g", mean_loss());
    line += buf;
  }
  return line;
}

void ProgressBar::draw(bool final) {
  last_draw_ = Clock::now();
  // Carriage return and erase-to-end redraw the line in place.
  std::string line = "\r";
  line.append(text()).append("\x1b[K").append(final ? "\n" : "");
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace crisp::data
