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

Small images (issue 15): a 32-64 px thumbnail has too few corners for ORB, so when
the smaller image of a pair has a side below `small_side`, the pair is also checked
at the small image's own scale (`aligned_correlation`: the larger image shrunk to
match, a search over a few scales and every shift, normalised correlation) and
passes when that correlation reaches `small_min_corr`.

Templates (issue 15, `recommender.dedup.templates`): images of one size that share text or a frame at
the same place (slides of one deck, screenshots of one viewer) learn that template from a sample of
them, and their keypoints that it explains are left out of matching, so two pictures in one template
are compared on the pictures.

Pixels (session 40): a whole-image match that covers one image only, or only just reaches the mark, is
confirmed by moving one image onto the other with the match's transform and correlating them cell by
cell (`aligned_cells`): a degraded copy agrees everywhere, a caption or stamp on two pictures does not.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import numpy as np
from cachetools import LRUCache
from PIL import Image

from recommender.decode import DecodeError
from recommender.dedup.config import DedupConfig
from recommender.dedup.frames import Frame, picture_and_field, upright
from recommender.dedup.templates import SIGNIFICANT, Template, learn as learn_template, share as template_share
from recommender.models.device import usable_cores

try:
    import cv2

    cv2.setNumThreads(1)
except ImportError:  # optional dependency
    cv2 = None


Source = Union[Image.Image, Callable[[], Image.Image]]
"""An image, or a loader called only when its features are not cached yet (may raise DecodeError)."""

Job = tuple[Any, Source, Any, Source, bool, bool]
"""One pair to verify: (key a, source a, key b, source b, try the mirror, try the smoothed look), the arguments of
`inliers`."""


Features = tuple[tuple[int, int], np.ndarray, Any]
"""((width, height) of the grey image ORB saw, keypoint coordinates (n, 2), ORB descriptors or None)."""
_NO_FEATURES: Features = ((1, 1), np.zeros((0, 2), np.float32), None)

Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) in one image's pixels."""


def available() -> bool:
    """True when OpenCV is importable."""
    return cv2 is not None


