// PNG images drawn from scratch: a raster canvas, a tiny bitmap font, and per-epoch line plots.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace crisp::cli {

struct Rgb {
  uint8_t r, g, b;
};

class Canvas {
 public:
  Canvas(int width, int height, Rgb background = {255, 255, 255});
  int width() const { return width_; }
  int height() const { return height_; }
  Rgb at(int x, int y) const;
  void set(int x, int y, Rgb c);                     // ignores pixels outside the canvas
  void fill(int x0, int y0, int x1, int y1, Rgb c);  // inclusive corners
  void line(double x0, double y0, double x1, double y1, Rgb c, int thickness = 1);
  // Text in the built-in 5x7 font (upper case; lower case is drawn as upper), scale pixels per dot.
  void text(int x, int y, const std::string& s, Rgb c, int scale = 1);
  static int text_width(const std::string& s, int scale = 1);
  static int text_height(int scale = 1) { return 7 * scale; }
  // Writes an 8-bit RGB PNG; throws std::runtime_error when the file cannot be written.
  void save_png(const std::string& path) const;
  std::vector<uint8_t> encode_png() const;

 private:
  int width_, height_;
  std::vector<uint8_t> pixels_;  // RGB rows, top first
};

struct Series {
  std::string label;
  std::vector<double> y;  // NaN leaves a gap
  Rgb color;
  // In epochs; when empty, y[i] belongs to the end of epoch i + 1 and gets a marker.
  std::vector<double> x = {};
  int thickness = 3;
};

struct Panel {
  std::string title;
  std::vector<Series> series;
  bool percent = false;  // clamp the axis to [0, 100]
  // Where the legend goes: top right suits falling curves (loss), bottom right rising ones.
  bool legend_bottom = false;
};

// Panels side by side, x in epochs. Throws std::runtime_error when the file cannot be written.
void plot_epochs(const std::string& path, const std::vector<Panel>& panels);
Canvas render_epochs(const std::vector<Panel>& panels);

}  // namespace crisp::cli
