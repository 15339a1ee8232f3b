#!/usr/bin/env bash
# Installs what is needed, then builds and runs the whole test suite: the normal build, the
# AddressSanitizer+UndefinedBehaviorSanitizer build, formatting, and an outside project that
# finds crisp with find_package.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
jobs=$(nproc)

bash scripts/setup.sh

echo "== formatting"
bad=$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh' | xargs clang-format --dry-run -Werror 2>&1 | grep -c "error:" || true)
if [ "$bad" != "0" ]; then
  git ls-files '*.h' '*.cpp' '*.cu' '*.cuh' | xargs clang-format --dry-run -Werror
  exit 1
fi

echo "== README tour matches examples/tour.cpp"
python3 scripts/check_readme.py

echo "== release build and tests"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$root/build/install" >/dev/null
cmake --build build/release -j"$jobs"
(cd build/release && ctest --output-on-failure -j"$jobs" --timeout 600)

echo "== install, then an outside project uses find_package(crisp)"
cmake --install build/release >/dev/null
cmake -S tests/package -B build/package -DCMAKE_PREFIX_PATH="$root/build/install" >/dev/null
cmake --build build/package -j"$jobs"
./build/package/crisp_package_test

echo "== sanitizer build (ASan + UBSan) and tests"
# Without CUDA: nvcc code is not instrumented and GPU tests skip without a GPU; the release build
# above already compiles and links the CUDA backend.
cmake -S . -B build/sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCRISP_SANITIZE=ON -DCRISP_BUILD_BENCH=OFF \
  -DCRISP_WITH_CUDA=OFF >/dev/null
cmake --build build/sanitize -j"$jobs"
(cd build/sanitize && ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j"$jobs" --timeout 900)
