#!/bin/bash
# The SDK as another team gets it: install this build into a temporary
# destdir, copy examples/billing out of the tree, and build and run it with
# PKG_CONFIG_PATH (and PATH for nothing but the system's tools) only: no
# path into the source or build tree. The server serves its own proto on a
# free port, the client charges an account through it twice and reads the
# balance back, and a bad request comes back INVALID_ARGUMENT.
#   usage: sdk_install_test.sh BUILD_DIR SOURCE_ROOT
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
tmp=$(mktemp -d /tmp/ws-sdk-XXXXXX)
srv=
cleanup() {
    [ -n "$srv" ] && kill "$srv" 2>/dev/null && wait "$srv" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "sdk_install: $*" >&2; exit 1; }

meson install -C "$build" --destdir "$tmp/root" --no-rebuild --quiet >/dev/null
pc=$(find "$tmp/root" -name webshop.pc)
[ -n "$pc" ] || fail "no webshop.pc installed"

# Generated headers name the runtime with its prefix, never bare.
if grep -rlE '#include "(rpc_client|rpc_server|err|buf)\.h"' "$tmp/root" --include='*.h' \
        | grep -v '/include/webshop/[a-z_]*\.h$'; then
    fail "an installed generated header includes a runtime header without webshop/"
fi

export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pc")
unset PKG_CONFIG_LIBDIR C_INCLUDE_PATH CPATH LIBRARY_PATH
flags=$(pkg-config --cflags --libs webshop)
case "$flags" in *"$src"* | *"$build"*) fail "pkg-config points into the tree: $flags" ;; esac

cp -r "$src/examples/billing" "$tmp/billing"
# The same sanitizers as the SDK's own build, or its objects do not link.
san=$(meson introspect "$build" --buildoptions | python3 -c '
import json, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
print(o.get("b_sanitize", "none"))')
setup=(meson setup "$tmp/b" "$tmp/billing")
if [ "$san" != "none" ]; then
    setup+=("-Db_sanitize=$san" -Db_lundef=false)
fi
"${setup[@]}" >"$tmp/setup.log" 2>&1 || { cat "$tmp/setup.log" >&2; fail "meson setup failed"; }
ninja -C "$tmp/b" >"$tmp/ninja.log" 2>&1 || { cat "$tmp/ninja.log" >&2; fail "build failed"; }

"$tmp/b/billing-server" tcp://127.0.0.1:0 >"$tmp/srv.out" 2>"$tmp/srv.err" &
srv=$!
for _ in $(seq 100); do
    [ -s "$tmp/srv.out" ] && break
    kill -0 "$srv" 2>/dev/null || { cat "$tmp/srv.err" >&2; fail "server died"; }
    sleep 0.05
done
url=$(head -1 "$tmp/srv.out")
case "$url" in tcp://127.0.0.1:*) ;; *) cat "$tmp/srv.err" >&2; fail "no URL from the server" ;; esac

out=$("$tmp/b/billing-client" "$url" ada 250)
[ "$(head -1 <<<"$out")" = "balance=250 read=250" ] || fail "first charge: $out"
# The reply's google.protobuf.Timestamp, in its JSON form (RFC 3339, UTC).
ts_re='^reply=\{"balance_cents":"250","charged_at":"20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](\.[0-9]{3}|\.[0-9]{6}|\.[0-9]{9})?Z"\}$'
[[ "$(tail -1 <<<"$out")" =~ $ts_re ]] || fail "first charge's reply: $out"
out=$("$tmp/b/billing-client" "$url" ada 50)
[ "$(head -1 <<<"$out")" = "balance=300 read=300" ] || fail "second charge: $out"
if err=$("$tmp/b/billing-client" "$url" "" 5 2>&1); then
    fail "an empty account was accepted"
fi
case "$err" in INVALID_ARGUMENT:*account*) ;; *) fail "bad request answered: $err" ;; esac
kill "$srv"
wait "$srv" || fail "server exited with $?"
srv=
echo "sdk_install: ok (pkg-config: $flags)"
