"""Per-image fingerprints: byte hash, pixel hash and flip-aware perceptual hash.

One decode per file yields everything the exact and copy tiers need, so the
fingerprint stage is a single pass over the files (parallel across processes).
Files are decoded by `recommender.decode` with the caller's options, and each
item's fingerprint goes through the payload fields ingest stores
(`fingerprint_payload`, read back by `fingerprint_of`): the engine, the evaluation
and the store all compare exactly what ingest computed.

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

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import blake3
import numpy as np
import scipy.fftpack
from PIL import Image

from recommender import payload as P
from recommender.decode import DecodeError, DecodeOptions, decode_file
from recommender.dedup.frames import picture_frame

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
    key: str = ""  # the decoded item's key when it is a slice or frame of `path` ('' = the file itself)
    volume: str = ""  # series (DICOM SeriesInstanceUID, NIfTI file) a slice belongs to ('' = not a slice)
    slice_index: int = -1
    bytes: int = 0  # size of the file: at one resolution, more bytes per pixel = less compressed
    # a picture on a flat background with text or a panel beside it (a decorated frames.Frame): cut out and
    # searched (`DedupEngine.cut_outs`); between bars alone the model sees the picture, and no cut-out is made
    frame: tuple[int, int, int, int] | None = None

    @property
    def area(self) -> int:
        return self.width * self.height

    @property
    def bits_per_pixel(self) -> float:
        """File bits per decoded pixel (0 when unknown): the canonical policy's compression measure."""
        return self.bytes * 8 / self.area if self.bytes > 0 and self.area > 0 else 0.0


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
    small = (img if img.mode == "L" else img.convert("L")).resize((_IMG_SIZE, _IMG_SIZE), Image.Resampling.LANCZOS,
                                                                  reducing_gap=2.0)
    pixels = np.asarray(small, dtype=np.float64)
    dct = _DCT8 @ pixels @ _DCT8.T
    mirrored = dct * _MIRROR_SIGN
    return _bits_to_int(dct > np.median(dct)), _bits_to_int(mirrored > np.median(mirrored))


def fingerprint_image(img: Image.Image, id: str, path: str = "", seq: float = 0.0,
                      payload: dict[str, Any] | None = None, sha256: str | None = None) -> Fingerprint:
    """Fingerprint an already decoded image (sha256 defaults to the pixel hash: no bytes known)."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    grey = img.convert("L")
    ph, pm = phash_pair(grey)
    px = pixel_hash(img)
    found = picture_frame(np.asarray(grey))
    box = found.box if found is not None and found.decorated else None  # bars alone: the model sees the picture
    frame = None if box is None else (int(box[0]), int(box[1]), int(np.ceil(box[2])), int(np.ceil(box[3])))
    return Fingerprint(id, path or id, img.width, img.height, seq, sha256 or px, px, ph, pm, dict(payload or {}),
                       frame=frame)


def fingerprint_payload(img: Image.Image, sha256: str) -> dict[str, Any]:
    """Payload fields the tiers compare later: pixel hash and (mirror) pHash as hex strings."""
    fp = fingerprint_image(img, "", sha256=sha256)
    out = {P.PIXEL_HASH: fp.pixel_hash, P.PHASH: f"{fp.phash:016x}", P.PHASH_MIRROR: f"{fp.phash_mirror:016x}"}
    if fp.frame is not None:
        out[P.FRAME] = list(fp.frame)
    return out


def fingerprint_of(pid: str, payload: dict[str, Any]) -> Fingerprint:
    """Rebuild an item's fingerprint from its stored payload (no image needed)."""
    path = str(payload.get(P.PATH, pid))
    key = str(payload.get(P.ITEM_KEY, ""))
    return Fingerprint(
        id=pid, path=path, width=int(payload.get(P.WIDTH, 0)),
        height=int(payload.get(P.HEIGHT, 0)), seq=float(payload.get(P.INGESTED_AT, 0.0)),
        sha256=str(payload.get(P.SHA256, "")), pixel_hash=str(payload.get(P.PIXEL_HASH, "")),
        phash=int(payload.get(P.PHASH, "0"), 16), phash_mirror=int(payload.get(P.PHASH_MIRROR, "0"), 16),
        payload={k: v for k, v in payload.items() if k in P.GROUP_FIELDS},
        error=None if P.PHASH in payload else "no fingerprint in payload (ingested before deduplication)",
        key="" if key == path else key,
        volume=str(payload.get(P.SERIES) or payload.get(P.VOLUME) or "") if P.SLICE_INDEX in payload else "",
        slice_index=int(payload.get(P.SLICE_INDEX, -1)),
        bytes=int(payload.get(P.BYTES, 0) or 0),
        frame=tuple(int(v) for v in payload[P.FRAME]) if len(payload.get(P.FRAME) or ()) == 4 else None,
    )


