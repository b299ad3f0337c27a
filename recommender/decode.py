"""Turn one file into zero or more decoded items, or a refusal with a reason.

This is the one decode path: ingest, the API upload, dashboard thumbnails, the
medical readers, deduplication and every evaluation and benchmark decode through
it, so EXIF orientation, mode conversion and the limits are the same everywhere.
`decode_file` gives items (with hashes and payload), `load_image` just the RGB image.

Memory is bounded before any pixel is decoded: PIL opens lazily, so the header's size
and mode (after a JPEG draft, which shrinks both) give the bytes the decode and the RGB
conversion will hold (`decoded_bytes`); a file over `max_pixels` or `max_decoded_bytes`
is refused with a `DecodeLimitError`, never attempted.

Every refusal is a `DecodeError` whose message names the problem and what to
do, so a run can report it per file and carry on with the rest. Plain raster
images become one item; DICOM files and NIfTI volumes (see `medical.py`)
become one item per frame/slice, keyed `<path>#<index>`.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageMode, ImageOps, UnidentifiedImageError

from recommender import medical
from recommender import payload as P
from recommender.items import DEFAULT_MAX_DECODED_BYTES, DecodeError, DecodeLimitError, DecodeOptions, Item

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is refused, never half-embedded
# We enforce our own pixel limit (settings.max_image_pixels) before decoding, with a clear message;
# PIL's global check would raise its own error type or, below 2x, only warn.
Image.MAX_IMAGE_PIXELS = None

__all__ = ["DecodeError", "DecodeLimitError", "DecodeOptions", "Item", "decode_file", "decode_image_bytes",
           "decoded_bytes", "load_image", "sha256_bytes", "to_rgb"]

HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_SCALE_ROWS = 256  # rows scaled at a time: the float64 working copy stays small whatever the image size


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of raw bytes: the identity of exact-duplicate files."""
    return hashlib.sha256(data).hexdigest()


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map a high-bit-depth array to 0..255: full-range 16-bit data by /257, narrower data by its min-max.

    Works in row blocks so the float64 arithmetic never holds more than a block (a whole-image
    float64 copy would be 8 bytes a pixel on top of the image)."""
    lo, hi = float(arr.min()), float(arr.max())
    full_range = lo >= 0 and hi > 4095  # genuine 16-bit range (photos, scans): keep absolute brightness
    out = np.zeros(arr.shape, dtype=np.uint8)
    if hi <= lo and not full_range:
        return out
    for start in range(0, arr.shape[0], _SCALE_ROWS):
        block = arr[start:start + _SCALE_ROWS].astype(np.float64)
        if full_range:
            out[start:start + _SCALE_ROWS] = np.clip(block / 257.0, 0, 255).astype(np.uint8)
        else:  # 12-bit medical, float, signed data
            out[start:start + _SCALE_ROWS] = ((block - lo) / (hi - lo) * 255.0).round().astype(np.uint8)
    return out


def _mode_spec(mode: str) -> tuple[tuple[str, ...], int]:
    """(band names, bytes per band) of a PIL mode; an unknown mode counts as four 1-byte bands."""
    try:
        spec = ImageMode.getmode(mode)
    except KeyError:
        return ("?", "?", "?", "?"), 1
    return tuple(spec.bands), np.dtype(spec.typestr).itemsize


def _stored_bytes_per_pixel(mode: str) -> int:
    """Bytes PIL keeps per pixel: the band size for one-band modes (1 for '1'/'L'/'P', 2 for 'I;16',
    4 for 'I'/'F'), and 4 for every multi-band mode (PIL pads RGB and LA to four bytes)."""
    bands, band_bytes = _mode_spec(mode)
    return band_bytes if len(bands) == 1 else 4


def _conversion_bytes_per_pixel(img: Image.Image, stored: int, grey: bool) -> int:
    """Bytes a pixel `to_rgb` (and a grey request) allocates on top of the decoded image."""
    mode, transparent = img.mode, "transparency" in img.info
    if (mode == "RGB" and not transparent) or (grey and mode == "L"):
        return 0
    if mode in HIGH_BIT_MODES:
        work = stored + 1 + 1 + 4  # numpy copy, uint8 result, its "L" image, RGB
    elif transparent or any(band in ("A", "a") for band in _mode_spec(mode)[0]):
        work = 4 * 4  # RGBA, white background, composite, RGB
    else:
        work = 4  # L, 1, P, CMYK, YCbCr, ... -> RGB
    return work + (1 if grey else 0)


def decoded_bytes(img: Image.Image, grey: bool = False) -> int:
    """Peak bytes decoding an opened (not yet loaded) image holds: its pixels as PIL stores them
    in the mode it decodes to, plus the conversion to RGB (or grey) the pipeline does.

    Counted from the header only, so a bomb is refused before any pixel exists; mode-aware
    because a 1-bit PNG of a few KB decodes to 1 byte a pixel and its RGB copy to 4 more."""
    w, h = img.size
    stored = _stored_bytes_per_pixel(img.mode)
    return w * h * (stored + _conversion_bytes_per_pixel(img, stored, grey))


def _check_pixels(img: Image.Image, path: Path | str, opts: DecodeOptions) -> None:
    """Refuse (DecodeLimitError) an image whose stored size is over the pixel limit, before it is decoded."""
    w, h = img.size
    if w * h > opts.max_pixels:
        raise DecodeLimitError(
            path,
            f"image is {w}x{h} = {w * h:,} pixels, above the limit of {opts.max_pixels:,} "
            "(possible decompression bomb); raise RECOMMENDER_MAX_IMAGE_PIXELS if it is genuine",
        )


def _check_bytes(img: Image.Image, path: Path | str, size: int, opts: DecodeOptions) -> None:
    """Refuse (DecodeLimitError) an image whose decode would hold more than `max_decoded_bytes`."""
    w, h = img.size
    need = decoded_bytes(img, opts.grey)
    if need > opts.max_decoded_bytes:
        raise DecodeLimitError(
            path,
            f"a {size:,}-byte file that decodes to {w}x{h} mode {img.mode!r} would need {need:,} bytes of memory, "
            f"above the limit of {opts.max_decoded_bytes:,} (possible decompression bomb); "
            "raise RECOMMENDER_MAX_DECODED_BYTES if it is genuine",
        )


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
        img = Image.open(io.BytesIO(data))  # lazy: header only, no pixels yet
        w, h = img.size
        _check_pixels(img, path, opts)
        ds = opts.draft_size
        size = (ds, ds) if ds and min(w, h) >= 2 * ds else None  # reduced DCT scale, both sides stay >= ds
        if img.format == "JPEG" and (size or opts.grey):
            img.draft("L" if opts.grey else None, size)  # one call: PIL ignores a second
        _check_bytes(img, path, len(data), opts)  # after the draft: its reduced size and mode are what decodes
        img.load()
        orientation = img.getexif().get(0x0112, 1)
        ImageOps.exif_transpose(img, in_place=True)  # no copy when there is nothing to rotate
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


def decode_image_bytes(data: bytes, path: Path | str, max_pixels: int, draft_size: int | None = None,
                       max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> Image.Image:
    """Decode bytes of a raster image into an RGB image, EXIF orientation applied.

    For uploads: pass the model's decode size as `draft_size` so a big JPEG decodes at a
    reduced scale and any other format is box-reduced to it right after decoding (the
    model's own resize would otherwise copy the full-size image twice more), and the
    settings' `max_decoded_bytes` so a bomb is refused unread."""
    opts = DecodeOptions(max_pixels=max_pixels, draft_size=draft_size, max_decoded_bytes=max_decoded_bytes)
    image = _decode(data, path, opts)[0]
    return _reduce_to(image, draft_size) if draft_size else image


def _reduce_to(img: Image.Image, short_side: int) -> Image.Image:
    """Box-reduce by the largest integer factor that keeps the short side >= `short_side` (as a draft does)."""
    factor = min(img.size) // short_side
    return img.reduce(factor) if factor >= 2 else img


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
    items = _items(Path(path), options or DecodeOptions())
    grey = options is not None and options.grey
    for item in items:
        if key is None or key == str(path) or item.key == key:
            img = item.image.convert("L") if grey and item.image.mode != "L" else item.image
            return img.copy() if img is item.image and len(items) > 1 else img  # a kept volume's slice stays as it is
    raise DecodeError(path, f"has no item {key!r} (it decodes to {len(items)} items); re-ingest the file")


VOLUME_CACHE_BYTES = 256 * 2**20
"""Pixels `load_image` keeps of volume files (.nii, .nii.gz, .dcm) that decode to several items (a NIfTI volume,
a multi-frame DICOM).
Why: the verifier, the cut-outs and the dashboard ask for one slice at a time, and each call decoded the whole
volume again (146 slices to hand out one), so a volume's dedupe on ingest cost slices x volume decodes.
Kept by file identity (path, size, mtime) and decode options, least recently used out first; a volume larger
than the whole budget is decoded each time, as before."""

_volumes: "OrderedDict[tuple, tuple[list[Item], int]]" = OrderedDict()
_volumes_lock = threading.Lock()  # the cache's bookkeeping
_volume_decode = threading.Lock()  # one volume decoded at a time: threads asking for its slices at once wait for it


def _items(path: Path, options: DecodeOptions) -> list[Item]:
    """`decode_file`'s items, from `_volumes` when the file is a volume decoded before and not changed since.
    Other files (one item each; a multi-frame DICOM not named .dcm is decoded each time) cost no stat."""
    if not str(path).lower().endswith(medical.DICOM_SUFFIXES + medical.NIFTI_SUFFIXES):
        return decode_file(path, options=options)
    try:
        st = path.stat()
    except OSError:
        return decode_file(path, options=options)  # decode_file says why it cannot be read
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, options)
    with _volume_decode:
        return _cached(key) or _remember(key, decode_file(path, options=options))


def _cached(key: tuple) -> list[Item] | None:
    with _volumes_lock:
        hit = _volumes.get(key)
        if hit is not None:
            _volumes.move_to_end(key)
        return hit[0] if hit is not None else None


def _remember(key: tuple, items: list[Item]) -> list[Item]:
    """Keep a multi-item file's items within `VOLUME_CACHE_BYTES`, evicting the least recently used."""
    if len(items) < 2:
        return items
    size = sum(len(it.image.getbands()) * it.image.width * it.image.height for it in items)
    if size > VOLUME_CACHE_BYTES:
        return items
    with _volumes_lock:
        _volumes[key] = (items, size)
        while sum(s for _, s in _volumes.values()) > VOLUME_CACHE_BYTES:
            _volumes.popitem(last=False)
    return items