class LocalFeatureVerifier:
    """Counts ORB matches consistent with one similarity transform (RANSAC inliers).

    Features are computed once per image (lazily, cached by key within `cache_mb`, the
    least recently used out first) on a grey copy resized so its longer side is `max_side`.
    Inliers only count when one image lies mostly (`min_contained`) inside the other under the
    transform, and they spread over at least `min_spread` of the part of each image the other
    covers (bounding-box area fraction; of twice the picture there when that is smaller, a picture
    on a flat background: `frames.field_box`) and occupy at least 3 rows and 3 columns of a 4x4 grid of
    the box of the keypoints there in both: the same caption or watermark stamped on two different
    pictures matches perfectly, but only over a strip. A whole-image match that covers one image only, that has
    `CONFIRM_BELOW` inliers or more failing the spread or cover rules, or that has fewer than
    `CONFIRM_BELOW` inliers, counts when the two images, aligned by it, agree pixel by pixel
    (`aligned_cells`). When no similarity transform passes, an affine one that only rescales the axes
    (`_stretch_only`: a copy whose aspect ratio was changed) passing the same rules counts on the same
    pixel check. A pair the caller marks `smooth` (its pHashes vouch that it is one picture) that falls short
    is compared again on both images smoothed by `smooth_sigma` px (`_smooth_pair`). An image showing a picture
    askew on a flat background (a print turned on a scanner's bed) that falls short is compared again by that
    picture turned upright and cut out (`_askew_pair`). Pairs whose smaller image is
    below `small_side` px may pass by `aligned_correlation` >= `small_min_corr` instead (defaults: `DedupConfig`).
    """

    def __init__(self, max_side: int = 256, n_features: int = 300, ratio: float = 0.8,
                 ransac_px: float = 4.0, min_spread: float = 0.15, min_contained: float = 0.5, zoom_scale: float = 0.75,
                 mirror: bool = True, min_inliers: int = 40,
                 small_side: int | None = None, small_min_corr: float | None = None, small_work_side: int = 48,
                 keypoint_grid: int = 1, keypoint_pool: int = 3, cell_share: float = 2.0, keypoint_cell: int = 32,
                 template_members: int | None = None, template_sample: int = 32, template_share: float = 0.25,
                 frames: bool | None = None, smooth_sigma: float | None = None,
                 cache_mb: float = 256, cached_pairs: int = 200_000):
        if cv2 is None:
            raise ImportError("LocalFeatureVerifier needs opencv-python-headless")
        defaults = DedupConfig()  # a verifier made on its own (tests, tools) takes the config's defaults
        self.small_side = defaults.small_side if small_side is None else small_side  # 0 = no small-image path
        self.small_min_corr = defaults.small_min_corr if small_min_corr is None else small_min_corr
        self.small_work_side = small_work_side
        self.max_side = max_side
        self.ratio = ratio
        self.ransac_px = ransac_px
        self.min_spread = min_spread
        self.min_contained = min_contained
        self.zoom_scale = zoom_scale  # 0 = never cut out the part one image shows the other in (`_zoomed`)
        self.mirror = mirror
        self.min_inliers = min_inliers
        self.n_features = n_features
        if keypoint_grid % 2 == 0:
            raise ValueError(f"keypoint_grid={keypoint_grid}: must be odd (the selection must commute with the mirror)")
        self.keypoint_grid = keypoint_grid  # 1 = ORB's own choice of keypoints (`_keypoints`)
        self.keypoint_pool = keypoint_pool
        self.cell_share = cell_share
        self.keypoint_cell = keypoint_cell
        # templates (`learn_templates`): images of one size learn one when at least this many are verified
        # together (0 = never); learned once per size, from `template_sample` of them
        self.template_members = defaults.template_members if template_members is None else template_members
        self.template_sample = template_sample
        self.template_share = template_share
        self._templates: dict[tuple[int, int], Template | None] = {}
        self.frames = defaults.frames if frames is None else frames  # `recommender.dedup.frames`
        self.smooth_sigma = defaults.smooth_sigma if smooth_sigma is None else smooth_sigma  # `_smoothed`; 0 = never
        self._local = threading.local()  # an ORB detector and a matcher per thread (`inliers_many`)
        # verification is most of dedupe-on-ingest's time on look-alike collections (brain-mri); OpenCV
        # releases the GIL, so pairs are verified on every core the process may use
        self.workers = usable_cores()
        self._pool: ThreadPoolExecutor | None = None
        self.attempts = 0  # ORB match + RANSAC attempts made (a pair tried mirrored too counts two)
        self._count = threading.Lock()
        # What was computed per image and per pair, least recently used out first: an ingest verifies
        # against stored neighbours of earlier chunks, so the caches would otherwise grow with the
        # collection (about 45 kB per 224 px slice: 2 GB at 50k images). Evicted images are loaded and
        # detected again if asked (the same features: the verdicts do not depend on the budget).
        self._seen: LRUCache = LRUCache(maxsize=int(cache_mb * 2**20), getsizeof=_Seen.nbytes)
        self._pairs: LRUCache = LRUCache(maxsize=cached_pairs)
        self._lock = threading.Lock()  # cachetools caches are not thread-safe
        self._running: dict[Any, Future] = {}  # features being computed, by key (`_once`)

    def _look(self, source: Source) -> "_Seen":
        """Decode an image once for everything the verifier keeps of it: ORB features of the
        equalised grey copy, and the size and small grey copy of the small-image check."""
        img = self._load(source)
        if img is None:
            return _Seen(_NO_FEATURES, None, None)
        g = np.asarray(img.convert("L"))
        small = _shrink(g, self.small_keep_side()) if min(g.shape) >= 8 else None
        working = self._working(g)
        template = self._templates.get(img.size)
        if working is None:
            return _Seen(_NO_FEATURES, img.size, small, template=template)
        prepared = cv2.equalizeHist(working)
        kp, des = self._keypoints(prepared, template, working)
        look = self.frames and template is None
        frame, field, askew = picture_and_field(working, frame=look, askew=look)
        return _Seen((_wh(prepared), _points(kp), des), img.size, small, keypoints=_keypoint_table(kp),
                     template=template, frame=frame, field=field, askew=askew)

    def _entry(self, key: Any, source: Source) -> "_Seen":
        """The image's cached `_Seen`, computed when missing, evicted, or seen before its size's template
        was learned."""
        def ready() -> "_Seen | None":
            seen = self._seen.get(key)
            return seen if seen is not None and seen.template is self._templates.get(seen.size) else None
        return self._once(key, ready, lambda: self._look(source), lambda seen: self._put(key, seen))

    def learn_templates(self, groups: dict[tuple[int, int], Sequence[Source]]) -> None:
        """Learn the template (`recommender.dedup.templates`) of each image size not learned yet from the
        images of that size about to be verified (`groups`, size -> sources in a stable order: the first
        `template_sample` are read), when there are at least `template_members` of them. A size whose
        images share nothing is remembered as having none, and its images are detected as before.

        Why per size: a template (a slide deck, a viewer's frame) repeats at the same pixels, so only images
        of one size can share one. Pair verdicts computed before a template was learned are dropped."""
        if self.template_members <= 0:
            return
        for size, sources in groups.items():
            if size in self._templates or len(sources) < self.template_members:
                continue
            seen = [self._pool_features(src) for src in sources[:TEMPLATE_PROBE]]
            template = None
            if template_share([f for _, f in seen], self.template_share) >= SIGNIFICANT / 2:
                # a first look found something shared: learn it from the whole sample
                seen += [self._pool_features(src) for src in sources[TEMPLATE_PROBE: self.template_sample]]
                template = learn_template([g for g, _ in seen], [f for _, f in seen], min_share=self.template_share)
            with self._lock:
                self._templates[size] = template
                if template is not None:
                    self._pairs.clear()

    def picture_box(self, key: Any, source: Source) -> tuple[int, int, int, int] | None:
        """Where the picture lies in a framed image, in the image's own pixels (left, top, right, bottom).
        In a size with a template: the box of 96 % of the keypoints the template does not explain, with
        a margin of `FRAME_PAD` of its side; None when too few keypoints are left to place a picture
        (`min_inliers`, the fewest a copy could show), or the box covers most of the image (`FRAME_FILL`:
        there is no frame to cut away). In another size: the rectangle on a flat background
        (`frames.picture_frame`), or None.

        Why: the model sees a catalogue page or a slide as a page, not as the painting on it (a median
        cosine of 0.72 to the painting, which ranks about 32nd among the page's neighbours), so a
        framed copy never becomes a candidate; the picture cut out is seen as the painting."""
        seen = self._entry(key, source)
        box = self._picture(seen)
        if box is None or seen.size is None:
            return None
        rx, ry = seen.size[0] / seen.features[0][0], seen.size[1] / seen.features[0][1]
        return (max(0, round(box[0] * rx)), max(0, round(box[1] * ry)), min(seen.size[0], round(box[2] * rx)),
                min(seen.size[1], round(box[3] * ry)))

    def _picture(self, seen: "_Seen") -> Box | None:
        """`picture_box` in the coordinates ORB saw; for an image of a size without a template, the
        rectangle it shows on a flat background (`frames.picture_frame`), if any."""
        if seen.template is None:
            return None if seen.frame is None else seen.frame.box
        (w, h), pts, des = seen.features
        if des is None or len(pts) < self.min_inliers:
            return None
        lo, hi = np.quantile(pts, 0.02, axis=0), np.quantile(pts, 0.98, axis=0)
        pad = FRAME_PAD * float((hi - lo).max())
        box = (max(0.0, lo[0] - pad), max(0.0, lo[1] - pad), min(float(w), hi[0] + pad), min(float(h), hi[1] + pad))
        if min(box[2] - box[0], box[3] - box[1]) < 8 or _area(box) > FRAME_FILL * w * h:
            return None
        return box

    def _framed(self, key_a: Any, a: "_Seen", source_a: Source, key_b: Any, b: "_Seen", source_b: Source) -> int:
        """Inliers of the picture cut out of a framed image (`_cut_picture`) against the other image, for
        each of the two that has one, and of the two pictures against each other when both have one.

        Why: at `max_side` a page shows its picture at a third of the page's width, and a picture that
        small gives too few matches for `_zoomed` to find where it lies (4 of 40 tuning pages). Both cut:
        a painting letterboxed on white, shown in a viewer, is the white square there; its own bars,
        whole, matched the square in no way ORB could see (0 ratio-test matches), the two paintings 146.
        A frame's picture is also matched the other way round (the ratio test reads one direction): a
        tuning capture's picture had under 40 ratio-test matches into its painting, the painting 172
        inliers into it."""
        return self._cuts_against(self._cut_picture(key_a, a, source_a, b), a,
                                  self._cut_picture(key_b, b, source_b, a), b)

    def _cuts_against(self, cut_a: Features | None, a: "_Seen", cut_b: Features | None, b: "_Seen") -> int:
        """The best inliers of each picture cut out (`cut_a` of a, `cut_b` of b; None: none) against the other
        image whole, of the other whole against it when the cut is not a template's (the ratio test reads one
        direction), and of the two cuts against each other."""
        counts = []
        for cut, seen, whole in ((cut_a, a, b), (cut_b, b, a)):
            if cut is not None:
                counts.append(self._inliers(cut, whole.features))
                if seen.template is None and counts[-1] < self.min_inliers:
                    counts.append(self._inliers(whole.features, cut))
        if cut_a is not None and cut_b is not None:
            counts.append(self._inliers(cut_a, cut_b))
        return max(counts, default=0)

    def _askew_pair(self, key_a: Any, a: "_Seen", source_a: Source, key_b: Any, b: "_Seen", source_b: Source) -> int:
        """`_cuts_against` with the picture of each image that shows one lying askew (`frames.askew_picture`)
        turned upright and cut out (`_upright`).

        Why: a print turned by 10 degrees on a grey bed brings four strong corners of its own (the turned
        edges against the bed), which take ORB's keypoints from the picture: 6 of 20 tuning-side copies
        (`tilt10_grey`, art-louvre train paintings) matched their painting with 24-39 inliers, under the 40
        needed, and their pictures turned upright and cut out with 74-180. Two askew images are compared this
        way only (`inliers`): the bed, the turn and a shadow they share matched whole between different pictures."""
        cut_a = self._variant("upright", key_a, source_a, self._upright) if a.askew is not None else None
        cut_b = self._variant("upright", key_b, source_b, self._upright) if b.askew is not None else None
        return self._cuts_against(cut_a, a, cut_b, b)

    def _upright(self, seen: "_Seen", source: Source) -> Features:
        """ORB of the askew picture (`seen.askew`, found in the pixels ORB saw) turned upright and cut out of the
        full-resolution image (`frames.upright`)."""
        img = self._load(source) if seen.askew is not None and seen.size is not None else None
        if img is None:
            return _NO_FEATURES
        box, angle = seen.askew
        r = seen.size[0] / seen.features[0][0]  # full-resolution pixels per pixel ORB saw
        return self._described(np.asarray(upright(img.convert("L"), tuple(v * r for v in box), angle)))

    def _cut_picture(self, key: Any, seen: "_Seen", source: Source, other: "_Seen") -> Features | None:
        """Features of the picture cut out of a framed image (`_picture`), at full resolution, detected
        once and kept; None when `seen` has no picture box, or when its box comes from a template and
        `other` has its size (two pages of one template: their pictures are compared whole)."""
        if seen.template is not None and other.size == seen.size:
            return None
        box = self._picture(seen)
        if box is None:
            return None

        def keep(cut: Features) -> None:
            seen.picture = cut
            self._put(key, seen)
        margin = 0.04 if seen.template is not None else 0.0  # a frame's box is the picture's own (`picture_frame`)
        return self._once(("picture", key), lambda: seen.picture, lambda: self._cut(seen, source, box, margin), keep)

    def _pool_features(self, source: Source) -> tuple[np.ndarray | None, tuple[np.ndarray, Any]]:
        """One image to learn from: its working grey (`_working`), and the coordinates and descriptors of
        its candidate keypoints (`pool_orb`)."""
        img = self._load(source)
        g = self._working(np.asarray(img.convert("L"))) if img is not None else None
        if g is None:
            return None, (np.zeros((0, 2), np.float32), None)
        kp, des = self.pool_orb.detectAndCompute(cv2.equalizeHist(g), None)
        return g, (_points(kp), des)

    def template_shares(self) -> dict[str, float]:
        """The sizes with a template, as "WxH" -> the share of the sample's keypoints that recur (for reports)."""
        return {f"{w}x{h}": round(t.share, 3) for (w, h), t in sorted(self._templates.items()) if t is not None}

    def learned(self, size: tuple[int, int]) -> bool:
        """Whether images of `size` have been looked at for a template (whether or not they have one)."""
        return size in self._templates

    def template_of(self, size: tuple[int, int]) -> "Template | None":
        """The template learned for images of `size` (None: none learned, or they share none)."""
        return self._templates.get(size)

    def _once(self, key: Any, ready: Callable[[], Any], compute: Callable[[], Any], keep: Callable[[Any], None]) -> Any:
        """`ready()` if it is there, else `compute()`, kept by `keep`: computed by the first thread that asks
        while others asking for the same `key` wait for its result (`ready` and `keep` run under the lock).

        Why: `inliers_many` verifies neighbouring pairs side by side, and they share images (a new
        slice against its dozen nearest); each thread computing what it missed decoded and detected
        39 % of all images twice on 2,000 brain-mri slices."""
        with self._lock:
            found = ready()
            if found is not None:
                return found
            running = self._running.get(key)
            mine = running is None
            if mine:
                running = self._running[key] = Future()
        if not mine:
            return running.result()
        try:
            value = compute()
        except BaseException as exc:
            with self._lock:
                del self._running[key]
            running.set_exception(exc)
            raise
        with self._lock:
            keep(value)
            del self._running[key]
        running.set_result(value)
        return value

    def _put(self, key: Any, seen: "_Seen") -> None:
        """Cache `seen` (the caller holds the lock); also re-sizes an entry that grew (its mirrored features)."""
        try:
            self._seen[key] = seen
        except ValueError:  # larger than the whole budget: used, not kept
            pass

    def _prepare(self, g: np.ndarray) -> np.ndarray | None:
        """The grey image ORB sees: longer side at most `max_side`, histogram equalised (None when too small)."""
        g = self._working(g)
        return None if g is None else cv2.equalizeHist(g)  # colour and contrast edits move intensities, not corners

    def _working(self, g: np.ndarray) -> np.ndarray | None:
        """`g` with its longer side at most `max_side`, not equalised (None when too small)."""
        if min(g.shape) < 8:
            return None
        s = self.max_side / max(g.shape)
        if s < 1:
            g = cv2.resize(g, (round(g.shape[1] * s), round(g.shape[0] * s)), interpolation=cv2.INTER_AREA)
        return g

    @property
    def orb(self) -> Any:
        """This thread's ORB detector (OpenCV objects are not shared between threads)."""
        if not hasattr(self._local, "orb"):
            self._local.orb = cv2.ORB_create(nfeatures=self.n_features, fastThreshold=10, edgeThreshold=15, patchSize=15)
        return self._local.orb

    def _detect(self, g: np.ndarray) -> tuple[np.ndarray, Any]:
        kp, des = self._keypoints(g)
        return _points(kp), des

    def _keypoints(self, g: np.ndarray, template: "Template | None" = None,
                   working: np.ndarray | None = None) -> tuple[Sequence[Any], Any]:
        """ORB keypoints of `g` and their descriptors: per pyramid level ORB's own number of them, the
        strongest with at most `cell_share` times an even share in each cell of a grid of up to
        `keypoint_grid` x `keypoint_grid` cells of `keypoint_cell` px or more, picked from `keypoint_pool`
        times as many candidates (`_grid_select`); an image too small for a 3 x 3 grid gets ORB's own.

        Why: ORB keeps the strongest corners wherever they are, and an overlay (a stamp, a burned-in
        annotation, a logo) has the strongest corners of all: on 150 brain-mri slices under a large
        translucent stamp, its letters took most of the 300 keypoints and 26 % of the copies fell below
        the inlier mark; spread over the grid, the picture keeps its share and 10 % did
        (docs/benchmarks_dedup.md, "Keypoints spread over a grid").

        With a `template` (`learn_templates`; `working` is `g` before equalisation), the candidates it
        explains are left out first, so the picture beside a slide's text keeps ORB's whole count of keypoints."""
        if template is not None and working is not None:
            return self._beside_template(g, template, working)
        if self.keypoint_grid <= 1 or min(g.shape) < 3 * self.keypoint_cell:
            return self.orb.detectAndCompute(g, None)  # no level has room for a grid: ORB's own choice
        pool = self.pool_orb.detect(g, None)
        chosen = _grid_select(pool, _wh(g), self.n_features, self.keypoint_grid, self.cell_share,
                              self.orb.getScaleFactor(), self.orb.getNLevels(), self.keypoint_cell)
        return self.orb.compute(g, [pool[i] for i in chosen])

    def _beside_template(self, g: np.ndarray, template: "Template",
                         working: np.ndarray) -> tuple[Sequence[Any], Any]:
        """`_keypoints` for an image of a size with a template: the candidates it does not explain, chosen
        per level as `_grid_select` does (with the grid, or with one cell when it is off)."""
        kp, des = self.pool_orb.detectAndCompute(g, None)
        if des is None or not len(kp):
            return [], None
        sizes = np.fromiter((k.size for k in kp), np.float64, len(kp))
        free = np.flatnonzero(~template.explains(working, _points(kp), sizes))
        grid = self.keypoint_grid if min(g.shape) >= 3 * self.keypoint_cell else 1
        chosen = free[_grid_select([kp[i] for i in free], _wh(g), self.n_features, grid, self.cell_share,
                                   self.orb.getScaleFactor(), self.orb.getNLevels(), self.keypoint_cell)]
        return [kp[i] for i in chosen], des[chosen]

    @property
    def pool_orb(self) -> Any:
        """This thread's ORB detector of the candidate keypoints (`_keypoints`)."""
        if not hasattr(self._local, "pool_orb"):
            self._local.pool_orb = cv2.ORB_create(nfeatures=self.keypoint_pool * self.n_features, fastThreshold=10,
                                                  edgeThreshold=15, patchSize=15)
        return self._local.pool_orb

    @staticmethod
    def _load(source: Source) -> Image.Image | None:
        """The decoded image (None when it can no longer be decoded); a loader is called here."""
        if isinstance(source, Image.Image):
            return source
        try:
            return source()
        except (DecodeError, OSError):  # gone or changed since fingerprinting: nothing to verify
            return None

    def small_keep_side(self) -> int:
        """Longest side kept per image for the small-image check: 3x the working side leaves room
        for the crop search and costs ~20 kB per verified image."""
        return 3 * self.small_work_side

    def features(self, key: Any, source: Source) -> Features:
        """(size, points, descriptors) of one image, cached."""
        return self._entry(key, source).features

    def mirrored_features(self, key: Any, source: Source) -> Features:
        """(size, points, descriptors) of the mirrored image, computed on first use (the image is
        loaded again and described at its own keypoints mirrored, `_mirrored`). Why lazily: with the
        mirror gate, some images never try the mirror (11 % fewer on 2,775 brain-mri slices)."""
        return self._variant("mirrored", key, source, self._mirrored)

    def _variant(self, name: str, key: Any, source: Source, compute: Callable[["_Seen", Source], Features]) -> Features:
        """The image's features of one kind (`name`, a field of `_Seen`: "mirrored", "smoothed", "upright"), computed by
        `compute` when a pair first needs them and kept with the image's other features."""
        seen = self._entry(key, source)

        def keep(features: Features) -> None:
            setattr(seen, name, features)
            self._put(key, seen)
        return self._once((name, key), lambda: getattr(seen, name), lambda: compute(seen, source), keep)

    def _mirrored(self, seen: "_Seen", source: Source) -> Features:
        """ORB of the mirrored image, described at the image's own keypoints mirrored (`_mirror_keypoints`).

        Why not detect again: FAST, the Harris score and the intensity-centroid angle are all symmetric
        under a mirror, so detection finds the same keypoints mirrored (checked on 300 brain-mri slices:
        every keypoint and every descriptor bit the same, in another order), and describing them alone
        costs 0.86-0.91 ms per 224 px slice against 1.95 ms for detecting and describing."""
        g = self._reloaded(seen, source)
        if g is None or seen.keypoints is None:
            return _NO_FEATURES
        flipped = np.ascontiguousarray(cv2.equalizeHist(g)[:, ::-1])
        kp, des = self.orb.compute(flipped, _mirror_keypoints(seen.keypoints, seen.features[1], flipped.shape[1],
                                                              self.orb.getScaleFactor()))
        return _wh(flipped), _points(kp), des

    def smoothed_features(self, key: Any, source: Source) -> Features:
        """(size, points, descriptors) of the image smoothed before ORB (`_smoothed`), computed on first use."""
        return self._variant("smoothed", key, source, self._smoothed)

    def _smoothed(self, seen: "_Seen", source: Source) -> Features:
        """ORB of the working grey smoothed by a Gaussian of `smooth_sigma` px, then equalised."""
        g = self._reloaded(seen, source)
        if g is None:
            return _NO_FEATURES
        g = cv2.equalizeHist(cv2.GaussianBlur(g, (0, 0), self.smooth_sigma))
        return (_wh(g), *self._detect(g))

    def _reloaded(self, seen: "_Seen", source: Source) -> np.ndarray | None:
        """The working grey (`_working`, not equalised) of an image decoded again for one of its variants
        (`_variant`); None when it is gone, too small, or changed since it was first seen (`seen`)."""
        img = self._load(source)
        g = self._working(np.asarray(img.convert("L"))) if img is not None else None
        return None if g is None or _wh(g) != seen.features[0] else g

    def _smooth_pair(self, key_a: Any, a: "_Seen", source_a: Source, key_b: Any, b: "_Seen", source_b: Source) -> int:
        """`_whole`'s count of the two images compared on their smoothed features (`_smoothed`), unmirrored;
        0 for an image compared by its picture only (a decorated frame, a template's size).

        Why: grain, noise or a blur on a smooth picture (a slice resampled from a coarser scan) moves ORB's
        corners: FAST finds the grain, and a blurred copy keeps only the strongest corners. Smoothed, both
        images show the corners of the picture itself. Only pairs the pHash vouches for take this path
        (`smooth`, from the engine): their pHash is that of one picture, so the cost stays with them."""
        if any(s.template is not None or (s.frame is not None and s.frame.decorated) for s in (a, b)):
            return 0
        fa, fb = self.smoothed_features(key_a, source_a), self.smoothed_features(key_b, source_b)
        view = _Seen(fa, a.size, None, field=a.field)
        return self._whole(view, source_a, fb, source_b, mirrored=False, field_b=b.field)[0]

    @staticmethod
    def _spread(pts: np.ndarray, box: Box, field: Box | None = None) -> float:
        """Bounding-box area of `pts` as a fraction of `box`'s area, or of twice the area of the picture within
        it (`field`: what lies off a flat background, `frames.field_box`) when that is smaller: a picture under
        half of the part is read on itself, where its copy's inliers can only lie (`_fit`)."""
        span = pts.max(axis=0) - pts.min(axis=0)
        area = _area(box)
        picture = _intersection(field, box) if field is not None else None
        if picture is not None:
            area = min(area, 2.0 * _area(picture))
        return float(span[0] * span[1]) / max(area, 1e-6)

    def _inliers(self, fa: Features, fb: Features) -> int:
        """Spread inliers of one orientation (`_match`)."""
        return self._match(fa, fb)[0]

    def _match(self, fa: Features, fb: Features,
               fields: tuple[Box | None, Box | None] = (None, None)) -> tuple[int, np.ndarray | None, int]:
        """(spread inliers of one orientation, the RANSAC transform a -> b or None, `_fit`'s count to
        confirm); (0, None, 0) when
        fewer than `min_inliers` matches pass the ratio test (RANSAC skipped: no subset of them could
        make a copy, and 98 % of look-alike brain-mri pairs end here, with a median of 23 matches), or
        (0, transform, 0) when at least half that many pass and they show one image small in the other.
        `fields`: each image's picture on a flat background, in the pixels ORB saw (`_spread`)."""
        (_, pa, da), (_, pb, db) = fa, fb
        if da is None or db is None or len(da) < 3 or len(db) < 3:
            return 0, None, 0
        with self._count:
            self.attempts += 1
        first, second, nearest = _two_nearest(da, db)
        good = first < self.ratio * second  # Lowe's ratio test
        if good.sum() >= max(4, self.min_inliers):
            src, dst = pa[good], pb[nearest[good]]
            fit = self._fit(fa, fb, src, dst, fields=fields)
            if fit[0]:
                return fit
            # an aspect ratio changed: a stretched fit passing every rule is confirmed pixel by pixel (`_whole`)
            count, m, _ = self._fit(fa, fb, src, dst, stretched=True, fields=fields)
            return (0, m, count) if count else fit
        if self._may_frame(fa, fb) and good.sum() >= self.min_inliers // 2:
            # too few for a copy at this scale, but maybe one image shows the other small (`_zoomed`)
            return 0, self._small_transform(pa[good], pb[nearest[good]]), 0
        return 0, None, 0  # inliers are a subset of these: no transform could pass

    def _may_frame(self, fa: Features, fb: Features) -> bool:
        """Whether one image may show the other inside a frame (`_zoomed`): a frame changes the canvas,
        so two images of one size (look-alike slices of one scanner) never take that path, which on
        2,000 brain-mri slices cost 26,097 RANSAC fits and 2,102 cut-outs and found no copy."""
        return self.zoom_scale > 0 and fa[0] != fb[0]

    def _small_transform(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
        """The RANSAC transform of the matches when it shows one image at under `zoom_scale` of the
        other's size with at least a quarter of `min_inliers` agreeing, else None."""
        m, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=self.ransac_px,
                                              maxIters=500)
        if m is None or mask is None or int(mask.sum()) < self.min_inliers // 4:
            return None
        return m if self._shows_small(m) else None

    def _shows_small(self, m: np.ndarray) -> bool:
        """Whether transform `m` (a -> b) shows one image at under `zoom_scale` of the other's size."""
        scale = _scale(m)
        return scale < self.zoom_scale or scale > 1.0 / self.zoom_scale

    def consistent(self, fa: Features, fb: Features, src: np.ndarray, dst: np.ndarray) -> int:
        """Inliers of matched points `src` (of a) -> `dst` (of b) under one RANSAC similarity transform,
        0 unless one image lies mostly inside the other (`min_contained`) and the inliers spread over
        `min_spread` of the part of each image the other one covers and cover the picture there, the
        bounding box of its keypoints (`_covers`).

        Why the covered part and not the whole image: a screenshot or a poster shows the picture in a
        frame, so the picture's inliers fill the picture but only a fraction of the frame. A caption
        stamped on two different pictures still fails: the transform between the two strips is the
        identity, so each image covers all of the other and the strip is a small part of it.

        `_fit` with each image's picture on a flat background (`fields`, `_spread`) reads the spread on twice
        the picture when that is under the part: a slice near the end of a volume shows a small head on black
        (15-18 % of the image), where no keypoint lies, so its copies' inliers filled the head and still failed
        a spread read on the whole image (mri-slices' end slices: 0 inliers turned, stretched, re-encoded;
        100-230 read on the head; session 45). A picture covering half of the part or more is read on the part,
        as before: neighbouring brain-mri slices, a head filling 85 % of the image, passed at 45 inliers when
        read on the box of their keypoints (ORB's strongest corners gather on the orbits)."""
        return self._fit(fa, fb, src, dst)[0]

    def _fit(self, fa: Features, fb: Features, src: np.ndarray, dst: np.ndarray, stretched: bool = False,
             fields: tuple[Box | None, Box | None] = (None, None)) -> tuple[int, np.ndarray | None, int]:
        """(`consistent`'s count, the RANSAC transform whatever the count or None when there is none, the
        inliers of a match `_whole` may still confirm pixel by pixel, else 0). Such a match lies mostly inside
        the other image but fails the spread or cover rules: either it covers one of the two images (a copy
        blurred or grainy where the picture is weak), or it has at least `CONFIRM_BELOW` inliers gathered in
        part of both (a ghosted copy: the echo changes most corners' descriptors, and those left sit where the
        picture is strongest). Fewer inliers failing both images' rules are left out: on brain-mri such
        matches of 41-45 inliers joined neighbouring slices of one scan that agree at 0.6 in every cell."""
        (size_a, pa, _), (size_b, pb, _) = fa, fb
        fit = cv2.estimateAffine2D if stretched else cv2.estimateAffinePartial2D
        m, mask = fit(src, dst, method=cv2.RANSAC, ransacReprojThreshold=self.ransac_px, maxIters=500)
        if mask is None or m is None or (stretched and not _stretch_only(m)):
            return 0, None, 0
        inl = mask.ravel().astype(bool)
        if inl.sum() < 4:
            return 0, m, 0
        box_b, box_a = _mapped_box(m, size_a, size_b), _mapped_box(cv2.invertAffineTransform(m), size_b, size_a)
        if box_a is None or box_b is None or max(_fraction(box_a, size_a), _fraction(box_b, size_b)) < self.min_contained:
            return 0, m, 0
        count = int(inl.sum())
        if min(self._spread(src[inl], box_a, fields[0]), self._spread(dst[inl], box_b, fields[1])) < self.min_spread:
            return 0, m, (count if count >= CONFIRM_BELOW else 0)
        covers = self._covers(src[inl], _inside(pa, box_a)), self._covers(dst[inl], _inside(pb, box_b))
        if not all(covers):
            return 0, m, (count if any(covers) or count >= CONFIRM_BELOW else 0)
        return count, m, 0

    def _zoomed(self, a: "_Seen", source_a: Source, b: "_Seen", source_b: Source, m: np.ndarray) -> int:
        """Inliers of a against the part of b it lands on, that part cut from b at full resolution
        and detected again (or the other way round when b lands inside a); 0 when neither image shows
        the other at under `zoom_scale` of its size.

        Why: a screenshot, a slide or a poster shows the picture at a fraction of the frame, so at
        `max_side` the picture has a fraction of the pixels and keypoints its copy has; cut out, it is
        compared at the scale of an ordinary copy, under the same rules."""
        if not self._shows_small(m):
            return 0
        if _scale(m) < 1.0:  # a lands small inside b: cut that part of b
            return self._inliers(a.features, self._cut(b, source_b, _mapped_box(m, a.features[0], b.features[0])))
        inverse = cv2.invertAffineTransform(m)
        return self._inliers(self._cut(a, source_a, _mapped_box(inverse, b.features[0], a.features[0])), b.features)

    def _cut(self, seen: "_Seen", source: Source, box: Box | None, margin: float = 0.04) -> Features:
        """Features of `box` (in the coordinates ORB saw) cut from the full-resolution image, with a margin
        of `margin` of its longer side."""
        img = self._load(source) if box is not None and seen.size is not None else None
        if img is None:
            return _NO_FEATURES
        r = seen.size[0] / seen.features[0][0]  # full-resolution pixels per pixel ORB saw
        pad = margin * max(box[2] - box[0], box[3] - box[1])
        cut = img.crop((max(0, round((box[0] - pad) * r)), max(0, round((box[1] - pad) * r)),
                        min(img.width, round((box[2] + pad) * r)), min(img.height, round((box[3] + pad) * r))))
        return self._described(np.asarray(cut.convert("L")))

    def _described(self, grey: np.ndarray) -> Features:
        """ORB features of a grey picture cut out of an image (`_prepare`d: shrunk and equalised), or none when
        it is too small."""
        g = self._prepare(grey)
        return _NO_FEATURES if g is None else (_wh(g), *self._detect(g))

    @staticmethod
    def _covers(pts: np.ndarray, all_pts: np.ndarray, grid: int = 4, per_cell: int = 2, need: int = 3) -> bool:
        """Inliers occupy >= `need` rows and >= `need` columns of a grid x grid partition of the
        content box (the bounding box of `all_pts`, the keypoints of the part the other image covers,
        so padding and a screenshot's frame do not count).

        A caption is a horizontal strip (one or two rows of cells) however wide it is;
        a real copy's inliers cover the picture in both directions. A bounding box alone
        is fooled by one stray match far from the strip.
        """
        if len(all_pts) == 0:
            return False
        lo = all_pts.min(axis=0)
        span = np.maximum(all_pts.max(axis=0) - lo, 1e-6)
        cell = np.clip(np.floor((pts - lo) * grid / span), 0, grid - 1).astype(int)  # inliers may sit just outside
        counts = np.zeros((grid, grid), np.int32)
        np.add.at(counts, (cell[:, 1], cell[:, 0]), 1)
        full = counts >= per_cell
        return int(full.any(axis=1).sum()) >= need and int(full.any(axis=0).sum()) >= need

    def inliers(self, key_a: Any, source_a: Source, key_b: Any, source_b: Source, mirror: bool = True,
                smooth: bool = False) -> int:
        """Spatially spread inlier count of a vs b (and a vs mirrored b if `self.mirror` and `mirror`);
        cached per pair. A caller that knows which orientation fits (the pHashes) passes `mirror=False`
        when the mirrored one does not, to skip that attempt, and `smooth=True` when the pHashes vouch that the
        two are one picture: ORB falling short then looks again at both images smoothed (`_smooth_pair`).

        When ORB falls short and the smaller image has a side below `small_side`, the aligned
        pixel check decides instead: passing it reports `min_inliers` (the least count the tier
        rule calls a copy), failing it the ORB count, so `decide_tiers` needs no new evidence. The
        count is exact from `min_inliers` up; below it, a pair with fewer ratio-test matches than
        `min_inliers` reports 0, and so does a match the pixels did not confirm (`_whole`).

        An image that shows a picture on a flat background with something else beside it (a decorated
        `frames.Frame`: a page's title, a text column, a tool panel) is compared by its picture only
        (`_framed`), never whole: what surrounds the picture is the same on every image of its layout, at
        the same scale whatever the page's size, and whole pages of two different brain slices passed on
        it (98 false links in 100 tuning article pages; a template is learned only within one size). A
        picture between flat bars (a letterboxed painting) is still compared whole as well. Two images that both
        show a picture askew on a flat background are compared by their pictures turned upright only
        (`_askew_pair`), never whole: scans of different prints on one bed share its colour, their turn and the
        shadow, a layout ORB matched whole (47-79 inliers between different pictures, heldout15)."""
        key = (key_a, key_b, mirror, smooth)
        with self._lock:
            cached = self._pairs.get(key)
        if cached is not None:
            return cached
        seen_a, seen_b = self._entry(key_a, source_a), self._entry(key_b, source_b)
        if any(s.frame is not None and s.frame.decorated for s in (seen_a, seen_b)):
            best = self._framed(key_a, seen_a, source_a, key_b, seen_b, source_b)
        elif seen_a.askew is not None and seen_b.askew is not None:
            best = self._askew_pair(key_a, seen_a, source_a, key_b, seen_b, source_b)
        else:
            best, m = self._whole(seen_a, source_a, seen_b.features, source_b, mirrored=False, field_b=seen_b.field)
            if best < self.min_inliers and m is not None and self._may_frame(seen_a.features, seen_b.features):
                best = max(best, self._zoomed(seen_a, source_a, seen_b, source_b, m))
            if best < self.min_inliers and (seen_a.framed or seen_b.framed):
                best = max(best, self._framed(key_a, seen_a, source_a, key_b, seen_b, source_b))
            if best < self.min_inliers and (seen_a.askew is not None or seen_b.askew is not None):
                best = max(best, self._askew_pair(key_a, seen_a, source_a, key_b, seen_b, source_b))
        if self.mirror and mirror and best < self.min_inliers:
            mirrored = self.mirrored_features(key_b, source_b)
            best = max(best, self._whole(seen_a, source_a, mirrored, source_b, mirrored=True,
                                         field_b=_mirrored_box(seen_b.field, mirrored[0][0]))[0])
        if smooth and best < self.min_inliers and self.smooth_sigma > 0:
            best = max(best, self._smooth_pair(key_a, seen_a, source_a, key_b, seen_b, source_b))
        if best < self.min_inliers and self._is_small(seen_a, seen_b):
            best = max(best, self.min_inliers if self._small_score(seen_a, seen_b) >= self.small_min_corr else 0)
        with self._lock:
            self._pairs[key] = best
        return best

    def _whole(self, a: "_Seen", source_a: Source, fb: Features, source_b: Source,
               mirrored: bool, field_b: Box | None = None) -> tuple[int, np.ndarray | None]:
        """(`_match`'s count of a against b whole (`fb`: b's features, mirrored or not), its transform),
        with three kinds of match confirmed pixel by pixel (`_agrees`: the images, aligned by the match, agree
        in every part textured in both) and counted only then: one whose inliers pass every rule but cover
        one image only (`_covers`), one of at least `CONFIRM_BELOW` inliers gathered in part of both images
        (`_fit`: a ghosted copy), and one under `CONFIRM_BELOW` inliers.

        Why: blur, grain, a tone curve or lost resolution leave a copy's corners only where the picture
        is strongest, so its matches may fill half of the original (148-197 inliers on one half of a
        brain slice, tuning-side `degrade` edits), while a caption or a stamp shared by two different
        pictures, which the cover rule is there to stop, matches on its strip or its letters and leaves
        the rest of the pictures to disagree (the same stamp on two brain slices: 45 inliers covering
        both, a least cell of 0.12)."""
        best, m, unruled = self._match(a.features, fb, (a.field, field_b))
        count = best or unruled
        if count < self.min_inliers or best >= CONFIRM_BELOW or m is None:
            return best, m
        return (count if self._agrees(source_a, source_b, m, mirrored) else 0), m

    def _agrees(self, source_a: Source, source_b: Source, m: np.ndarray, mirrored: bool) -> bool:
        """Whether a, moved by `m` (working pixels of a -> b, mirrored b when `mirrored`), agrees with b in
        every grid cell textured in both (`aligned_cells`). The images are decoded again: only one-sided and
        borderline matches take this path, and keeping every working grey image would cost 64 kB per image in
        the cache (tried in session 34: no faster, 150 MB more on brain-mri)."""
        a, b = self._prepared(source_a), self._prepared(source_b)
        if a is None or b is None:
            return False
        cells = aligned_cells(a, b[:, ::-1] if mirrored else b, m)
        return len(cells) >= CELL_MIN_COUNT and min(cells) >= CELL_MIN_CORR

    def _prepared(self, source: Source) -> np.ndarray | None:
        """The grey image as ORB saw it (`_prepare`), None when it cannot be read."""
        img = self._load(source)
        return None if img is None else self._prepare(np.asarray(img.convert("L")))

    def inliers_many(self, jobs: Sequence[Job]) -> list[int]:
        """`inliers` of each pair, in order, computed on `workers` threads (the same counts as one by one:
        features and pair results are cached per key, and computing one twice gives the same value).
        The threads live as long as the verifier: the engine asks for a few pairs at a time, thousands
        of times per ingest, and each new thread would also build its own ORB detector."""
        if self.workers <= 1 or len(jobs) <= 1:
            return [self.inliers(*job) for job in jobs]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="verify")
        return list(self._pool.map(lambda job: self.inliers(*job), jobs))

    @staticmethod
    def _smaller_first(a: "_Seen", b: "_Seen") -> tuple["_Seen", "_Seen"] | None:
        """Two images' entries, the one with fewer pixels first (None when either has no grey copy)."""
        if a.grey is None or b.grey is None or a.size is None or b.size is None:
            return None
        return (a, b) if a.size[0] * a.size[1] <= b.size[0] * b.size[1] else (b, a)

    def _is_small(self, a: "_Seen", b: "_Seen") -> bool:
        """Whether a pair takes the small-image path: the smaller image has a side below
        `small_side`, where ORB finds too few corners (a 64 px thumbnail: a handful)."""
        pair = self._smaller_first(a, b)
        return pair is not None and min(pair[0].size) < self.small_side

    def _small_score(self, a: "_Seen", b: "_Seen") -> float:
        """`aligned_correlation` of two images (-1 when not comparable)."""
        pair = self._smaller_first(a, b)
        if pair is None:
            return -1.0
        return aligned_correlation(pair[0].grey, pair[1].grey, self.small_work_side, mirror=self.mirror,
                                   need=self.small_min_corr)


