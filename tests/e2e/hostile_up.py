#!/usr/bin/python3
"""The hostile-client numbers of issue 15's "done when", against the shop
exactly as `tools/webshop up` starts it (its defaults, not the test
harness's): run by hand, not part of any test suite.

    WEBSHOP_BUILD_DIR=build /usr/bin/python3 tests/e2e/hostile_up.py [--seconds S] [--n N]
        [--cases idle,headers,body,all]

(The front's settings come from `up` alone; WEBSHOP_FRONT_* variables in
the environment reach it as they would any `up`.)

Starts `tools/webshop up --state-dir <tmp> --http-port 0` (with
WEBSHOP_BUILD_DIR set, up builds and runs that build; unset, its own
build-run), reads the storefront URL from `tools/webshop status`, then for
each case -- N idle, N slow-header, N slow-body connections (each alone),
and N of each at once -- keeps the attackers on (each reconnects as soon as
it is cut) while a normal client sends fresh-connection GET /inventory
requests to that URL one after another for S seconds. Prints a markdown
table: p50/p99/max of the normal GETs, how many failed or took over 1 s,
attacker connections, and how long the server held them (p50, max), with
the load average. `tools/webshop down` at the end, whatever happened.
Exit status 1 when a GET failed or took 1 s or more.

Attackers: the same as tests/e2e/test_hostile.py's (asyncio, in a child
process each kind): idle sends nothing; slow headers trickle
"GET /inventory ... X-Slow: aaaa..." a byte per 0.1 s; slow bodies send a
POST /order head with Content-Length: 10000 and trickle the body a byte
per 0.1 s.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_hostile import Attackers, pct, timed_get  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEBSHOP = os.path.join(ROOT, "tools", "webshop")


def webshop(*args, timeout=600):
    return subprocess.run([WEBSHOP, *args], capture_output=True, text=True, timeout=timeout)


def status_url(state):
    r = webshop("status", "--state-dir", state, timeout=60)
    for line in r.stdout.splitlines():
        if line.startswith("url="):
            return line[len("url="):].strip()
    raise RuntimeError(f"no url= in tools/webshop status:\n{r.stdout}\n{r.stderr}")


def run_case(port, kinds, n, seconds):
    """Attackers of kinds (n each) while GETs run for seconds: a row."""
    load0 = os.getloadavg()[0]
    attackers = [Attackers(port, k, n, seconds + 30) for k in kinds]
    started = []
    try:
        for a in attackers:
            a.__enter__()
            started.append(a)
        lat, bad, slow = [], [], 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            secs, status = timed_get(port, timeout=10)
            lat.append(secs)
            if status != 200:
                bad.append(status)
            slow += secs >= 1.0
    finally:
        for a in started:
            a.__exit__(None, None, None)
    holds = sorted(h for a in attackers for h in a.holds)
    answers = {}
    for a in attackers:
        for k, v in a.answers.items():
            answers[k] = answers.get(k, 0) + v
    by_kind = {a.kind: (pct(a.holds, .5) if a.holds else 0, max(a.holds, default=0))
               for a in attackers}
    return {"lat": lat, "bad": bad, "slow": slow, "holds": holds, "by_kind": by_kind,
            "connected": sum(a.connected for a in attackers), "answers": answers,
            "load": (load0, os.getloadavg()[0])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="GETs per case (15)")
    ap.add_argument("--n", type=int, default=128, help="attackers of each kind (128)")
    ap.add_argument("--cases", default="idle,headers,body,all",
                    help="which cases, comma-separated (idle,headers,body,all)")
    args = ap.parse_args()
    chosen = args.cases.split(",")
    state = tempfile.mkdtemp(prefix="webshop-hostile-up-")
    cases = [(what, kinds) for key, what, kinds in [
        ("idle", "idle", [Attackers.IDLE]),
        ("headers", "slow headers", [Attackers.SLOW_HEADERS]),
        ("body", "slow bodies", [Attackers.SLOW_BODY]),
        ("all", "all three at once",
         [Attackers.IDLE, Attackers.SLOW_HEADERS, Attackers.SLOW_BODY])] if key in chosen]
    rows, failed = [], False
    try:
        r = webshop("up", "--state-dir", state, "--http-port", "0")
        if r.returncode != 0:
            raise RuntimeError(f"tools/webshop up failed:\n{r.stdout}\n{r.stderr}")
        url = status_url(state)
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        print(f"shop from tools/webshop up at {url} (state {state})", flush=True)
        base = [timed_get(port)[0] for _ in range(50)]
        print(f"no attack: p50 {pct(base, .5) * 1e3:.1f} ms, p99 {pct(base, .99) * 1e3:.1f} ms",
              flush=True)
        for what, kinds in cases:
            row = run_case(port, kinds, args.n, args.seconds)
            rows.append((f"{args.n} x {what}" if len(kinds) == 1
                         else f"{args.n} each, {what}", row))
            failed |= bool(row["bad"]) or row["slow"] > 0
            print(f"{rows[-1][0]}: done ({len(row['lat'])} GETs)", flush=True)
    finally:
        d = webshop("down", "--state-dir", state, timeout=120)
        if d.returncode != 0:
            print(f"tools/webshop down: {d.stdout}{d.stderr}", file=sys.stderr)
    print("\n| attack | GETs | p50 ms | p99 ms | max ms | failed / >= 1 s "
          "| attacker conns | held p50 s | held max s | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for what, r in rows:
        lat = r["lat"]
        print(f"| {what} | {len(lat)} | {pct(lat, .5) * 1e3:.1f} | {pct(lat, .99) * 1e3:.1f} "
              f"| {max(lat) * 1e3:.1f} | {len(r['bad'])} / {r['slow']} | {r['connected']} "
              f"| {pct(r['holds'], .5):.2f} | {max(r['holds'], default=0):.2f} "
              f"| {r['load'][0]:.1f} -> {r['load'][1]:.1f} |")
    for what, r in rows:
        top = sorted(r["answers"].items(), key=lambda kv: -kv[1])[:4]
        print(f"{what}: attackers saw " + ", ".join(f"{k!r} x {v}" for k, v in top)
              + "; held p50/max by kind: " + ", ".join(
                  f"{k} {p50:.2f}/{mx:.2f} s" for k, (p50, mx) in r["by_kind"].items()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
