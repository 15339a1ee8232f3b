// save and load: the safetensors format (8-byte header length, JSON header, tensor bytes).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string_view>
#include <unordered_set>

#include "core/tensor_impl.h"
#include "crisp/io.h"

namespace crisp {

namespace {

using json = nlohmann::json;

// The reference implementation's limit: a larger header is taken as a corrupt length field.
constexpr uint64_t kMaxHeader = 100'000'000;
constexpr std::string_view kMetadataKey = "__metadata__";
constexpr std::string_view kCrispKey = "crisp";

constexpr std::pair<DType, std::string_view> kDTypeNames[] = {
    {DType::b8, "BOOL"}, {DType::u8, "U8"},     {DType::i32, "I32"}, {DType::i64, "I64"},
    {DType::f16, "F16"}, {DType::bf16, "BF16"}, {DType::f32, "F32"}, {DType::f64, "F64"}};

std::string_view safetensors_dtype(DType d) {
  for (auto [dt, name] : kDTypeNames)
    if (dt == d) return name;
  return "?";
}

std::optional<DType> parse_dtype(std::string_view s) {
  for (auto [dt, name] : kDTypeNames)
    if (name == s) return dt;
  return std::nullopt;
}

// The format is little-endian; a big-endian host swaps each element.
void to_little_endian(char* data, size_t nbytes, size_t item) {
  if constexpr (std::endian::native == std::endian::big) {
    for (size_t i = 0; i + item <= nbytes; i += item) std::reverse(data + i, data + i + item);
  } else {
    (void)data, (void)nbytes, (void)item;
  }
}

std::string errno_text() { return std::strerror(errno); }

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now, reporting the error close() may return (delayed write errors on some filesystems).
  int close() {
    const int r = ::close(fd_);
    fd_ = -1;
    return r;
  }

