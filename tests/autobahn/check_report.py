#!/usr/bin/env python3
"""Summarise an Autobahn fuzzingclient index.json; exit 1 if any case's verdict ("behavior")
is not in the allowed set (default OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED), i.e. FAILED/WRONG CODE/UNCLEAN."""
import json, sys, collections
path = sys.argv[1]
allowed = set(sys.argv[2].split(",")) if len(sys.argv) > 2 else {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}
data = json.load(open(path))
bad = []
for agent, cases in data.items():
    groups = collections.defaultdict(collections.Counter)
    total = collections.Counter()
    def key(c):
        return [int(x) for x in c.split(".")]
    for cid in sorted(cases, key=key):
        r = cases[cid]
        g = cid.split(".")[0]
        groups[g][r["behavior"]] += 1
        total[r["behavior"]] += 1
        if r["behavior"] not in allowed:
            bad.append((agent, cid, r["behavior"], r.get("behaviorClose"), r.get("remoteCloseCode")))
    print(f"agent {agent}: {len(cases)} cases: " + ", ".join(f"{k}={v}" for k, v in sorted(total.items())))
    for g in sorted(groups, key=int):
        print(f"  {g:>3}.*: " + ", ".join(f"{k}={v}" for k, v in sorted(groups[g].items())))
for b in bad:
    print("BAD", *b)
sys.exit(1 if bad else 0)
