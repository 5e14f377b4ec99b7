#!/usr/bin/env python3
"""Checks that the repository's documentation only points inside the repository.

- Every relative link in every tracked `*.md` file (inline `[text](target)`, reference
  definitions `[label]: target` and `<img src=...>`) must name a tracked file or a directory
  holding tracked files (a fresh clone has exactly those), and its `#anchor`, when the target
  is a Markdown file, must be one of that file's headings (GitHub's anchor rules).
- Every `docs/NAME.md#anchor` mentioned in tracked source files (doc comments, tests,
  scripts) must resolve the same way, relative to the repository root.
- No tracked file may point at the contract documents that live outside the repository
  (their names are in the OUTSIDE pattern below).

Links with a scheme (`https:`, `mailto:`) are not fetched. Standard library only; run from
anywhere: `python3 tests/check_links.py`. Exits 1 and lists every broken link.
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_SUFFIXES = {".rs", ".py", ".sh", ".toml", ".md", ".txt", ".json", ".yml", ".yaml"}
SELF = Path(__file__).resolve()

INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
IMG_SRC = re.compile(r"<img[^>]*\ssrc=\"([^\"]+)\"")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
DOCS_MENTION = re.compile(r"(?<![\w/.-])(docs/[\w-]+\.md)(#[\w-]+)?")
# Built from pieces so this file does not match itself.
OUTSIDE = re.compile(r"\.\./" + "shared|" + r"\b(?:PROTOCOL|DESIGN|STYLE)\." + "md")


def tracked_files():
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                         capture_output=True).stdout.decode()
    return [ROOT / p for p in out.split("\0") if p]


def strip_code(text, inline=True):
    """Blanks fenced code blocks (and, if `inline`, code spans), keeping line numbers."""
    lines, fence = [], None
    for line in text.split("\n"):
        stripped = line.lstrip()
        if fence:
            if stripped.startswith(fence):
                fence = None
            lines.append("")
            continue
        match = re.match(r"(`{3,}|~{3,})", stripped)
        if match:
            fence = match.group(1)
            lines.append("")
            continue
        if inline:
            line = re.sub(r"(`+)(?:(?!\1).)+?\1", lambda m: " " * len(m.group(0)), line)
        lines.append(line)
    return "\n".join(lines)


def slug(heading):
    """GitHub's anchor for a heading text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w is Unicode-aware: letters and digits stay
    return text.replace(" ", "-")


_anchors = {}


def anchors(path):
    """Every anchor a Markdown file defines: headings (with -1, -2 for repeats) and ids."""
    if path not in _anchors:
        found, counts = set(), {}
        for line in strip_code(path.read_text(encoding="utf-8"), inline=False).split("\n"):
            match = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
            if match:
                base = slug(match.group(1))
                n = counts.get(base, 0)
                counts[base] = n + 1
                found.add(base if n == 0 else f"{base}-{n}")
            for explicit in re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", line):
                found.add(explicit)
        _anchors[path] = found
    return _anchors[path]


def check_target(source, base_dir, target, tracked, tracked_dirs):
    """The problem with `target` (relative to `base_dir`), or None if it resolves."""
    path_part, _, anchor = target.partition("#")
    dest = source if not path_part else (base_dir / path_part).resolve()
    try:
        rel = dest.relative_to(ROOT)
    except ValueError:
        return f"{target}: points outside the repository"
    if dest not in tracked and rel not in tracked_dirs:
        return f"{target}: {rel} is not a tracked file or directory"
    if anchor and dest.suffix == ".md" and dest in tracked:
        if anchor not in anchors(dest):
            return f"{target}: no heading '#{anchor}' in {rel}"
    return None


def main():
    files = tracked_files()
    tracked = set(files)
    tracked_dirs = {Path(".")}
    for f in files:
        tracked_dirs.update(f.relative_to(ROOT).parents)
    problems, links = [], 0

    for md in (f for f in files if f.suffix == ".md" and f.is_file()):
        text = strip_code(md.read_text(encoding="utf-8"))
        for lineno, line in enumerate(text.split("\n"), 1):
            targets = INLINE_LINK.findall(line) + IMG_SRC.findall(line)
            ref = REF_DEF.match(line)
            if ref:
                targets.append(ref.group(1))
            for target in targets:
                if not target or SCHEME.match(target):
                    continue
                links += 1
                problem = check_target(md, md.parent, target, tracked, tracked_dirs)
                if problem:
                    problems.append(f"{md.relative_to(ROOT)}:{lineno}: {problem}")

    for src in files:
        if src.suffix not in SOURCE_SUFFIXES or src == SELF or not src.is_file():
            continue
        try:
            text = src.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.split("\n"), 1):
            if OUTSIDE.search(line):
                problems.append(f"{src.relative_to(ROOT)}:{lineno}: points at a document "
                                f"outside the repository: {line.strip()}")
            if src.suffix == ".md":
                continue  # Markdown links were checked above, relative to their file
            for path_part, anchor in DOCS_MENTION.findall(line):
                links += 1
                problem = check_target(src, ROOT, path_part + anchor, tracked, tracked_dirs)
                if problem:
                    problems.append(f"{src.relative_to(ROOT)}:{lineno}: {problem}")

    for problem in problems:
        print(problem)
    print(f"check_links: {links} links checked, {len(problems)} broken")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
