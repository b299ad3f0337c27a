"""Frames without a template: where the picture lies in a screen capture, a web page or a frame grab.

Why: a viewer's screen capture shows the picture at its own size inside a larger frame, so at the
verifier's working side (256 px) the picture has a fraction of the pixels and keypoints its copy has,
and part of the keypoints go to the frame's text. When the frame is one of many of one size, a template
places the picture (`recommender.dedup.templates`); a single capture has no template. What such frames
share is a flat background: the colour of the image's outer ring, reaching in from the edges, around a
solid rectangle that is the picture.

The rule, on the grey image shrunk to `FRAME_SIDE` (the same box for the fingerprint, which makes the
picture a candidate, and for the verifier, which matches it):
- the background is the median grey of the 2 px outer ring, when half of the ring (`ring_share`) is
  within `tolerance` grey levels of it (a painting or a slice reaching the edge has no such ring);
- the background is what has that grey and is connected to the edge; the rest, opened by a 3 px square
  (text and thin rules go), falls into connected parts;
- a part that may be the picture is a rectangle (`min_fill` of its bounding box: an MRI head on black
  is an ellipse, 0.79), no sliver (`MIN_ASPECT`), covering between `min_area` and `max_area` of the
  image (a letterboxed painting, its bars a quarter of the square, is left alone: the model and ORB see
  it as its copies do);
- the picture is the largest of those that does not touch the image's edge: a tool panel, a title bar
  or a ticker is docked to it, a picture floats. (A docked part taken when no picture floated was a
  viewer's panel: two captures of different MRI slices, each on the viewer's black, matched panel to
  panel, 8 false copies in the tuning viewer edit on brain-mri.)
- the frame is decorated when more than `DECORATION` of the image lies off the background outside the
  picture (a caption, a panel): only then is the picture cut out and searched, and the image compared
  by its picture alone (`Frame.decorated`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:
    import cv2

    cv2.setNumThreads(1)  # called per image on every core already (fingerprint workers, verifier threads)
except ImportError:  # optional dependency (the verifier's): without it no frame is found
    cv2 = None

Box = tuple[float, float, float, float]

INSET = 0.03
"""Share of the box's width and height left out on each side (`picture_frame`)."""

FRAME_SIDE = 128
"""Longer side the rule reads the image at: a capture's labels (about 3 px there) go in the opening."""

MAX_AREA = 0.6
"""Largest share of the image the picture may cover for it to be called framed: the tuning viewer captures
0.35-0.55; most of art-louvre's own letterboxed squares (bars on two sides) more (31 of 400 framed here)."""

MIN_ASPECT = 0.25
"""A picture's shorter side is at least this share of its longer one: a faint band beside an MRI head (a
rectangle 20 x 200 px, five brain-mri slices) is no picture, and taking it cost those slices 3 copies."""

DECORATION = 0.003
"""Share of the image that must lie off the background outside the picture (a caption, a panel, a title bar)
for the frame to be called decorated: letterbox bars hold none (JPEG noise stays within `tolerance`)."""


@dataclass(frozen=True)
class Frame:
    """Where a picture lies on a flat background, and whether anything else lies on that background."""

    box: Box  # (x0, y0, x1, y1) in the image's pixels
    decorated: bool  # text or a panel beside the picture: the same on every image of a layout, so a match
    # of the whole image may rest on it (`LocalFeatureVerifier.inliers` then compares the picture only)


def picture_frame(grey: np.ndarray) -> Frame | None:
    """`content_box` of `grey` shrunk to `FRAME_SIDE`, in `grey`'s own pixels, inset by `INSET` of its
    sides (None without OpenCV).

    Inset: at `FRAME_SIDE` the box's edge may fall a pixel outside the picture, and a strip of flat
    background kept beside it cost one tuning capture all its ORB matches (0 with 2 working px of it
    kept, 58 with none)."""
    return picture_and_field(grey)[0]


def field_box(grey: np.ndarray) -> Box | None:
    """The bounding box (in `grey`'s pixels) of what lies off a flat background, read at `FRAME_SIDE` and opened
    by a 3 px square (specks and JPEG noise go), or None when the outer ring is not flat or nothing lies off it.

    Why: a slice near the end of a volume is a small head on black, and the verifier reads how far a copy's
    matches spread on the picture, not on the black around it (`LocalFeatureVerifier._spread`)."""
    return picture_and_field(grey, frame=False)[1]


