# Shared by the scripts: project root, build helpers. Sourced, not run.
FUSECHECK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="/usr/local/cuda/bin:$PATH"
# Eigen's OpenMP threads spin while idle; on a loaded 2-core machine that costs 10x.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
# Debian's python3 has h5py and matplotlib; a pyenv python3 earlier on PATH may not.
FUSECHECK_PYTHON=/usr/bin/python3
[ -x "$FUSECHECK_PYTHON" ] || FUSECHECK_PYTHON=python3
: "${FUSECHECK_MODELS:=$FUSECHECK_ROOT/../shared/models}"
export FUSECHECK_MODELS
jobs_arg() { echo "-j$(nproc)"; }

# configure_build DIR [cmake args...]: configures once (ninja), quiet unless it fails.
configure_build() {
  local dir="$1"; shift
  if [ ! -f "$dir/build.ninja" ]; then
    local log
    log=$(mktemp)
    if ! cmake -S "$FUSECHECK_ROOT" -B "$dir" -G Ninja "$@" >"$log" 2>&1; then
      cat "$log" >&2; rm -f "$log"; return 1
    fi
    rm -f "$log"
  fi
}

# build DIR [targets...]: builds quietly, prints the log only on failure.
build() {
  local dir="$1"; shift
  local log
  log=$(mktemp)
  if ! ninja -C "$dir" "$(jobs_arg)" "$@" >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; return 1
  fi
  rm -f "$log"
}
