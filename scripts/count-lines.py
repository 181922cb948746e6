#!/usr/bin/env python3
"""Counts non-test Rust code lines (not blank, not comment-only) in the tracked tree: the issue-10 yardstick.
Skips the tests crate, */tests/*.rs, files named tests.rs, and each file's trailing #[cfg(test)] module."""
import subprocess, sys, re
root = sys.argv[1] if len(sys.argv) > 1 else "."
files = subprocess.check_output(["git", "-C", root, "ls-files", "*.rs"], text=True).split()
total = 0; per = {}
for f in files:
    if f.startswith("tests/") or "/tests/" in f or f.endswith("/tests.rs"):
        continue
    lines = open(f"{root}/{f}").read().split("\n")
    for i, l in enumerate(lines):
        if l.strip() == "#[cfg(test)]" and i + 1 < len(lines) and re.match(r"\s*mod \w+", lines[i+1]):
            lines = lines[:i]; break
    n = sum(1 for l in lines if l.strip() and not l.strip().startswith("//"))
    total += n; crate = f.split("/")[0]; per[crate] = per.get(crate, 0) + n
print(total, per)
