"""Geometric verification of candidate pairs with local features (ORB + RANSAC).

Global signals (pHash, pooled CNN embeddings) cannot separate "a 20% crop of
this painting" from "another painting of the same hillside by the same hand":
both score cosine ~0.85-0.93 (measured, docs/dedup.md). A copy shares many
local features that agree on one similarity transform (scale, rotation,
translation -- exactly what resize, crop, border and small rotations are);
a different shot does not. So ambiguous pairs are verified by counting RANSAC
inliers of ORB matches. The horizontally mirrored image is tried too, so
flipped copies verify. Needs OpenCV (`opencv-python-headless`); without it
`available()` is False and the engine falls back to thresholds alone.
Images come in decoded (by `recommender.decode`, or lazily through a loader
that calls it), so verification sees the same pixels, EXIF orientation
included, as the fingerprints and the model.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import numpy as np
from PIL import Image

from recommender.decode import DecodeError

try:
    import cv2

    cv2.setNumThreads(1)
except ImportError:  # optional dependency
    cv2 = None


Source = Union[Image.Image, Callable[[], Image.Image]]
"""An image, or a loader called only when its features are not cached yet (may raise DecodeError)."""


def available() -> bool:
    """True when OpenCV is importable."""
    return cv2 is not None


class LocalFeatureVerifier:
    """Counts ORB matches consistent with one similarity transform (RANSAC inliers).

    Features are computed once per image (lazily, cached by key) on a grey copy
    resized so its longer side is `max_side`. Inliers only count when they spread
    over at least `min_spread` of both images (bounding-box area fraction) and
    occupy at least 3 rows and 3 columns of a 4x4 grid in both: the same caption
    or watermark stamped on two different pictures matches perfectly, but only
    over a strip.
    """

    def __init__(self, max_side: int = 256, n_features: int = 300, ratio: float = 0.8,
                 ransac_px: float = 4.0, min_spread: float = 0.15, mirror: bool = True, min_inliers: int = 40):
        if cv2 is None:
            raise ImportError("LocalFeatureVerifier needs opencv-python-headless")
        self.max_side = max_side
        self.ratio = ratio
        self.ransac_px = ransac_px
        self.min_spread = min_spread
        self.mirror = mirror
        self.min_inliers = min_inliers
        self.orb = cv2.ORB_create(nfeatures=n_features, fastThreshold=10, edgeThreshold=15, patchSize=15)
        self.matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        self._pairs: dict[tuple[Any, Any], int] = {}
        self._cache: dict[Any, tuple] = {}

    def _gray(self, source: Source) -> np.ndarray | None:
        if not isinstance(source, Image.Image):
            try:
                source = source()
            except (DecodeError, OSError):  # gone or changed since fingerprinting: nothing to verify
                return None
        g = np.asarray(source.convert("L"))
        if min(g.shape) < 8:
            return None
        s = self.max_side / max(g.shape)
        if s < 1:
            g = cv2.resize(g, (round(g.shape[1] * s), round(g.shape[0] * s)), interpolation=cv2.INTER_AREA)
        return cv2.equalizeHist(g)  # colour and contrast edits move intensities, not corners

    def _detect(self, g: np.ndarray) -> tuple[np.ndarray, Any]:
        kp, des = self.orb.detectAndCompute(g, None)
        return np.array([k.pt for k in kp], np.float32).reshape(-1, 2), des

    def features(self, key: Any, source: Source) -> tuple:
        """(area, points, descriptors, mirrored points, mirrored descriptors, shape) of one image, cached."""
        if key not in self._cache:
            g = self._gray(source)
            if g is None:
                self._cache[key] = (1.0, np.zeros((0, 2), np.float32), None, np.zeros((0, 2), np.float32), None, (1, 1))
            else:
                pts, des = self._detect(g)
                ptsm, desm = self._detect(np.ascontiguousarray(g[:, ::-1])) if self.mirror else (pts[:0], None)
                self._cache[key] = (float(g.shape[0] * g.shape[1]), pts, des, ptsm, desm, g.shape[:2])
        return self._cache[key]

    @staticmethod
    def _spread(pts: np.ndarray, area: float) -> float:
        span = pts.max(axis=0) - pts.min(axis=0)
        return float(span[0] * span[1]) / area

    def _inliers(self, fa: tuple, fb: tuple, mirrored: bool = False) -> int:
        area_a, pa, da = fa[0], fa[1], fa[2]
        area_b, pb, db = (fb[0], fb[3], fb[4]) if mirrored else (fb[0], fb[1], fb[2])
        if da is None or db is None or len(da) < 3 or len(db) < 3:
            return 0
        knn = self.matcher.knnMatch(da, db, k=2)
        good = [m[0] for m in knn if len(m) == 2 and m[0].distance < self.ratio * m[1].distance]
        if len(good) < 4:
            return 0
        src = pa[[m.queryIdx for m in good]]
        dst = pb[[m.trainIdx for m in good]]
        _, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=self.ransac_px,
                                              maxIters=500)
        if mask is None:
            return 0
        inl = mask.ravel().astype(bool)
        if inl.sum() < 4 or min(self._spread(src[inl], area_a), self._spread(dst[inl], area_b)) < self.min_spread:
            return 0
        if not (self._covers(src[inl], pa) and self._covers(dst[inl], pb)):
            return 0
        return int(inl.sum())

    @staticmethod
    def _covers(pts: np.ndarray, all_pts: np.ndarray, grid: int = 4, per_cell: int = 2, need: int = 3) -> bool:
        """Inliers occupy >= `need` rows and >= `need` columns of a grid x grid partition of the
        image's content box (the bounding box of all its keypoints, so padding does not count).

        A caption is a horizontal strip (one or two rows of cells) however wide it is;
        a real copy's inliers cover the picture in both directions. A bounding box alone
        is fooled by one stray match far from the strip.
        """
        lo = all_pts.min(axis=0)
        span = np.maximum(all_pts.max(axis=0) - lo, 1e-6)
        cell = np.minimum(((pts - lo) * grid / span).astype(int), grid - 1)
        counts = np.zeros((grid, grid), np.int32)
        np.add.at(counts, (cell[:, 1], cell[:, 0]), 1)
        full = counts >= per_cell
        return int(full.any(axis=1).sum()) >= need and int(full.any(axis=0).sum()) >= need

    def inliers(self, key_a: Any, source_a: Source, key_b: Any, source_b: Source) -> int:
        """Spatially spread inlier count of a vs b (and a vs mirrored b if `mirror`); cached per pair."""
        if (key_a, key_b) in self._pairs:
            return self._pairs[(key_a, key_b)]
        fa = self.features(key_a, source_a)
        fb = self.features(key_b, source_b)
        best = self._inliers(fa, fb)
        if self.mirror and best < self.min_inliers:
            best = max(best, self._inliers(fa, fb, mirrored=True))
        self._pairs[(key_a, key_b)] = best
        return best
