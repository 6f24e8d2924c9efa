#!/usr/bin/env bash
# Every relative link in the README and the docs resolves inside the repository: the file
# (or folder) exists, and a `#fragment` names a heading of the linked Markdown file (GitHub's
# anchor rules). External links (http, https, mailto) are not fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - README.md docs/*.md loadtest/README.md examples/README.md <<'PY'
import os, re, sys

def anchors(path):
    out = set()
    seen = {}
    for line in open(path, encoding="utf-8"):
        m = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out

bad, checked = [], 0
for doc in sys.argv[1:]:
    text = open(doc, encoding="utf-8").read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links inside code blocks are code
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^(https?|mailto):", target):
            continue
        checked += 1
        path, _, frag = target.partition("#")
        full = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
        if not os.path.exists(full):
            bad.append(f"{doc}: {target}: no such file")
        elif frag and full.endswith(".md") and frag not in anchors(full):
            bad.append(f"{doc}: {target}: no heading #{frag} in {full}")
for b in bad:
    print("FAIL", b)
print(f"links: {checked} relative links checked, {len(bad)} broken")
sys.exit(1 if bad else 0)
PY