 private:
  int fd_;
};

void write_all(int fd, const char* data, size_t n, const std::string& tmp) {
  while (n > 0) {
    const ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("cannot write '", tmp, "': ", errno_text());
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
}

// Reads exactly n bytes at offset; false on a short read (the file shrank).
bool read_at(int fd, char* data, size_t n, uint64_t offset, const std::string& path) {
  while (n > 0) {
    const ssize_t r = ::pread(fd, data, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      fail(path, ": read failed: ", errno_text());
    }
    if (r == 0) return false;
    data += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return true;
}

// The bytes a tensor stores, contiguous, in its own dtype.
std::vector<char> tensor_bytes(const Tensor& t) {
  const auto& impl = t.impl();
  if (impl->error) std::rethrow_exception(impl->error);
  std::vector<char> bytes(static_cast<size_t>(t.numel()) * itemsize(t.dtype()));
  if (!bytes.empty()) impl->array.storage->backend->read(impl->array, bytes.data());
  return bytes;
}

using Entries = std::vector<std::pair<std::string, const Tensor*>>;

void save_entries(const std::string& path, const Entries& entries, const nlohmann::json& metadata) {
  if (!metadata.is_null() && !metadata.is_object())
    fail("metadata must be a JSON object (or null), got ", metadata.type_name());

  // Written by hand rather than as one JSON object, so that tensors keep their order and
  // thousands of them cost linear time.
  std::string text = "{";
  try {
    if (metadata.is_object() && !metadata.empty()) {
      nlohmann::json meta = nlohmann::json::object();
      meta[std::string(kCrispKey)] = metadata.dump();
      for (const auto& [key, value] : metadata.items())
        if (value.is_string() && key != kCrispKey) meta[key] = value.get<std::string>();
      text += nlohmann::json(std::string(kMetadataKey)).dump() + ":" + meta.dump();
    }
    std::unordered_set<std::string_view> seen;
    uint64_t offset = 0;
    for (const auto& [name, t] : entries) {
      if (name.empty()) fail("a tensor has an empty name");
      if (name == kMetadataKey) fail("a tensor cannot be named \"", kMetadataKey, "\"");
      if (!seen.insert(name).second) fail("two tensors are named \"", name, "\"");
      if (!t->defined()) fail("tensor \"", name, "\" is undefined");
      const uint64_t nbytes = static_cast<uint64_t>(t->numel()) * itemsize(t->dtype());
      nlohmann::json entry = {{"dtype", std::string(safetensors_dtype(t->dtype()))},
                              {"shape", std::vector<int64_t>(t->shape())},
                              {"data_offsets", {offset, offset + nbytes}}};
      if (text.size() > 1) text += ",";
      text += nlohmann::json(name).dump() + ":" + entry.dump();
      offset += nbytes;
    }
  } catch (const nlohmann::json::exception& e) {
    // dump() refuses strings that are not UTF-8.
    fail("cannot write the header as JSON: ", e.what());
  }
  text += "}";
  // Pads with spaces so the data starts 8-byte aligned, as the reference implementation does.
  text.append((8 - text.size() % 8) % 8, ' ');
  char length[8];
  for (int i = 0; i < 8; ++i)
    length[i] = static_cast<char>((uint64_t{text.size()} >> (8 * i)) & 0xff);

  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666));
  if (fd.get() < 0) fail("cannot create '", tmp, "': ", errno_text());
  try {
    write_all(fd.get(), length, 8, tmp);
    write_all(fd.get(), text.data(), text.size(), tmp);
    for (const auto& [name, t] : entries) {
      std::vector<char> bytes;
      try {
        bytes = tensor_bytes(*t);
      } catch (const Error& e) {
        // Reported at the save, naming the entry and where the failing op was written.
        std::string origin;
        if (!e.trace().empty())
          origin = detail::cat(" (from ", e.trace().front().file, ":", e.trace().front().line, ")");
        fail("tensor \"", name, "\" could not be computed: ", e.message(), origin);
      }
      to_little_endian(bytes.data(), bytes.size(), itemsize(t->dtype()));
      write_all(fd.get(), bytes.data(), bytes.size(), tmp);
    }
    if (::fsync(fd.get()) != 0) fail("cannot flush '", tmp, "' to disk: ", errno_text());
    if (fd.close() != 0) fail("cannot close '", tmp, "': ", errno_text());
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      fail("cannot rename '", tmp, "' to '", path, "': ", errno_text());
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  // The rename is durable only once the directory entry is on disk.
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() >= 0 && ::fsync(dfd.get()) != 0 && errno != EINVAL)
    fail("cannot flush directory '", dir, "' to disk: ", errno_text());
}

// ---- loading ----

struct EntryInfo {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

uint64_t read_u64_le(const unsigned char* b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
  return v;
}

std::optional<uint64_t> as_uint(const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0)
    return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

EntryInfo parse_entry(const std::string& file, const std::string& name, const json& v) {
  auto bad = [&](const auto&... a) { fail(file, ": tensor \"", name, "\": ", a...); };
  if (!v.is_object()) bad("expected an object with dtype, shape and data_offsets, got ", v.dump());
  EntryInfo e{name, DType::f32, {}, 0, 0};

  auto dt = v.find("dtype");
  if (dt == v.end()) bad("missing \"dtype\"");
  if (!dt->is_string()) bad("dtype must be a string, got ", dt->dump());
  auto parsed = parse_dtype(dt->get_ref<const std::string&>());
  if (!parsed)
    bad("dtype ", dt->dump(),
        " is not supported (crisp reads BOOL, U8, I32, I64, F16, BF16, F32, F64)");
  e.dtype = *parsed;

  auto sh = v.find("shape");
  if (sh == v.end()) bad("missing \"shape\"");
  if (!sh->is_array()) bad("shape must be an array, got ", sh->dump());
  uint64_t numel = 1;
  bool overflow = false, empty = false;
  for (const auto& d : *sh) {
    auto n = as_uint(d);
    if (!n) bad("shape ", sh->dump(), " has an entry that is not a non-negative integer");
    if (*n > static_cast<uint64_t>(INT64_MAX)) bad("shape ", sh->dump(), " is too large");
    e.shape.push_back(static_cast<int64_t>(*n));
    empty |= *n == 0;
    overflow |= __builtin_mul_overflow(numel, *n, &numel);
  }
  uint64_t nbytes = 0;
  overflow |= __builtin_mul_overflow(numel, uint64_t{itemsize(e.dtype)}, &nbytes);
  // An empty tensor is valid whatever its other dimensions.
  if (empty)
    nbytes = 0;
  else if (overflow || numel > static_cast<uint64_t>(INT64_MAX))
    bad("shape ", sh->dump(), " has too many elements");

  auto off = v.find("data_offsets");
  if (off == v.end()) bad("missing \"data_offsets\"");
  if (!off->is_array() || off->size() != 2 || !as_uint((*off)[0]) || !as_uint((*off)[1]))
    bad("data_offsets must be two non-negative integers [begin, end], got ", off->dump());
  e.begin = *as_uint((*off)[0]);
  e.end = *as_uint((*off)[1]);
  if (e.end < e.begin) bad("data_offsets ", off->dump(), " end before they begin");
  if (e.end - e.begin != nbytes)
    bad("shape ", sh->dump(), " of ", safetensors_dtype(e.dtype), " needs ", nbytes,
        " bytes but data_offsets ", off->dump(), " hold ", e.end - e.begin);
  return e;
}

Checkpoint load_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) fail("cannot open '", path, "': ", errno_text());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) fail("cannot stat '", path, "': ", errno_text());
  if (!S_ISREG(st.st_mode)) fail("'", path, "' is not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8)
    fail(path, ": the file is ", size,
         " bytes, too short for a safetensors file (8-byte header length)");

  unsigned char len_bytes[8];
  if (!read_at(fd.get(), reinterpret_cast<char*>(len_bytes), 8, 0, path))
    fail(path, ": the file ended while reading the header length");
  const uint64_t n = read_u64_le(len_bytes);
  if (n > size - 8)
    fail(path, ": the header length field says ", n, " bytes but only ", size - 8,
         " follow it: the file is truncated or not safetensors");
  if (n > kMaxHeader)
    fail(path, ": the header length ", n, " exceeds the limit of ", kMaxHeader, " bytes");
  if (n < 2) fail(path, ": the header is ", n, " bytes, too short to hold a JSON object");
  std::string text(n, '\0');
  if (!read_at(fd.get(), text.data(), n, 8, path)) fail(path, ": the file ended inside the header");

  json header;
  try {
    header = json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": the header is not valid JSON: ", e.what());
  }
  if (!header.is_object())
    fail(path, ": the header must be a JSON object, got ", header.type_name());

  const uint64_t data_size = size - 8 - n;
  Checkpoint ck;
  std::vector<std::pair<std::string, std::string>> extra_meta;
  std::vector<EntryInfo> entries;
  entries.reserve(header.size());
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      if (!value.is_object())
        fail(path, ": ", kMetadataKey, " must be an object, got ", value.dump());
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string())
          fail(path, ": ", kMetadataKey, " entry \"", mk, "\" must be a string, got ", mv.dump());
        if (mk == kCrispKey) {
          try {
            ck.metadata = nlohmann::json::parse(mv.get_ref<const std::string&>());
          } catch (const nlohmann::json::exception& e) {
            fail(path, ": metadata \"", kCrispKey, "\" is not valid JSON: ", e.what());
          }
          if (!ck.metadata.is_object())
            fail(path, ": metadata \"", kCrispKey, "\" must be a JSON object, got ",
                 ck.metadata.type_name());
        } else {
          extra_meta.emplace_back(mk, mv.get<std::string>());
        }
      }
      continue;
    }
    EntryInfo e = parse_entry(path, key, value);
    if (e.end > data_size)
      fail(path, ": tensor \"", key, "\": data_offsets [", e.begin, ", ", e.end,
           "] run past the end of the data (", data_size, " bytes)");
    entries.push_back(std::move(e));
  }
  for (auto& [k, v] : extra_meta)
    if (!ck.metadata.contains(k)) ck.metadata[k] = v;

  // The data must be covered exactly: each tensor starts where the previous one ends.
  std::stable_sort(entries.begin(), entries.end(), [](const EntryInfo& a, const EntryInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  const EntryInfo* previous = nullptr;
  for (const EntryInfo& e : entries) {
    if (e.begin < expected)
      fail(path, ": tensor \"", e.name, "\": data_offsets [", e.begin, ", ", e.end,
           "] overlap tensor \"", previous->name, "\" [", previous->begin, ", ", previous->end,
           "]");
    if (e.begin > expected)
      fail(path, ": tensor \"", e.name, "\": data_offsets [", e.begin, ", ", e.end,
           "] leave bytes [", expected, ", ", e.begin, ") of the data unused");
    expected = e.end;
    previous = &e;
  }
  if (expected != data_size)
    fail(path, ": the data is ", data_size, " bytes but the tensors cover only ", expected);

  std::vector<char> buf;
  for (const EntryInfo& e : entries) {
    const size_t nbytes = e.end - e.begin;
    buf.resize(std::max<size_t>(nbytes, 1));
    if (!read_at(fd.get(), buf.data(), nbytes, 8 + n + e.begin, path))
      fail(path, ": tensor \"", e.name, "\": the file ended while reading its data");
    to_little_endian(buf.data(), nbytes, itemsize(e.dtype));
    // Any nonzero byte is true; crisp's bool storage holds only 0 and 1.
    if (e.dtype == DType::b8)
      for (size_t i = 0; i < nbytes; ++i) buf[i] = buf[i] != 0;
    ck.tensors.set(e.name, from_host(buf.data(), e.shape, e.dtype));
  }
  return ck;
}

}  // namespace

void save(const std::string& path, const State& tensors, const nlohmann::json& metadata, Loc loc) {
  CallScope scope("save", loc);
  Entries entries;
  for (const auto& [name, t] : tensors) entries.emplace_back(name, &t);
  save_entries(path, entries, metadata);
}

void save(const std::string& path, const std::vector<std::pair<std::string, State>>& groups,
          const nlohmann::json& metadata, Loc loc) {
  CallScope scope("save", loc);
  Entries entries;
  for (const auto& [group, state] : groups) {
    if (group.empty()) fail("a group has an empty name");
    for (const auto& [name, t] : state) entries.emplace_back(group + "." + name, &t);
  }
  save_entries(path, entries, metadata);
}

Checkpoint load(const std::string& path, Loc loc) {
  CallScope scope("load", loc);
  return load_file(path);
}

}  // namespace crisp
