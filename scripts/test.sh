#!/usr/bin/env bash
# Install lokal with every extra and its test tools on a fresh machine, then run the test suite.
# Usage: ./scripts/test.sh [pytest args]   (slow checks: ./scripts/test.sh -m slow; with args it is plain pytest)
set -euo pipefail
cd "$(dirname "$0")/.."

# Headless Chromium for the playground's browser tests (Debian packages; never a downloaded browser).
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  fi
fi

# llama-cpp-python compiles from source; the native build crashes on quantized GGUFs on AVX-512/AMX CPUs,
# and pip would reuse a cached native wheel and ignore CMAKE_ARGS, hence --no-cache-dir.
if ! python -c "import llama_cpp" >/dev/null 2>&1; then
  CMAKE_ARGS="-DGGML_NATIVE=OFF" python -m pip install --no-cache-dir "llama-cpp-python==0.3.36"
fi
python -m pip install -q -e ".[all,test]"

if [ "$#" -gt 0 ]; then
  exec python -m pytest "$@"
fi
# Everything not bound to wall-clock time on two workers (one server start, one engine load overlapping the next
# test's), then the checks that measure how soon something happens, alone, so a busy neighbour cannot fail them.
status=0
python -m pytest -n "${LOKAL_TEST_WORKERS:-2}" --dist loadscope -m "not slow and not gpu and not serial" || status=$?
python -m pytest -m "serial and not slow and not gpu" || status=$?
exit "$status"
