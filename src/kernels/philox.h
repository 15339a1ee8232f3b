// Philox4x32-10: the stateless generator behind rand/randn on every backend, so that the same
// seed gives the same numbers on CPU and GPU.
#pragma once

#include <cstdint>

#include "kernels/host_device.h"

namespace crisp::philox {

struct U4 {
  uint32_t x, y, z, w;
};

CRISP_HOST_DEVICE inline U4 round(U4 c, uint32_t k0, uint32_t k1) {
  const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c.x;
  const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c.z;
  return U4{static_cast<uint32_t>(p1 >> 32) ^ c.y ^ k0, static_cast<uint32_t>(p1),
            static_cast<uint32_t>(p0 >> 32) ^ c.w ^ k1, static_cast<uint32_t>(p0)};
}

// Four 32-bit random words for counter `counter` under key `seed`.
CRISP_HOST_DEVICE inline U4 generate(uint64_t seed, uint64_t counter) {
  U4 c{static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0u, 0u};
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int i = 0; i < 10; ++i) {
    c = round(c, k0, k1);
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

// Word j (0 to 3) of a block.
CRISP_HOST_DEVICE inline uint32_t lane(const U4& r, uint64_t j) {
  switch (j & 3) {
    case 0:
      return r.x;
    case 1:
      return r.y;
    case 2:
      return r.z;
    default:
      return r.w;
  }
}

// The i-th 32-bit word of the stream that starts at `offset`.
CRISP_HOST_DEVICE inline uint32_t word(uint64_t seed, uint64_t offset, uint64_t i) {
  const uint64_t n = offset + i;
  return lane(generate(seed, n >> 2), n);
}

// Uniform in (0, 1]: never 0, so log() of it is finite.
CRISP_HOST_DEVICE inline double uniform(uint32_t a, uint32_t b) {
  const uint64_t bits = (static_cast<uint64_t>(a) << 21) ^ b;
  return (static_cast<double>(bits & ((1ull << 53) - 1)) + 1.0) * (1.0 / 9007199254740992.0);
}

// The float32 value rand() gives from the element's two words: in [0, 1).
CRISP_HOST_DEVICE inline float uniform_f32(uint32_t a, uint32_t b) {
  const float v = static_cast<float>(1.0 - uniform(a, b));  // (0, 1] -> [0, 1)
  return v < 1.0f ? v : 0.0f;
}

}  // namespace crisp::philox
