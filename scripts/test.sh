#!/usr/bin/env bash
# Installs what is needed, then builds and runs the whole test suite: the normal build, the
# AddressSanitizer+UndefinedBehaviorSanitizer build, formatting, and an outside project that
# finds crisp with find_package.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
jobs=$(nproc)

# Each stage's wall time, printed at the end (also when a stage fails).
stage_names=()
stage_secs=()
stage_start=$SECONDS
stage() {
  if ((${#stage_names[@]})); then stage_secs+=($((SECONDS - stage_start))); fi
  stage_names+=("$1")
  stage_start=$SECONDS
  echo "== $1"
}
report_stages() {
  stage_secs+=($((SECONDS - stage_start)))
  echo "== stage times"
  for i in "${!stage_names[@]}"; do
    printf '%6d s  %s\n' "${stage_secs[$i]}" "${stage_names[$i]}"
  done
  printf '%6d s  total\n' "$SECONDS"
}
trap report_stages EXIT

# Build folders are Ninja's; one left by another generator is started afresh.
fresh_unless_ninja() {
  if [ -f "$1/CMakeCache.txt" ] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$1/CMakeCache.txt"; then
    rm -rf "$1"
  fi
}

stage "set-up"
bash scripts/setup.sh

stage "formatting"
bad=$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh' | xargs clang-format --dry-run -Werror 2>&1 | grep -c "error:" || true)
if [ "$bad" != "0" ]; then
  git ls-files '*.h' '*.cpp' '*.cu' '*.cuh' | xargs clang-format --dry-run -Werror
  exit 1
fi

stage "README tour matches examples/tour.cpp"
python3 scripts/check_readme.py

stage "release build"
fresh_unless_ninja build/release
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$root/build/install" >/dev/null
cmake --build build/release -j"$jobs"
stage "release tests"
(cd build/release && ctest --output-on-failure -j"$jobs" --timeout 600)

stage "install, then an outside project uses find_package(crisp)"
cmake --install build/release >/dev/null
fresh_unless_ninja build/package
cmake -S tests/package -B build/package -G Ninja -DCMAKE_PREFIX_PATH="$root/build/install" >/dev/null
cmake --build build/package -j"$jobs"
./build/package/crisp_package_test

stage "sanitizer build (ASan + UBSan)"
fresh_unless_ninja build/sanitize
# Host code only: nvcc code is not instrumented and GPU tests skip without a GPU; the release
# build above already compiles and links the CUDA backend. -O1 with line tables compiles in
# about half the time of -O2 -g, and the reports still name file and line.
cmake -S . -B build/sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DCRISP_SANITIZE=ON -DCRISP_BUILD_BENCH=OFF \
  -DCRISP_WITH_CUDA=OFF >/dev/null
cmake --build build/sanitize -j"$jobs"
stage "sanitizer tests"
(cd build/sanitize && ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j"$jobs" --timeout 900)