def picture_and_field(grey: np.ndarray, frame: bool = True, askew: bool = False
                      ) -> tuple[Frame | None, Box | None, tuple[Box, float] | None]:
    """(`picture_frame`, `field_box`, `askew_picture`) of `grey` from one shrink and one background pass (the
    verifier asks for all three of every image it sees); the frame is not looked for unless `frame`, the askew
    picture unless `askew` and no frame was found (an upright picture is not askew)."""
    if cv2 is None or min(grey.shape[:2]) < 16:
        return None, None, None
    small, s = _shrunk(grey)
    masks = _masks(small, 10, 0.5)
    if masks is None:
        return None, None, None
    off_background, rest = masks
    rx, ry = grey.shape[1] / small.shape[1], grey.shape[0] / small.shape[0]
    found = _frame_in(off_background, rest) if frame else None
    if found is not None:
        box = found.box
        dx, dy = INSET * (box[2] - box[0]) * rx, INSET * (box[3] - box[1]) * ry
        found = Frame((box[0] * rx + dx, box[1] * ry + dy, box[2] * rx - dx, box[3] * ry - dy), found.decorated)
    ys, xs = np.nonzero(rest)
    field = None if not len(ys) else (float(xs.min() * rx), float(ys.min() * ry), float((xs.max() + 1) * rx),
                                      float((ys.max() + 1) * ry))
    return found, field, (_askew_in(rest, s) if askew and found is None else None)


def _off_background(grey: np.ndarray, tolerance: int, ring_share: float) -> np.ndarray | None:
    """uint8 mask of what is not the flat background (the median grey of the 2 px outer ring, within
    `tolerance`, connected to the edge), or None when the ring is not flat (`ring_share` of it within
    `tolerance` of its median) or the image is under 16 px."""
    h, w = grey.shape[:2]
    if min(h, w) < 16:
        return None
    g = grey.astype(np.int16)
    ring = np.concatenate([g[:2].ravel(), g[-2:].ravel(), g[:, :2].ravel(), g[:, -2:].ravel()])
    back_grey = float(np.median(ring))
    if float((np.abs(ring - back_grey) <= tolerance).mean()) < ring_share:
        return None
    near = np.ones((h + 2, w + 2), np.uint8)  # a ring of background around the image joins every part
    near[1:-1, 1:-1] = np.abs(g - back_grey) <= tolerance  # of it that reaches the edge into one
    _, parts = cv2.connectedComponents(near, connectivity=4)
    return (parts[1:-1, 1:-1] != parts[0, 0]).astype(np.uint8)


def _masks(grey: np.ndarray, tolerance: int, ring_share: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(`_off_background`, the same opened by a 3 px square: text and thin rules gone), or None."""
    off_background = _off_background(grey, tolerance, ring_share)
    if off_background is None:
        return None
    return off_background, cv2.morphologyEx(off_background, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))


def _shrunk(grey: np.ndarray) -> tuple[np.ndarray, float]:
    """`grey` with its longer side at most `FRAME_SIDE`, and the scale applied."""
    s = min(1.0, FRAME_SIDE / max(grey.shape[:2]))
    if s == 1.0:
        return grey, s
    size = (max(1, round(grey.shape[1] * s)), max(1, round(grey.shape[0] * s)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_LINEAR), s  # INTER_AREA: 102 µs at 224 px, this 22 µs


def content_box(grey: np.ndarray, tolerance: int = 10, ring_share: float = 0.5, min_fill: float = 0.92,
                min_area: float = 0.08, max_area: float = MAX_AREA) -> Frame | None:
    """The picture's frame (its box in `grey`'s pixels), or None when the image shows no picture on a flat
    background (module docstring)."""
    masks = _masks(grey, tolerance, ring_share)
    return None if masks is None else _frame_in(*masks, min_fill, min_area, max_area)


def _frame_in(off_background: np.ndarray, rest: np.ndarray, min_fill: float = 0.92, min_area: float = 0.08,
              max_area: float = MAX_AREA) -> Frame | None:
    """`content_box` from the image's masks (`_masks`); `off_background` is written over."""
    h, w = rest.shape[:2]
    _, _, stats, _ = cv2.connectedComponentsWithStats(rest, connectivity=4)
    boxes = [(int(x), int(y), int(bw), int(bh)) for x, y, bw, bh, area in stats[1:]
             if area >= min_fill * bw * bh and min_area * w * h <= bw * bh <= max_area * w * h
             and min(bw, bh) >= MIN_ASPECT * max(bw, bh) and 0 < x and 0 < y and x + bw < w and y + bh < h]
    if not boxes:
        return None
    x, y, bw, bh = max(boxes, key=lambda b: b[2] * b[3])
    off_background[max(0, y - 2): y + bh + 2, max(0, x - 2): x + bw + 2] = 0
    return Frame((float(x), float(y), float(x + bw), float(y + bh)), int(off_background.sum()) > DECORATION * w * h)


