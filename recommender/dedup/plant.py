"""Planting: copies of real images made by known transforms, written to disk with their ground truth.

Separate from scoring (`evaluate.py`): this module only samples files and writes
the transformed copies; the evaluation then decodes and deduplicates the files on
disk with the production code, exactly as ingest would see them. Originals are
decoded by `recommender.decode` (EXIF applied) before a transform is applied.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from recommender.decode import load_image
from recommender.dedup.transforms import ALL_TRANSFORMS, TRANSFORMS, save_kwargs

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


@dataclass
class Planted:
    """One evaluation item: where it is, which ground-truth group, how it was made."""

    path: str
    group: int
    transform: str  # "original", "distractor" or a transform name (transforms.ALL_TRANSFORMS)
    origin: str  # the original's path (itself for originals and distractors)


def list_images(source: Path) -> list[Path]:
    """All image files under source, sorted (deterministic sampling)."""
    return sorted(p for p in Path(source).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def sample_files(source: Path, n: int, seed: int = 0) -> list[Path]:
    """The first n image files of `source` in a seeded shuffle."""
    files = list_images(source)
    random.Random(seed).shuffle(files)
    if n > len(files):
        raise ValueError(f"{source} has {len(files)} images, fewer than the {n} requested")
    return files[:n]


def plant(originals: Sequence[Path], distractors: Sequence[Path], work: Path, seed: int = 0,
          transforms: Sequence[str] | None = None) -> list[Planted]:
    """Write each original's transformed copies under `work`; return originals, copies and distractors."""
    names = list(transforms or TRANSFORMS)
    out: list[Planted] = []
    for g, src in enumerate(originals):
        out.append(Planted(str(src), g, "original", str(src)))
        img = load_image(src)
        for name in names:
            suffix, kw = save_kwargs(name)
            dest = Path(work) / name / f"{g:05d}_{Path(src).stem}{suffix}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            ALL_TRANSFORMS[name](img, random.Random(f"{seed}:{g}:{name}")).save(dest, **kw)
            out.append(Planted(str(dest), g, name, str(src)))
    for k, src in enumerate(distractors):
        out.append(Planted(str(src), len(originals) + k, "distractor", str(src)))
    return out


def build_benchmark(source: Path, work: Path, n_originals: int, n_distractors: int, seed: int = 0,
                    transforms: Sequence[str] | None = None) -> list[Planted]:
    """Sample originals and distractors (no pool screening) and plant the transformed copies."""
    files = sample_files(Path(source), n_originals + n_distractors, seed)
    return plant(files[:n_originals], files[n_originals:], work, seed, transforms)
