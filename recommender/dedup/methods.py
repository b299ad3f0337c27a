"""One small class per duplicate-finding method, all with the same shape.

Like imagededup's `PHash`/`CNN` classes: each method answers
`find_duplicates(items, embeddings) -> PairSet` over a list of fingerprints
(and, for the embedding method, an aligned (N, d) matrix). The engine
combines their pair sets into tiers (`tiers.decide_tiers`); each method stays
testable on its own, and the evaluation's baseline is one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from recommender import payload as P
from recommender.dedup.hashing import Fingerprint, hash_array, hash_variants
from recommender.dedup.sweep import cosine_pairs, hamming_of, hamming_pairs, turned_pairs


@dataclass
class PairSet:
    """Pairs i < j of item positions with one score each (similarity or distance, per method)."""

    i: np.ndarray
    j: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.i)

    @classmethod
    def empty(cls) -> "PairSet":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))

    def as_set(self) -> set[tuple[int, int]]:
        return set(zip(self.i.tolist(), self.j.tolist()))


class ExactHash:
    """Identical bytes (`field='sha256'`) or identical decoded pixels (`field='pixel_hash'`).

    Groups by hash and links every member to the group's first item: a star
    is enough for connected components and stays linear in the group size.
    """

    def __init__(self, field: str = P.SHA256):
        if field not in (P.SHA256, P.PIXEL_HASH):
            raise ValueError(f"field must be '{P.SHA256}' or '{P.PIXEL_HASH}', not {field!r}")
        self.field = field

    def find_duplicates(self, items: Sequence[Fingerprint], embeddings: np.ndarray | None = None) -> PairSet:
        first: dict[str, int] = {}
        ii, jj = [], []
        for k, it in enumerate(items):
            key = getattr(it, self.field)
            if not key or it.error:
                continue
            if key in first:
                ii.append(first[key])
                jj.append(k)
            else:
                first[key] = k
        return PairSet(np.array(ii, np.int64), np.array(jj, np.int64), np.ones(len(ii), np.float32))


class PerceptualHash:
    """imagehash pHash pairs within `max_distance` bits (score = distance); by default invariant to flips and
    quarter turns (`hashing.phash_turns`), which makes a pair of an image and its copy saved turned."""

    def __init__(self, max_distance: int = 10, flip_invariant: bool = True, block_size: int = 2048):
        self.max_distance = max_distance
        self.flip_invariant = flip_invariant
        self.block_size = block_size

    def find_duplicates(self, items: Sequence[Fingerprint], embeddings: np.ndarray | None = None) -> PairSet:
        ok = np.array([k for k, it in enumerate(items) if not it.error], np.int64)
        if len(ok) < 2:
            return PairSet.empty()
        h = hash_array([items[k].phash for k in ok])
        m = hash_array([items[k].phash_mirror for k in ok]) if self.flip_invariant else None
        i, j, d = hamming_pairs(h, self.max_distance, mirror=m, block_size=self.block_size)
        if self.flip_invariant:
            turns = hash_variants([items[k] for k in ok])
            extra = np.array(sorted(turned_pairs(h, turns, self.max_distance, m) - set(zip(i.tolist(), j.tolist()))),
                             np.int64).reshape(-1, 2)
            if len(extra):
                de = hamming_of(h, extra[:, 0], extra[:, 1], m, turns)
                keep = de <= self.max_distance
                i, j = np.concatenate([i, extra[keep, 0]]), np.concatenate([j, extra[keep, 1]])
                d = np.concatenate([d, de[keep]])
        return PairSet(ok[i], ok[j], d.astype(np.float32))


class EmbeddingCosine:
    """Pairs whose embedding cosine is >= threshold, by the blocked sweep (never an N x N matrix)."""

    def __init__(self, threshold: float = 0.9, block_size: int = 4096, precision: str = "auto",
                 max_per_item: int | None = None, progress: Callable[[int], None] | None = None):
        self.threshold = threshold
        self.block_size = block_size
        self.precision = precision
        self.max_per_item = max_per_item  # keep only each item's k most similar partners (`cosine_pairs`)
        self.progress = progress

    def find_duplicates(self, items: Sequence[Fingerprint], embeddings: np.ndarray | None = None) -> PairSet:
        if embeddings is None:
            raise ValueError("EmbeddingCosine needs embeddings aligned with items")
        ok = np.array([k for k, it in enumerate(items) if not it.error], np.int64)
        if len(ok) < 2:
            return PairSet.empty()
        x = embeddings if len(ok) == len(items) else embeddings[ok]
        i, j, s = cosine_pairs(x, self.threshold, block_size=self.block_size, precision=self.precision,
                               max_per_item=self.max_per_item, progress=self.progress)
        return PairSet(ok[i], ok[j], s)