MIN_TILT, MAX_TILT = 2.0, 30.0
"""Degrees a picture on a flat background must be turned by for `askew_picture` to call it askew: under
`MIN_TILT` it is upright as far as the model and ORB care (a tuning-side 4 degree tilt keeps cosine 0.93);
over `MAX_TILT` a scan or a photo is not askew but turned, which the turned pHashes handle."""


def askew_picture(grey: np.ndarray, tolerance: int = 10, ring_share: float = 0.5, min_fill: float = 0.92,
                  min_area: float = 0.25) -> tuple[Box, float] | None:
    """A picture lying askew on a flat background, as a scanned print or a photo placed at an angle, as
    (its box once the image is turned by the angle about the box's centre, the angle in degrees
    counter-clockwise, PIL's `Image.rotate` convention), in `grey`'s pixels; None when there is none.

    Why: turned by 8-12 degrees, with the background in its corners, a painting is another picture for the
    model (cosine to its original 0.83 on median at 8 degrees on art-louvre, a third of them under the
    0.80 that makes a candidate) and for the pHash; upright and cut out it is its original again.
    The rule, on the grey image shrunk to `FRAME_SIDE`: the background as in `content_box`; the largest
    part off it is the picture when its minimum-area rectangle is filled (`min_fill`: an MRI head on black
    is an ellipse, 0.79), covers `min_area` of the image, and is turned by `MIN_TILT` to `MAX_TILT`."""
    if cv2 is None or min(grey.shape[:2]) < 16:
        return None
    small, s = _shrunk(grey)
    masks = _masks(small, tolerance, ring_share)
    return None if masks is None else _askew_in(masks[1], s, min_fill, min_area)


def _askew_in(off: np.ndarray, s: float, min_fill: float = 0.92, min_area: float = 0.25) -> tuple[Box, float] | None:
    """`askew_picture` from the opened mask of what lies off the background (`_masks`) of the image shrunk by
    `s`; `off` is read, not written."""
    h, w = off.shape[:2]
    contours, _ = cv2.findContours(off, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    biggest = max(contours, key=cv2.contourArea)
    (cx, cy), (rw, rh), angle = cv2.minAreaRect(biggest)
    while angle > 45:  # OpenCV's range depends on its version ([-90, 0) or [0, 90)): a quarter turn
        angle, rw, rh = angle - 90, rh, rw  # of the rectangle is the same rectangle, its sides swapped
    while angle <= -45:
        angle, rw, rh = angle + 90, rh, rw
    if not (MIN_TILT <= abs(angle) <= MAX_TILT) or rw * rh < min_area * w * h:
        return None
    if cv2.contourArea(biggest) < min_fill * rw * rh:
        return None
    r = 1 / s
    half_w, half_h = (1 - 2 * INSET) * rw * r / 2, (1 - 2 * INSET) * rh * r / 2
    return (cx * r - half_w, cy * r - half_h, cx * r + half_w, cy * r + half_h), float(angle)


def upright(img: "Image.Image", box: Box, angle: float) -> "Image.Image":
    """The picture `askew_picture` found, turned upright and cut out of `img` (`box` in `img`'s pixels)."""
    from PIL import Image

    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    turned = img.rotate(angle, resample=Image.Resampling.BILINEAR, center=centre)
    return turned.crop(tuple(round(v) for v in box))
