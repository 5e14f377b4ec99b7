#!/usr/bin/env python3
"""File-level import graph of one or more Rust crates, as text: which file of a crate's src/
names which other file of the same crate, the strongly connected components (import circles)
and a reading order from the leaves up; then each file's imports from the other crates given.

usage: import_graph.py SRC_DIR [SRC_DIR...]      (stdlib only)

Each SRC_DIR is a crate's src/ (its name is read from ../Cargo.toml); files under src/bin/ and
src/main.rs are binaries of their own and are listed apart. Pass every crate of a workspace in
one call so that imports between them resolve to files (e.g. core's `ooblane_wire::vocab`).

What counts as an edge, file A -> file B: A names an item B defines, through a `use` tree
(nested groups, `self`, aliases, globs) or an inline path (`crate::a::B`, `super::x`,
`self::x`, `$crate::x`, a bare path through a child module or a name A imported). A path
through a re-export (`pub use x::Y` in lib.rs or a mod.rs) is followed to the file that
defines the item, so `crate::Error` is an edge to error.rs, not to lib.rs. A re-export
itself is an edge too, but the facade edges of a parent re-exporting its children are
reported apart: circles are listed with and without them.

What is left out, on purpose: comments and doc links (`[`X`](crate::x)`: not a compile
dependency), string literals, items under `#[cfg(test)]` (a test module's `use super::*` is
not a layer), `mod x;` declarations (a parent declaring a child is not an import), and
anything the tool cannot see through (macros expanding to paths, names in inline modules).
"""
import os
import re
import sys

WORD = r"[A-Za-z_][A-Za-z_0-9]*"


# ---------------------------------------------------------------- lexing


