// PNG encoding (zlib for deflate and CRC), a 5x7 bitmap font and the epoch plots of crisp train.
#include "plot.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <utility>

namespace crisp::cli {

namespace {

struct Glyph {
  char c;
  const char* rows;  // 7 rows of 5 dots, '#' is ink
};

// Upper-case letters, digits and the punctuation that axis labels need.
constexpr Glyph kFont[] = {
    {'0', ".###.#...##..###.#.###..##...#.###."}, {'1', "..#...##....#....#....#....#...###."},
    {'2', ".###.#...#....#...#...#...#...#####"}, {'3', "#####...#...#.....#.....##...#.###."},
    {'4', "...#...##..#.#.#..#.#####...#....#."}, {'5', "######....####.....#....##...#.###."},
    {'6', "..##..#...#....####.#...##...#.###."}, {'7', "#####....#...#...#...#....#....#..."},
    {'8', ".###.#...##...#.###.#...##...#.###."}, {'9', ".###.#...##...#.####....#...#..##.."},
    {'A', ".###.#...##...#######...##...##...#"}, {'B', "####.#...##...#####.#...##...#####."},
    {'C', ".###.#...##....#....#....#...#.###."}, {'D', "####.#...##...##...##...##...#####."},
    {'E', "######....#....####.#....#....#####"}, {'F', "######....#....####.#....#....#...."},
    {'G', ".###.#...##....#.####...##...#.####"}, {'H', "#...##...##...#######...##...##...#"},
    {'I', ".###...#....#....#....#....#...###."}, {'J', "..###...#....#....#....#.#..#..##.."},
    {'K', "#...##..#.#.#..##...#.#..#..#.#...#"}, {'L', "#....#....#....#....#....#....#####"},
    {'M', "#...###.###.#.##.#.##...##...##...#"}, {'N', "#...##...###..##.#.##..###...##...#"},
    {'O', ".###.#...##...##...##...##...#.###."}, {'P', "####.#...##...#####.#....#....#...."},
    {'Q', ".###.#...##...##...##.#.##..#..##.#"}, {'R', "####.#...##...#####.#.#..#..#.#...#"},
    {'S', ".#####....#.....###.....#....#####."}, {'T', "#####..#....#....#....#....#....#.."},
    {'U', "#...##...##...##...##...##...#.###."}, {'V', "#...##...##...##...##...#.#.#...#.."},
    {'W', "#...##...##...##.#.##.#.##.#.#.#.#."}, {'X', "#...##...#.#.#...#...#.#.#...##...#"},
    {'Y', "#...##...#.#.#...#....#....#....#.."}, {'Z', "#####....#...#...#...#...#....#####"},
    {'.', "..........................##...##.."}, {'-', "...............#####..............."},
    {'%', "##...##..#...#...#...#...#..##...##"}, {':', "......##...##........##...##......."},
    {'(', "...#...#...#....#....#.....#.....#."}, {')', ".#.....#.....#....#....#...#...#..."},
    {'/', ".........#...#...#...#...#........."}, {'+', ".......#....#..#####..#....#......."},
    {'=', "..........#####.....#####.........."}, {',', ".....................##....#...#..."},
    {'_', "..............................#####"}, {' ', "..................................."},

};

const char* glyph_rows(char c) {
  if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  for (const Glyph& g : kFont)
    if (g.c == c) return g.rows;
  return nullptr;  // unknown characters draw as a box
}

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(v >> s));
}

void put_chunk(std::vector<uint8_t>& out, const char type[4], const std::vector<uint8_t>& data) {
  put_u32(out, static_cast<uint32_t>(data.size()));
  const size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  const uLong crc = crc32(0L, out.data() + start, static_cast<uInt>(out.size() - start));
  put_u32(out, static_cast<uint32_t>(crc));
}

// A round step (1, 2 or 5 times a power of ten) giving about `ticks` intervals over span.
double nice_step(double span, int ticks) {
  const double raw = span / ticks;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (raw <= m * p) return m * p;
  return 10 * p;
}

std::string format_tick(double v, double step) {
  const int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", std::clamp(decimals, 0, 6), std::abs(v) < 1e-12 ? 0 : v);
  return buf;
}

}  // namespace

Canvas::Canvas(int width, int height, Rgb background)
    : width_(width), height_(height), pixels_(static_cast<size_t>(width) * height * 3) {
  for (size_t i = 0; i < pixels_.size(); i += 3) {
    pixels_[i] = background.r;
    pixels_[i + 1] = background.g;
    pixels_[i + 2] = background.b;
  }
}

Rgb Canvas::at(int x, int y) const {
  const size_t i = (static_cast<size_t>(y) * width_ + x) * 3;
  return {pixels_[i], pixels_[i + 1], pixels_[i + 2]};
}

