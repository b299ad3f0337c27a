"""Two members of a duplicate cluster side by side: where their pixels differ, and which labels do.

A curator deciding keep / discard / not-a-duplicate needs to see what separates two files that
the engine called one picture: a re-encode differs in faint noise, a crop or an edited region
lights up, and the table names what the files themselves differ in (size, format, resolution,
split). Images come from the project's decoder (`recommender.decode`), as ingest saw them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from recommender import payload as P
from recommender.decode import DecodeOptions, load_image

# Fields that say nothing to a curator comparing two files (hashes, bookkeeping, cluster labels).
_SKIP = {P.PHASH, P.PHASH_MIRROR, P.PHASH_TURNS, P.PIXEL_HASH, P.COPIES, P.RUN_ID, P.INGESTED_AT, P.MODEL, P.ITEM_KEY,
         *P.CLUSTER_FIELDS}
# Shown first, in this order, when they differ: what tells two copies apart at a glance.
_FIRST = ("file", P.WIDTH, P.HEIGHT, P.BYTES, P.FORMAT, P.PATH)


def load_member(path: str, item_key: str = "", options: DecodeOptions | None = None) -> Image.Image:
    """A member's pixels as ingest decoded them: the file, or its slice/frame when `item_key` names one."""
    key = item_key if "#" in item_key and item_key != path else None
    return load_image(path, options, key)


def common_size(a: Image.Image, b: Image.Image, max_side: int = 512) -> tuple[int, int]:
    """The size both images are compared at: the smaller of the two areas' shape (a's aspect), at
    most `max_side` on the long side, so a half-size copy is not blurred up and a huge scan stays cheap."""
    w, h = min((a.size, b.size), key=lambda s: s[0] * s[1])
    scale = min(1.0, max_side / max(w, h, 1))
    return max(1, round(w * scale)), max(1, round(h * scale))


def pixel_difference(a: Image.Image, b: Image.Image, max_side: int = 512,
                     gain: float = 4.0) -> tuple[Image.Image, float]:
    """(difference image, mean absolute difference) of two images.

    Both are made grayscale and resized to one size (`common_size`); the image is |a - b| times
    `gain` (faint re-encode noise would be invisible otherwise), clipped to 255; the mean is on
    the 0-255 scale, before the gain: 0 for identical pixels, a few units for a re-encode.
    """
    size = common_size(a, b, max_side)
    ga = np.asarray(a.convert("L").resize(size, Image.Resampling.LANCZOS), np.int16)
    gb = np.asarray(b.convert("L").resize(size, Image.Resampling.LANCZOS), np.int16)
    diff = np.abs(ga - gb)
    shown = np.clip(diff.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return Image.fromarray(shown), round(float(diff.mean()), 3)


def zoom_crop(img: Image.Image, factor: float, focus: tuple[float, float] = (0.5, 0.5)) -> Image.Image:
    """The region 1/`factor` of the image's width and height around `focus` (fractions of width and
    height, kept inside the image), enlarged back to the image's size with square pixels, so two
    images zoomed alike show the same place and the difference there is visible pixel by pixel."""
    if factor <= 1:
        return img
    w, h = img.size
    cw, ch = max(1, round(w / factor)), max(1, round(h / factor))
    left = min(max(0, round(focus[0] * w - cw / 2)), w - cw)
    top = min(max(0, round(focus[1] * h - ch / 2)), h - ch)
    return img.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.NEAREST)


def _comparable(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload's fields worth comparing, plus the file name (paths differ in folders too)."""
    out = {k: v for k, v in payload.items() if k not in _SKIP and not isinstance(v, (dict, list))}
    if payload.get(P.PATH):
        out["file"] = Path(str(payload[P.PATH])).name
    return out


def metadata_difference(pa: dict[str, Any], pb: dict[str, Any],
                        fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row {field, a, b} per field whose values differ (a missing field differs from a set one):
    width, height, bytes, format and file name first, then the rest by name. `fields` limits the
    comparison to those names."""
    a, b = _comparable(pa), _comparable(pb)
    names = set(a) | set(b) if fields is None else set(fields)
    order = sorted(names, key=lambda k: (_FIRST.index(k) if k in _FIRST else len(_FIRST), k))
    return [{"field": k, "a": a.get(k), "b": b.get(k)} for k in order if a.get(k) != b.get(k)]
