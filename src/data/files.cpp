// Dataset files: IDX (MNIST, Fashion-MNIST), gzip-compressed or raw, and CIFAR's binary format.
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/tensor_impl.h"
#include "crisp/data.h"

namespace crisp::data {

namespace {

namespace fs = std::filesystem;

// Reads through zlib, which passes files that are not gzip through unchanged.
class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path) {
    file_ = gzopen(path.c_str(), "rb");
    if (!file_) fail("cannot open '", path, "': ", errno ? std::strerror(errno) : "out of memory");
    gzbuffer(file_, 1 << 17);
  }
  ~GzFile() { gzclose(file_); }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  // Reads up to n bytes; fewer only at the end of the data.
  size_t read(void* dst, size_t n) {
    size_t total = 0;
    auto* out = static_cast<char*>(dst);
    while (total < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - total, 1u << 30));
      const int r = gzread(file_, out + total, chunk);
      if (r < 0) {
        int code = 0;
        const char* msg = gzerror(file_, &code);
        fail(path_, ": cannot decompress: ", msg);
      }
      if (r == 0) break;
      total += static_cast<size_t>(r);
    }
    return total;
  }

 private:
  std::string path_;
  gzFile file_;
};

struct IdxType {
  DType dtype;
  size_t size;  // bytes per element in the file
};

std::optional<IdxType> idx_type(unsigned char code) {
  switch (code) {
    case 0x08:
      return IdxType{u8, 1};
    case 0x09:
      return IdxType{i32, 1};
    case 0x0B:
      return IdxType{i32, 2};
    case 0x0C:
      return IdxType{i32, 4};
    case 0x0D:
      return IdxType{f32, 4};
    case 0x0E:
      return IdxType{f64, 8};
  }
  return std::nullopt;
}

uint64_t big_endian(const unsigned char* b, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v = (v << 8) | b[i];
  return v;
}

// Converts IDX's big-endian elements to crisp's host layout.
std::vector<char> idx_elements(const std::vector<unsigned char>& raw, unsigned char code,
                               size_t count) {
  const IdxType t = *idx_type(code);
  std::vector<char> out(count * itemsize(t.dtype));
  for (size_t i = 0; i < count; ++i) {
    const unsigned char* p = raw.data() + i * t.size;
    switch (code) {
      case 0x08:
        out[i] = static_cast<char>(p[0]);
        break;
      case 0x09:
      case 0x0B:
      case 0x0C: {
        // Sign-extend from the element's width.
        const unsigned bits = static_cast<unsigned>(8 * t.size);
        uint64_t u = big_endian(p, t.size);
        int64_t v = static_cast<int64_t>(u << (64 - bits)) >> (64 - bits);
        const auto v32 = static_cast<int32_t>(v);
        std::memcpy(out.data() + i * 4, &v32, 4);
        break;
      }
      case 0x0D: {
        const auto v = static_cast<uint32_t>(big_endian(p, 4));
        std::memcpy(out.data() + i * 4, &v, 4);
        break;
      }
      case 0x0E: {
        const uint64_t v = big_endian(p, 8);
        std::memcpy(out.data() + i * 8, &v, 8);
        break;
      }
    }
  }
  return out;
}

// An IDX file's shape, element code and raw (big-endian) element bytes.
struct IdxData {
  Shape shape;
  unsigned char code;
  std::vector<unsigned char> raw;
};