@dataclass
class _Seen:
    """What the verifier keeps of one image: its ORB features, its size and the grey copy of the
    small-image check, and its mirrored features once a pair has needed them."""

    features: Features
    size: tuple[int, int] | None
    grey: np.ndarray | None
    mirrored: Features | None = None
    keypoints: np.ndarray | None = None
    """(n, 3) float32 per keypoint of `features`: pyramid level, angle (degrees), size: what ORB needs
    to describe the same keypoints in the mirrored image (`LocalFeatureVerifier._mirrored`)."""
    template: Template | None = None
    """The template of the image's size its keypoints were chosen beside (`LocalFeatureVerifier.learn_templates`)."""
    picture: Features | None = None
    """Features of the picture cut out of the frame (`LocalFeatureVerifier._cut_picture`), once a pair has needed them."""
    frame: Frame | None = None
    """Where a picture lies on a flat background (`frames.picture_frame`, working pixels; sizes without a template)."""
    field: Box | None = None
    """What lies off a flat background (`frames.field_box`, working pixels): where the spread rule reads a small
    picture (`LocalFeatureVerifier._spread`)."""
    smoothed: Features | None = None
    """Features of the image smoothed before ORB (`LocalFeatureVerifier._smoothed`), once a pair has needed them."""
    askew: tuple[Box, float] | None = None
    """A picture lying askew on a flat background (`frames.askew_picture`: its upright box in working pixels,
    the angle); sizes without a template."""
    upright: Features | None = None
    """Features of that picture turned upright and cut out (`LocalFeatureVerifier._upright`), once a pair has
    needed them."""

    @property
    def framed(self) -> bool:
        """Whether a picture may be cut out of this image: its size has a template, or it shows a frame."""
        return self.template is not None or self.frame is not None

    def nbytes(self) -> int:
        """Bytes held (the cache's budget is in bytes)."""
        parts = [self.features, self.mirrored or _NO_FEATURES, self.picture or _NO_FEATURES,
                 self.smoothed or _NO_FEATURES, self.upright or _NO_FEATURES]
        held = sum(f[1].nbytes + (f[2].nbytes if f[2] is not None else 0) for f in parts)
        held += self.keypoints.nbytes if self.keypoints is not None else 0
        return 256 + held + (self.grey.nbytes if self.grey is not None else 0)