void Canvas::set(int x, int y, Rgb c) {
  if (x < 0 || y < 0 || x >= width_ || y >= height_) return;
  const size_t i = (static_cast<size_t>(y) * width_ + x) * 3;
  pixels_[i] = c.r;
  pixels_[i + 1] = c.g;
  pixels_[i + 2] = c.b;
}

void Canvas::fill(int x0, int y0, int x1, int y1, Rgb c) {
  for (int y = std::min(y0, y1); y <= std::max(y0, y1); ++y)
    for (int x = std::min(x0, x1); x <= std::max(x0, x1); ++x) set(x, y, c);
}

void Canvas::line(double x0, double y0, double x1, double y1, Rgb c, int thickness) {
  // Steps of at most half a pixel along the longer axis; each stamps a thickness-wide square.
  const double len = std::max(std::abs(x1 - x0), std::abs(y1 - y0));
  const int steps = std::max(1, static_cast<int>(std::ceil(len * 2)));
  const int lo = -(thickness - 1) / 2, hi = thickness / 2;
  for (int i = 0; i <= steps; ++i) {
    const double t = static_cast<double>(i) / steps;
    const int x = static_cast<int>(std::lround(x0 + (x1 - x0) * t));
    const int y = static_cast<int>(std::lround(y0 + (y1 - y0) * t));
    fill(x + lo, y + lo, x + hi, y + hi, c);
  }
}

int Canvas::text_width(const std::string& s, int scale) {
  return s.empty() ? 0 : static_cast<int>(s.size()) * 6 * scale - scale;
}

void Canvas::text(int x, int y, const std::string& s, Rgb c, int scale) {
  for (char ch : s) {
    const char* rows = glyph_rows(ch);
    for (int r = 0; r < 7; ++r)
      for (int col = 0; col < 5; ++col) {
        const bool ink =
            rows ? rows[r * 5 + col] == '#' : (r == 0 || r == 6 || col == 0 || col == 4);
        if (ink)
          fill(x + col * scale, y + r * scale, x + col * scale + scale - 1,
               y + r * scale + scale - 1, c);
      }
    x += 6 * scale;
  }
}

std::vector<uint8_t> Canvas::encode_png() const {
  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<uint8_t> ihdr;
  put_u32(ihdr, static_cast<uint32_t>(width_));
  put_u32(ihdr, static_cast<uint32_t>(height_));
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // 8 bits, RGB, deflate, no filter, no interlace
  put_chunk(out, "IHDR", ihdr);

  // Every row starts with filter type 0 (none).
  const size_t row = static_cast<size_t>(width_) * 3;
  std::vector<uint8_t> raw;
  raw.reserve((row + 1) * height_);
  for (int y = 0; y < height_; ++y) {
    raw.push_back(0);
    raw.insert(raw.end(), pixels_.begin() + static_cast<std::ptrdiff_t>(y * row),
               pixels_.begin() + static_cast<std::ptrdiff_t>((y + 1) * row));
  }
  uLongf size = compressBound(static_cast<uLong>(raw.size()));
  std::vector<uint8_t> idat(size);
  if (compress2(idat.data(), &size, raw.data(), static_cast<uLong>(raw.size()), 9) != Z_OK)
    throw std::runtime_error("PNG: deflate failed");
  idat.resize(size);
  put_chunk(out, "IDAT", idat);
  put_chunk(out, "IEND", {});
  return out;
}

