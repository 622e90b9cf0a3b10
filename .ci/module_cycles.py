#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a cycle (ARCHITECTURE.md: "no module
imports form a cycle"). An edge A -> B is a path from module A to module B: `crate::b::...`,
`crate::{b, ...}`, `super::b::...`, or `use b::...` of a child module. `mod b;` declarations, re-exports
(`pub use`) and paths through the crate root's re-exports are not edges, and `#[cfg(test)]` code
is left out. Usage: module_cycles.py CRATE_SRC_DIR..."""
import pathlib
import re
import sys


def module_of(root, path):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def longest_module(path, modules, floor=()):
    while path not in modules and len(path) > len(floor):
        path = path[:-1]
    return path if path in modules else None


def edges_of(module, text, modules):
    text = re.sub(r"//[^\n]*", "", text).split("#[cfg(test)]")[0]
    found = set()
    for m in re.finditer(r"\bcrate::((?:\w+::)*)\{([^}]*)\}", text):
        prefix = tuple(s for s in m.group(1).split("::") if s)
        for item in m.group(2).split(","):
            if not item.strip():
                continue  # the empty item after a trailing comma
            segs = tuple(s for s in re.findall(r"\w+", item.split(" as ")[0]) if s != "self")
            found.add(longest_module(prefix + segs, modules))
    for m in re.finditer(r"\bcrate::((?:\w+::)*\w+)(?![\w:])", text):
        found.add(longest_module(tuple(m.group(1).split("::")), modules))
    for m in re.finditer(r"\b((?:super::)+)((?:\w+::)*\w+)?", text):
        base = module[: len(module) - m.group(1).count("super::")]
        segs = tuple(m.group(2).split("::")) if m.group(2) else ()
        found.add(longest_module(base + segs, modules, floor=base))
    for m in re.finditer(r"^\s*use (\w+)::", text, re.M):
        if module + (m.group(1),) in modules:
            found.add(module + (m.group(1),))
    found.discard(None)
    found.discard(module)
    found.discard(())  # the crate root: its `pub use` re-exports are names, not a dependency
    return found


def cycles(root):
    files = {module_of(root, p): p for p in root.rglob("*.rs")}
    graph = {m: edges_of(m, p.read_text(), set(files)) for m, p in files.items()}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted("::".join(c) or "(crate root)" for c in component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return found


failed = False
for directory in sys.argv[1:]:
    for component in cycles(pathlib.Path(directory)):
        print(f"{directory}: modules import each other in a cycle: {' <-> '.join(component)}")
        failed = True
print("module import cycles: none" if not failed else "module import cycles found")
sys.exit(1 if failed else 0)
