# Shared by the shell tests of tests/distributed: assertions that say what failed. Sourced.
set -euo pipefail
FUSECHECK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY=/usr/bin/python3
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect_rc WANT CMD...: runs CMD, fails unless it exits WANT; its output is in $last.
expect_rc() {
  local want="$1" rc=0; shift
  last=$("$@" 2>&1) || rc=$?
  [ "$rc" -eq "$want" ] || { printf '%s\n' "$last" | tail -n 30 >&2; fail "exit $rc, wanted $want: $*"; }
}
# expect_in FILE-or-'-' TEXT: the file (or $last) holds TEXT.
expect_in() {
  local where="$1" text="$2" body
  if [ "$where" = - ]; then body="$last"; else body=$(cat "$where"); fi
  grep -qF -- "$text" <<<"$body" || { printf '%s\n' "$body" | tail -n 30 >&2; fail "'$text' not found in ${where/#-/output}"; }
}
expect_not_in() {
  local where="$1" text="$2" body
  if [ "$where" = - ]; then body="$last"; else body=$(cat "$where"); fi
  ! grep -qF -- "$text" <<<"$body" || fail "'$text' found in ${where/#-/output}"
}
# count_in FILE TEXT: lines of FILE holding TEXT.
count_in() { grep -cF -- "$2" "$1" || true; }
