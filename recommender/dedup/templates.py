"""Templates: what many images of one size share at one place (a slide's title and bullet text, a
viewer's frame, a burned-in label, a collection-wide watermark).

Why: the verifier calls two images copies when enough of their local features agree on one
transform. Two different pictures pasted into one template agree on the template's features, at
the identity transform, over the whole image: slides made from one deck were merged as copies
(docs/benchmarks_dedup.md, "Framed pictures"). A feature the template explains says nothing about
the picture, so it is left out of matching.

A template is learned from a sample of the images of one size, in two steps:
- whether there is one: keypoints with a close descriptor (`max_hamming` bits) at the same place
  (`radius` px) in at least `min_share` of the other samples make up `significant` of the sample's
  keypoints (catalogue pages 0.6; ordinary pictures of one size, and the tuning edits, under 0.01);
- what it explains, patch by patch: a keypoint of an image of that size whose patch looks the same
  at the same place in at least `min_share` of the sample (mean grey difference within `tolerance`
  of the patch's own standard deviation, plus 2 levels), so the edges where a pasted picture meets
  the template go too. Descriptors alone missed part of the template (next to a picture, ORB's
  orientation and JPEG's blocks move a text corner's descriptor by more than 32 bits on some
  slides), and single pixels explained too much (dark paintings agree by chance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from scipy.spatial import cKDTree

SIGNIFICANT = 0.1
"""The share of a sample's keypoints that must recur for the size to have a template: catalogue pages
(tuning side) 0.61-0.64; ordinary pictures and the tuning edits of one size 0.000-0.009 (radius 2 px, 32 bits)."""


@dataclass(frozen=True)
class Template:
    """The sample's grey images (working size, not equalised) and the rule that reads them."""

    greys: np.ndarray  # (n, h, w) float32: converted once, compared with every image of the size
    need: int  # sample images whose patch must look the same for a keypoint to be the template's
    tolerance: float
    share: float  # the sample's keypoints that recur (reported)

    def explains(self, grey: np.ndarray, pts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Boolean mask of the keypoints at `pts` (patch diameters `sizes`) of `grey` whose patch looks the
        same at the same place in at least `need` of the sample: the mean grey difference over the patch
        at most `tolerance` times the patch's own standard deviation (plus 2 grey levels of JPEG noise).
        Relative to the patch's contrast, so a thin line in a dark patch is not "the same" as a dark patch.
        All False when `grey` is not the sample's size."""
        if grey.shape != self.greys.shape[1:] or not len(pts):
            return np.zeros(len(pts), bool)
        h, w = grey.shape
        r = np.maximum(sizes / 2.0, 1.0)
        x0 = np.clip(np.round(pts[:, 0] - r), 0, w - 1).astype(np.int64)
        x1 = np.clip(np.round(pts[:, 0] + r) + 1, 1, w).astype(np.int64)
        y0 = np.clip(np.round(pts[:, 1] - r), 0, h - 1).astype(np.int64)
        y1 = np.clip(np.round(pts[:, 1] + r) + 1, 1, h).astype(np.int64)
        area = ((x1 - x0) * (y1 - y0)).astype(np.float64)

        def box(table: np.ndarray) -> np.ndarray:
            return table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]

        g32 = grey.astype(np.float32)
        total, squares = cv2.integral2(grey.astype(np.float64))
        mean = box(total) / area
        std = np.sqrt(np.maximum(box(squares) / area - mean**2, 0.0))
        bound = self.tolerance * std + 2.0
        agree = np.zeros(len(pts), np.int64)
        for sample in self.greys:
            diff = cv2.integral(np.abs(sample - g32))
            agree += box(diff) / area <= bound
        return agree >= self.need


def learn(greys: Sequence[np.ndarray], samples: Sequence[tuple[np.ndarray, np.ndarray]], min_share: float = 0.25,
          radius: float = 2.0, max_hamming: int = 32, significant: float = SIGNIFICANT,
          tolerance: float = 0.25) -> Template | None:
    """The template of images of one size from their working greys and their keypoints (coordinates,
    descriptors), or None when they share too little: under `significant` of their keypoints recur at
    the same place in `min_share` of the other samples."""
    recurring = share(samples, min_share, radius, max_hamming)
    kept = [g for g in greys if g is not None]
    if recurring < significant or len(kept) < 4:
        return None
    need = max(2, int(np.ceil(min_share * len(kept))))
    return Template(np.stack(kept).astype(np.float32), need, tolerance, recurring)


def share(samples: Sequence[tuple[np.ndarray, np.ndarray]], min_share: float = 0.25, radius: float = 2.0,
          max_hamming: int = 32) -> float:
    """The share of the samples' keypoints found again (within `radius` px and `max_hamming` bits) in at
    least `min_share` of the other samples (0 with fewer than 4 samples)."""
    samples = [(p, d) for p, d in samples if d is not None and len(d)]
    if len(samples) < 4:
        return 0.0
    pts = np.concatenate([p for p, _ in samples]).astype(np.float32)
    des = np.concatenate([d for _, d in samples])
    owner = np.concatenate([np.full(len(p), i, np.int64) for i, (p, _) in enumerate(samples)])
    need = max(2, int(np.ceil(min_share * (len(samples) - 1))))
    return float((_recurrence(pts, des, owner, radius, max_hamming) >= need).mean())


def _recurrence(pts: np.ndarray, des: np.ndarray, owner: np.ndarray, radius: float, max_hamming: int) -> np.ndarray:
    """For each keypoint, in how many other images (`owner`) a keypoint lies within `radius` with a
    descriptor within `max_hamming` bits."""
    near = cKDTree(pts).query_pairs(radius, output_type="ndarray")
    if not len(near):
        return np.zeros(len(pts), np.int64)
    i, j = near[:, 0], near[:, 1]
    alike = (np.bitwise_count(des[i] ^ des[j]).sum(axis=1) <= max_hamming) & (owner[i] != owner[j])
    i, j = i[alike], j[alike]
    owners = int(owner.max()) + 1
    found = np.unique(np.concatenate([i * owners + owner[j], j * owners + owner[i]]))  # distinct (keypoint, image)
    return np.bincount(found // owners, minlength=len(pts))
