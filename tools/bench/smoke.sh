#!/usr/bin/env bash
# Smoke run of the bench for the test suite: start a shop, run every phase
# briefly, and check only that the bench completes and prints its table and
# JSON. Speed is never asserted.
#   smoke.sh BENCH [ARGS...]
set -u
out="$(mktemp "${TMPDIR:-/tmp}/webshop-bench-smoke-XXXXXX")"
json="$out.json"
trap 'rm -f "$out" "$json"' EXIT
"$@" --json "$json" >"$out"
rc=$?
cat "$out"
if [ "$rc" -ne 0 ]; then
  echo "smoke: the bench exited with status $rc" >&2
  exit 1
fi
for want in 'ceilings (same machine, run)' 'GET /inventory' 'GET /order/{id}' \
    'POST /order accepted' 'orders end to end (max)' 'RSS MiB'; do
  if ! grep -qF "$want" "$out"; then
    echo "smoke: the table lacks \"$want\"" >&2
    exit 1
  fi
done
if ! /usr/bin/python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); d["shop"]["get_inventory"]["per_sec"]' "$json"; then
  echo "smoke: the JSON output is missing or malformed" >&2
  exit 1
fi
echo "smoke: the bench completed and printed its table"
