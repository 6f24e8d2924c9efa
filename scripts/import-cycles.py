#!/usr/bin/env python3
"""The module graph of src/ from its `use crate::...` and `crate::...` paths: prints every
import cycle (strongly connected components of more than one module) and every arrow that
points up the layering of docs/architecture.md (LAYERS below). Exit 1 when there is either,
or when a module has no layer.

usage: scripts/import-cycles.py [SRC_DIR]
A module is a file (src/a/b.rs is `a::b`, src/a/mod.rs is `a`); `crate::a::b::Item` counts as
an arrow to the longest module prefix that exists.
"""
import os, re, sys

# docs/architecture.md, bottom up: a module may import its own layer and the ones below.
LAYERS = [
    ("pure decisions", ["wire", "policy", "auth", "config", "error", "tls", "log_text", "metrics"]),
    ("shared state", ["state"]),
    ("stores", ["store"]),
    ("data path", ["session", "upstream", "http", "echo"]),
    ("control", ["control"]),
    ("wiring", ["app"]),
]

def layer(module):
    top = module.split("::")[0]
    for n, (_, tops) in enumerate(LAYERS):
        if top in tops:
            return n
    return None

src = sys.argv[1] if len(sys.argv) > 1 else "src"
mods = {}
for root, _, files in os.walk(src):
    for f in files:
        if not f.endswith(".rs"):
            continue
        rel = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
        if rel[-1] == "mod":
            rel = rel[:-1]
        if rel in (["lib"], ["main"]) or rel[0] == "bin":  # the crate roots and binaries sit on top
            continue
        mods["::".join(rel)] = os.path.join(root, f)

def target(path):
    parts = path.split("::")
    for n in range(len(parts), 0, -1):
        cand = "::".join(parts[:n])
        if cand in mods:
            return cand
    return None

edges = {m: set() for m in mods}
for m, path in mods.items():
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", text, flags=re.S)  # unit tests are not the layering
    for use in re.findall(r"\bcrate::([A-Za-z_][\w:]*(?:::\{[^;]*\})?)", text):
        base = use.split("::{")[0]
        heads = [base]
        if "::{" in use:
            inner = use.split("::{", 1)[1].rstrip("}")
            heads = [f"{base}::{x.strip().split(' ')[0]}" for x in re.split(r",(?![^{]*\})", inner) if x.strip()]
        for h in heads:
            t = target(h.replace("::{", "::").strip(":"))
            if t and t != m and not m.startswith(t + "::") and not t.startswith(m + "::"):
                edges[m].add(t)

# Tarjan's strongly connected components.
index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        comps.append(comp)
sys.setrecursionlimit(10000)
for v in sorted(edges):
    if v not in index:
        visit(v)
cycles = [sorted(c) for c in comps if len(c) > 1]
n_edges = sum(len(e) for e in edges.values())
unplaced = sorted(m for m in mods if layer(m) is None)
upward = sorted((m, t) for m, ts in edges.items() for t in ts
                if layer(m) is not None and layer(t) is not None and layer(t) > layer(m))
print(f"{len(mods)} modules, {n_edges} import arrows, {len(cycles)} import cycle(s), "
      f"{len(upward)} upward arrow(s)")
for c in cycles:
    print("  cycle:", " <-> ".join(c))
for m, t in upward:
    print(f"  upward: {m} ({LAYERS[layer(m)][0]}) -> {t} ({LAYERS[layer(t)][0]})")
for m in unplaced:
    print(f"  no layer: {m} (add it to LAYERS)")
sys.exit(1 if cycles or upward or unplaced else 0)
