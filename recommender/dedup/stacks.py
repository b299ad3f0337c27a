"""File names that number a stack of slices: a warning for curators, never a verdict.

Why: without volume and slice-index metadata, neighbouring thin slices exported as loose images are
the same picture to every pixel signal (docs/dedup.md, "Limits": all 640 clustered slices of
mri-slices ingested bare were neighbours of their canonical). Their file names often still say what
they are (`scan_z150.png`, `scan_z151.png`): files of one folder whose names differ in exactly one
number, numbered in sequence. A `copy` cluster made of such files is flagged so that nobody deletes slices as
duplicates; the tiers themselves do not change (burst photos are named the same way).
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Iterable

from recommender.payload import Tier

STACK_WARNING = ("These file names number a stack of slices. Neighbouring slices look like copies to every "
                 "pixel check: if they are slices, they are different pictures. Before deleting, ingest them "
                 "with a metadata table that has `volume` and `slice_index` columns.")
"""What the Duplicates page and report.html say of a flagged cluster."""

_NUMBER = re.compile(r"(\d+)")
MAX_GAP = 3
"""Largest step between the sorted numbers of a flagged cluster: slices of a stack are numbered in
sequence (every slice, or every second or third one exported), while a dataset's running numbers
put look-alike files far apart (brain-mri: `Tr-no_0303.jpg`, `Tr-no_0499.jpg`)."""


def numbered_like_slices(paths: Iterable[str]) -> bool:
    """True when the files share a folder and a name that differs in exactly one of its numbers, and
    that number runs in sequence, no step above `MAX_GAP` (`scan_z150.png` / `scan_z151.png`,
    `case7_slice_001_t1.png` / `case7_slice_003_t1.png`)."""
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
    if len(varying) != 1:
        return False
    values = sorted({n[varying[0]] for n in numbers})
    return max(b - a for a, b in zip(values, values[1:])) <= MAX_GAP


def flagged_as_stack(tier: str | None, paths: Iterable[str]) -> bool:
    """Whether a same-picture cluster gets `STACK_WARNING`: a `copy` cluster (an `exact` one has the
    same pixels, so it is one picture whatever it is named) numbered like slices."""
    return tier == Tier.COPY.value and numbered_like_slices(paths)
