// Checkpoints: named tensors and JSON metadata in one safetensors file (readable by PyTorch and
// Hugging Face tools).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "crisp/error.h"
#include "crisp/state.h"

namespace crisp {

// Writes tensors (in their order) and metadata to path atomically: the file is written beside
// path, flushed to disk and renamed over it, so path holds either the old or the new checkpoint,
// never a partial one. metadata is null or a JSON object; it is stored as a JSON string under
// the safetensors metadata key "crisp", and its string-valued entries are also stored as plain
// safetensors metadata, which other tools read.
void save(const std::string& path, const State& tensors, const nlohmann::json& metadata = {},
          Loc loc = Loc::current());
// Groups flatten to dotted names: {{"model", s}} stores s's "layer.weight" as
// "model.layer.weight"; Checkpoint::operator[]("model") gives them back.
void save(const std::string& path, const std::vector<std::pair<std::string, State>>& groups,
          const nlohmann::json& metadata = {}, Loc loc = Loc::current());

struct Checkpoint {
  // In the order their data lies in the file (the saved order for files crisp writes).
  State tensors;
  // The JSON object saved with the tensors, plus any other safetensors metadata (strings), such
  // as the "format" PyTorch writes. An object, empty when the file has none.
  nlohmann::json metadata = nlohmann::json::object();
  // The tensors saved under group, without the "group." prefix.
  State operator[](const std::string& group) const { return tensors.under(group); }
};

// Reads a safetensors file onto the current backend. Any malformed file (truncated, header out
// of bounds, unknown dtype, sizes that do not match, overlapping or missing data) throws
// crisp::Error naming the file and the entry.
Checkpoint load(const std::string& path, Loc loc = Loc::current());

}  // namespace crisp