def _points(kp: Sequence[Any]) -> np.ndarray:
    """(n, 2) float32 coordinates of OpenCV keypoints."""
    return np.array([k.pt for k in kp], np.float32).reshape(-1, 2)


def _keypoint_table(kp: Sequence[Any]) -> np.ndarray:
    """(n, 3) float32: each keypoint's pyramid level, angle and size (`_Seen.keypoints`)."""
    return np.array([(k.octave, k.angle, k.size) for k in kp], np.float32).reshape(-1, 3)


def _mirror_keypoints(table: np.ndarray, pts: np.ndarray, width: int, scale_factor: float) -> list[Any]:
    """The keypoints (`table`, `pts`) of an image `width` px wide as they lie in its mirror image.

    ORB finds a keypoint at level L of its pyramid, where the image is round(width / s) px wide
    (s = scale_factor ** L), and reports it times s; the mirror of column x there is (w_L - 1 - x),
    not (width - 1) minus the reported x. The intensity-centroid angle a becomes 180 - a."""
    level = table[:, 0].astype(np.int64)
    s = scale_factor ** level
    x = (np.round(width / s) - 1 - pts[:, 0] / s) * s  # numpy rounds half to even, as OpenCV's cvRound
    angle = (180.0 - table[:, 1]) % 360.0
    return [cv2.KeyPoint(*k, 0.0, o) for *k, o in zip(x.tolist(), pts[:, 1].tolist(), table[:, 2].tolist(),
                                                       angle.tolist(), level.tolist())]