IdxData read_idx_data(const std::string& path) {
  if (!fs::exists(path)) fail("cannot open '", path, "': no such file");
  if (fs::is_directory(path)) fail("'", path, "' is a directory, not an IDX file");
  GzFile f(path);
  unsigned char magic[4];
  if (f.read(magic, 4) != 4) fail(path, ": too short for an IDX header (4 bytes of magic number)");
  if (magic[0] != 0 || magic[1] != 0 || !idx_type(magic[2]) || magic[3] == 0)
    fail(path, ": not an IDX file (magic bytes ", int{magic[0]}, " ", int{magic[1]}, " ",
         int{magic[2]}, " ", int{magic[3]}, "; expected 0 0 <type 8,9,11,12,13,14> <ndim>)");
  const size_t ndim = magic[3];
  std::vector<unsigned char> dims_raw(4 * ndim);
  if (f.read(dims_raw.data(), dims_raw.size()) != dims_raw.size())
    fail(path, ": the file ends inside the header of ", ndim, " dimensions");
  Shape shape;
  uint64_t count = 1;
  bool overflow = false;
  for (size_t d = 0; d < ndim; ++d) {
    const uint64_t n = big_endian(dims_raw.data() + 4 * d, 4);
    shape.push_back(static_cast<int64_t>(n));
    overflow |= __builtin_mul_overflow(count, n, &count);
  }
  const IdxType t = *idx_type(magic[2]);
  uint64_t nbytes = 0;
  overflow |= __builtin_mul_overflow(count, uint64_t{t.size}, &nbytes);
  if (overflow || nbytes > (uint64_t{1} << 40))
    fail(path, ": dimensions ", shape_str(shape), " are too large");
  // Grows as data arrives, so a header claiming more than the file holds costs no memory.
  std::vector<unsigned char> raw;
  constexpr size_t kChunk = size_t{1} << 24;
  while (raw.size() < nbytes) {
    const size_t old = raw.size();
    const size_t want = std::min<size_t>(kChunk, nbytes - old);
    raw.resize(old + want);
    const size_t got = f.read(raw.data() + old, want);
    if (got < want)
      fail(path, ": truncated: dimensions ", shape_str(shape), " need ", nbytes,
           " bytes of data but the file holds ", old + got);
  }
  unsigned char extra;
  if (f.read(&extra, 1) != 0)
    fail(path, ": the file holds more data than dimensions ", shape_str(shape), " need (", nbytes,
         " bytes)");
  return {shape, magic[2], std::move(raw)};
}

Tensor idx_tensor(const IdxData& d) {
  const IdxType t = *idx_type(d.code);
  const auto count = static_cast<size_t>(numel_of(d.shape));
  if (d.code == 0x08) return from_host(d.raw.data(), d.shape, u8);
  const std::vector<char> host = idx_elements(d.raw, d.code, count);
  return from_host(host.data(), d.shape, t.dtype);
}

// Pixels as f32 in [0, 1], converted on the host in one pass.
Tensor unit_floats(const unsigned char* pixels, size_t n, Shape shape) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(pixels[i]) / 255.f;
  return from_host(v.data(), std::move(shape), f32);
}

// dir/name.gz, else dir/name.
std::string find_idx(const std::string& dir, const std::string& name, const char* hint) {
  for (const std::string& p : {dir + "/" + name + ".gz", dir + "/" + name})
    if (fs::exists(p)) return p;
  fail("cannot find ", name, ".gz (or ", name, ") in '", dir, "'", hint);
}

std::shared_ptr<TensorDataset> idx_images(const std::string& dir, bool train, const char* hint) {
  const std::string split = train ? "train" : "t10k";
  const std::string images_path = find_idx(dir, split + "-images-idx3-ubyte", hint);
  const std::string labels_path = find_idx(dir, split + "-labels-idx1-ubyte", hint);
  const IdxData images = read_idx_data(images_path);
  const IdxData labels = read_idx_data(labels_path);
  if (images.code != 0x08 || images.shape.size() != 3 || images.shape[1] != 28 ||
      images.shape[2] != 28)
    fail(images_path, ": expected uint8 images [N, 28, 28], got ",
         dtype_name(idx_type(images.code)->dtype), " ", shape_str(images.shape));
  if (labels.code != 0x08 || labels.shape.size() != 1)
    fail(labels_path, ": expected uint8 labels [N], got ", dtype_name(idx_type(labels.code)->dtype),
         " ", shape_str(labels.shape));
  const int64_t n = images.shape[0];
  if (labels.shape[0] != n)
    fail(images_path, " holds ", n, " images but ", labels_path, " holds ", labels.shape[0],
         " labels");
  const std::vector<int64_t> targets(labels.raw.begin(), labels.raw.end());
  return std::make_shared<TensorDataset>(
      unit_floats(images.raw.data(), images.raw.size(), {n, 1, 28, 28}), Tensor(targets, {n}));
}

