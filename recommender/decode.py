"""Turn one file into zero or more decoded items, or a refusal with a reason.

Every refusal is a `DecodeError` whose message names the problem and what to
do, so a run can report it per file and carry on with the rest.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False


class DecodeError(Exception):
    """A file that can't become an item; `reason` is shown to the user."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class Item:
    """One embeddable image: a plain image file, or one slice/frame of a volume."""

    key: str  # stable identity within a collection: the file path, plus '#<index>' for slices
    path: str  # absolute source file path
    content_hash: str  # sha256 of the item's content (file bytes, plus the slice index)
    image: Image.Image  # RGB
    payload: dict[str, Any] = field(default_factory=dict)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of raw bytes: the identity of exact-duplicate files."""
    return hashlib.sha256(data).hexdigest()


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: transparency onto white, 16-bit scaled, CMYK/palette converted."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else arr * 0.0
        return Image.fromarray(scaled.astype("uint8"), mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def decode_image_bytes(data: bytes, path: Path | str, max_pixels: int) -> Image.Image:
    """Decode bytes of a raster image into an RGB image, EXIF orientation applied."""
    if not data:
        raise DecodeError(path, "empty file (0 bytes); re-export or remove it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit below, with a clear message
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise DecodeError(
                    path,
                    f"image is {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,} "
                    "(possible decompression bomb); raise RECOMMENDER_MAX_IMAGE_PIXELS if it is genuine",
                )
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError(path, "not a recognised image format (or not an image); remove it or convert it to JPEG/PNG")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DecodeError(path, f"corrupt or truncated image ({exc}); re-export the file") from exc


def decode_file(path: Path, max_pixels: int) -> list[Item]:
    """Read a file once, hash it, and decode it into items (raises DecodeError)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DecodeError(path, f"cannot read file ({exc.strerror or exc})") from exc
    digest = sha256_bytes(data)
    img = decode_image_bytes(data, path, max_pixels)
    payload = {"width": img.width, "height": img.height, "bytes": len(data)}
    return [Item(key=str(path), path=str(path), content_hash=digest, image=img, payload=payload)]