void Canvas::save_png(const std::string& path) const {
  const std::vector<uint8_t> bytes = encode_png();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
    if (!f) throw std::runtime_error("cannot write " + tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw std::runtime_error("cannot write " + path + ": " + ec.message());
}

namespace {

constexpr Rgb kBlack{0, 0, 0}, kAxis{60, 60, 60}, kGrid{225, 225, 225};

// The x range covering every series of every panel, so that panels side by side line up.
std::pair<double, double> x_range(const std::vector<Panel>& panels) {
  double x_lo = 1, x_hi = 1;
  for (const Panel& p : panels)
    for (const Series& s : p.series)
      for (size_t i = 0; i < s.y.size(); ++i) {
        if (!std::isfinite(s.y[i])) continue;
        const double x = s.x.empty() ? static_cast<double>(i + 1) : s.x[i];
        x_lo = std::min(x_lo, x), x_hi = std::max(x_hi, x);
      }
  // A single point still gets an x range, centred on it.
  if (x_hi - x_lo < 1e-9) x_lo -= 1, x_hi += 1;
  return {std::max(0.0, std::floor(x_lo)), x_hi};
}

void draw_panel(Canvas& c, const Panel& p, std::pair<double, double> xr, int left, int top,
                int width, int height) {
  const int scale = 2;
  const int plot_l = left + 80, plot_r = left + width - 28;
  const int plot_t = top + 44, plot_b = top + height - 56;

  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const Series& s : p.series)
    for (double v : s.y)
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  if (p.percent) lo = std::max(0.0, lo - 2), hi = std::min(100.0, hi + 2);
  if (hi - lo < 1e-9) lo -= 0.5, hi += 0.5;
  const double step = nice_step(hi - lo, 5);
  lo = std::floor(lo / step) * step;
  hi = std::ceil(hi / step) * step;
  const auto [x_lo, x_hi] = xr;
  const double x_step = std::max(nice_step(x_hi - x_lo, 8), x_hi - x_lo >= 2 ? 1.0 : 0.0);

  auto px = [&](double e) { return plot_l + (e - x_lo) / (x_hi - x_lo) * (plot_r - plot_l); };
  auto py = [&](double v) { return plot_b - (v - lo) / (hi - lo) * (plot_b - plot_t); };

  c.text(left + (width - Canvas::text_width(p.title, scale)) / 2, top + 12, p.title, kBlack, scale);

  for (double v = lo; v <= hi + step / 2; v += step) {
    const int y = static_cast<int>(std::lround(py(v)));
    c.line(plot_l, y, plot_r, y, kGrid);
    c.line(plot_l - 5, y, plot_l, y, kAxis);
    const std::string label = format_tick(v, step);
    c.text(plot_l - 9 - Canvas::text_width(label, scale), y - Canvas::text_height(scale) / 2, label,
           kBlack, scale);
  }
  for (double e = std::ceil(x_lo / x_step) * x_step; e <= x_hi + x_step / 1e6; e += x_step) {
    const int x = static_cast<int>(std::lround(px(e)));
    c.line(x, plot_b, x, plot_b + 5, kAxis);
    const std::string label = format_tick(e, x_step);
    c.text(x - Canvas::text_width(label, scale) / 2, plot_b + 10, label, kBlack, scale);
  }
  c.line(plot_l, plot_t, plot_l, plot_b, kAxis, 2);
  c.line(plot_l, plot_b, plot_r, plot_b, kAxis, 2);
  const std::string xlabel = "epoch";
  c.text((plot_l + plot_r - Canvas::text_width(xlabel, scale)) / 2, plot_b + 32, xlabel, kBlack,
         scale);

  for (const Series& s : p.series) {
    auto xs = [&](size_t i) { return px(s.x.empty() ? static_cast<double>(i + 1) : s.x[i]); };
    for (size_t i = 0; i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      const double x = xs(i), y = py(s.y[i]);
      if (i + 1 < s.y.size() && std::isfinite(s.y[i + 1]))
        c.line(x, y, xs(i + 1), py(s.y[i + 1]), s.color, s.thickness);
      if (s.x.empty())
        c.fill(static_cast<int>(x) - 3, static_cast<int>(y) - 3, static_cast<int>(x) + 3,
               static_cast<int>(y) + 3, s.color);
    }
  }

  // The legend, on a white box in a right-hand corner, over the lines.
  int label_w = 0;
  for (const Series& s : p.series) label_w = std::max(label_w, Canvas::text_width(s.label, scale));
  const int box_h = 22 * static_cast<int>(p.series.size()) + 6;
  const int box_r = plot_r - 6, box_l = box_r - label_w - 46;
  const int box_t = p.legend_bottom ? plot_b - 6 - box_h : plot_t + 6, box_b = box_t + box_h;
  c.fill(box_l, box_t, box_r, box_b, {255, 255, 255});
  c.line(box_l, box_t, box_r, box_t, kAxis), c.line(box_l, box_b, box_r, box_b, kAxis);
  c.line(box_l, box_t, box_l, box_b, kAxis), c.line(box_r, box_t, box_r, box_b, kAxis);
  int legend_y = box_t + 7;
  for (const Series& s : p.series) {
    c.line(box_l + 8, legend_y + 7, box_l + 30, legend_y + 7, s.color, 3);
    c.text(box_l + 38, legend_y, s.label, kBlack, scale);
    legend_y += 22;
  }
}

}  // namespace

Canvas render_epochs(const std::vector<Panel>& panels) {
  const int panel_w = 480, panel_h = 400;
  Canvas c(panel_w * static_cast<int>(std::max<size_t>(1, panels.size())), panel_h);
  const auto xr = x_range(panels);
  for (size_t i = 0; i < panels.size(); ++i)
    draw_panel(c, panels[i], xr, static_cast<int>(i) * panel_w, 0, panel_w, panel_h);
  return c;
}

void plot_epochs(const std::string& path, const std::vector<Panel>& panels) {
  render_epochs(panels).save_png(path);
}

}  // namespace crisp::cli