def fingerprint_file(path: str | os.PathLike, id: str | None = None, seq: float = 0.0,
                     payload: dict[str, Any] | None = None,
                     options: DecodeOptions | None = None) -> list[Fingerprint]:
    """Fingerprints of a file's items, computed as ingest computes them (decode, then the payload fields).

    A plain image is one item with id `id`; a DICOM file or NIfTI volume gives one per
    frame/slice, ids `<id>#<index>`. A file that can't be decoded gives one fingerprint
    with `error` set (the reason), so a run reports it and carries on.
    """
    name = str(path)
    id = id or name
    try:
        items = decode_file(Path(name), options=options)
    except DecodeError as exc:
        return [Fingerprint(id, name, 0, 0, seq, "", "", 0, 0, dict(payload or {}), exc.reason)]
    prefix = str(Path(name))
    out = []
    for item in items:
        stored = {**item.payload, P.PATH: name, P.ITEM_KEY: item.key, P.SHA256: item.content_hash,
                  **fingerprint_payload(item.image, item.content_hash)}
        fp = fingerprint_of(id if len(items) == 1 else id + item.key.removeprefix(prefix), stored)
        fp.seq = seq
        fp.payload.update(payload or {})
        out.append(fp)
    return out


def _fingerprint_job(job: tuple[str, str, float, dict[str, Any] | None, DecodeOptions | None]) -> list[Fingerprint]:
    return fingerprint_file(*job)


def fingerprint_files(paths: Sequence[str | os.PathLike], ids: Sequence[str] | None = None,
                      seqs: Sequence[float] | None = None, payloads: Sequence[dict[str, Any]] | None = None,
                      workers: int = 2, chunksize: int = 64,
                      options: DecodeOptions | None = None) -> list[Fingerprint]:
    """Fingerprint files in order (`fingerprint_file` each); `workers` processes (0 = this process).

    Ids default to paths, seqs to the position in `paths` (i.e. the order given is the ingest order).
    """
    paths = [str(p) for p in paths]
    ids = list(ids) if ids is not None else paths
    seqs = list(seqs) if seqs is not None else [float(i) for i in range(len(paths))]
    payloads = list(payloads) if payloads is not None else [None] * len(paths)
    jobs: Iterable = zip(paths, ids, seqs, payloads, [options] * len(paths))
    if workers <= 0 or len(paths) < 2 * chunksize:
        return [fp for job in jobs for fp in _fingerprint_job(job)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [fp for fps in pool.map(_fingerprint_job, jobs, chunksize=chunksize) for fp in fps]


def hash_array(values: Sequence[int]) -> np.ndarray:
    """Pack 64-bit hashes into a uint64 array for vectorised Hamming distances."""
    return np.array([v & 0xFFFFFFFFFFFFFFFF for v in values], dtype=np.uint64)


class HashIndex:
    """Rows of 64-bit hashes within a few bits of a query, without a pass over every row.

    Multi-index hashing: split into radius + 1 blocks, two hashes within `radius` bits agree
    exactly on at least one block (pigeonhole), so each block's sorted values narrow the rows to
    check to those sharing one. Why: dedupe on ingest asks, per new item, for the stored points
    within `phash_strict` bits; a full XOR pass costs 1.25 s per chunk of 512 at 1M stored points,
    the index 0.03 s (benchmarks/hash_lookup.py)."""

    def __init__(self, hashes: np.ndarray, radius: int):
        self.hashes = np.asarray(hashes, np.uint64)
        self.radius = radius
        widths = [64 // (radius + 1) + (k < 64 % (radius + 1)) for k in range(radius + 1)]
        self.blocks = []
        shift = 0
        for w in widths:
            keys = (self.hashes >> np.uint64(shift)) & np.uint64((1 << w) - 1)
            order = np.argsort(keys, kind="stable")
            self.blocks.append((shift, w, keys[order], order))
            shift += w

    def within(self, query: int) -> np.ndarray:
        """Sorted row indices whose hash is within `radius` bits of `query`."""
        q = np.uint64(query & 0xFFFFFFFFFFFFFFFF)
        found = []
        for shift, w, keys, order in self.blocks:
            key = (q >> np.uint64(shift)) & np.uint64((1 << w) - 1)
            lo, hi = np.searchsorted(keys, key, "left"), np.searchsorted(keys, key, "right")
            found.append(order[lo:hi])
        rows = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
        return rows[np.bitwise_count(self.hashes[rows] ^ q) <= self.radius]
