#!/usr/bin/env python3
"""Fail if the modules of a crate import each other in a circle.

For each crate source folder given (default: core, runtime-std,
runtime-embassy), the top-level modules are the files and folders under
src/ (a folder's files belong to it; lib.rs and bin/ are the roots, not
layers). Module A depends on B when A's code (comments and `#[cfg(test)]
mod tests` left out) names `crate::B`. The graph must be acyclic: then it
has layers, printed bottom-up, which each crate's top doc comment states.
Exit status 1 and the cycle's edges otherwise.
"""
import os
import re
import sys


def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            parts = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]) or parts[0] == "bin":
                continue
            mods.setdefault(parts[0], []).append(os.path.join(root, f))
    return mods


def reexports(src):
    """Items the crate root re-exports from its modules: name -> module."""
    found = {}
    text = open(os.path.join(src, "lib.rs"), encoding="utf-8").read()
    for module, items in re.findall(r"pub use (\w+)::\{?([^;]*?)\}?;", text, re.S):
        for item in re.findall(r"\w+", items):
            found[item] = module
    return found


def deps(mods, items):
    graph = {}
    for m, files in mods.items():
        found = set()
        for path in files:
            text = open(path, encoding="utf-8").read()
            text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
            text = re.sub(r"//[^\n]*", "", text)
            names = set(re.findall(r"crate::(\w+)", text))
            for block in re.findall(r"use crate::\{([^;]*)\};", text, re.S):
                names |= set(re.findall(r"(?:^|[\s,{])(\w+)(?=::|\s*[,}]|$)", block))
            names = {items.get(n, n) for n in names}
            found |= {n for n in names if n in mods and n != m}
        graph[m] = found
    return graph


def layers(graph):
    """Bottom-up layers, or None with the modules left in cycles."""
    left = dict(graph)
    out = []
    while left:
        ready = sorted(m for m, d in left.items() if not (d & left.keys()))
        if not ready:
            return None, left
        out.append(ready)
        for m in ready:
            del left[m]
    return out, {}


def main(crates):
    failed = False
    for crate in crates:
        src = os.path.join(crate, "src")
        graph = deps(modules(src), reexports(src))
        order, stuck = layers(graph)
        if order is None:
            failed = True
            print(f"{crate}: modules import each other in a circle:")
            for m in sorted(stuck):
                print(f"  {m} -> {', '.join(sorted(d for d in graph[m] if d in stuck))}")
        else:
            print(f"{crate}: no import cycle; layers bottom-up: " + " | ".join(", ".join(l) for l in order))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["core", "runtime-std", "runtime-embassy"]))
