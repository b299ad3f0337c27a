"""Turn one file into zero or more decoded items, or a refusal with a reason.

This is the one decode path: ingest, the API upload, dashboard thumbnails, the
medical readers, deduplication and every evaluation and benchmark decode through
it, so EXIF orientation, mode conversion and the pixel limit are the same everywhere.
`decode_file` gives items (with hashes and payload), `load_image` just the RGB image.

Every refusal is a `DecodeError` whose message names the problem and what to
do, so a run can report it per file and carry on with the rest. Plain raster
images become one item; DICOM files and NIfTI volumes (see `medical.py`)
become one item per frame/slice, keyed `<path>#<index>`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from recommender import medical
from recommender import payload as P
from recommender.items import DecodeError, DecodeOptions, Item

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is refused, never half-embedded
# We enforce our own pixel limit (settings.max_image_pixels) before decoding, with a clear message;
# PIL's global check would raise its own error type or, below 2x, only warn.
Image.MAX_IMAGE_PIXELS = None

__all__ = ["DecodeError", "DecodeOptions", "Item", "decode_file", "decode_image_bytes", "load_image", "sha256_bytes",
           "to_rgb"]


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


def _decode(data: bytes, path: Path | str, opts: DecodeOptions) -> tuple[Image.Image, int, int]:
    """Decode raster bytes; returns (RGB or grey image, original width, original height) after EXIF orientation."""
    if not data:
        raise DecodeError(path, "empty file (0 bytes); re-export or remove it")
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > opts.max_pixels:
            raise DecodeError(
                path,
                f"image is {w}x{h} = {w * h:,} pixels, above the limit of {opts.max_pixels:,} "
                "(possible decompression bomb); raise RECOMMENDER_MAX_IMAGE_PIXELS if it is genuine",
            )
        ds = opts.draft_size
        size = (ds, ds) if ds and min(w, h) >= 2 * ds else None  # reduced DCT scale, both sides stay >= ds
        if img.format == "JPEG" and (size or opts.grey):
            img.draft("L" if opts.grey else None, size)  # one call: PIL ignores a second
        img.load()
        orientation = img.getexif().get(0x0112, 1)
        img = ImageOps.exif_transpose(img)
        if orientation in (5, 6, 7, 8):
            w, h = h, w
        rgb = img if opts.grey and img.mode == "L" else to_rgb(img)
        return (rgb.convert("L") if opts.grey else rgb), w, h
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError(path, "not a recognised image format (or not an image); remove it or convert it to JPEG/PNG")
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise DecodeError(path, f"corrupt or truncated image ({exc}); re-export the file") from exc


def decode_image_bytes(data: bytes, path: Path | str, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Decode bytes of a raster image into an RGB image, EXIF orientation applied."""
    return _decode(data, path, DecodeOptions(max_pixels=max_pixels, draft_size=draft_size))[0]


def decode_file(path: Path, max_pixels: int | None = None, options: DecodeOptions | None = None) -> list[Item]:
    """Read a file once, hash it, and decode it into items (raises DecodeError).

    Dispatches on content and suffix: DICOM (`.dcm` or the DICM magic) and
    NIfTI (`.nii`, `.nii.gz`) go to `recommender.medical`; everything else
    is treated as a raster image.
    """
    opts = options or DecodeOptions()
    if max_pixels is not None and max_pixels != opts.max_pixels:
        opts = replace(opts, max_pixels=max_pixels)
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DecodeError(path, f"cannot read file ({exc.strerror or exc})") from exc
    kind = medical.sniff(path, data)
    if kind == "dicom":
        return medical.decode_dicom(path, data, opts)
    if kind == "nifti":
        return medical.decode_nifti(path, data, opts)
    img, w, h = _decode(data, path, opts)
    payload = {P.WIDTH: w, P.HEIGHT: h, P.BYTES: len(data)}
    return [Item(key=str(path), path=str(path), content_hash=sha256_bytes(data), image=img, payload=payload)]


def load_image(path: Path | str, options: DecodeOptions | None = None, key: str | None = None) -> Image.Image:
    """The RGB (or `options.grey`) image of a file's first item, or of its item `key` (a slice or frame),
    decoded as ingest does.

    For callers that need pixels rather than items: dedup fingerprints and verification,
    report and dashboard thumbnails, evaluation planting. Raises DecodeError.
    """
    items = decode_file(Path(path), options=options)
    grey = options is not None and options.grey
    for item in items:
        if key is None or key == str(path) or item.key == key:
            return item.image.convert("L") if grey and item.image.mode != "L" else item.image
    raise DecodeError(path, f"has no item {key!r} (it decodes to {len(items)} items); re-ingest the file")
