// CPU optimizer updates: the one setting of their kernels.
#pragma once

#include <cstdint>

namespace crisp::cpu {

// How many bytes an update must touch before its stores bypass the cache (streaming stores):
// by default the last-level cache's size, or CRISP_OPTIM_STREAM_BYTES. Tests lower it.
int64_t& optim_stream_bytes();

}  // namespace crisp::cpu