def _grid_select(kp: Sequence[Any], size: tuple[int, int], n: int, grid: int, share: float,
                 scale_factor: float, levels: int, min_cell: int) -> np.ndarray:
    """Indices into `kp` of, per pyramid level, as many keypoints as ORB keeps there for `n` in all (`_level_quotas`): the
    strongest, with at most ceil(share * quota / g^2) in any cell of a g x g grid of that level, g the
    largest odd number up to `grid` whose cells are at least `min_cell` px at the level (`_level_grid`).

    Why per level: Harris responses are not comparable across levels, and a selection across them
    would change the mix of scales ORB's own choice has. Why a smallest cell: a small image (a
    thumbnail, or a coarse level) has few corners per cell, and a cap there swaps its strongest corners
    for weak ones. A keypoint's cell is read at its own level, from its pixel's centre, so a keypoint
    and its mirror image fall in mirrored cells and the selection commutes with the mirror
    (`LocalFeatureVerifier._mirrored` describes the image's own keypoints mirrored). That needs an odd
    grid: with an even one, the middle column of an odd-width level lies on a cell edge and is its own
    mirror image, so no rule can put it in mirrored cells."""
    if not len(kp):
        return np.zeros(0, np.int64)
    pts = cv2.KeyPoint_convert(kp).astype(np.float64)
    level = np.minimum(np.fromiter((k.octave for k in kp), np.int64, len(kp)), levels - 1)
    response = np.fromiter((k.response for k in kp), np.float64, len(kp))
    s = scale_factor ** level
    sides = [np.round(side / s) for side in size]  # each keypoint's level, width and height
    g = _level_grid(np.minimum(*sides), grid, min_cell)
    cells = level.copy()  # level first: cells of different levels never mix
    for axis, side in enumerate(sides):  # x, y
        at = np.round(pts[:, axis] / s) + 0.5  # the pixel's centre at its level
        cells = cells * grid + np.minimum(np.floor(at * g / side), g - 1).astype(np.int64)
    order = np.lexsort((-response, cells))  # by level and cell, strongest first
    first = np.searchsorted(cells[order], cells[order], side="left")
    rank = np.empty(len(kp), np.int64)
    rank[order] = np.arange(len(kp)) - first
    quota = _level_quotas(n, scale_factor, levels)[level]
    ok = np.flatnonzero(rank < np.ceil(share * quota / g**2))
    ok = ok[np.lexsort((-response[ok], level[ok]))]  # by level, strongest first
    at_level = np.arange(len(ok)) - np.searchsorted(level[ok], level[ok], side="left")
    return ok[at_level < quota[ok]]


