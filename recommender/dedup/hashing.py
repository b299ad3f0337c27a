"""Per-image fingerprints: byte hash, pixel hash and flip-aware perceptual hash.

One decode per file yields everything the exact and copy tiers need, so the
fingerprint stage is a single pass over the files (parallel across processes).
Files are decoded by `recommender.decode` with the caller's options, and each
item's fingerprint goes through the payload fields ingest stores
(`fingerprint_payload`, read back by `fingerprint_of`): the engine, the evaluation
and the store all compare exactly what ingest computed.

The pHash follows `imagehash.phash` (the low 8x8 of the 2-D DCT of a 32x32 grey
thumbnail, thresholded at its median); we compute it from the same thumbnail
together with the hashes of its mirror image and of its three quarter turns, because a
flipped or turned copy has an unrelated pHash otherwise. The thumbnail is made with Pillow's
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
from recommender.dedup.frames import askew_picture, picture_frame

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
    # a picture on a flat background with text or a panel beside it (a decorated frames.Frame), or lying askew
    # on it (`tilt`): cut out and searched (`DedupEngine.cut_outs`); between bars alone the model sees the
    # picture, and no cut-out is made. In the pixels of `width` x `height` (the file's, not a JPEG draft's)
    frame: tuple[int, int, int, int] | None = None
    phash_turns: tuple[int, ...] = ()  # pHashes of the image turned by 90, 180 and 270 degrees (`phash_turns`)
    tilt: float = 0.0  # degrees `frame`'s picture lies askew by (`frames.askew_picture`); 0: upright

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


def _low_dct(img: Image.Image) -> np.ndarray:
    small = (img if img.mode == "L" else img.convert("L")).resize((_IMG_SIZE, _IMG_SIZE), Image.Resampling.LANCZOS,
                                                                  reducing_gap=2.0)
    return _DCT8 @ np.asarray(small, dtype=np.float64) @ _DCT8.T


def _bits(dct: np.ndarray) -> int:
    return _bits_to_int(dct > np.median(dct))


def phash_pair(img: Image.Image) -> tuple[int, int]:
    """(pHash, pHash of the mirror image): imagehash.phash's definition on a reducing_gap thumbnail."""
    dct = _low_dct(img)
    return _bits(dct), _bits(dct * _MIRROR_SIGN)


def phash_turns(img: Image.Image) -> tuple[int, int, int]:
    """pHashes of the image turned by a quarter, a half and three quarters (counter-clockwise, as
    `np.rot90` with k = 1, 2, 3), from the same DCT: a turn is a transpose and a mirror, and the DCT of a
    mirrored axis changes the sign of its odd coefficients.

    Why: a scan saved turned has an unrelated pHash and, for the model, another picture (heldout7's quarter
    turns: copy recall 0.39 on art-louvre), while every turned art-louvre or brain-mri copy turned back is
    within 2 bits of its original; so a pair within `phash_strict` bits of a turn is a candidate, and ORB,
    which does not care how a copy is turned, verifies it."""
    dct = _low_dct(img)
    return _turned(dct)


def _turned(dct: np.ndarray) -> tuple[int, int, int]:
    rows = _MIRROR_SIGN.T  # (-1)^k down the rows: the DCT of an image flipped upside down
    return _bits((dct * _MIRROR_SIGN).T), _bits(dct * rows * _MIRROR_SIGN), _bits(dct.T * _MIRROR_SIGN)


