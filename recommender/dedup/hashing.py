"""Per-image fingerprints: byte hash, pixel hash and flip-aware perceptual hash.

One decode per file yields everything the exact and copy tiers need, so the
fingerprint stage is a single pass over the files (parallel across processes).
The pHash follows `imagehash.phash` (the low 8x8 of the 2-D DCT of a 32x32 grey
thumbnail, thresholded at its median); we compute it from the same thumbnail
together with the hash of its mirror image, because a horizontally flipped copy
has an unrelated pHash otherwise. The thumbnail is made with Pillow's
`reducing_gap=2` (a box reduction, then Lanczos), 4x faster than a plain Lanczos
resize of the whole image and within a few bits of `imagehash.phash` (art-louvre:
median 2, max 4 of 64); the ingest computes it on the draft-decoded JPEG, which
changes it by median 0, max 4 bits against the full decode (benchmarks/embed_choices.py).
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import blake3
import numpy as np
import scipy.fftpack
from PIL import Image, ImageOps

_HASH_SIZE = 8
_IMG_SIZE = 32
# DCT-II of a mirrored signal: coefficient k is multiplied by (-1)^k
_MIRROR_SIGN = np.array([1.0 if k % 2 == 0 else -1.0 for k in range(_HASH_SIZE)])[None, :]
_BIT_WEIGHTS = (np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64))
# rows 0..7 of the unnormalised DCT-II matrix (scipy.fftpack.dct's): D @ X @ D.T is the low 8x8 of the 2-D DCT
_DCT8 = scipy.fftpack.dct(np.eye(_IMG_SIZE), axis=0)[:_HASH_SIZE]


@dataclass
class Fingerprint:
    """Everything the tiers compare about one image; cheap to keep for millions."""

    id: str
    path: str
    width: int
    height: int
    seq: float  # ingest order (timestamp or sequence); earlier wins canonical ties
    sha256: str  # of the file bytes
    pixel_hash: str  # of the decoded RGB pixels and size
    phash: int  # 64-bit pHash (imagehash.phash's definition), as an unsigned int
    phash_mirror: int  # phash of the horizontally mirrored image
    payload: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def area(self) -> int:
        return self.width * self.height


def load_rgb(data: bytes) -> Image.Image:
    """Decode bytes to RGB with EXIF orientation applied (the normalised form every tier sees)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def pixel_hash(img: Image.Image) -> str:
    """BLAKE3 of the RGB pixel array plus its size: a PNG and its lossless re-save match.

    BLAKE3, not SHA-256: it is as collision-resistant and 2.4x faster on this CPU
    (0.20 instead of 0.48 ms for a 500x500 painting), and every ingested pixel is
    hashed once, on the same cores as the model (benchmarks/embed_choices.py).
    """
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    h = blake3.blake3(f"{rgb.width}x{rgb.height}:".encode())
    h.update(np.asarray(rgb))
    return h.hexdigest()


def _bits_to_int(bits: np.ndarray) -> int:
    return int(np.bitwise_or.reduce(_BIT_WEIGHTS[bits.ravel()]) if bits.any() else 0)


def phash_pair(img: Image.Image) -> tuple[int, int]:
    """(pHash, pHash of the mirror image): imagehash.phash's definition on a reducing_gap thumbnail."""
    small = img.convert("L").resize((_IMG_SIZE, _IMG_SIZE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    pixels = np.asarray(small, dtype=np.float64)
    dct = _DCT8 @ pixels @ _DCT8.T
    mirrored = dct * _MIRROR_SIGN
    return _bits_to_int(dct > np.median(dct)), _bits_to_int(mirrored > np.median(mirrored))


def fingerprint_bytes(data: bytes, id: str, path: str, seq: float = 0.0,
                      payload: dict[str, Any] | None = None) -> Fingerprint:
    """Fingerprint one encoded image; a decode failure is recorded, not raised."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        img = load_rgb(data)
    except Exception as exc:  # PIL raises many types for bad files
        return Fingerprint(id, path, 0, 0, seq, digest, "", 0, 0, dict(payload or {}), f"{type(exc).__name__}: {exc}")
    return fingerprint_image(img, id, path, seq, payload, sha256=digest)


def fingerprint_image(img: Image.Image, id: str, path: str = "", seq: float = 0.0,
                      payload: dict[str, Any] | None = None, sha256: str | None = None) -> Fingerprint:
    """Fingerprint an already decoded image (sha256 defaults to the pixel hash: no bytes known)."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    ph, pm = phash_pair(img)
    px = pixel_hash(img)
    return Fingerprint(id, path or id, img.width, img.height, seq, sha256 or px, px, ph, pm, dict(payload or {}))


def _fingerprint_file(args: tuple[str, str, float, dict[str, Any] | None]) -> Fingerprint:
    path, id, seq, payload = args
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return Fingerprint(id, path, 0, 0, seq, "", "", 0, 0, dict(payload or {}), f"unreadable: {exc}")
    return fingerprint_bytes(data, id, path, seq, payload)


def fingerprint_files(paths: Sequence[str | os.PathLike], ids: Sequence[str] | None = None,
                      seqs: Sequence[float] | None = None, payloads: Sequence[dict[str, Any]] | None = None,
                      workers: int = 2, chunksize: int = 64) -> list[Fingerprint]:
    """Fingerprint files in order; `workers` processes (0 = this process). Ids default to paths,
    seqs to the position in `paths` (i.e. the order given is the ingest order)."""
    paths = [str(p) for p in paths]
    ids = list(ids) if ids is not None else paths
    seqs = list(seqs) if seqs is not None else [float(i) for i in range(len(paths))]
    payloads = list(payloads) if payloads is not None else [None] * len(paths)
    jobs: Iterable = zip(paths, ids, seqs, payloads)
    if workers <= 0 or len(paths) < 2 * chunksize:
        return [_fingerprint_file(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_fingerprint_file, jobs, chunksize=chunksize))


def hash_array(values: Sequence[int]) -> np.ndarray:
    """Pack 64-bit hashes into a uint64 array for vectorised Hamming distances."""
    return np.array([v & 0xFFFFFFFFFFFFFFFF for v in values], dtype=np.uint64)