def _level_grid(short_side: np.ndarray, grid: int, min_cell: int) -> np.ndarray:
    """The largest odd number up to `grid` of cells of at least `min_cell` px along `short_side` (1 at least)."""
    g = np.clip(short_side // min_cell, 1, grid).astype(np.int64)
    return g - (g % 2 == 0)


def _level_quotas(n: int, scale_factor: float, levels: int) -> np.ndarray:
    """How many of `n` keypoints ORB keeps on each pyramid level (OpenCV's `ORB_Impl::detectAndCompute`:
    a geometric share per level, each 1 / scale_factor of the one before, the rest on the last)."""
    factor = 1.0 / scale_factor
    per = n * (1 - factor) / (1 - factor ** levels)
    quota = np.zeros(levels, np.int64)
    for level in range(levels - 1):
        quota[level] = round(per)
        per *= factor
    quota[-1] = max(n - int(quota[:-1].sum()), 0)
    return quota


def _wh(g: np.ndarray) -> tuple[int, int]:
    return int(g.shape[1]), int(g.shape[0])


def _mapped_box(m: np.ndarray, size_from: tuple[int, int], size_to: tuple[int, int]) -> Box | None:
    """The part of the `size_to` image that the `size_from` image lands on under the 2x3 transform `m`:
    the bounding box of its mapped corners, clipped to the image (None when they do not meet)."""
    w, h = size_from
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64) @ np.asarray(m, np.float64).T
    x0, y0 = np.maximum(corners.min(axis=0), 0.0)
    x1, y1 = np.minimum(corners.max(axis=0), size_to)
    return (float(x0), float(y0), float(x1), float(y1)) if x1 > x0 and y1 > y0 else None


