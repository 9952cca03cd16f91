# Shared by the scripts: project root, build helpers. Sourced, not run.
FUSECHECK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="/usr/local/cuda/bin:$PATH"
# Eigen's OpenMP threads spin while idle; on a loaded 2-core machine that costs 10x.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
# Debian's python3 has h5py and matplotlib; a pyenv python3 earlier on PATH may not.
: "${FUSECHECK_PYTHON:=/usr/bin/python3}"  # a python3 with h5py and numpy (Debian's by default)
[ -x "$FUSECHECK_PYTHON" ] || FUSECHECK_PYTHON=python3
: "${FUSECHECK_MODELS:=$FUSECHECK_ROOT/../shared/models}"
export FUSECHECK_MODELS
# Pinned test dependencies (scripts/fetch-test-deps), both ignored by git: the gguf Python
# package, and the real model stored quantized (stories260K-Q8_0.gguf).
: "${FUSECHECK_PYDEPS:=$FUSECHECK_ROOT/.deps-py}"
: "${FUSECHECK_MODEL_CACHE:=$FUSECHECK_ROOT/models}"
export FUSECHECK_PYDEPS FUSECHECK_MODEL_CACHE
# Cores for build and test jobs. GNU nproc honours OMP_NUM_THREADS, which scripts/test sets
# to 1 for the tests' own threads: plain nproc there ran ninja and ctest one job at a time.
ncpu() { env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc; }
jobs_arg() { echo "-j$(ncpu)"; }

# configure_build DIR [cmake args...]: configures once (ninja), quiet unless it fails.
configure_build() {
  local dir="$1"; shift
  if [ ! -f "$dir/build.ninja" ]; then
    local log
    log=$(mktemp)
    # ccache, where installed, makes rebuilds in fresh folders and worktrees cheap.
    local launcher=()
    if command -v ccache >/dev/null 2>&1; then
      launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache
                -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
    fi
    if ! cmake -S "$FUSECHECK_ROOT" -B "$dir" -G Ninja "${launcher[@]}" "$@" >"$log" 2>&1; then
      cat "$log" >&2; rm -f "$log"; return 1
    fi
    rm -f "$log"
  fi
}

# fresh_if_compiler_differs DIR COMPILER: removes the build folder DIR when it was configured
# with another C++ compiler (basename, e.g. clang++), which CMake cannot switch in place.
fresh_if_compiler_differs() {
  local dir="$1" want="$2" have
  [ -f "$dir/CMakeCache.txt" ] || return 0
  have=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$dir/CMakeCache.txt")
  if [ "$(basename "${have:-none}")" != "$want" ]; then
    echo "$dir: configured with ${have:-an unknown compiler}, not $want; starting it afresh" >&2
    rm -rf "$dir"
  fi
}

# build DIR [targets...]: builds quietly, prints the log only on failure. A precompiled
# header that the compiler refused (its flags differ from the target's: see
# cmake/FusecheckPch.cmake) is reported even on success: the build is right but slow.
build() {
  local dir="$1"; shift
  local log
  log=$(mktemp)
  if ! ninja -C "$dir" "$(jobs_arg)" "$@" >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; return 1
  fi
  grep -m 5 -e "-Winvalid-pch" "$log" >&2 || true
  rm -f "$log"
}
