"""One log vocabulary (issue 18): the same key for the same fact in every
service. Reads every ws_log_*() call in front/, inventory/, order/ and lib/
(the event name and the key=%x list of its format) and fails when

  - a key is a synonym of the one spelling chosen for its fact (err= or
    rc= for error=, sig= for signal=, format= for bus_format=, ...), or
    the fact is formatted the other way (signal=%d instead of the name,
    exit= as text);
  - an event name is the retired spelling (startup_failed);
  - an event logged by two or more services carries a fact key in one and
    not in the other (started with client_id= in the front but not in the
    order service), among the facts every service has (FACTS) and, between
    the two backends, the backends' own (BACKEND_FACTS);
  - a lifecycle event lacks a key every service must give it (REQUIRED).

A source check rather than a run because it sees every call, also on the
failure paths a run seldom takes; tests/e2e/test_settings.py checks the
lines the three processes really write. Calls that predate the vocabulary
and live in files outside this change are listed in KNOWN (file -> how
many): the test fails when a new one appears and when one is fixed
without its entry going (so the list only shrinks).

Run: /usr/bin/python3 tests/log_vocabulary_test.py [SOURCE_ROOT]
"""

import glob
import os
import re
import sys
import unittest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

SERVICES = ("front", "inventory", "order")

# One key per fact: synonym -> the key to use.
SYNONYMS = {
    "err": "error", "errno": "error", "rc": "exit or error", "exit_code": "exit",
    "exit_status": "exit", "sig": "signal", "signo": "signal", "bus_fmt": "bus_format",
    "listen": "url", "addr": "url",
}
# Keys whose value has one form: the conversion it must use.
FORMS = {"signal": "%s", "exit": "%d", "error": "%s"}
RETIRED_EVENTS = {"startup_failed": "start_failed", "rpc_start_failed": "listen_failed"}
FACTS = {"error", "exit", "signal", "http", "broker", "client_id", "bus_format", "what"}
BACKEND_FACTS = {"rpc", "db", "engine", "held_events"}
REQUIRED = {
    "started": {"http", "broker", "client_id", "bus_format"},
    "stopping": {"signal"},
    "stopped": {"exit"},
    "start_failed": {"what", "error"},
}
BACKEND_REQUIRED = {"started": {"rpc", "db", "engine"}}

# Older calls outside this change: (file, synonym) -> count. Shrink only.
KNOWN = {
    ("lib/db.c", "err"): 3,
    ("lib/notify.c", "error=%d"): 1,
    ("lib/outbox.c", "err"): 1,
    ("lib/rpc_server.c", "err"): 3,
    ("lib/http.c", "listen"): 1,
}

_CALL = re.compile(
    r'\bws_log(?:_(debug|info|warn|error)\s*\(|(?:_buffered)?\s*\(\s*WS_LOG_\w+\s*,)\s*"([a-z0-9_]+)"\s*,\s*'
    r'((?:"(?:[^"\\]|\\.)*"\s*)+|NULL)')
_KEY = re.compile(r'(?:^| )([a-z_][a-z0-9_]*)=(\S*)')


def log_calls(root):
    """(path, event, [(key, conversion)]) of every ws_log call."""
    calls = []
    paths = []
    for d in ("lib",) + SERVICES:
        paths += sorted(glob.glob(os.path.join(root, d, "*.c")))
    for path in paths:
        rel = os.path.relpath(path, root)
        with open(path, encoding="utf-8") as f:
            text = re.sub(r"/\*.*?\*/", " ", f.read(), flags=re.S)
        for m in _CALL.finditer(text):
            fmt = "" if m.group(3) == "NULL" else "".join(
                re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(3)))
            calls.append((rel, m.group(2), _KEY.findall(fmt)))
    return calls


def service_of(rel):
    top = rel.split("/", 1)[0]
    return top if top in SERVICES else None


class LogVocabulary(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.calls = log_calls(ROOT)

    def test_calls_are_found(self):
        mains = {rel for rel, _, _ in self.calls if rel.endswith("/main.c")}
        self.assertEqual(mains, {f"{s}/main.c" for s in SERVICES})
        self.assertGreater(len(self.calls), 100)

    def test_one_key_per_fact(self):
        found = {}
        bad = []
        for rel, event, keys in self.calls:
            for key, conv in keys:
                if key in SYNONYMS:
                    found[(rel, key)] = found.get((rel, key), 0) + 1
                    if (rel, key) not in KNOWN:
                        bad.append(f"{rel}: {event} {key}= (use {SYNONYMS[key]}=)")
                want = FORMS.get(key)
                if want is not None and conv.startswith("%") and conv[-1] != want[-1]:
                    tag = f"{key}={conv}"
                    found[(rel, tag)] = found.get((rel, tag), 0) + 1
                    if (rel, tag) not in KNOWN:
                        bad.append(f"{rel}: {event} {tag} (the fact is {key}={want})")
        for (rel, key), n in KNOWN.items():
            if found.get((rel, key), 0) < n:
                bad.append(f"{rel}: {key} fixed in {n - found.get((rel, key), 0)} "
                           "place(s): lower its KNOWN entry")
            elif found.get((rel, key), 0) > n:
                bad.append(f"{rel}: {found[(rel, key)] - n} new {key} "
                           f"(use {SYNONYMS.get(key, 'the one form')})")
        self.assertEqual(bad, [], "\n".join(bad))

    def test_retired_event_names(self):
        bad = [f"{rel}: {event} (now {RETIRED_EVENTS[event]})"
               for rel, event, _ in self.calls if event in RETIRED_EVENTS]
        self.assertEqual(bad, [], "\n".join(bad))

    def per_service(self):
        """{event: {service: [key set of each call]}} for the services' own files."""
        events = {}
        for rel, event, keys in self.calls:
            svc = service_of(rel)
            if svc is not None:
                events.setdefault(event, {}).setdefault(svc, []).append(
                    {k for k, _ in keys})
        return events

    def test_same_event_same_fact_keys_across_services(self):
        bad = []
        for event, by_svc in sorted(self.per_service().items()):
            if len(by_svc) < 2:
                continue
            for facts, among in ((FACTS, SERVICES), (BACKEND_FACTS, ("inventory", "order"))):
                seen = {s: frozenset().union(*(ks & facts for ks in by_svc[s]))
                        for s in among if s in by_svc}
                if len(set(seen.values())) > 1:
                    bad.append(f"{event}: " + ", ".join(
                        f"{s} has {sorted(k)}" for s, k in sorted(seen.items())))
        self.assertEqual(bad, [], "\n".join(bad))

    def test_lifecycle_events_have_their_keys(self):
        events = self.per_service()
        bad = []
        for event, want in REQUIRED.items():
            for svc in SERVICES:
                calls = events.get(event, {}).get(svc, [])
                if not calls:
                    bad.append(f"{svc} never logs {event}")
                need = want | (BACKEND_REQUIRED.get(event, set()) if svc != "front" else set())
                for ks in calls:
                    if not need <= ks:
                        bad.append(f"{svc}: {event} lacks {sorted(need - ks)}")
        self.assertEqual(bad, [], "\n".join(bad))


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        ROOT = sys.argv.pop(1)
    unittest.main(verbosity=2)