ASPECT_MAX = 1.35  # a 4:3 picture stretched to fill 16:9 (1.33), the widest a viewer or an export forces


def _stretch_only(m: np.ndarray) -> bool:
    """Whether a 2x3 affine transform scales one axis more than the other (by 5 % to `ASPECT_MAX`) with
    little rotation or shear: an image whose aspect ratio was changed (a thumbnail forced into a box, a 4:3
    picture shown at 16:9), which no similarity transform fits: on the tuning side, 63 of 80 art-louvre and
    50 of 80 brain-mri copies widened or narrowed by 12-18 % passed before, 80 and 75 with it (session 43,
    docs/benchmarks_dedup.md "Stretched copies")."""
    a = np.asarray(m, np.float64)[:, :2]
    sx, sy = abs(a[0, 0]), abs(a[1, 1])
    if min(sx, sy) <= 0 or max(abs(a[0, 1]), abs(a[1, 0])) > 0.1 * min(sx, sy) or a[0, 0] * a[1, 1] < 0:
        return False
    return 1.05 <= max(sx, sy) / min(sx, sy) <= ASPECT_MAX


def _scale(m: np.ndarray) -> float:
    """The scale of a 2x3 similarity transform."""
    return float(np.hypot(m[0, 0], m[1, 0]))


def _area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _fraction(box: Box, size: tuple[int, int]) -> float:
    return _area(box) / max(size[0] * size[1], 1)


def _intersection(a: Box, b: Box) -> Box | None:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _mirrored_box(box: Box | None, width: int) -> Box | None:
    """`box` in the mirror image of an image `width` px wide."""
    return None if box is None else (width - box[2], box[1], width - box[0], box[3])


def _inside(pts: np.ndarray, box: Box) -> np.ndarray:
    keep = (pts[:, 0] >= box[0]) & (pts[:, 0] <= box[2]) & (pts[:, 1] >= box[1]) & (pts[:, 1] <= box[3])
    return pts[keep]


