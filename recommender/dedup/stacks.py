"""File names that number a stack of slices: a warning for curators, never a verdict.

Why: without volume and slice-index metadata, neighbouring thin slices exported as loose images are
the same picture to every pixel signal (docs/dedup.md, "Limits": all 640 clustered slices of
mri-slices ingested bare were neighbours of their canonical). Their file names often still say what
they are (`scan_z150.png`, `scan_z151.png`): files of one folder whose names differ in exactly one
number. A `copy` cluster made of such files is flagged so that nobody deletes slices as
duplicates; the tiers themselves do not change (burst photos are named the same way).
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Iterable

_NUMBER = re.compile(r"(\d+)")


def numbered_like_slices(paths: Iterable[str]) -> bool:
    """True when the files share a folder and a name that differs in exactly one of its numbers
    (`scan_z150.png` / `scan_z151.png`, `case7_slice_001_t1.png` / `case7_slice_002_t1.png`)."""
    shapes: set[tuple[str, tuple[str, ...]]] = set()
    numbers: list[tuple[int, ...]] = []
    for path in paths:
        p = PurePath(path)
        parts = _NUMBER.split(p.name)  # text, number, text, number, ..., text
        shapes.add((str(p.parent), tuple(parts[0::2])))
        numbers.append(tuple(int(n) for n in parts[1::2]))
    if len(shapes) != 1 or not numbers or not numbers[0]:
        return False
    varying = [k for k in range(len(numbers[0])) if len({n[k] for n in numbers}) > 1]
    return len(varying) == 1