std::vector<unsigned char> read_whole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open '", path, "': ", std::strerror(errno));
  in.seekg(0, std::ios::end);
  const auto size = static_cast<size_t>(in.tellg());
  in.seekg(0);
  std::vector<unsigned char> data(size);
  if (!in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(size)))
    fail("cannot read '", path, "'");
  return data;
}

// CIFAR binary records: label byte(s), then 3x32x32 pixels, channel-major.
std::shared_ptr<TensorDataset> cifar(const std::string& dir, const std::string& subdir,
                                     const std::vector<std::string>& names, size_t label_bytes,
                                     size_t label_index, int64_t classes, const char* what) {
  std::string base = dir;
  if (!fs::exists(base + "/" + names[0]) && fs::exists(base + "/" + subdir + "/" + names[0]))
    base += "/" + subdir;
  constexpr size_t kPixels = 3 * 32 * 32;
  const size_t record = label_bytes + kPixels;
  std::vector<uint8_t> pixels;
  std::vector<int64_t> labels;
  for (const std::string& name : names) {
    const std::string path = base + "/" + name;
    if (!fs::exists(path))
      fail("cannot find ", name, " in '", dir, "' (or '", dir, "/", subdir, "'): download the ",
           what, " binary version and unpack it there");
    const std::vector<unsigned char> data = read_whole(path);
    if (data.empty() || data.size() % record != 0)
      fail(path, ": ", data.size(), " bytes is not a whole number of ", what, " records (", record,
           " bytes each)");
    for (size_t off = 0; off < data.size(); off += record) {
      const int64_t label = data[off + label_index];
      if (label >= classes)
        fail(path, ": record ", off / record, " has label ", label, ", outside [0, ", classes, ")");
      labels.push_back(label);
      pixels.insert(pixels.end(), data.begin() + static_cast<ptrdiff_t>(off + label_bytes),
                    data.begin() + static_cast<ptrdiff_t>(off + record));
    }
  }
  const auto n = static_cast<int64_t>(labels.size());
  return std::make_shared<TensorDataset>(unit_floats(pixels.data(), pixels.size(), {n, 3, 32, 32}),
                                         Tensor(labels, {n}));
}

}  // namespace

Tensor read_idx(const std::string& path, Loc loc) {
  CallScope scope("read_idx", loc);
  return idx_tensor(read_idx_data(path));
}

std::shared_ptr<TensorDataset> fashion_mnist(const std::string& dir, bool train, Loc loc) {
  CallScope scope("fashion_mnist", loc);
  return idx_images(dir, train,
                    ": install Debian's dataset-fashion-mnist package (it puts the files in "
                    "/usr/share/datasets/fashion-mnist/)");
}

std::shared_ptr<TensorDataset> mnist(const std::string& dir, bool train, Loc loc) {
  CallScope scope("mnist", loc);
  return idx_images(dir, train, ": download MNIST's IDX files there");
}

std::shared_ptr<TensorDataset> cifar10(const std::string& dir, bool train, Loc loc) {
  CallScope scope("cifar10", loc);
  std::vector<std::string> names;
  if (train)
    for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
  else
    names.push_back("test_batch.bin");
  return cifar(dir, "cifar-10-batches-bin", names, 1, 0, 10, "CIFAR-10");
}

std::shared_ptr<TensorDataset> cifar100(const std::string& dir, bool train, bool fine, Loc loc) {
  CallScope scope("cifar100", loc);
  return cifar(dir, "cifar-100-binary", {train ? "train.bin" : "test.bin"}, 2, fine ? 1 : 0,
               fine ? 100 : 20, "CIFAR-100");
}

}  // namespace crisp::data