def strip_comments_and_strings(src):
    """The source with comments removed and string / char literals emptied (kept as "")."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(" ")
        elif c in "rb" and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")) and \
                re.match(r'(br|r)#*"', src[i:i + 70]):
            m = re.match(r'(br|r)(#*)"', src[i:])
            close = '"' + m.group(2)
            j = src.find(close, i + len(m.group(0)))
            i = n if j < 0 else j + len(close)
            out.append('""')
        elif c == "b" and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")) and \
                i + 1 < n and src[i + 1] in "\"'":
            i += 1  # a byte string or byte char: the literal follows
        elif c == '"':
            i += 1
            while i < n and src[i] != '"':
                i += 2 if src[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'":
            # A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a): only the former closes.
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", src[i:i + 12])
            if m:
                i += len(m.group(0))
                out.append("' '")
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching(src, i, open_ch, close_ch):
    """Index just past the bracket that closes the one at src[i]."""
    depth = 0
    while i < len(src):
        if src[i] == open_ch:
            depth += 1
        elif src[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(src)


def strip_cfg_test(src):
    """Removes what each `#[cfg(test)]` gates: an item up to its `;` or its `{...}` block, a
    field or struct-literal entry up to its `,`, a statement up to its `;`."""
    pat = re.compile(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]")
    while True:
        m = pat.search(src)
        if not m:
            return src
        i = m.end()
        depth = 0
        while i < len(src):
            c = src[i]
            if c in "([":
                depth += 1
            elif c in ")]":
                depth -= 1
            elif depth == 0 and c in ";,":
                i += 1
                break
            elif depth == 0 and c == "{":
                i = matching(src, i, "{", "}")
                break
            elif depth == 0 and c == "}":
                break  # the end of the enclosing block: the gated thing ended before it
            i += 1
        src = src[:m.start()] + " " + src[i:]


# ---------------------------------------------------------------- use trees


def parse_use_tree(text):
    """The leaves of a use tree as (path segments, alias or None); `a::{self, b as c, *}`
    gives (['a'], 'a'), (['a', 'b'], 'c'), (['a', '*'], None)."""
    text = re.sub(r"\s+", "", re.sub(r"\s+as\s+", "@", text))  # `a as b` -> `a@b`
    leaves = []

    def walk(prefix, s):
        # s is one tree: path::{...} | path | path as x | *
        if s.startswith("::"):
            s = s[2:]
        brace = s.find("{")
        if brace >= 0:
            head = s[:brace].rstrip(":")
            segs = prefix + ([p for p in head.split("::") if p] if head else [])
            end = matching(s, brace, "{", "}")
            for part in split_top(s[brace + 1:end - 1]):
                if part:
                    walk(segs, part)
            return
        alias = None
        if "@" in s:
            s, alias = s.split("@", 1)
        segs = prefix + [p for p in s.split("::") if p]
        if segs and segs[-1] == "self":
            segs = segs[:-1]
        if segs:
            leaves.append((segs, alias or (segs[-1] if segs[-1] != "*" else None)))

    walk([], text)
    return leaves


def split_top(s):
    parts, depth, cur = [], 0, []
    for c in s:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


USE = re.compile(r"(?P<vis>\bpub\s*(\([^)]*\))?\s*)?\buse\s+(?P<tree>[^;]*);")


# ---------------------------------------------------------------- crates and files


class File:
    def __init__(self, crate, module, path):
        self.crate, self.module, self.path = crate, module, path
        raw = open(path, encoding="utf-8").read()
        self.code = strip_cfg_test(strip_comments_and_strings(raw))
        self.uses = []  # (segments, alias, is_reexport)
        for m in USE.finditer(self.code):
            for segs, alias in parse_use_tree(m.group("tree")):
                self.uses.append((segs, alias, bool(m.group("vis"))))
        # Inline paths live in the code outside the `use` items.
        self.body = USE.sub(" ", self.code)

    def label(self):
        return os.path.relpath(self.path, self.crate.src)


class Crate:
    def __init__(self, name, src, files):
        """files: {module tuple: path}; the crate root is the empty tuple."""
        self.name, self.src = name, src
        self.files = {m: File(self, m, p) for m, p in files.items()}

    def children(self, module):
        return {m[-1] for m in self.files if len(m) == len(module) + 1 and m[:-1] == module}


def module_of(rel):
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def package_name(src):
    manifest = os.path.join(os.path.dirname(os.path.abspath(src)), "Cargo.toml")
    with open(manifest) as f:
        m = re.search(r'^\s*name\s*=\s*"([^"]+)"', f.read(), re.M)
    return m.group(1).replace("-", "_")


def load(src):
    """The library crate of src/ and each binary (src/main.rs, src/bin/*.rs) as its own crate."""
    name = package_name(src)
    lib, bins = {}, {}
    for dirpath, _, names in os.walk(src):
        for n in sorted(names):
            if not n.endswith(".rs"):
                continue
            path = os.path.join(dirpath, n)
            rel = os.path.relpath(path, src)
            if rel == "main.rs" or rel.startswith("bin" + os.sep):
                bins[rel] = path
            else:
                lib[module_of(rel)] = path
    crates = []
    if lib:
        crates.append(Crate(name, src, lib))
    for rel, path in sorted(bins.items()):
        # One-file binaries here; a binary's own modules would need its tree walked.
        crates.append(Crate(f"{name} (bin {rel})", src, {(): path}))
    return crates


# ---------------------------------------------------------------- resolution


class Resolver:
    def __init__(self, crates):
        self.crates = crates
        self.libs = {c.name: c for c in crates if "(bin" not in c.name}

    def start(self, file, segs):
        """(crate, module, rest) where a path written in `file` begins, or None (external)."""
        crate, here = file.crate, file.module
        first = segs[0]
        if first in ("crate", "$crate"):
            return crate, (), segs[1:]
        if first == "self":
            return crate, here, segs[1:]
        if first == "super":
            module, rest = here, segs
            while rest and rest[0] == "super":
                module, rest = module[:-1], rest[1:]
            return crate, module, rest
        if first in crate.children(here):
            return crate, here, segs
        if first in self.libs:
            return self.libs[first], (), segs[1:]
        for useg, alias, _ in file.uses:  # a name this file imported
            if alias == first and useg[0] != first:
                return self.start(file, useg + segs[1:])
        return None

    def resolve(self, file, segs, seen=None):
        """The files a path written in `file` goes through: the one it names as written, then
        each re-export followed, the last being the file that defines the item."""
        begun = self.start(file, segs)
        if begun is None:
            return []
        crate, module, rest = begun
        while rest and rest[0] in crate.children(module):
            module, rest = module + (rest[0],), rest[1:]
        target = crate.files.get(module)
        if target is None:
            return []
        if not rest or rest[0] == "*":
            return [target]
        seen = seen or set()
        key = (id(target), rest[0])
        if key in seen:
            return [target]
        seen.add(key)
        for useg, alias, reexport in target.uses:
            if reexport and alias == rest[0]:
                return [target] + self.resolve(target, useg + rest[1:], seen)
        return [target]

    def edges(self, file):
        """{target file: kind}: 'use', or 'reexport' where a parent's only mention of a child
        is a re-export of it (the facade of lib.rs or a mod.rs)."""
        found = {}

        def ancestor(target):
            return target.crate is file.crate and file.module[:len(target.module)] == target.module

        def add(chain, reexport):
            # The defining file always; a file passed through as written too, unless it is
            # an ancestor's facade or a crate root (`crate::Error` goes through lib.rs to
            # error.rs, `ooblane::Server` through ooblane's lib.rs to server.rs).
            for i, target in enumerate(chain):
                if target is file or (i < len(chain) - 1 and (ancestor(target) or target.module == ())):
                    continue
                child = target.crate is file.crate and \
                    target.module[:len(file.module)] == file.module
                kind = "reexport" if reexport and child else "use"
                if found.get(target) != "use":
                    found[target] = kind

        for segs, _, reexport in file.uses:
            if segs[-1] == "*" and len(segs) > 1:
                segs = segs[:-1]
            add(self.resolve(file, segs), reexport)
        roots = r"(?<![A-Za-z_0-9:])(\$?crate|super|self|" + WORD + r")((?:::" + WORD + ")+)"
        for m in re.finditer(roots, file.body):
            segs = [m.group(1)] + [s for s in m.group(2).split("::") if s]
            add(self.resolve(file, segs), False)
        return found


# ---------------------------------------------------------------- graph


def scc(nodes, graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return out  # reverse topological: a component comes after everything it imports


def report(crate, resolver):
    files = sorted(crate.files.values(), key=lambda f: f.label())
    edges = {f: resolver.edges(f) for f in files}
    inner = {f.label(): {t.label(): k for t, k in edges[f].items() if t.crate is crate}
             for f in files}
    print(f"## {crate.name} ({crate.src}): {len(files)} files")
    print()
    print("### imports within the crate (file: files it imports; (r) = a parent's re-export of a child)")
    for f in files:
        deps = inner[f.label()]
        print(f"{f.label()}: " + " ".join(
            d + (" (r)" if deps[d] == "reexport" else "") for d in sorted(deps)))
    n_edges = sum(len(v) for v in inner.values())
    n_facade = sum(1 for v in inner.values() for k in v.values() if k == "reexport")
    print(f"edges: {n_edges} ({n_facade} of them a parent's re-export of a child)")
    print()
    labels = [f.label() for f in files]
    with_r = {k: sorted(v) for k, v in inner.items()}
    without_r = {k: sorted(d for d, kind in v.items() if kind == "use") for k, v in inner.items()}
    for title, graph in (("counting re-exports", with_r), ("not counting a parent's re-exports", without_r)):
        comps = scc(labels, graph)
        cycles = [c for c in comps if len(c) > 1]
        print(f"### import circles ({title}): {len(cycles)}")
        for c in cycles:
            print(f"- {len(c)} files: " + " ".join(c))
        if not cycles:
            print("none")
        print()
    comps = scc(labels, with_r)
    print("### reading order, leaves first (a file after everything it imports; [..] = a circle)")
    print(" ".join(c[0] if len(c) == 1 else "[" + " ".join(c) + "]" for c in comps))
    print()
    outer = {}
    for f in files:
        for t in edges[f]:
            if t.crate is not crate:
                outer.setdefault(f.label(), set()).add(f"{t.crate.name}::{t.label()}")
    if outer:
        print("### imports from the other crates given")
        for k in sorted(outer):
            print(f"{k}: " + " ".join(sorted(outer[k])))
        print()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    crates = [c for src in sys.argv[1:] for c in load(src)]
    resolver = Resolver(crates)
    for crate in crates:
        report(crate, resolver)


if __name__ == "__main__":
    main()
