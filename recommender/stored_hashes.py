"""The perceptual hashes of a collection's stored points, for the thumbnail pairs an ingest must find.

The model sees a 32-128 px thumbnail as a blur (cosine 0.4-0.7 to its original), so the store's
nearest neighbours of a thumbnail are other blurs and its original is not among them; its pHash,
made from a 32 x 32 reduction, stays within a few bits. The batch sweep finds such pairs by pHash
(`tiers.small_candidates`); an ingest meets the stored collection only through the store, so it
needs the stored hashes too. The same holds for any copy within `phash_strict` bits whose cosine
noise or grain pulled below the store's nearest neighbours (session 41): the batch sweep finds it by
pHash, so ingest asks the stored hashes for it as well. They are read once per ingest, and only when a
batch needs them: the stored small images (by the indexed width and height) when a batch has only
large ones and no strict radius is asked, every stored point otherwise. The batches the ingest assigns
are added as they go.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from recommender import payload as P
from recommender.dedup import Fingerprint
from recommender.dedup.hashing import HashIndex, hash_array
from recommender.store import VectorStore


def _side(width: int, height: int) -> int:
    return min(int(width or 0), int(height or 0))


class StoredHashes:
    """(id, pHash, mirrored pHash, shorter side) of the stored points, loaded on first use."""

    def __init__(self, store: VectorStore, small_side: int, page: int = 1024):
        self.store = store
        self.small_side = small_side
        self.page = page
        self.loaded: str | None = None  # None, "small" (the stored small images only) or "all"
        self.ids: list[str] = []
        self._known: set[str] = set()
        self._rows: list[tuple[int, int, int]] = []
        self._pending: list[tuple[str, int, int, int]] = []  # this ingest's items, kept for a later load
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._index: tuple[HashIndex, HashIndex | None, int] | None = None  # (pHashes, mirrored, rows indexed)

    def add(self, items: Sequence[Fingerprint]) -> None:
        """This ingest's new items: stored (or about to be) by the time a later batch asks."""
        for it in items:
            if not it.error:
                row = (it.id, it.phash, it.phash_mirror, _side(it.width, it.height))
                if self.loaded == "all":
                    self._put(*row)  # nothing left to load: no need to keep it for later
                    continue
                self._pending.append(row)
                if self.loaded == "small" and 0 < row[3] < self.small_side:
                    self._put(*row)

    def near(self, items: Sequence[Fingerprint], max_distance: int, flip_invariant: bool, limit: int,
             skip: set[str] = frozenset(), strict: int = -1) -> list[tuple[int, str, int]]:
        """(item index, stored id, distance) for stored points within `max_distance` bits of an item
        where either side is small, or within `strict` bits whatever their sizes, at most `limit` per
        item, nearest first."""
        is_small = [not it.error and 0 < _side(it.width, it.height) < self.small_side for it in items]
        if not any(not it.error for it in items):
            return []
        self._load("all" if any(is_small) or strict >= 0 else "small")
        h, m, side = self._as_arrays()
        rows = {True: np.arange(len(h)), False: np.flatnonzero((side > 0) & (side < self.small_side))}
        out: list[tuple[int, str, int]] = []
        for q, it in enumerate(items):
            if it.error:
                continue
            k = rows[is_small[q]]  # a small item against every stored point, a large one against the small ones
            strict_here = strict >= 0 and not is_small[q]
            # a copy saved turned (`hashing.phash_turns`): looked up at the strict radius only
            turned = it.phash_turns if flip_invariant and strict_here else ()
            if strict_here:
                for v in (it.phash, *turned):
                    k = np.union1d(k, self._within(v, strict, flip_invariant))
            d = np.bitwise_count(h[k] ^ np.uint64(it.phash)).astype(np.int64)
            if flip_invariant:
                d = np.minimum(d, np.bitwise_count(m[k] ^ np.uint64(it.phash)).astype(np.int64))
            for t in turned:
                d_t = np.minimum(np.bitwise_count(h[k] ^ np.uint64(t)), np.bitwise_count(m[k] ^ np.uint64(t)))
                d = np.minimum(d, np.where(d_t <= strict, d_t, d).astype(np.int64))
            hit = np.flatnonzero(d <= max_distance)
            hit = hit[np.argsort(d[hit], kind="stable")]
            picked = [(q, self.ids[k[j]], int(d[j])) for j in hit if self.ids[k[j]] not in skip and self.ids[k[j]] != it.id]
            out.extend(picked[:limit])
        return out

    def _within(self, phash: int, radius: int, flip_invariant: bool) -> np.ndarray:
        """Rows whose pHash (or mirrored pHash) is within `radius` bits: looked up in a block index
        (`HashIndex`) of the rows loaded so far, the rows added since it was built scanned in full; it is
        built again once those are an eighth of it."""
        h, m, _ = self._as_arrays()
        if (self._index is None or self._index[0].radius != radius or (self._index[1] is not None) != flip_invariant
                or len(h) - self._index[2] > max(4096, self._index[2] // 8)):
            self._index = (HashIndex(h, radius), HashIndex(m, radius) if flip_invariant else None, len(h))
        index, mirrored, n = self._index
        found = [index.within(phash)] + ([mirrored.within(phash)] if mirrored is not None else [])
        tail = np.bitwise_count(h[n:] ^ np.uint64(phash)) <= radius
        if mirrored is not None:
            tail |= np.bitwise_count(m[n:] ^ np.uint64(phash)) <= radius
        return np.unique(np.concatenate(found + [n + np.flatnonzero(tail)]))

    def _load(self, need: str) -> None:
        if self.loaded == "all" or self.loaded == need:
            return
        if need == "all":
            rows = ((pid, p) for pid, p, _ in self.store.scroll(batch=self.page))
        else:
            rows = (row for key in (P.WIDTH, P.HEIGHT) for row in self._scroll({key: {"lt": self.small_side}}))
        for pid, payload in rows:
            if P.PHASH in payload:
                self._put(pid, int(payload[P.PHASH], 16), int(payload.get(P.PHASH_MIRROR, payload[P.PHASH]), 16),
                          _side(payload.get(P.WIDTH, 0), payload.get(P.HEIGHT, 0)))
        self.loaded = need
        for row in self._pending:
            if need == "all" or 0 < row[3] < self.small_side:
                self._put(*row)
        if need == "all":
            self._pending = []

    def _scroll(self, must: dict) -> list[tuple[str, dict]]:
        out, offset = [], None
        while True:
            rows, offset = self.store.scroll_where(must, limit=self.page, offset=offset)
            out.extend((pid, p) for pid, p, _ in rows)
            if offset is None:
                return out

    def _put(self, pid: str, h: int, m: int, side: int) -> None:
        if pid in self._known:
            return
        self._known.add(pid)
        self.ids.append(pid)
        self._rows.append((h, m, side))
        self._arrays = None

    def _as_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = (hash_array([r[0] for r in self._rows]), hash_array([r[1] for r in self._rows]),
                            np.array([r[2] for r in self._rows], np.int64))
        return self._arrays
