"""Turn one file into zero or more decoded items, or a refusal with a reason.

Every refusal is a `DecodeError` whose message names the problem and what to
do, so a run can report it per file and carry on with the rest. Plain raster
images become one item; DICOM files and NIfTI volumes (see `medical.py`)
become one item per frame/slice, keyed `<path>#<index>`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is refused, never half-embedded
# We enforce our own pixel limit (settings.max_image_pixels) before decoding, with a clear message;
# PIL's global check would raise its own error type or, below 2x, only warn.
Image.MAX_IMAGE_PIXELS = None


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
    content_hash: str  # sha256 of the item's content (file bytes, plus ':<index>' for slices)
    image: Image.Image  # RGB
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DecodeOptions:
    """How files are decoded; built from Settings by the pipeline.

    draft_size: smallest short side the model resizes to; JPEGs at least
    twice that are decoded at a reduced DCT scale (1/2, 1/4, 1/8) that still
    covers it, so the model never sees an upsampled image. (Letting the draft
    go below the resize size, down to the crop, was measured and refused:
    genre precision@10 on art-louvre fell from 0.892 to 0.883.) None = full size.
    """

    max_pixels: int = 100_000_000
    draft_size: int | None = None
    volume_axis: int = 2
    volume_min_foreground: float = 0.01


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of raw bytes: the identity of exact-duplicate files."""
    return hashlib.sha256(data).hexdigest()


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map a high-bit-depth array to 0..255: full-range 16-bit data by /257, narrower data by its min-max."""
    arr = arr.astype(np.float64, copy=False)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0 and hi > 4095:  # genuine 16-bit range (photos, scans): keep absolute brightness
        return np.clip(arr / 257.0, 0, 255).astype(np.uint8)
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return ((arr - lo) / (hi - lo) * 255.0).round().astype(np.uint8)  # 12-bit medical, float, signed data


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: transparency onto white, 16-bit/float scaled, CMYK/palette/grey converted."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(img))).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    elif img.mode in ("L", "1") and "transparency" in img.info:
        img = img.convert("LA")
    elif img.mode == "RGB" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")  # L, 1, CMYK (Adobe inversion handled by PIL), YCbCr, LAB, HSV
    return img


def _decode(data: bytes, path: Path | str, max_pixels: int, draft_size: int | None) -> tuple[Image.Image, int, int]:
    """Decode raster bytes; returns (RGB image, original width, original height) after EXIF orientation."""
    if not data:
        raise DecodeError(path, "empty file (0 bytes); re-export or remove it")
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > max_pixels:
            raise DecodeError(
                path,
                f"image is {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,} "
                "(possible decompression bomb); raise RECOMMENDER_MAX_IMAGE_PIXELS if it is genuine",
            )
        if draft_size and img.format == "JPEG" and min(w, h) >= 2 * draft_size:
            img.draft(None, (draft_size, draft_size))  # reduced DCT scale, both sides stay >= draft_size
        img.load()
        orientation = img.getexif().get(0x0112, 1)
        img = ImageOps.exif_transpose(img)
        if orientation in (5, 6, 7, 8):
            w, h = h, w
        return to_rgb(img), w, h
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError(path, "not a recognised image format (or not an image); remove it or convert it to JPEG/PNG")
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise DecodeError(path, f"corrupt or truncated image ({exc}); re-export the file") from exc


def decode_image_bytes(data: bytes, path: Path | str, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Decode bytes of a raster image into an RGB image, EXIF orientation applied."""
    return _decode(data, path, max_pixels, draft_size)[0]


def decode_file(path: Path, max_pixels: int | None = None, options: DecodeOptions | None = None) -> list[Item]:
    """Read a file once, hash it, and decode it into items (raises DecodeError).

    Dispatches on content and suffix: DICOM (`.dcm` or the DICM magic) and
    NIfTI (`.nii`, `.nii.gz`) go to `recommender.medical`; everything else
    is treated as a raster image.
    """
    opts = options or DecodeOptions()
    if max_pixels is not None and max_pixels != opts.max_pixels:
        opts = DecodeOptions(max_pixels, opts.draft_size, opts.volume_axis, opts.volume_min_foreground)
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DecodeError(path, f"cannot read file ({exc.strerror or exc})") from exc
    from recommender import medical

    kind = medical.sniff(path, data)
    if kind == "dicom":
        return medical.decode_dicom(path, data, opts)
    if kind == "nifti":
        return medical.decode_nifti(path, data, opts)
    img, w, h = _decode(data, path, opts.max_pixels, opts.draft_size)
    payload = {"width": w, "height": h, "bytes": len(data)}
    return [Item(key=str(path), path=str(path), content_hash=sha256_bytes(data), image=img, payload=payload)]
