"""Known edits that turn an original into a planted duplicate, for ground truth.

Each transform is deterministic given its seed, and its name is the label the
evaluation reports recall under. `EXPECTED_TIER` is the tier a perfect engine
would assign: lossless edits are `exact`, visible edits are `copy`.

Two families, kept apart (docs/dedup.md, "Tuning and held-out"): `TRANSFORMS` is the
tuning set the thresholds were chosen on (since issue 15 with thumbnails of 192, 144 and
96 px at quality 85-50, where the small-image thresholds come from); `HELDOUT` holds
edits no threshold was ever chosen on (32-128 px thumbnails at quality 10-40, screenshots,
watermarks, gamma, warps, scan noise, palettes, window/level), to report how the engine
does on what it was not tuned for.
"""

from __future__ import annotations

import io
import random
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

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


def _stamp(img: Image.Image, rng: random.Random) -> Image.Image:
    """A translucent two-line stamp across the picture at 30 degrees, as a draft or a proof is marked:
    large letters whose corners outshine the picture's own (tuning side; the held-out watermark is a
    different overlay)."""
    w, h = img.size
    layer = Image.new("RGBA", (w * 2, h * 2), (0, 0, 0, 0))
    size = max(12, w // 7)
    ink = (0, 0, 0, 120) if rng.random() < 0.3 else (255, 255, 255, 120)
    words = rng.choice(["DRAFT 0042\nNOT FOR USE", "COPY ONLY\nref 7731"])
    ImageDraw.Draw(layer).multiline_text((w // 2, h - size), words, fill=ink, font=ImageFont.load_default(size=size),
                                         spacing=4)
    layer = layer.rotate(rng.choice([-30, 30]), resample=Image.Resampling.BICUBIC)
    layer = layer.crop((w // 2, h // 2, w // 2 + w, h // 2 + h))
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")


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


def _thumb(side: int, resample: Image.Resampling = Image.Resampling.LANCZOS
           ) -> Callable[[Image.Image, random.Random], Image.Image]:
    def thumb(img: Image.Image, rng: random.Random) -> Image.Image:
        out = img.copy()
        out.thumbnail((side, side), resample)
        return out

    return thumb


def _tuning_thumb(side: int, resample: Image.Resampling) -> Callable[[Image.Image, random.Random], Image.Image]:
    """A thumbnail for the tuning set: larger and better encoded than the held-out ones, and made
    with another filter, so the small-image rule is tuned on one thing and read on another."""
    return _thumb(side, resample)


TRANSFORMS.update({  # thumbnails, tuning side (issue 15): 96-192 px at JPEG quality 50-85
    "thumb192_q85": _tuning_thumb(192, Image.Resampling.BICUBIC),
    "thumb144_q70": _tuning_thumb(144, Image.Resampling.BILINEAR),
    "thumb96_q50": _tuning_thumb(96, Image.Resampling.BOX),
})


def _screenshot(img: Image.Image, rng: random.Random) -> Image.Image:
    """Letterboxed into a 16:9 frame with a title bar, as a screen capture of a viewer."""
    h = img.height + img.height // 8
    w = max(img.width, round(h * 16 / 9))
    frame = Image.new("RGB", (w, h), rng.choice([(0, 0, 0), (32, 32, 36), (240, 240, 240)]))
    frame.paste(img, ((w - img.width) // 2, h - img.height))
    draw = ImageDraw.Draw(frame)
    draw.rectangle((0, 0, w, img.height // 8 - 2), fill=(60, 60, 70))
    draw.text((8, 2), "viewer - image 12 of 340", fill=(220, 220, 220),
              font=ImageFont.load_default(size=max(8, img.height // 20)))
    return frame


def _watermark(img: Image.Image, rng: random.Random) -> Image.Image:
    """A large translucent word across the middle."""
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    size = max(12, img.width // 6)
    draw.text((img.width // 10, img.height // 2 - size // 2), rng.choice(["PREVIEW", "© ARCHIVE"]),
              fill=(255, 255, 255, 110), font=ImageFont.load_default(size=size))
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")


def _gamma(img: Image.Image, rng: random.Random) -> Image.Image:
    g = rng.choice([0.6, 1.6])
    return img.point(lambda v: round(255 * (v / 255) ** g))


def _warped(img: Image.Image, src: list[tuple[float, float]]) -> Image.Image:
    """`img` warped so that its corners (top-left, top-right, bottom-right, bottom-left) show the points `src`
    of the original: a perspective from the four correspondences."""
    w, h = img.size
    dst = [(0, 0), (w, 0), (w, h), (0, h)]
    a = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    coeffs = np.linalg.solve(np.array(a, float), np.array([c for p in src for c in p], float))
    return img.transform(img.size, Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BICUBIC)


def _perspective(img: Image.Image, rng: random.Random) -> Image.Image:
    """A small keystone: the top edge narrowed by 6 %, as a photo of a print taken from below."""
    w, h = img.size
    d = 0.06 * w
    return _warped(img, [(d, 0), (w - d, 0), (w, h), (0, h)])


def _per_pixel(a: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """`a` (H x W, or H x W x channels) times a per-pixel `gain` (H x W), the same on every channel."""
    return a * (gain[..., None] if a.ndim == 3 else gain)


def _with_noise(a: np.ndarray, sigma: float, rng: random.Random) -> Image.Image:
    """`a` (float pixels) plus Gaussian noise of `sigma` grey levels, clipped to 8 bits."""
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, sigma, a.shape)
    return Image.fromarray(np.clip(a + noise, 0, 255).astype(np.uint8))


def _scan(img: Image.Image, rng: random.Random) -> Image.Image:
    """Scanner noise: a slight blur and grain."""
    return _with_noise(np.asarray(img.filter(ImageFilter.GaussianBlur(0.8)), np.float32), 8, rng)


def _crop_resize(img: Image.Image, rng: random.Random) -> Image.Image:
    out = _crop(0.15)(img, rng)
    return out.resize((max(1, round(out.width * 0.6)), max(1, round(out.height * 0.6))), Image.Resampling.LANCZOS)


def _window(img: Image.Image, rng: random.Random) -> Image.Image:
    """A window/level change, as a medical viewer's: intensities between two percentiles stretched."""
    a = np.asarray(img, np.float32)
    lo, hi = np.percentile(a, [rng.choice([5, 15]), rng.choice([85, 95])])
    return Image.fromarray(np.clip((a - lo) * 255 / max(hi - lo, 1), 0, 255).astype(np.uint8))


HELDOUT: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "thumb128_q40": _thumb(128),
    "thumb64_q25": _thumb(64),
    "thumb32_q10": _thumb(32),
    "screenshot": _screenshot,
    "watermark": _watermark,
    "gamma": _gamma,
    "perspective": _perspective,
    "scan_noise": _scan,
    "palette_png": lambda im, rng: im.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).convert("RGB"),
    "crop15_resize60": _crop_resize,
    "window_level": _window,
}

def _poster(img: Image.Image, rng: random.Random) -> Image.Image:
    """The picture at 40-65 % of a 3:4 poster on blurred noise, placed at random, a caption below."""
    h = round(img.height / rng.uniform(0.40, 0.65))
    w = max(round(h * 3 / 4), img.width + 20)
    noise = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    poster = Image.fromarray(noise).resize((w, h), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(6))
    poster.paste(img, (rng.randrange(0, w - img.width + 1), rng.randrange(0, max(1, h - img.height - h // 8))))
    ImageDraw.Draw(poster).text((10, h - h // 10), "Exhibition 2025 - open daily", fill=(255, 255, 255),
                                font=ImageFont.load_default(size=max(10, h // 30)))
    return poster


def _slide(img: Image.Image, rng: random.Random) -> Image.Image:
    """The picture at about half the height of a 4:3 white slide, left or right, beside the same title
    and bullet text on every slide (one template)."""
    width, height = 1024, 768
    s = rng.uniform(0.45, 0.6) * height / img.height
    pic = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))))
    slide = Image.new("RGB", (width, height), (255, 255, 255))
    left = rng.random() < 0.5
    slide.paste(pic, (40 if left else width - pic.width - 40, 160))
    draw = ImageDraw.Draw(slide)
    draw.text((40, 40), "Case review - figure 3", fill=(20, 20, 90), font=ImageFont.load_default(size=40))
    for i in range(5):
        draw.text((width // 2 + 40 if left else 40, 200 + 50 * i), f"- finding {i + 1}: see region",
                  fill=(30, 30, 30), font=ImageFont.load_default(size=24))
    return slide


# A second held-out set (session 28), made after the framed-picture rule was built and scored once:
# the picture inside a larger frame. The slides share their text, so they also test precision.
FRAMED: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {"poster": _poster, "slide": _slide}


def _annotation(img: Image.Image, rng: random.Random) -> Image.Image:
    """A viewer's burned-in annotations: a label in each corner and a scale bar, as on exported slices."""
    out = img.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    size = max(8, h // 18)
    font = ImageFont.load_default(size=size)
    for (x, y), label in zip([(4, 4), (w - 5 * size, 4), (4, h - size - 6), (w - 6 * size, h - size - 6)],
                             ["R", rng.choice(["Im 12/40", "Se 3"]), "W 400 L 40", rng.choice(["5 cm", "x1.5"])]):
        draw.text((x, y), label, fill=(255, 255, 255), font=font)
    draw.line((w // 3, h - 3 * size, w // 3 + w // 5, h - 3 * size), fill=(255, 255, 255), width=max(1, size // 6))
    return out


def _logo(img: Image.Image, rng: random.Random) -> Image.Image:
    """An opaque box with a name in one corner, 22 % of the width, as an archive brands its exports."""
    out = img.copy()
    w, h = out.size
    bw, bh = round(0.22 * w), round(0.08 * w)
    x = rng.choice([6, w - bw - 6])
    y = rng.choice([6, h - bh - 6])
    draw = ImageDraw.Draw(out)
    draw.rectangle((x, y, x + bw, y + bh), fill=rng.choice([(20, 40, 90), (200, 200, 200)]))
    draw.text((x + 4, y + 2), rng.choice(["MUSEUM", "PACS 7"]), fill=(250, 250, 250),
              font=ImageFont.load_default(size=max(8, bh * 2 // 3)))
    return out


# A third held-out set (session 36), made to score the keypoint grid (`verify._grid_select`) once:
# the first held-out set had already been read with an earlier form of it, so it could not judge the
# form chosen after that reading. None of these edits was used to choose anything.
HELDOUT2: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "thumb80_q30": _thumb(80, Image.Resampling.BICUBIC),
    "annotation": _annotation,
    "logo": _logo,
    "sharpen_q60": lambda im, rng: im.filter(ImageFilter.UnsharpMask(radius=2, percent=150, threshold=2)),
    "blur2": lambda im, rng: im.filter(ImageFilter.GaussianBlur(2)),
    "crop25_q50": _crop(0.25),
}

def _page(img: Image.Image, rng: random.Random) -> Image.Image:
    """The picture on a catalogue page: the same header, side column and footer on every page (one
    template), the picture at half the page's width beside the column (tuning side for templates; the
    held-out slides and posters of `FRAMED` are another layout)."""
    width, height = 900, 1100
    s = 0.5 * width / img.width
    pic = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))))
    page = Image.new("RGB", (width, height), (250, 248, 240))
    page.paste(pic, (300 + rng.randint(-20, 20), 220 + rng.randint(-20, 20)))
    draw = ImageDraw.Draw(page)
    draw.text((40, 50), "Collection catalogue, plate", fill=(60, 30, 20), font=ImageFont.load_default(size=44))
    draw.line((40, 130, width - 40, 130), fill=(60, 30, 20), width=3)
    for i in range(8):
        draw.text((40, 220 + 60 * i), f"Lot {101 + i}: oil on canvas", fill=(40, 40, 40), font=ImageFont.load_default(size=18))
    draw.text((40, height - 80), "Printed for the collection - not for sale", fill=(90, 90, 90),
              font=ImageFont.load_default(size=22))
    return page


def _viewer(img: Image.Image, rng: random.Random) -> Image.Image:
    """A screen capture of a viewer (tuning side for frames without a template): a 16:10 frame with a tool
    panel on the left, the picture at its own size in the rest, on a flat background."""
    h = round(img.height * rng.uniform(1.05, 1.25))
    w = max(round(h * 16 / 10), img.width + img.width // 4)
    panel = w // 6
    frame = Image.new("RGB", (w, h), rng.choice([(10, 10, 12), (45, 45, 50), (230, 230, 228)]))
    frame.paste(img, (panel + (w - panel - img.width) // 2, (h - img.height) // 2))
    draw = ImageDraw.Draw(frame)
    draw.rectangle((0, 0, panel - 4, h), fill=(70, 72, 80))
    font = ImageFont.load_default(size=max(8, h // 28))
    for i, label in enumerate(["Open", "Zoom", "Pan", "Measure", "Export", "Close"]):
        draw.text((6, 10 + i * h // 9), label, fill=(230, 230, 230), font=font)
    return frame


def _webpage(img: Image.Image, rng: random.Random) -> Image.Image:
    """The picture on a web page: a navigation bar across the top, the picture at 45-60 % of the page's
    width on the left, a text column on the right, a footer line."""
    width = round(img.width / rng.uniform(0.45, 0.60))
    pic_top = 90
    height = pic_top + img.height + 120
    page = Image.new("RGB", (width, height), rng.choice([(255, 255, 255), (246, 244, 238)]))
    page.paste(img, (24, pic_top))
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, width, 56), fill=rng.choice([(24, 60, 120), (30, 30, 30)]))
    draw.text((20, 14), "Home   Collection   Visit   Shop", fill=(255, 255, 255), font=ImageFont.load_default(size=22))
    for i in range(12):
        draw.text((img.width + 56, pic_top + 28 * i), "Lorem ipsum dolor sit amet", fill=(60, 60, 60),
                  font=ImageFont.load_default(size=16))
    draw.text((24, height - 50), "(c) 2025 - all rights reserved", fill=(120, 120, 120), font=ImageFont.load_default(size=16))
    return page


def _tv_capture(img: Image.Image, rng: random.Random) -> Image.Image:
    """A broadcast frame grab: the picture pillarboxed into 16:9 at 70-85 % of the height, a channel logo
    in a corner and a news ticker strip across the bottom, saved small."""
    height = round(img.height / rng.uniform(0.70, 0.85))
    width = round(height * 16 / 9)
    frame = Image.new("RGB", (width, height), (0, 0, 0))
    frame.paste(img, ((width - img.width) // 2, (height - img.height) // 2 - height // 20))
    draw = ImageDraw.Draw(frame)
    draw.rectangle((0, height - height // 10, width, height), fill=(180, 20, 20))
    draw.text((12, height - height // 11), "BREAKING: museum reopens east wing", fill=(255, 255, 255),
              font=ImageFont.load_default(size=max(10, height // 16)))
    draw.text((width - 90, 12), "ART24", fill=(255, 255, 255), font=ImageFont.load_default(size=max(10, height // 18)))
    return frame.resize((width * 2 // 3, height * 2 // 3), Image.Resampling.BILINEAR)


def _phone(img: Image.Image, rng: random.Random) -> Image.Image:
    """A phone screenshot: a tall 9:19.5 frame, a status bar, the picture fitted to the width in the
    middle, buttons and a caption below."""
    width = img.width
    height = round(width * 19.5 / 9)
    screen = Image.new("RGB", (width, height), rng.choice([(0, 0, 0), (250, 250, 250)]))
    pic = img.resize((width, round(img.height * width / img.width)))
    screen.paste(pic, (0, (height - pic.height) // 2))
    draw = ImageDraw.Draw(screen)
    ink = (128, 128, 128)
    draw.text((10, 8), "9:41", fill=ink, font=ImageFont.load_default(size=max(10, width // 20)))
    draw.text((10, (height + pic.height) // 2 + 20), "Liked by 1,204 people", fill=ink,
              font=ImageFont.load_default(size=max(10, width // 22)))
    for i in range(4):
        x = 12 + i * width // 5
        draw.ellipse((x, height - 60, x + 28, height - 32), outline=ink, width=2)
    return screen


# A fourth held-out set (session 39), written before the frame rule (`frames.content_box`) was built and read
# once to judge it: pictures in frames of other layouts than `FRAMED`'s and the tuning viewer's.
HELDOUT3: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "webpage": _webpage, "tv_capture": _tv_capture, "phone": _phone,
}
def _gallery_wall(img: Image.Image, rng: random.Random) -> Image.Image:
    """A photo of a gallery wall: the picture hung left of centre on a painted wall, a label card beside it."""
    width = round(img.width * rng.uniform(1.9, 2.4))
    height = round(img.height * rng.uniform(1.3, 1.5))
    wall = Image.new("RGB", (width, height), rng.choice([(176, 58, 46), (34, 66, 60), (214, 206, 190)]))
    x, y = round(width * 0.15), (height - img.height) // 2
    wall.paste(img, (x, y))
    card = (x + img.width + 40, y + img.height // 2, x + img.width + 40 + width // 6, y + img.height // 2 + 90)
    draw = ImageDraw.Draw(wall)
    draw.rectangle(card, fill=(250, 250, 246))
    for i, line in enumerate(["Unknown master", "Oil on panel", "Inv. 2231"]):
        draw.text((card[0] + 6, card[1] + 6 + 26 * i), line, fill=(30, 30, 30), font=ImageFont.load_default(size=18))
    return wall


def _forum_post(img: Image.Image, rng: random.Random) -> Image.Image:
    """A dark-mode forum post: an avatar and a user name above the picture, reaction buttons below."""
    width = img.width + rng.choice([80, 160, 240])
    height = img.height + 190
    post = Image.new("RGB", (width, height), (24, 26, 30))
    draw = ImageDraw.Draw(post)
    draw.rectangle((16, 16, 64, 64), fill=rng.choice([(200, 120, 40), (60, 140, 200)]))
    draw.text((80, 22), "curator_42 - 3 h ago", fill=(200, 200, 205), font=ImageFont.load_default(size=20))
    post.paste(img, (40, 90))
    for i, label in enumerate(["Like 12", "Reply", "Share"]):
        draw.text((40 + 110 * i, height - 60), label, fill=(150, 150, 160), font=ImageFont.load_default(size=18))
    return post


def _print_preview(img: Image.Image, rng: random.Random) -> Image.Image:
    """A print preview: a white sheet with a header line on a grey canvas, the picture on the sheet."""
    sheet_w, sheet_h = round(img.width * 1.35), round(img.height * 1.7)
    canvas = Image.new("RGB", (sheet_w + 160, sheet_h + 100), (128, 128, 132))
    sheet = Image.new("RGB", (sheet_w, sheet_h), (255, 255, 255))
    sheet.paste(img, ((sheet_w - img.width) // 2, round(sheet_h * 0.22)))
    ImageDraw.Draw(sheet).text((20, 16), f"Page {rng.randint(1, 40)} of 40 - printed 2025-03-14", fill=(40, 40, 40),
                               font=ImageFont.load_default(size=16))
    canvas.paste(sheet, (80, 50))
    return canvas


# A fifth held-out set (session 39), written after heldout3 was read (and failed the rule written for it) and
# before the change that followed: more pictures in frames, of layouts no other set has.
HELDOUT4: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "gallery_wall": _gallery_wall, "forum_post": _forum_post, "print_preview": _print_preview,
}
# A tuning-side frame without a template: `--families viewer`.
VIEWER: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {"viewer": _viewer}

def _grain(img: Image.Image, rng: random.Random) -> Image.Image:
    """Film grain: Gaussian noise of sigma 12, no blur (tuning side; the held-out scan noise blurs first)."""
    return _with_noise(np.asarray(img, np.float32), 12, rng)


def _curve(img: Image.Image, rng: random.Random) -> Image.Image:
    """A steep S-shaped tone curve, as an export with the contrast pushed (tuning side)."""
    a = np.asarray(img, np.float32) / 255
    s = 1 / (1 + np.exp(-8 * (a - 0.45)))
    s = (s - s.min()) / max(float(s.max() - s.min()), 1e-6)
    return Image.fromarray((s * 255).astype(np.uint8))


def _downup(img: Image.Image, rng: random.Random) -> Image.Image:
    """Resolution lost and the size kept: shrunk to 40 % and enlarged back (tuning side)."""
    w, h = img.size
    small = img.resize((max(1, round(w * 0.4)), max(1, round(h * 0.4))), Image.Resampling.BILINEAR)
    return small.resize((w, h), Image.Resampling.BICUBIC)


# Tuning-side degradations (session 40): `--families degrade`. Blur, grain, tone and lost resolution
# leave a copy's corners only where the picture is strongest, so its matches may fill part of it.
DEGRADE: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "soften_q70": lambda im, rng: im.filter(ImageFilter.BoxBlur(1)),
    "grain": _grain, "curve": _curve, "downup_q80": _downup,
}


def _motion(img: Image.Image, rng: random.Random) -> Image.Image:
    """A 7 px horizontal motion blur, as a hand-held photo of a screen."""
    a = np.asarray(img, np.float32)
    padded = np.pad(a, [(0, 0), (3, 3)] + [(0, 0)] * (a.ndim - 2), mode="reflect")
    blurred = sum(padded[:, i:i + a.shape[1]] for i in range(7)) / 7
    return Image.fromarray(np.clip(blurred, 0, 255).astype(np.uint8))


def _vignette_noise(img: Image.Image, rng: random.Random) -> Image.Image:
    """Corners darkened to 55 % and a light noise of sigma 6, as a cheap camera's copy."""
    a = np.asarray(img, np.float32)
    h, w = a.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    r = np.hypot((x - w / 2) / (w / 2), (y - h / 2) / (h / 2)) / np.sqrt(2)
    return _with_noise(_per_pixel(a, 1 - 0.45 * r**2), 6, rng)


def _pixelate(img: Image.Image, rng: random.Random) -> Image.Image:
    """Blocks of 3 x 3 pixels: shrunk to a third by box and enlarged back by nearest neighbour."""
    w, h = img.size
    small = img.resize((max(1, w // 3), max(1, h // 3)), Image.Resampling.BOX)
    return small.resize((w, h), Image.Resampling.NEAREST)


# A sixth held-out set (session 40), written before the change to the verifier's cover grid was read on it:
# degradations of kinds no other set has.
HELDOUT5: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "median5_q45": lambda im, rng: im.filter(ImageFilter.MedianFilter(5)),
    "motion7": _motion, "vignette_noise": _vignette_noise,
    "posterize3": lambda im, rng: ImageOps.posterize(im.convert("RGB"), 3),
    "pixelate3": _pixelate,
}

def _rician(img: Image.Image, rng: random.Random) -> Image.Image:
    """Rician noise of sigma 10, as an MRI magnitude image has: |pixel + complex Gaussian noise|, which
    lifts a dark background as well as roughening the tissue."""
    a = np.asarray(img, np.float32)
    g = np.random.default_rng(rng.randrange(1 << 30))
    out = np.hypot(a + g.normal(0, 10, a.shape), g.normal(0, 10, a.shape))
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _bias_field(img: Image.Image, rng: random.Random) -> Image.Image:
    """A smooth intensity inhomogeneity (an MRI coil's bias field): a gain from 0.7 to 1.3 along a random
    direction, bent by a quadratic term."""
    a = np.asarray(img, np.float32)
    h, w = a.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    t = rng.uniform(0, 2 * np.pi)
    u = ((x / max(w - 1, 1) - 0.5) * np.cos(t) + (y / max(h - 1, 1) - 0.5) * np.sin(t)) * 2
    gain = 1 + 0.3 * np.clip(0.7 * u + 0.3 * u**2 * rng.choice([-1, 1]), -1, 1)
    return Image.fromarray(np.clip(_per_pixel(a, gain), 0, 255).astype(np.uint8))


def _ghosting(img: Image.Image, rng: random.Random) -> Image.Image:
    """A motion ghost: a 30 % copy of the image shifted by a quarter of its height, wrapped round, as
    patient motion leaves along an MRI's phase-encoding direction."""
    a = np.asarray(img, np.float32)
    ghost = np.roll(a, a.shape[0] // 4 * rng.choice([-1, 1]), axis=0)
    return Image.fromarray(np.clip((a + 0.3 * ghost) / 1.15, 0, 255).astype(np.uint8))


def _salt_pepper(img: Image.Image, rng: random.Random) -> Image.Image:
    """Impulse noise: 2 % of the pixels set to black or white, as a dusty scan or a bad transfer leaves."""
    a = np.asarray(img).copy()
    g = np.random.default_rng(rng.randrange(1 << 30))
    hit = g.random(a.shape[:2]) < 0.02
    values = np.where(g.random(int(hit.sum())) < 0.5, 0, 255)
    a[hit] = values[:, None] if a.ndim == 3 else values
    return Image.fromarray(a)


def _speckle(img: Image.Image, rng: random.Random) -> Image.Image:
    """Multiplicative noise (speckle) of 15 %: bright areas get noisier than dark ones."""
    a = np.asarray(img, np.float32)
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(1, 0.15, a.shape[:2])
    return Image.fromarray(np.clip(_per_pixel(a, noise), 0, 255).astype(np.uint8))


# A seventh held-out set (session 41), written before the change it judges (the verification order by
# pHash, docs/dedup.md) was read on it: noise and artefacts of kinds no other set has, MRI's among them.
HELDOUT6: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "rician": _rician, "bias_field": _bias_field, "ghosting": _ghosting,
    "salt_pepper": _salt_pepper, "speckle": _speckle,
    "dither16": lambda im, rng: im.convert("RGB").quantize(16, dither=Image.Dither.FLOYDSTEINBERG).convert("RGB"),
}

def _halftone(img: Image.Image, rng: random.Random) -> Image.Image:
    """A print scanned back: each channel as a 4 px ordered (Bayer) halftone, then softened by the scanner."""
    a = np.asarray(img.convert("RGB"), np.float32) / 255
    bayer = np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]], np.float32) / 16 + 1 / 32
    h, w = a.shape[:2]
    screen = np.tile(bayer, (h // 4 + 1, w // 4 + 1))[:h, :w, None]
    dots = Image.fromarray(((a > screen) * 255).astype(np.uint8))
    return dots.filter(ImageFilter.GaussianBlur(1.2))


def _squash(img: Image.Image, rng: random.Random) -> Image.Image:
    """The aspect ratio changed: one side scaled to 80 %, as a thumbnail forced into a fixed box."""
    w, h = img.size
    return img.resize((w, round(h * 0.8)) if rng.random() < 0.5 else (round(w * 0.8), h), Image.Resampling.BILINEAR)


def _scanlines(img: Image.Image, rng: random.Random) -> Image.Image:
    """A video capture's interlacing: every other row darkened to 70 %."""
    a = np.asarray(img, np.float32).copy()
    a[rng.randint(0, 1)::2] *= 0.7
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _sepia(img: Image.Image, rng: random.Random) -> Image.Image:
    """A sepia-toned print: the grey image mapped onto a brown ramp."""
    return ImageOps.colorize(ImageOps.grayscale(img), black=(40, 26, 13), white=(255, 240, 192))


def _shift_pad(img: Image.Image, rng: random.Random) -> Image.Image:
    """The picture moved by 12 % of its width and height, what falls off cut and the gap filled black."""
    w, h = img.size
    dx, dy = round(0.12 * w) * rng.choice([-1, 1]), round(0.12 * h) * rng.choice([-1, 1])
    out = Image.new(img.mode, img.size, 0)
    out.paste(img, (dx, dy))
    return out


# An eighth held-out set (session 42), written before the change it judges (matches confirmed by their pixels
# whatever their spread, docs/dedup.md) was read on it: geometry and print artefacts of kinds no other set has.
HELDOUT7: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "halftone": _halftone, "rotate90": lambda im, rng: im.rotate(rng.choice([90, 270]), expand=True),
    "squash80": _squash, "scanlines": _scanlines, "sepia": _sepia, "shift_pad": _shift_pad,
}

def _radial(img: Image.Image, scale: Callable[[np.ndarray], np.ndarray]) -> Image.Image:
    """`img` resampled (nearest pixel) so that the pixel at normalised radius r shows the one at r * scale(r^2):
    a lens's radial distortion, r = 1 at the middle of each side."""
    a = np.asarray(img)
    h, w = a.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (x - w / 2) / (w / 2), (y - h / 2) / (h / 2)
    f = scale(u * u + v * v)
    xs = np.clip(np.round(u * f * (w / 2) + w / 2), 0, w - 1).astype(np.int64)
    ys = np.clip(np.round(v * f * (h / 2) + h / 2), 0, h - 1).astype(np.int64)
    return Image.fromarray(a[ys, xs])


def _barrel(img: Image.Image, rng: random.Random) -> Image.Image:
    """A photo through a wide lens: barrel distortion (k = 0.08 at the corners), the edges cropped to fill."""
    return _radial(img, lambda r2: (1 + 0.08 * r2 / 2) / 1.08)  # sample farther out away from the centre, scaled to fill


def _streaks(img: Image.Image, rng: random.Random) -> Image.Image:
    """A dirty scanner's streaks: 6 thin vertical lines, light or dark, at random columns."""
    a = np.asarray(img).copy()
    w = a.shape[1]
    for _ in range(6):
        x0 = rng.randrange(0, max(1, w - 2))
        a[:, x0:x0 + rng.choice([1, 2])] = rng.choice([20, 235])
    return Image.fromarray(a)


def _resaved(img: Image.Image, quality: int) -> Image.Image:
    """`img` saved as a JPEG at `quality` and decoded again (RGB): one generation of re-saving inside an edit."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _generations(img: Image.Image, rng: random.Random) -> Image.Image:
    """Five generations of re-saving: each a JPEG at quality 60 cropped by a pixel on one side."""
    out = img.convert("RGB")
    for _ in range(5):
        side = rng.randrange(4)
        w, h = out.size
        out = _resaved(out.crop((int(side == 0), int(side == 1), w - int(side == 2), h - int(side == 3))), 60)
    return out


def _wave(img: Image.Image, rng: random.Random) -> Image.Image:
    """A wavy page: rows shifted by a 2 px sine of period a third of the height, columns by one of a quarter."""
    a = np.asarray(img)
    h, w = a.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    xs = np.clip(x + np.round(2 * np.sin(2 * np.pi * y / max(1, h / 3))), 0, w - 1).astype(np.int64)
    ys = np.clip(y + np.round(2 * np.sin(2 * np.pi * x / max(1, w / 4))), 0, h - 1).astype(np.int64)
    return Image.fromarray(a[ys, xs])


# A ninth held-out set (session 42), written before the change it judges (pHashes of copies saved turned,
# docs/dedup.md) was read on it: lens, scanner, re-saving and channel faults of kinds no other set has.
HELDOUT8: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "barrel": _barrel, "streaks": _streaks, "generations": _generations, "wave": _wave,
    "channel_swap": lambda im, rng: Image.merge("RGB", im.convert("RGB").split()[::-1]),
}

def _redact(img: Image.Image, rng: random.Random) -> Image.Image:
    """Part of the picture pixelated for anonymity: a box of a quarter of the area, in 8 px blocks."""
    w, h = img.size
    bw, bh = w // 2, h // 2
    x0, y0 = rng.randint(0, w - bw), rng.randint(0, h - bh)
    box = img.crop((x0, y0, x0 + bw, y0 + bh))
    small = box.resize((max(1, bw // 8), max(1, bh // 8)), Image.Resampling.BOX)
    out = img.copy()
    out.paste(small.resize((bw, bh), Image.Resampling.NEAREST), (x0, y0))
    return out


def _underexposed(img: Image.Image, rng: random.Random) -> Image.Image:
    """A dark photo: brightness to 40 % and sensor noise of sigma 8."""
    return _with_noise(np.asarray(img, np.float32) * 0.4, 8, rng)


def _fringes(img: Image.Image, rng: random.Random) -> Image.Image:
    """Chromatic aberration: red and blue moved 3 px apart, opposite ways."""
    a = np.asarray(img.convert("RGB")).copy()
    a[..., 0], a[..., 2] = np.roll(a[..., 0], 3, axis=1), np.roll(a[..., 2], -3, axis=1)
    return Image.fromarray(a)


def _smoothed(img: Image.Image, rng: random.Random) -> Image.Image:
    """A phone's beauty filter: edge-preserving (bilateral) smoothing."""
    import cv2

    return Image.fromarray(cv2.bilateralFilter(np.asarray(img.convert("RGB")), 9, 75, 75))


def _grid(img: Image.Image, rng: random.Random) -> Image.Image:
    """A measuring grid over the picture: grey lines every 32 px at 40 % opacity."""
    a = np.asarray(img.convert("RGB"), np.float32).copy()
    a[::32] = 0.6 * a[::32] + 0.4 * 160
    a[:, ::32] = 0.6 * a[:, ::32] + 0.4 * 160
    return Image.fromarray(a.astype(np.uint8))


# A tenth held-out set (session 42), written before the change it judged (stretched copies by an affine fit,
# not kept) was read on it: anonymising, exposure, lens, filter and overlay edits of kinds no other set has.
HELDOUT9: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "redact": _redact, "underexposed": _underexposed, "fringes": _fringes, "smoothed": _smoothed, "grid": _grid,
}

# A tuning-side set for copies saved turned (`hashing.phash_turns`, session 42): turned upside down, and
# transposed (a quarter turn and a flip). The held-out quarter turn (heldout7's rotate90) is of this family,
# so it was read before this set existed and is no fresh read of the change.
TURN: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "turn180": lambda im, rng: im.transpose(Image.Transpose.ROTATE_180),
    "transpose": lambda im, rng: im.transpose(Image.Transpose.TRANSPOSE),
}

def _widen(factor: float) -> Callable[[Image.Image, random.Random], Image.Image]:
    def widen(img: Image.Image, rng: random.Random) -> Image.Image:
        return img.resize((round(img.width * factor), img.height), Image.Resampling.BICUBIC)

    return widen


# A tuning-side set for copies whose aspect ratio was changed (session 42; the affine fit tried on it was not
# kept, docs/benchmarks_dedup.md): widened by 15 % and narrowed by 12 %. The held-out squash (heldout7's
# squash80) is of this family, so it was read before this set existed.
STRETCH: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "widen115": _widen(1.15), "narrow88": _widen(0.88),
}

def _anamorphic(img: Image.Image, rng: random.Random) -> Image.Image:
    """A 4:3 picture shown at 16:9: widened by a third, as a TV or a slide that fills the screen."""
    return img.resize((round(img.width * 4 / 3), img.height), Image.Resampling.LANCZOS)


def _taller(img: Image.Image, rng: random.Random) -> Image.Image:
    """Heightened by a fifth: a picture squeezed into a portrait frame's width."""
    return img.resize((img.width, round(img.height * 1.2)), Image.Resampling.BICUBIC)


def _box_thumb(img: Image.Image, rng: random.Random) -> Image.Image:
    """A catalogue grid's cell: the picture forced into 150 x 120 px whatever its shape, saved at quality 70."""
    return img.resize((150, 120), Image.Resampling.BILINEAR)


def _rotate12(img: Image.Image, rng: random.Random) -> Image.Image:
    """A scan placed askew: turned by 12 degrees, the canvas grown to hold it, the corners black."""
    return img.rotate(rng.choice([-12, 12]), resample=Image.Resampling.BICUBIC, expand=True)


def _low_contrast(img: Image.Image, rng: random.Random) -> Image.Image:
    """A washed-out copy: contrast cut to 45 % around the mean grey, saved at quality 85."""
    return ImageEnhance.Contrast(img).enhance(0.45)


# An eleventh held-out set (session 43), written before the change it judges (stretched copies by an affine
# fit, tried again with a whole-corpus condition judged by eye) was read on it: three changed aspect ratios of
# kinds the tuning side lacks (a third wider, a fifth taller, a fixed box), a WebP at quality 20, a 12 degree
# turn on a grown canvas, an upside-down mirror and a washed-out copy.
HELDOUT10: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "anamorphic": _anamorphic, "taller120": _taller, "box_thumb": _box_thumb,
    "webp_q20": lambda im, rng: im, "rotate12": _rotate12,
    "vflip": lambda im, rng: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM), "low_contrast": _low_contrast,
}

# A tuning-side set for prints scanned askew (`frames.askew_picture`, session 43): turned by 7 degrees on a
# white scanner bed, and by 10 degrees the other way on grey, the canvas grown to hold the picture. The
# held-out 12 degree turn on black (heldout10's rotate12) is of this family, so it was read before this set.
TILT: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "tilt7_white": lambda im, rng: im.rotate(7, resample=Image.Resampling.BICUBIC, expand=True, fillcolor="white"),
    "tilt10_grey": lambda im, rng: im.rotate(-10, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128)),
}

def _on_bed(img: Image.Image, angle: float, bed: tuple[int, int, int]) -> Image.Image:
    """`img` (as RGB) turned by `angle` degrees counter-clockwise on a flat bed of colour `bed`, the canvas grown to
    hold it: a print scanned or photographed askew."""
    return img.convert("RGB").rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=bed)


def _askew_cream(img: Image.Image, rng: random.Random) -> Image.Image:
    """A print scanned askew on a cream bed: turned by 6 degrees clockwise, saved at quality 85."""
    return img.rotate(-6, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(245, 240, 225))


def _askew_noisy(img: Image.Image, rng: random.Random) -> Image.Image:
    """A photo of a print lying at 17 degrees on a white table, with the sensor's noise (sigma 4) over all."""
    return _with_noise(np.asarray(_on_bed(img, 17, (255, 255, 255)), np.float32), 4.0, rng)


def _askew_small(img: Image.Image, rng: random.Random) -> Image.Image:
    """A small askew scan: turned by 8 degrees on white, then shrunk to 40 %."""
    turned = img.rotate(8, resample=Image.Resampling.BICUBIC, expand=True, fillcolor="white")
    return turned.resize((round(turned.width * 0.4), round(turned.height * 0.4)), Image.Resampling.LANCZOS)


def _chroma(img: Image.Image, rng: random.Random) -> Image.Image:
    """Colour kept at a quarter of the resolution (a video codec's chroma), saved at quality 50."""
    y, cb, cr = img.convert("YCbCr").split()
    small = (max(1, img.width // 4), max(1, img.height // 4))
    cb, cr = (c.resize(small, Image.Resampling.BILINEAR).resize(img.size, Image.Resampling.BILINEAR) for c in (cb, cr))
    return Image.merge("YCbCr", (y, cb, cr)).convert("RGB")


def _caption_bar(img: Image.Image, rng: random.Random) -> Image.Image:
    """A social post: a black bar of a sixth of the height added under the picture, a white caption in it."""
    w, h = img.size
    out = Image.new("RGB", (w, h + h // 6), "black")
    out.paste(img.convert("RGB"), (0, 0))
    ImageDraw.Draw(out).text((w // 20, h + h // 24), "look at this one", fill="white", font=ImageFont.load_default())
    return out


# A twelfth held-out set (session 43), written before the change it judges (prints scanned askew, cut out
# upright) was read on it: three askew scans of kinds the tuning side lacks (a cream bed, a noisy photo at 17
# degrees, a small scan), colour at a quarter of the resolution and a caption bar.
HELDOUT11: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "askew_cream": _askew_cream, "askew_noisy": _askew_noisy, "askew_small": _askew_small,
    "chroma_q50": _chroma, "caption_bar": _caption_bar,
}

def _player_frame(img: Image.Image, rng: random.Random) -> Image.Image:
    """A frame grab of a video player: the picture pillarboxed into 16:9 black, a control bar with a progress
    line and a time over its bottom eighth, saved at quality 75."""
    h = img.height
    w = max(img.width, round(h * 16 / 9))
    out = Image.new("RGB", (w, h), "black")
    out.paste(img.convert("RGB"), ((w - img.width) // 2, 0))
    draw = ImageDraw.Draw(out)
    bar = h - h // 8
    draw.rectangle((0, bar, w, h), fill=(24, 24, 28))
    draw.line((w // 20, bar + h // 32, w - w // 20, bar + h // 32), fill=(200, 40, 40), width=max(1, h // 100))
    draw.text((w // 20, bar + h // 20), "01:12 / 04:30", fill=(230, 230, 230),
              font=ImageFont.load_default(size=max(8, h // 28)))
    return out


def _tiled_watermark(img: Image.Image, rng: random.Random) -> Image.Image:
    """A small translucent word repeated over the whole picture on a staggered grid, as a stock site marks
    its previews."""
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    size = max(8, img.width // 14)
    font = ImageFont.load_default(size=size)
    for row, y in enumerate(range(0, img.height, size * 3)):
        for x in range(-size * 2 * (row % 2), img.width, size * 6):
            draw.text((x, y), "SAMPLE", fill=(255, 255, 255, 70), font=font)
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")


def _contrast_boost(img: Image.Image, rng: random.Random) -> Image.Image:
    """Contrast raised by 40 % around the mean, then a gamma of 0.8: a print made punchier."""
    out = ImageEnhance.Contrast(img).enhance(1.4)
    return out.point(lambda v: round(255 * (v / 255) ** 0.8))


def _keystone_side(img: Image.Image, rng: random.Random) -> Image.Image:
    """A photo taken from one side: the right edge 5 % shorter than the left, top and bottom."""
    w, h = img.size
    d = 0.05 * h
    return _warped(img, [(0, 0), (w, -d), (w, h + d), (0, h)])


def _bit12_display(img: Image.Image, rng: random.Random) -> Image.Image:
    """Exported at 12 bits (x 16) and shown back at 8 bits through a display window of 200-3,800: the
    darkest levels clipped, the rest stretched a little."""
    a = np.asarray(img, np.float32) * 16.0
    return Image.fromarray(np.clip(np.round((a - 200.0) * 255.0 / 3600.0), 0, 255).astype(np.uint8))


def _recompress_small(img: Image.Image, rng: random.Random) -> Image.Image:
    """Shrunk to 75 % and saved at quality 40, then saved at quality 40 again (its final save)."""
    return _resaved(img.convert("RGB").resize((max(1, round(img.width * 0.75)), max(1, round(img.height * 0.75))),
                                              Image.Resampling.BILINEAR), 40)


def _corner_crop_resize(img: Image.Image, rng: random.Random) -> Image.Image:
    """An 18 % crop taken from one corner (the rest kept whole), then shrunk to 80 %."""
    w, h = img.size
    cw, ch = round(w * 0.18), round(h * 0.18)
    x0, y0 = rng.choice([0, cw]), rng.choice([0, ch])
    out = img.crop((x0, y0, x0 + w - cw, y0 + h - ch))
    return out.resize((max(1, round(out.width * 0.8)), max(1, round(out.height * 0.8))), Image.Resampling.BICUBIC)


def _dusty_scan(img: Image.Image, rng: random.Random) -> Image.Image:
    """A scan of an old print: a slight blur, paper yellowed, dust specks of 1-3 px."""
    out = img.convert("RGB").filter(ImageFilter.GaussianBlur(0.6))
    a = np.asarray(out, np.float32) * np.array([1.0, 0.97, 0.88], np.float32) + np.array([6, 4, 0], np.float32)
    out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    specks = random.Random(rng.randrange(1 << 30))
    for _ in range(max(10, out.width * out.height // 2500)):
        x, y, r = specks.randrange(out.width), specks.randrange(out.height), specks.choice([0, 1, 1, 2])
        draw.ellipse((x - r, y - r, x + r, y + r), fill=specks.choice([(30, 28, 25), (235, 232, 220)]))
    return out


# A thirteenth held-out set (session 45), written after the rule that judges the change it is read for (the
# spread rule read on the picture's keypoints) and before any read: the kinds issue 15 names, at parameters no
# earlier set used (a 56 px thumbnail at quality 15, a video player's frame grab, a tiled watermark, raised
# contrast, a keystone from the side, a 12-bit export's display window, a shrunk re-compression, a corner crop
# shrunk, a dusty yellowed scan).
HELDOUT12: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "thumb56_q15": _thumb(56, Image.Resampling.HAMMING), "player_frame": _player_frame,
    "tiled_watermark": _tiled_watermark, "contrast_boost": _contrast_boost, "keystone_side": _keystone_side,
    "bit12_display": _bit12_display, "recompress_small": _recompress_small,
    "corner_crop_resize": _corner_crop_resize, "dusty_scan": _dusty_scan,
}

def _toolbar_letterbox(img: Image.Image, rng: random.Random) -> Image.Image:
    """A capture of an image editor: the picture letterboxed into 4:3 dark grey, under a light toolbar of a
    tenth of the height with a row of icon squares, saved at quality 80."""
    h = img.height + img.height // 10
    w = max(img.width, round(h * 4 / 3))
    out = Image.new("RGB", (w, h), (45, 45, 48))
    out.paste(img.convert("RGB"), ((w - img.width) // 2, h - img.height))
    draw = ImageDraw.Draw(out)
    bar = img.height // 10
    draw.rectangle((0, 0, w, bar - 1), fill=(222, 222, 226))
    side = max(3, bar // 2)
    for k in range(12):
        x = bar // 3 + k * (side + side // 2)
        draw.rectangle((x, bar // 4, x + side, bar // 4 + side), outline=(70, 70, 80), width=1)
    return out


def _corner_notice(img: Image.Image, rng: random.Random) -> Image.Image:
    """A two-line copyright notice on a half-opaque dark box in the lower right corner."""
    out = img.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    size = max(8, img.width // 30)
    font = ImageFont.load_default(size=size)
    x0, y0 = round(img.width * 0.52), round(img.height - 3.4 * size)
    draw.rectangle((x0, y0, img.width - size // 2, img.height - size // 2), fill=(0, 0, 0, 130))
    draw.text((x0 + size // 2, y0 + size // 3), "(c) Archive 2019", fill=(255, 255, 255, 220), font=font)
    draw.text((x0 + size // 2, y0 + size * 1.5), "not for reuse", fill=(255, 255, 255, 220), font=font)
    return Image.alpha_composite(out, layer).convert("RGB")


def _gamma_lift(img: Image.Image, rng: random.Random) -> Image.Image:
    """Shadows lifted: a gamma of 0.7, then 10 grey levels added."""
    return img.point(lambda v: min(255, round(255 * (v / 255) ** 0.7) + 10))


def _keystone_bottom(img: Image.Image, rng: random.Random) -> Image.Image:
    """A photo of a print taken from above: the bottom edge 7 % narrower on each side."""
    w, h = img.size
    d = 0.07 * w
    return _warped(img, [(0, 0), (w, 0), (w + d, h), (-d, h)])


def _moire_scan(img: Image.Image, rng: random.Random) -> Image.Image:
    """A scan of a printed page: a slight blur and a moire of 6 grey levels, a 3.3 px period at 30 degrees."""
    a = np.asarray(img.convert("RGB").filter(ImageFilter.GaussianBlur(0.5)), np.float32)
    yy, xx = np.mgrid[0:a.shape[0], 0:a.shape[1]].astype(np.float32)
    wave = 6.0 * np.sin(2 * np.pi * (xx * np.cos(np.pi / 6) + yy * np.sin(np.pi / 6)) / 3.3)
    return Image.fromarray(np.clip(a + wave[..., None], 0, 255).astype(np.uint8))


def _crop_left_enlarge(img: Image.Image, rng: random.Random) -> Image.Image:
    """The left 12 % cut off, the rest enlarged by 30 %."""
    w, h = img.size
    out = img.crop((round(w * 0.12), 0, w, h))
    return out.resize((round(out.width * 1.3), round(out.height * 1.3)), Image.Resampling.BICUBIC)


def _sigmoid_window(img: Image.Image, rng: random.Random) -> Image.Image:
    """A viewer's sigmoid VOI LUT (DICOM's SIGMOID function): grey levels mapped through a logistic curve
    centred on the image's mean, of width its standard deviation."""
    a = np.asarray(img, np.float32)
    centre, width = float(a.mean()), max(float(a.std()), 1.0)
    return Image.fromarray(np.clip(255.0 / (1.0 + np.exp(-4.0 * (a - centre) / width)), 0, 255).astype(np.uint8))


def _requant6(img: Image.Image, rng: random.Random) -> Image.Image:
    """Exported at 6 bits per channel (the two low bits dropped) and saved as a JPEG at quality 85."""
    return Image.fromarray((np.asarray(img.convert("RGB"), np.uint8) & 0xFC).astype(np.uint8))


# A fourteenth held-out set (session 45), written after the rule that judges the change it is read for (the
# spread read on a small picture on a flat field) and before any read: a 100 px thumbnail at quality 20, an
# editor's capture with a toolbar, a corner copyright notice, lifted shadows, a keystone from above, a moire
# scan, a 32-colour palette PNG, a side crop enlarged, a sigmoid display window and a 6-bit export.
HELDOUT13: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "thumb100_q20": _thumb(100, Image.Resampling.BICUBIC), "toolbar_letterbox": _toolbar_letterbox,
    "corner_notice": _corner_notice, "gamma_lift": _gamma_lift, "keystone_bottom": _keystone_bottom,
    "moire_scan": _moire_scan,
    "palette32_png": lambda im, rng: im.convert("RGB").quantize(32, method=Image.Quantize.MEDIANCUT,
                                                               dither=Image.Dither.NONE).convert("RGB"),
    "crop_left_enlarge": _crop_left_enlarge, "sigmoid_window": _sigmoid_window, "requant6": _requant6,
}

def _sidebar_capture(img: Image.Image, rng: random.Random) -> Image.Image:
    """A capture of a gallery page: the picture at its own size on the left of a near-white page, a column of
    grey text lines to its right and a thin rule above, saved at quality 85."""
    w, h = img.width * 2, img.height + img.height // 5
    out = Image.new("RGB", (w, h), (250, 250, 248))
    out.paste(img.convert("RGB"), (img.width // 12, img.height // 8))
    draw = ImageDraw.Draw(out)
    draw.line((0, img.height // 16, w, img.height // 16), fill=(200, 200, 200), width=max(1, h // 200))
    size = max(8, img.height // 24)
    font = ImageFont.load_default(size=size)
    x = img.width + img.width // 6
    for k, line in enumerate(["Untitled study", "oil on panel", "inv. 1187", "gallery 4, room 12", "on view"]):
        draw.text((x, img.height // 6 + k * size * 2), line, fill=(90, 90, 90), font=font)
    return out


def _diagonal_text(img: Image.Image, rng: random.Random) -> Image.Image:
    """A translucent word written corner to corner across the picture (a proof mark), on a turned layer."""
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    size = max(12, img.width // 7)
    ImageDraw.Draw(layer).text((img.width // 8, img.height // 2 - size // 2), "PROOF COPY", fill=(255, 255, 255, 90),
                               font=ImageFont.load_default(size=size))
    layer = layer.rotate(35, resample=Image.Resampling.BICUBIC)
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")


def _shot_noise(img: Image.Image, rng: random.Random) -> Image.Image:
    """Photon (Poisson) noise at 40 counts for full white: noise that grows with the signal, unlike grain."""
    a = np.asarray(img, np.float32) / 255.0 * 40.0
    noisy = np.random.default_rng(rng.randrange(1 << 30)).poisson(a) * (255.0 / 40.0)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _levels(img: Image.Image, rng: random.Random) -> Image.Image:
    """An editor's levels: black point 25, white point 215, midtone gamma 1.1."""
    return img.point(lambda v: round(255 * min(1.0, max(0.0, (v - 25) / 190)) ** 1.1))


def _perspective_corner(img: Image.Image, rng: random.Random) -> Image.Image:
    """One corner pulled in: the top-right corner of the print 6 % in from each side."""
    w, h = img.size
    return _warped(img, [(0, 0), (w - 0.06 * w, 0.06 * h), (w, h), (0, h)])


def _window_upper(img: Image.Image, rng: random.Random) -> Image.Image:
    """A linear window over the bright half: from the 25th to the 99th percentile of the pixels above the
    median, what lies below clipped to black (a viewer's window set on the tissue, not the background)."""
    a = np.asarray(img, np.float32)
    above = a > np.median(a)
    bright = a[above] if above.any() else a.ravel()
    lo, hi = np.percentile(bright, [25, 99])
    return Image.fromarray(np.clip((a - lo) * 255.0 / max(hi - lo, 1.0), 0, 255).astype(np.uint8))


def _rescale_png(img: Image.Image, rng: random.Random) -> Image.Image:
    """A stored value rescaled by a slope and an intercept (0.85 x + 20, as a DICOM export's rescale) and saved
    as PNG."""
    return img.point(lambda v: min(255, round(0.85 * v + 20)))


def _resave_cycle(img: Image.Image, rng: random.Random) -> Image.Image:
    """Saved at quality 55, shrunk to 90 %, saved at 55 again, enlarged back to its size (its final save at 70)."""
    out = _resaved(img.convert("RGB"), 55)
    out = out.resize((max(1, round(img.width * 0.9)), max(1, round(img.height * 0.9))), Image.Resampling.BILINEAR)
    return _resaved(out, 55).resize(img.size, Image.Resampling.BICUBIC)


def _crop_bands(img: Image.Image, rng: random.Random) -> Image.Image:
    """A band of 9 % cut off the top and the bottom (a wide crop), not resized."""
    return img.crop((0, round(img.height * 0.09), img.width, img.height - round(img.height * 0.09)))


# A fifteenth held-out set (session 46), written after the rule that judges the change it is read for (a
# smoothed second look at pairs the pHash vouches for) and before any read: kinds issue 15 names at forms no
# earlier set used (a 72 px nearest-neighbour thumbnail at quality 30, a gallery page's capture, a diagonal proof
# mark, photon noise, an editor's levels, one corner pulled in, a window on the bright half, a rescaled PNG
# export, a save-shrink-save-enlarge cycle, bands cut off top and bottom).
HELDOUT14: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "thumb72_q30": _thumb(72, Image.Resampling.NEAREST), "sidebar_capture": _sidebar_capture,
    "diagonal_text": _diagonal_text, "shot_noise": _shot_noise, "levels": _levels,
    "perspective_corner": _perspective_corner, "window_upper": _window_upper, "rescale_png": _rescale_png,
    "resave_cycle": _resave_cycle, "crop_bands": _crop_bands,
}


def _askew_dark(img: Image.Image, rng: random.Random) -> Image.Image:
    """A print turned by 15 degrees clockwise on a dark grey bed (40), saved at quality 80."""
    return _on_bed(img, -15, (40, 40, 40))


def _askew_shadow(img: Image.Image, rng: random.Random) -> Image.Image:
    """A print lying 4 degrees askew on a light grey table (a margin of a tenth), with a soft shadow to its lower
    right."""
    w, h = img.size
    m = max(4, round(0.1 * max(w, h)))
    bed = Image.new("RGB", (w + 2 * m, h + 2 * m), (210, 210, 210))
    shade = Image.new("L", bed.size, 0)
    ImageDraw.Draw(shade).rectangle((m + m // 4, m + m // 4, m + w + m // 4, m + h + m // 4), fill=110)
    shade = shade.filter(ImageFilter.GaussianBlur(max(1, m // 5)))
    bed.paste((150, 150, 150), (0, 0), shade)
    bed.paste(img.convert("RGB"), (m, m))
    return bed.rotate(4, resample=Image.Resampling.BICUBIC, fillcolor=(210, 210, 210))


def _straighten_crop(img: Image.Image, rng: random.Random) -> Image.Image:
    """An editor's straighten tool: turned by 9 degrees, cropped to the largest upright rectangle of the
    picture's aspect inside it, enlarged back to the original size."""
    w, h = img.size
    t = np.deg2rad(9)
    k = 1 / (np.cos(t) + np.sin(t) * max(w / h, h / w))  # share of each side the inner rectangle keeps
    turned = img.rotate(9, resample=Image.Resampling.BICUBIC)
    cw, ch = w * k, h * k
    box = (round((w - cw) / 2), round((h - ch) / 2), round((w + cw) / 2), round((h + ch) / 2))
    return turned.crop(box).resize((w, h), Image.Resampling.BICUBIC)


def _clahe(img: Image.Image, rng: random.Random) -> Image.Image:
    """Contrast-limited adaptive histogram equalisation (clip 3, 8 x 8 tiles) of the lightness, as medical
    preprocessing pipelines apply it."""
    import cv2

    clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8))
    if img.mode == "L":
        return Image.fromarray(clahe.apply(np.asarray(img)))
    lab = cv2.cvtColor(np.asarray(img.convert("RGB")), cv2.COLOR_RGB2LAB)
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return Image.fromarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))


def _pincushion(img: Image.Image, rng: random.Random) -> Image.Image:
    """A long lens's pincushion distortion (k = 0.07 at the corners): the edges pulled outwards."""
    return _radial(img, lambda r2: 1 - 0.07 * r2 / 2)  # sample nearer the centre away from it


def _matted(img: Image.Image, rng: random.Random) -> Image.Image:
    """A framed print: an off-white mat of 12 % each side, a thin dark line at the mat's outer edge."""
    w, h = img.size
    m = max(3, round(0.12 * max(w, h)))
    out = Image.new("RGB", (w + 2 * m, h + 2 * m), (240, 236, 228))
    out.paste(img.convert("RGB"), (m, m))
    e = max(1, m // 6)
    ImageDraw.Draw(out).rectangle((e, e, out.width - 1 - e, out.height - 1 - e), outline=(60, 55, 50), width=max(1, m // 20))
    return out


def _split_tone(img: Image.Image, rng: random.Random) -> Image.Image:
    """A colour grade: shadows toward blue, highlights toward warm cream, mixed 60 % over the picture."""
    rgb = np.asarray(img.convert("RGB"), np.float32)
    lum = rgb.mean(axis=2, keepdims=True) / 255.0
    graded = (1 - lum) * np.array([20, 40, 90], np.float32) + lum * np.array([255, 235, 200], np.float32)
    return Image.fromarray(np.clip(0.4 * rgb + 0.6 * graded, 0, 255).astype(np.uint8))


def _zoom_center70(img: Image.Image, rng: random.Random) -> Image.Image:
    """The central 70 % cut out and enlarged back to the original size."""
    w, h = img.size
    box = (round(0.15 * w), round(0.15 * h), round(0.85 * w), round(0.85 * h))
    return img.crop(box).resize((w, h), Image.Resampling.BICUBIC)


# A sixteenth held-out set (session 47), written after the rule that judges the change it is read for (an askew
# picture compared again turned upright and cut out) and before any read: a print 15 degrees askew on a dark bed,
# one 4 degrees askew with a shadow, an editor's straighten-and-crop, an 88 px bicubic thumbnail at quality 35,
# CLAHE, JPEG at quality 8, pincushion distortion, a matted print, a split-tone grade, a central zoom.
HELDOUT15: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "askew_dark": _askew_dark, "askew_shadow": _askew_shadow, "straighten_crop": _straighten_crop,
    "thumb88_q35": _thumb(88, Image.Resampling.BICUBIC), "clahe": _clahe, "jpeg_q8": lambda im, rng: im.copy(),
    "pincushion": _pincushion, "matted": _matted, "split_tone": _split_tone, "zoom_center70": _zoom_center70,
}


def _askew_lid(img: Image.Image, rng: random.Random) -> Image.Image:
    """A print scanned 6 degrees askew under a light grey scanner lid (225), saved at quality 85."""
    return _on_bed(img, 6, (225, 225, 225))


def _askew_black_small(img: Image.Image, rng: random.Random) -> Image.Image:
    """A print 9 degrees askew on black, the scan shrunk to 60 %."""
    turned = _on_bed(img, -9, (0, 0, 0))
    return turned.resize((round(turned.width * 0.6), round(turned.height * 0.6)), Image.Resampling.BILINEAR)


def _askew_photo(img: Image.Image, rng: random.Random) -> Image.Image:
    """A phone photo of a print lying 11 degrees askew on a mid-grey desk (100), slightly out of focus, saved at
    quality 75."""
    return _on_bed(img, 11, (100, 100, 100)).filter(ImageFilter.GaussianBlur(0.8))


def _unsharp_strong(img: Image.Image, rng: random.Random) -> Image.Image:
    """An over-sharpened export: an unsharp mask of radius 3 at 200 %."""
    return img.filter(ImageFilter.UnsharpMask(radius=3, percent=200, threshold=2))


def _hue_shift(img: Image.Image, rng: random.Random) -> Image.Image:
    """Every hue turned by 40 degrees (a grey picture stays grey)."""
    h, s, v = img.convert("RGB").convert("HSV").split()
    h = h.point(lambda x: (x + 28) % 256)  # 40 of 360 degrees on PIL's 0-255 hue
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def _crop_top30(img: Image.Image, rng: random.Random) -> Image.Image:
    """The top 30 % cut off, not resized."""
    return img.crop((0, round(img.height * 0.3), img.width, img.height))


def _defocus(img: Image.Image, rng: random.Random) -> Image.Image:
    """A lens out of focus: a disk blur of radius 3 px."""
    import cv2

    r = 3
    disk = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    cv2.circle(disk, (r, r), r, 1.0, -1)
    a = np.asarray(img.convert("RGB"), np.float32)
    return Image.fromarray(np.clip(cv2.filter2D(a, -1, disk / disk.sum()), 0, 255).astype(np.uint8))


def _rounded_corners(img: Image.Image, rng: random.Random) -> Image.Image:
    """An app's card: corners rounded with a radius of 12 % of the longer side, white outside them."""
    w, h = img.size
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, w - 1, h - 1), radius=round(0.12 * max(w, h)), fill=255)
    out = Image.new("RGB", (w, h), "white")
    out.paste(img.convert("RGB"), (0, 0), mask)
    return out


def _photocopy(img: Image.Image, rng: random.Random) -> Image.Image:
    """A photocopy: grey, contrast raised 1.8x, dark strokes thickened (a 3 px minimum filter)."""
    grey = ImageEnhance.Contrast(img.convert("L")).enhance(1.8)
    return grey.filter(ImageFilter.MinFilter(3))


# A seventeenth held-out set (session 47), written after the rule that judges the change it is read for (two
# askew pictures compared by their pictures only, never whole) and before any read: a print askew under a light
# scanner lid, one askew on black and shrunk, a phone photo of one askew on a desk, a 48 px Hamming thumbnail at
# quality 35, an over-sharpened export, a hue turn, the top 30 % cut off, a defocus blur, rounded corners, a
# photocopy.
HELDOUT16: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "askew_lid": _askew_lid, "askew_black_small": _askew_black_small, "askew_photo": _askew_photo,
    "thumb48_q35": _thumb(48, Image.Resampling.HAMMING), "unsharp_strong": _unsharp_strong, "hue_shift": _hue_shift,
    "crop_top30": _crop_top30, "defocus": _defocus, "rounded_corners": _rounded_corners, "photocopy": _photocopy,
}


def _side_cut(share: float) -> Callable[[Image.Image, random.Random], Image.Image]:
    """`share` of the width cut off the left or the right (at random), not resized."""
    def cut(img: Image.Image, rng: random.Random) -> Image.Image:
        w = round(img.width * share)
        return img.crop((w, 0, img.width, img.height)) if rng.random() < 0.5 else img.crop((0, 0, img.width - w, img.height))

    return cut


# A tuning-side set for copies with one side cut off (session 48; docs/benchmarks_dedup.md, "Copies with a side
# cut off"): 35 % of the width off the left or the right, and 25 % off one side then saved at half size. The
# held-out top 30 % cut off (heldout16's crop_top30) and the side crop enlarged (heldout13) are of this family, so
# they were read before this set existed.
SIDECUT: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "side35": _side_cut(0.35),
    "side25_half": lambda im, rng: (lambda c: c.resize((max(1, c.width // 2), max(1, c.height // 2)),
                                                       Image.Resampling.LANCZOS))(_side_cut(0.25)(im, rng)),
}


def _cut_box(left: float, top: float, right: float,
             bottom: float) -> Callable[[Image.Image, random.Random], Image.Image]:
    """The shares `left`, `top`, `right` and `bottom` of the sides cut off, not resized."""
    def cut(img: Image.Image, rng: random.Random) -> Image.Image:
        w, h = img.size
        return img.crop((round(w * left), round(h * top), w - round(w * right), h - round(h * bottom)))

    return cut


def _cut_shrunk(img: Image.Image, rng: random.Random) -> Image.Image:
    """30 % off the right and 20 % off the bottom, saved at 60 % of that size."""
    c = _cut_box(0.0, 0.0, 0.30, 0.20)(img, rng)
    return c.resize((max(1, round(c.width * 0.6)), max(1, round(c.height * 0.6))), Image.Resampling.BILINEAR)


def _tilt_shift(img: Image.Image, rng: random.Random) -> Image.Image:
    """A tilt-shift look: the top and bottom thirds blurred (Gaussian, 4 px), the middle third sharp, ramped between."""
    a = np.asarray(img.convert("RGB")).astype(np.float32)
    blurred = np.asarray(img.convert("RGB").filter(ImageFilter.GaussianBlur(4))).astype(np.float32)
    y = np.linspace(0.0, 1.0, a.shape[0])[:, None, None]
    weight = np.clip(np.abs(y - 0.5) * 6.0 - 0.5, 0.0, 1.0)  # 0 in the middle third, 1 beyond its sixth-wide ramps
    return Image.fromarray(np.round(a * (1 - weight) + blurred * weight).astype(np.uint8))


def _mirror_cut(img: Image.Image, rng: random.Random) -> Image.Image:
    """Mirrored, then 15 % off every side."""
    return _cut_box(0.15, 0.15, 0.15, 0.15)(ImageOps.mirror(img), rng)


def _cut_letterboxed(img: Image.Image, rng: random.Random) -> Image.Image:
    """25 % off the left, then padded with black back to the original width (the picture centred)."""
    c = _cut_box(0.25, 0.0, 0.0, 0.0)(img, rng)
    out = Image.new("RGB", img.size, (0, 0, 0))
    out.paste(c.convert("RGB"), ((img.width - c.width) // 2, 0))
    return out


# An eighteenth held-out set (session 48), written after the rule that judges the change it was read for (a pair
# verified when either image has it among its best candidates, from a cosine of 0.70; not kept) and before any
# read: 20 % off the left and 15 % off the top; 30 % off the right and 20 % off the bottom, shrunk to 60 %; the
# central half of the width; 45 % off the top; 25 % off the right and the bottom at JPEG quality 40; a tilt-shift
# blur; mirrored with 15 % off every side; 25 % off the left padded back with black.
HELDOUT17: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "cut_l20_t15": _cut_box(0.20, 0.15, 0.0, 0.0), "cut_shrunk": _cut_shrunk,
    "centre_strip": _cut_box(0.25, 0.0, 0.25, 0.0), "cut_top45": _cut_box(0.0, 0.45, 0.0, 0.0),
    "cut_br25_q40": _cut_box(0.0, 0.0, 0.25, 0.25), "tilt_shift": _tilt_shift, "mirror_cut": _mirror_cut,
    "cut_letterboxed": _cut_letterboxed,
}


def _quadrant_enlarged(img: Image.Image, rng: random.Random) -> Image.Image:
    """The top-left 60 % x 60 % enlarged back to the original size."""
    return _cut_box(0.0, 0.0, 0.40, 0.40)(img, rng).resize(img.size, Image.Resampling.BICUBIC)


def _cut_padded(img: Image.Image, rng: random.Random) -> Image.Image:
    """30 % off the top and the left, padded with white back to the original size (the picture bottom right)."""
    c = _cut_box(0.30, 0.30, 0.0, 0.0)(img, rng)
    out = Image.new("RGB", img.size, (255, 255, 255))
    out.paste(c.convert("RGB"), (img.width - c.width, img.height - c.height))
    return out


def _cut_turned(img: Image.Image, rng: random.Random) -> Image.Image:
    """30 % off the bottom, then turned by 3 degrees (the corners filled black)."""
    return _cut_box(0.0, 0.0, 0.0, 0.30)(img, rng).rotate(3, resample=Image.Resampling.BICUBIC)


def _cut_bottom_half(img: Image.Image, rng: random.Random) -> Image.Image:
    """40 % off the bottom, saved at half size."""
    c = _cut_box(0.0, 0.0, 0.0, 0.40)(img, rng)
    return c.resize((max(1, c.width // 2), max(1, c.height // 2)), Image.Resampling.LANCZOS)


# A nineteenth held-out set (session 48), written after the rule that judges the change it was read for (a pair
# verified when either image has it among its best candidates, from a cosine of 0.70, cut-outs still from 0.80;
# not kept) and before any read: 35 % off the left and 10 % off the top at JPEG quality 70; the top-left 60 %
# enlarged; mirrored with 25 % off the right at quality 50; 30 % off the top and the left padded back with white;
# 20 % off both sides at quality 30; 30 % off the bottom turned by 3 degrees; 40 % off the bottom at half size.
HELDOUT18: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "cut_l35_t10_q70": _cut_box(0.35, 0.10, 0.0, 0.0), "quadrant_enlarged": _quadrant_enlarged,
    "cut_r25_mirror_q50": lambda im, rng: _cut_box(0.0, 0.0, 0.25, 0.0)(ImageOps.mirror(im), rng),
    "cut_padded": _cut_padded, "cut_sides20_q30": _cut_box(0.20, 0.0, 0.20, 0.0), "cut_turned": _cut_turned,
    "cut_bottom_half": _cut_bottom_half,
}


# A tuning-side template (the verifier's `templates`): `--families template` plants every original on
# one catalogue page layout, so two pages of different pictures are the negatives it is tuned on.
TEMPLATE: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {"page": _page}

# A tuning-side edit for the keypoint grid (DedupConfig.keypoint_grid, off by default): `--families overlay`
# plants the tuning edits with the stamp after the text overlay, as the grid was chosen on (session 36).
OVERLAY: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {"stamp": _stamp}
_TUNING = list(TRANSFORMS)

FAMILIES: dict[str, list[str]] = {"tuning": _TUNING, "heldout": list(HELDOUT), "framed": list(FRAMED),
                                  "heldout2": list(HELDOUT2), "template": list(TEMPLATE),
                                  "heldout3": list(HELDOUT3), "heldout4": list(HELDOUT4), "viewer": list(VIEWER),
                                  "degrade": list(DEGRADE), "heldout5": list(HELDOUT5),
                                  "heldout6": list(HELDOUT6), "heldout7": list(HELDOUT7), "turn": list(TURN),
                                  "heldout8": list(HELDOUT8), "stretch": list(STRETCH),
                                  "heldout9": list(HELDOUT9), "heldout10": list(HELDOUT10), "tilt": list(TILT),
                                  "heldout11": list(HELDOUT11), "heldout12": list(HELDOUT12),
                                  "heldout13": list(HELDOUT13), "heldout14": list(HELDOUT14),
                                  "heldout15": list(HELDOUT15), "heldout16": list(HELDOUT16), "sidecut": list(SIDECUT),
                                  "heldout17": list(HELDOUT17), "heldout18": list(HELDOUT18),
                                  "overlay": _TUNING[: _TUNING.index("text") + 1] + ["stamp"] + _TUNING[_TUNING.index("text") + 1:]}
FAMILY_NOTES: dict[str, str] = {
    "tuning": "the tuning edits, the only ones thresholds are chosen on",
    "heldout": "the first held-out set (never tuned on)",
    "framed": "framed held-out set: a poster, a slide",
    "heldout2": "the third held-out set (session 36)",
    "template": "tuning side: every original on one catalogue page layout",
    "heldout3": "the fourth held-out set: pictures in a web page, a TV frame grab, a phone screenshot",
    "heldout4": "the fifth: a gallery wall, a forum post, a print preview",
    "viewer": "tuning side: every original in a viewer's screen capture",
    "degrade": "tuning side: blur, grain, a tone curve, lost resolution",
    "heldout5": "the sixth: a median filter, a motion blur, a vignette with noise, posterization, pixelation",
    "heldout6": "the seventh: Rician noise, a bias field, a motion ghost, impulse noise, speckle, dithering",
    "heldout7": "the eighth: a halftone print, a quarter turn, a changed aspect ratio, interlacing, sepia, a shift",
    "turn": "tuning side: a half turn and a transpose",
    "heldout8": "the ninth: barrel distortion, scanner streaks, re-saving, a wavy page, swapped channels",
    "stretch": "tuning side: copies widened or narrowed",
    "heldout9": "the tenth: a pixelated box, underexposure, colour fringes, smoothing, a grid",
    "heldout10": "the eleventh: a third wider, a fifth taller, a fixed box, WebP, a 12 degree turn, upside down, "
                 "washed out",
    "tilt": "tuning side: prints turned on a flat bed",
    "heldout11": "the twelfth: askew scans on cream, on a noisy table and small, colour at a quarter resolution, "
                 "a caption bar",
    "heldout12": "the thirteenth: a 56 px thumbnail at quality 15, a video player's frame grab, a tiled watermark, "
                 "raised contrast, a keystone from the side, a 12-bit export's display window, a shrunk "
                 "re-compression, a corner crop shrunk, a dusty scan",
    "heldout13": "the fourteenth: a 100 px thumbnail at quality 20, an editor's capture with a toolbar, a corner "
                 "notice, lifted shadows, a keystone from above, a moire scan, a 32-colour palette, a side crop "
                 "enlarged, a sigmoid window, a 6-bit export",
    "heldout14": "the fifteenth: a 72 px nearest-neighbour thumbnail at quality 30, a gallery page's capture, a "
                 "diagonal proof mark, photon noise, an editor's levels, a corner pulled in, a window over the "
                 "bright half, a rescaled PNG, a save-shrink-save-enlarge cycle, bands cut off top and bottom",
    "heldout15": "the sixteenth: a print 15 degrees askew on a dark bed, one 4 degrees askew with a shadow, an "
                 "editor's straighten-and-crop, an 88 px bicubic thumbnail at quality 35, CLAHE, JPEG at quality 8, "
                 "pincushion distortion, a matted print, a split-tone grade, a central zoom",
    "heldout16": "the seventeenth: a print askew under a light scanner lid, one askew on black and shrunk, a phone "
                 "photo of one askew on a desk, a 48 px Hamming thumbnail at quality 35, an over-sharpened export, "
                 "a hue turn, the top 30 percent cut off, a defocus blur, rounded corners, a photocopy",
    "sidecut": "tuning side: 35 percent of the width cut off one side; 25 percent cut off one side, saved at half size",
    "heldout17": "the eighteenth: 20 percent off the left and 15 off the top, 30 off the right and 20 off the bottom "
                 "shrunk, the central half of the width, 45 percent off the top, 25 off the right and the bottom at "
                 "quality 40, a tilt-shift blur, mirrored with 15 percent off every side, 25 percent off the left "
                 "padded back with black",
    "heldout18": "the nineteenth: 35 percent off the left and 10 off the top at quality 70, the top-left 60 percent "
                 "enlarged, mirrored with 25 percent off the right at quality 50, 30 percent off the top and the left "
                 "padded back with white, 20 percent off both sides at quality 30, 30 percent off the bottom turned by "
                 "3 degrees, 40 percent off the bottom saved at half size",
    "overlay": "tuning side: the tuning edits with a stamp after the text overlay (the keypoint grid's set)",
}
"""What each planted set holds and which side of the protocol it is on (`evaluate --help` lists them)."""
ALL_TRANSFORMS = {**TRANSFORMS, **HELDOUT, **FRAMED, **HELDOUT2, **OVERLAY, **TEMPLATE, **HELDOUT3, **HELDOUT4, **VIEWER, **DEGRADE, **HELDOUT5, **HELDOUT6,
                  **HELDOUT7, **TURN, **HELDOUT8, **STRETCH, **HELDOUT9, **HELDOUT10, **TILT, **HELDOUT11,
                  **HELDOUT12, **HELDOUT13, **HELDOUT14, **HELDOUT15, **HELDOUT16, **SIDECUT, **HELDOUT17, **HELDOUT18}

EXPECTED_TIER: dict[str, Tier] = {name: (Tier.EXACT if name == "png_resave" else Tier.COPY) for name in ALL_TRANSFORMS}

_QUALITY = {"jpeg30": 30, "thumb192_q85": 85, "thumb144_q70": 70, "thumb96_q50": 50,
            "thumb128_q40": 40, "thumb64_q25": 25, "thumb32_q10": 10,
            "thumb80_q30": 30, "sharpen_q60": 60, "crop25_q50": 50,
            "viewer": 85, "webpage": 80, "tv_capture": 60, "phone": 75,
            "gallery_wall": 80, "forum_post": 85, "print_preview": 90,
            "soften_q70": 70, "downup_q80": 80, "median5_q45": 45, "box_thumb": 70, "low_contrast": 85,
            "askew_cream": 85, "chroma_q50": 50,
            "thumb56_q15": 15, "player_frame": 75, "recompress_small": 40,
            "thumb100_q20": 20, "toolbar_letterbox": 80, "requant6": 85,
            "thumb72_q30": 30, "sidebar_capture": 85, "resave_cycle": 70,
            "askew_dark": 80, "askew_shadow": 85, "thumb88_q35": 35, "jpeg_q8": 8, "matted": 85,
            "askew_lid": 85, "askew_photo": 75, "thumb48_q35": 35, "cut_br25_q40": 40,
            "cut_l35_t10_q70": 70, "cut_r25_mirror_q50": 50, "cut_sides20_q30": 30}


def save_kwargs(name: str) -> tuple[str, dict]:
    """File suffix and PIL save options for a transform's output."""
    if name in ("png_resave", "palette_png", "dither16", "palette32_png", "rescale_png"):
        return ".png", {}
    if name == "webp_q20":
        return ".webp", {"quality": 20}
    return ".jpg", {"quality": _QUALITY.get(name, 90)}
