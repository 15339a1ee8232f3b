// Random number generators: counter-based (Philox), so state is two integers to save and restore.
#pragma once

#include <cstdint>
#include <mutex>

namespace crisp {

class Generator {
 public:
  struct State {
    uint64_t seed = 0;
    uint64_t offset = 0;
  };
  explicit Generator(uint64_t seed = 0) : state_{seed, 0} {}
  void manual_seed(uint64_t seed);
  State state() const;
  void set_state(State s);
  // Reserves n random numbers; returns the counter of the first.
  uint64_t advance(uint64_t n);

 private:
  mutable std::mutex mutex_;
  State state_;
};

// The global generator used when no generator is passed.
Generator& default_generator();
void manual_seed(uint64_t seed);

}  // namespace crisp
