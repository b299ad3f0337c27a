"""Known edits that turn an original into a planted duplicate, for ground truth.

Each transform is deterministic given its seed, and its name is the label the
evaluation reports recall under. `EXPECTED_TIER` is the tier a perfect engine
would assign: lossless edits are `exact`, visible edits are `copy`.
"""

from __future__ import annotations

import random
from typing import Callable

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from recommender.payload import Tier


def _crop(frac: float) -> Callable[[Image.Image, random.Random], Image.Image]:
    def crop(img: Image.Image, rng: random.Random) -> Image.Image:
        w, h = img.size
        cw, ch = round(w * frac), round(h * frac)
        x0, y0 = rng.randint(0, cw), rng.randint(0, ch)
        return img.crop((x0, y0, x0 + w - cw, y0 + h - ch))

    return crop


def _colour(img: Image.Image, rng: random.Random) -> Image.Image:
    img = ImageEnhance.Brightness(img).enhance(rng.choice([0.8, 1.2]))
    img = ImageEnhance.Contrast(img).enhance(rng.choice([0.8, 1.2]))
    img = ImageEnhance.Color(img).enhance(rng.choice([0.6, 1.4]))
    r, g, b = img.split()  # a mild channel tint, as in a white-balance change
    return Image.merge("RGB", (r.point(lambda v: min(255, int(v * 1.08))), g, b.point(lambda v: int(v * 0.92))))


def _border(img: Image.Image, rng: random.Random) -> Image.Image:
    pad = max(2, round(0.06 * max(img.size)))
    return ImageOps.expand(img, border=pad, fill=rng.choice([(0, 0, 0), (255, 255, 255), (128, 128, 128)]))


def _text(img: Image.Image, rng: random.Random) -> Image.Image:
    img = img.copy()
    draw = ImageDraw.Draw(img)
    size = max(10, img.height // 12)
    font = ImageFont.load_default(size=size)
    text = rng.choice(["(c) Collection 2024", "SAMPLE", "id 48213 / scan"])
    draw.text((img.width // 20, img.height - 2 * size), text, fill=(255, 255, 0), font=font,
              stroke_width=1, stroke_fill=(0, 0, 0))
    return img


TRANSFORMS: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "png_resave": lambda im, rng: im,  # saved losslessly: same pixels, different bytes
    "resize50": lambda im, rng: im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.LANCZOS),
    "jpeg30": lambda im, rng: im,  # the edit is the quality-30 encode itself
    "crop10": _crop(0.10),
    "crop20": _crop(0.20),
    "rotate5": lambda im, rng: im.rotate(rng.choice([-5, 5]), resample=Image.Resampling.BICUBIC),
    "colour": _colour,
    "hflip": lambda im, rng: ImageOps.mirror(im),
    "border": _border,
    "grayscale": lambda im, rng: ImageOps.grayscale(im).convert("RGB"),
    "text": _text,
}

EXPECTED_TIER: dict[str, Tier] = {name: (Tier.EXACT if name == "png_resave" else Tier.COPY) for name in TRANSFORMS}


def save_kwargs(name: str) -> tuple[str, dict]:
    """File suffix and PIL save options for a transform's output."""
    if name == "png_resave":
        return ".png", {}
    if name == "jpeg30":
        return ".jpg", {"quality": 30}
    return ".jpg", {"quality": 90}
