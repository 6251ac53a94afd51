#!/usr/bin/env bash
# Smoke run of the bench for the test suite: start a shop, run every phase
# briefly, and check only that the bench completes and prints its table
# (every ratio with a verdict) and JSON; then a short --curve run that must
# print its table and write a well-formed SVG. Speed is never asserted.
#   smoke.sh BENCH [ARGS...]
set -u
out="$(mktemp "${TMPDIR:-/tmp}/webshop-bench-smoke-XXXXXX")"
json="$out.json"
svg="$out.svg"
trap 'rm -f "$out" "$json" "$svg"' EXIT
fail() { echo "smoke: $*" >&2; exit 1; }

"$@" --json "$json" >"$out"
rc=$?
cat "$out"
[ "$rc" -eq 0 ] || fail "the bench exited with status $rc"
for want in 'ceilings (same machine, run)' 'civetweb + nng round trip, tcp' \
    'civetweb + nng round trip, ipc' 'GET /inventory' 'GET /order/{id}' \
    'POST /order -> 201 (max)' 'orders end to end (max)' 'POST /order -> 201 at half rate' \
    'GET /inventory / civetweb bare' 'GET /order/{id} / civetweb+nng' \
    'orders/s end to end / (mosquitto QoS 1 / 3)' 'p99 POST->201 at' 'RSS MiB'; do
  grep -qF "$want" "$out" || fail "the table lacks \"$want\""
done
/usr/bin/python3 - "$json" <<'PY' || fail "the JSON output is missing or malformed"
import json, sys
d = json.load(open(sys.argv[1]))
d["shop"]["get_inventory"]["per_sec"]
d["ceilings"]["civetweb_nng_tcp"]["per_sec"]
for key in ("get_inventory_of_civetweb", "orders_e2e_of_mosquitto_div_3",
            "half_rate_post_201_p99_ms"):
    assert d["ratios"][key]["verdict"] in ("met", "MISSED", "n/a"), key
PY

# Short points: the curve starts three shops (one per catalog size).
"$@" --curve --seconds 0.3 --drain 2 --svg "$svg" --json "$json" >"$out"
rc=$?
cat "$out"
[ "$rc" -eq 0 ] || fail "the bench --curve exited with status $rc"
grep -qF 'clients' "$out" && grep -qF 'products' "$out" || fail "the curve table is missing"
/usr/bin/python3 - "$svg" "$json" <<'PY' || fail "the curve's SVG or JSON is missing or malformed"
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag.endswith("svg"), root.tag
d = json.load(open(sys.argv[2]))
assert [p["clients"] for p in d["clients"]] == [1, 2, 4, 8, 16, 32]
assert [c["products"] for c in d["catalog"]] == [10, 1000, 10000]
PY
echo "smoke: the bench completed and printed its table and curve"
