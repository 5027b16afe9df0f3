"""Copies os-brick and every library it needs, as this virtualenv has them, into DEST (for
the test VM's guest, whose Debian 12 os-brick and oslo libraries are too old; see
crates/cli/tests/vm_cinder.rs).

Usage: python brick_closure.py DEST
"""

import importlib.metadata as md
import re
import shutil
import sys
from pathlib import Path


def closure(name, seen):
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        return
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return  # an optional or platform-specific requirement not installed here
    seen[key] = dist
    for req in dist.requires or []:
        if ";" in req and "extra ==" in req:
            continue  # extras are not needed
        closure(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0], seen)


def main(dest):
    dest = Path(dest)
    seen = {}
    closure("os-brick", seen)
    for dist in seen.values():
        tops = set()
        for f in dist.files or []:
            first = f.parts[0]
            if first in ("..", "bin"):
                continue
            tops.add(first)
        for top in tops:
            src = Path(dist.locate_file(top))
            if src.is_dir():
                shutil.copytree(src, dest / top, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "tests"))
            elif src.is_file():
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / top)
    print(f"copied {len(seen)} distributions: {', '.join(sorted(seen))}")


if __name__ == "__main__":
    main(sys.argv[1])
