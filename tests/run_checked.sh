#!/usr/bin/env bash
# Run one test program and fail if a sanitizer reported anything on its
# stderr. Needed because criterion runs each test in a worker process and
# records the result before LeakSanitizer reports at the worker's exit, so a
# leaking test would otherwise still "pass".
#   run_checked.sh PROGRAM [ARGS...]
set -u
log="$(mktemp "${TMPDIR:-/tmp}/webshop-test-XXXXXX")"
trap 'rm -f "$log"' EXIT
"$@" 2> >(tee "$log" >&2)
rc=$?
wait
if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:|WARNING: ThreadSanitizer' "$log"; then
  echo "run_checked: sanitizer report in the output of $1" >&2
  [ "$rc" -eq 0 ] && rc=1
fi
exit "$rc"