def fingerprint_image(img: Image.Image, id: str, path: str = "", seq: float = 0.0,
                      payload: dict[str, Any] | None = None, sha256: str | None = None) -> Fingerprint:
    """Fingerprint an already decoded image (sha256 defaults to the pixel hash: no bytes known)."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    grey = img.convert("L")
    dct = _low_dct(grey)
    px = pixel_hash(img)
    g = np.asarray(grey)
    found = picture_frame(g)
    box = found.box if found is not None and found.decorated else None  # bars alone: the model sees the picture
    askew = askew_picture(g) if box is None else None  # a print scanned askew
    box, tilt = askew if askew is not None else (box, 0.0)
    frame = None if box is None else (max(0, int(box[0])), max(0, int(box[1])), min(img.width, int(np.ceil(box[2]))),
                                      min(img.height, int(np.ceil(box[3]))))
    return Fingerprint(id, path or id, img.width, img.height, seq, sha256 or px, px, _bits(dct),
                       _bits(dct * _MIRROR_SIGN), dict(payload or {}), frame=frame, phash_turns=_turned(dct),
                       tilt=round(tilt, 2))


def fingerprint_payload(img: Image.Image, sha256: str, size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Payload fields the tiers compare later: pixel hash and (mirror) pHash as hex strings, and where a
    picture lies in its frame, in the pixels of `size` (the stored width and height; a JPEG draft decodes
    `img` smaller, and the cut-out is taken at the stored size's scale)."""
    fp = fingerprint_image(img, "", sha256=sha256)
    out = {P.PIXEL_HASH: fp.pixel_hash, P.PHASH: f"{fp.phash:016x}", P.PHASH_MIRROR: f"{fp.phash_mirror:016x}",
           P.PHASH_TURNS: "".join(f"{t:016x}" for t in fp.phash_turns)}
    if fp.frame is not None:
        rx, ry = (size[0] / img.width, size[1] / img.height) if size and min(size) > 0 else (1.0, 1.0)
        out[P.FRAME] = [round(fp.frame[0] * rx), round(fp.frame[1] * ry), round(fp.frame[2] * rx), round(fp.frame[3] * ry)]
    if fp.tilt:
        out[P.FRAME_TILT] = fp.tilt
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
        phash_turns=_turns_of(str(payload.get(P.PHASH_TURNS, ""))),
        tilt=float(payload.get(P.FRAME_TILT) or 0.0),
    )


def _turns_of(text: str) -> tuple[int, ...]:
    """The three turned pHashes of a payload, () for a point stored before they were (its turns unknown)."""
    return tuple(int(text[k:k + 16], 16) for k in range(0, 48, 16)) if len(text) == 48 else ()


def hash_variants(items: Sequence[Fingerprint]) -> np.ndarray:
    """(n, 4) uint64: each item's pHash and its three turned pHashes (`phash_turns`; the pHash again where
    they are unknown), so a distance can take the least over an item's turns."""
    rows = [(it.phash, *(it.phash_turns if len(it.phash_turns) == 3 else (it.phash,) * 3)) for it in items]
    return np.array([[v & 0xFFFFFFFFFFFFFFFF for v in r] for r in rows], dtype=np.uint64).reshape(len(rows), 4)


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
                  **fingerprint_payload(item.image, item.content_hash, stored_size(item.payload))}
        fp = fingerprint_of(id if len(items) == 1 else id + item.key.removeprefix(prefix), stored)
        fp.seq = seq
        fp.payload.update(payload or {})
        out.append(fp)
    return out


def stored_size(payload: dict[str, Any]) -> tuple[int, int] | None:
    """The width and height decode stored for an item (its file's, before any JPEG draft), if known."""
    w, h = payload.get(P.WIDTH), payload.get(P.HEIGHT)
    return (int(w), int(h)) if w and h else None


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

    def pairs(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query index, row) for every row within `radius` bits of each of `queries`, all in one pass:
        each block's buckets found by one search of the sorted query keys, their rows checked at once
        (3M queries against 1M rows: seconds, not the minutes of one `within` per query)."""
        q = np.asarray(queries, np.uint64)
        qi, rows = [], []
        for shift, w, keys, order in self.blocks:
            key = (q >> np.uint64(shift)) & np.uint64((1 << w) - 1)
            by_key = np.argsort(key, kind="stable")  # sorted queries: the search walks `keys` in order
            lo = np.searchsorted(keys, key[by_key], "left")
            n = np.searchsorted(keys, key[by_key], "right") - lo
            at = np.repeat(by_key, n)
            found = order[np.arange(int(n.sum())) + np.repeat(lo - (np.cumsum(n) - n), n)]
            close = np.bitwise_count(self.hashes[found] ^ q[at]) <= self.radius
            qi.append(at[close])
            rows.append(found[close])
        if not qi:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        # a pair close enough to share two blocks was found twice
        code = np.unique(np.concatenate(qi).astype(np.int64) * max(1, len(self.hashes)) + np.concatenate(rows))
        return np.divmod(code, max(1, len(self.hashes)))

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