def _two_nearest(da: np.ndarray, db: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each ORB descriptor of a, the Hamming distance to its nearest descriptor of b, to its second
    nearest, and the nearest one's index. faiss's popcount kernel fills the whole distance table (0.04 ms
    for 300 x 300 descriptors) and numpy picks the two least per row: 0.07 ms, against 0.12 ms for faiss's
    heap-based k-nearest search and 0.31 ms for OpenCV's brute-force matcher; matching is most of a
    verification once each image's features are cached. Where the nearest distance is tied the index may
    differ from another matcher's, but Lowe's ratio test rejects every tie, so no verdict can."""
    da, db = np.ascontiguousarray(da), np.ascontiguousarray(db)
    faiss = _faiss()
    table = np.empty((len(da), len(db)), np.int32)
    faiss.hammings(faiss.swig_ptr(da), faiss.swig_ptr(db), len(da), len(db), da.shape[1], faiss.swig_ptr(table))
    rows = np.arange(len(da))
    nearest = table.argmin(axis=1)
    first = table[rows, nearest]
    table[rows, nearest] = np.iinfo(np.int32).max
    return first, table.min(axis=1), nearest


@functools.cache
def _faiss() -> Any:
    """faiss, imported on first verification (most commands never verify) and set to one OpenMP thread:
    the verifier's own threads are the parallelism, and nested teams would oversubscribe the cores."""
    import faiss

    faiss.omp_set_num_threads(1)
    return faiss


def _shrink(g: np.ndarray, side: int) -> np.ndarray:
    """g with its longer side at most `side` (area interpolation: the average a thumbnail makes)."""
    s = side / max(g.shape)
    if s >= 1:
        return g
    return cv2.resize(g, (max(1, round(g.shape[1] * s)), max(1, round(g.shape[0] * s))), interpolation=cv2.INTER_AREA)


FRAME_PAD = 0.06
"""Margin added round a framed picture's keypoints (`picture_box`): ORB finds none within its patch of the edge."""
FRAME_FILL = 0.8
"""A picture box over this share of the image is no frame (`picture_box`)."""
TEMPLATE_PROBE = 12
"""Images of a size read first when learning its template (`LocalFeatureVerifier.learn_templates`): most sizes
share nothing, and a look at 12 of them says so for 30 ms instead of 80 ms."""

CELL_MIN_CORR = 0.4
"""Least correlation of any grid cell textured in both images for a match `_whole` confirms to count.
Chosen on tuning data only (session 40): 120 brain-mri slices under the `degrade` edits, whose one-sided
matches had a least cell of 0.47 or more, and a caption block on 45 pairs of different sample paintings,
whose least cell was -0.22 or less."""
CONFIRM_BELOW = 60
"""Matches with fewer inliers than this (of `min_inliers` 40) are confirmed pixel by pixel (`_whole`). Chosen
on tuning data (session 40): of 80 brain-mri and 80 art-louvre originals under the stamp, text, crop20,
rotate5 and jpeg30 edits, the copies that passed with under 70 inliers had a least cell of 0.42 or more
but one (a caption, 0.29)."""
CELL_MIN_COUNT = 8
"""Cells textured in both images `_whole` needs (of 16): fewer say too little about the picture."""
CELL_MIN_STD = 6.0
"""Grey-level spread under which a cell counts as flat (`aligned_cells`): a dark background, or grain on one."""

REFINE_GAIN = 0.15
"""How far below the pass mark a coarse score may be and still be refined (`aligned_correlation(need=...)`)."""

SCALES: tuple[float, ...] = (1.0, 0.96, 0.92, 0.88, 0.84, 0.8, 0.76)
"""Fractions of the larger image the smaller one may show: 1 is a thumbnail, less a crop or a
letterbox. Each costs one resize and one template match at the small scale."""


def aligned_correlation(small: np.ndarray, large: np.ndarray, work_side: int = 48,
                        scales: tuple[float, ...] = SCALES, mirror: bool = True, need: float | None = None) -> float:
    """Best normalised correlation of `small` against `large` shrunk to the small's scale.

    Why: a thumbnail carries too few corners for feature matching, but its pixels are the
    original's pixels averaged; compared at the thumbnail's own scale (capped at `work_side`,
    where JPEG blocking is averaged away) a copy correlates almost perfectly and a different
    picture does not. The larger image is shrunk so that a `scale` fraction of it (the
    small's aspect) maps onto the small one, and every shift is tried (`cv2.matchTemplate`,
    TM_CCOEFF_NORMED: Pearson correlation, blind to brightness and contrast), so crops,
    borders and letterboxes align; the two best alignments are refined to a quarter pixel and
    2 % of scale (`_refine`), because a crop's offset rarely falls on the small grid. The
    mirror image is tried when `mirror`. With `need` (a caller's pass mark) the refinement, most
    of the cost, is skipped when the coarse score already passes or is more than `REFINE_GAIN`
    below it (on the tuning edits at 120 px, 0.1 changed 4 of 1,290 verdicts and 0.15 none).
    """
    hs, ws = small.shape
    k = min(1.0, work_side / max(hs, ws))
    h, w = max(6, round(hs * k)), max(6, round(ws * k))
    tpl = cv2.resize(small, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    if float(tpl.std()) < 1.0:  # a flat picture correlates with nothing meaningfully
        return -1.0
    hl, wl = large.shape
    large32 = large.astype(np.float32)
    found: list[tuple[float, float, bool, tuple[int, int]]] = []
    for f in scales:
        z = max(h / (f * hl), w / (f * wl))  # the window (f of the limiting side) becomes h x w
        size = (max(w, round(wl * z)), max(h, round(hl * z)))
        scaled = cv2.resize(large32, size, interpolation=cv2.INTER_AREA)
        for flip in (False, True) if mirror else (False,):
            t = np.ascontiguousarray(tpl[:, ::-1]) if flip else tpl
            score = np.nan_to_num(cv2.matchTemplate(scaled, t, cv2.TM_CCOEFF_NORMED), nan=-1.0)
            _, best, _, loc = cv2.minMaxLoc(score)
            found.append((min(1.0, best), size[0] / wl, flip, loc))
    found.sort(key=lambda x: -x[0])
    if need is not None and not need - REFINE_GAIN <= found[0][0] < need:
        return found[0][0]
    return max([found[0][0]] + [_refine(large32, np.ascontiguousarray(tpl[:, ::-1]) if flip else tpl, z, loc)
                                for _, z, flip, loc in found[:2]])


def aligned_cells(a: np.ndarray, b: np.ndarray, m: np.ndarray, grid: int = 4, sigma: float = 2.0) -> list[float]:
    """Correlation of `a` moved by `m` (2x3, a's pixels -> b's) with `b`, per cell of a grid x grid partition of
    the part of b that a covers, for the cells textured in both (grey spread >= `CELL_MIN_STD` after a Gaussian
    blur of `sigma` px, which leaves the picture and takes out grain and JPEG blocks)."""
    h, w = b.shape
    moved = cv2.GaussianBlur(cv2.warpAffine(a.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR), (0, 0), sigma)
    covered = cv2.warpAffine(np.full(a.shape, 255, np.uint8), m, (w, h), flags=cv2.INTER_NEAREST)
    covered = cv2.erode(covered, np.ones((5, 5), np.uint8)) > 0  # the border pixels blur with what lies outside
    target = cv2.GaussianBlur(b.astype(np.float32), (0, 0), sigma)
    ys, xs = np.nonzero(covered)
    if len(ys) < grid * grid * 8:
        return []
    rows = np.linspace(ys.min(), ys.max() + 1, grid + 1).astype(int)
    cols = np.linspace(xs.min(), xs.max() + 1, grid + 1).astype(int)
    out = []
    for y0, y1 in zip(rows[:-1], rows[1:]):
        for x0, x1 in zip(cols[:-1], cols[1:]):
            inside = covered[y0:y1, x0:x1]
            if inside.mean() < 0.6:
                continue
            u, v = moved[y0:y1, x0:x1][inside], target[y0:y1, x0:x1][inside]
            if u.std() < CELL_MIN_STD or v.std() < CELL_MIN_STD:
                continue
            out.append(_pearson(u, v))
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / den if den > 1e-6 else -1.0


def _refine(large: np.ndarray, tpl: np.ndarray, z: float, loc: tuple[int, int],
            steps: tuple[float, ...] = (-0.5, -0.25, 0.0, 0.25, 0.5),
            zooms: tuple[float, ...] = (0.98, 1.0, 1.02)) -> float:
    """Best correlation near the coarse match, re-sampled from the larger image itself: the window's
    origin moved by quarter pixels (of the small grid) and its size by +-2 %, so a crop whose offset
    and scale fall between grid points aligns exactly (shifting the already-shrunk image would blur it)."""
    h, w = tpl.shape
    best = -1.0
    for zoom in zooms:
        span = (w / (z * zoom), h / (z * zoom))  # window size in large pixels
        for dy in steps:
            for dx in steps:
                cx, cy = (loc[0] + dx + w / 2) / z, (loc[1] + dy + h / 2) / z  # the coarse window's centre, moved
                patch = cv2.getRectSubPix(large, (max(1, round(span[0])), max(1, round(span[1]))), (cx, cy))
                best = max(best, _pearson(cv2.resize(patch, (w, h), interpolation=cv2.INTER_AREA), tpl))
    return best
