#!/bin/bash
# buf on the contracts (buf.yaml at the source root), with the buf that
# tools/webshop installs from tests/buf/package-lock.json (npm ci).
#   check.sh lint       buf lint: the STANDARD rules, minus the exceptions
#                       buf.yaml explains
#   check.sh breaking   buf breaking against baseline.binpb, the image of the
#                       last release (FILE rules: wire and JSON compatibility
#                       for every generated file)
#   check.sh baseline   rewrite baseline.binpb from proto/ (at a release, in a
#                       commit of its own)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
buf="$here/node_modules/.bin/buf"
[ -x "$buf" ] || { echo "check.sh: $buf missing: run tools/webshop test (npm ci in tests/buf)" >&2; exit 1; }
cd "$root"
case "${1:-}" in
  lint) exec "$buf" lint --error-format text ;;
  breaking) exec "$buf" breaking --against "$here/baseline.binpb" --error-format text ;;
  baseline) exec "$buf" build -o "$here/baseline.binpb" ;;
  *) echo "usage: check.sh lint|breaking|baseline" >&2; exit 2 ;;
esac
