"""The one rule that turns a pair's evidence into a tier.

Every caller -- the batch engine, dedupe-on-ingest against the store, the full
sweep and the evaluation -- asks `decide_tiers`, so a threshold means the same
thing everywhere. The evidence per pair: identical bytes or pixels (`exact`),
the flip-invariant pHash Hamming distance, the embedding cosine and, where the
thresholds leave a pair ambiguous, the ORB+RANSAC inlier count (`verify.py`).
`needs_verification` names those ambiguous pairs. The thresholds are the
fields of `DedupConfig` (docs/dedup.md says how they were measured).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from recommender.dedup.config import DedupConfig
from recommender.dedup.hashing import Fingerprint, hash_array
from recommender.payload import SAME_PICTURE_TIERS, Tier

TIERS: tuple[Tier, ...] = tuple(Tier)
"""Tiers, strongest first. A pair's tier is the strongest rule it satisfies."""

TIER_RANK: dict[str, int] = {t.value: k for k, t in enumerate(TIERS)}
NOT_DUPLICATE = ""  # the tier of a pair that satisfies no rule


def decide_tiers(config: DedupConfig, phash_distance: np.ndarray, cosine: np.ndarray | None = None, *,
                 exact: np.ndarray | None = None, inliers: np.ndarray | None = None,
                 verifying: bool = False, other_slices: np.ndarray | None = None) -> np.ndarray:
    """Tier per pair (object array of `Tier` or `NOT_DUPLICATE`) from aligned evidence arrays.

    copy when both global signals say "unchanged" (pHash within `phash_strict` and cosine
    >= `copy_cosine`) or, with `verifying`, when local features agree (`inliers` >=
    `min_inliers`; -1 = not verified); without verification the thresholds alone decide:
    pHash <= strict, or cosine >= copy_cosine, or both loose thresholds. Without cosines
    (no embedder) pHash <= strict alone. near: cosine >= `near_cosine`. exact wins over all.
    Two different slices of one volume or series (`other_slices`) are never copy: neighbouring
    slices look alike to every global signal, and collapsing them would hide real anatomy;
    they can still be near (or exact, when their pixels are identical).
    """
    c = config
    d = np.asarray(phash_distance)
    tier = np.full(len(d), NOT_DUPLICATE, dtype=object)
    if cosine is None:
        tier[d <= c.phash_strict] = Tier.COPY
    else:
        cos = np.asarray(cosine)
        tier[cos >= c.near_cosine] = Tier.NEAR
        if verifying:
            copy = (d <= c.phash_strict) & (cos >= c.copy_cosine)
            if inliers is not None:
                copy |= np.asarray(inliers) >= c.min_inliers
        else:
            copy = ((d <= c.phash_strict) | (cos >= c.copy_cosine)
                    | ((d <= c.phash_loose) & (cos >= c.copy_cosine_loose)))
        tier[copy] = Tier.COPY
    if other_slices is not None:
        demote = (tier == Tier.COPY) & np.asarray(other_slices, bool)
        tier[demote] = NOT_DUPLICATE
        if cosine is not None:
            tier[demote & (np.asarray(cosine) >= c.near_cosine)] = Tier.NEAR
    if exact is not None:
        tier[np.asarray(exact, bool)] = Tier.EXACT
    return tier


def needs_verification(config: DedupConfig, tiers: np.ndarray, cosine: np.ndarray,
                       phash_distance: np.ndarray, other_slices: np.ndarray | None = None,
                       small: np.ndarray | None = None, framed: np.ndarray | None = None) -> np.ndarray:
    """Pairs below the same-picture tiers that the model or the pHash still finds similar.

    Grayscale copies can drop to cosine ~0.77 while their pHash barely moves, so a small
    pHash distance alone also makes a pair worth verifying. Thumbnails of 32-64 px fall to
    cosine ~0.4-0.6 (the model sees a blur) while their pHash stays within ~10 bits, so a
    `small` pair (`small_pairs`: one side below `small_side`) within `phash_small` is verified
    too. A `framed` pair (`DedupEngine.framed_cosines`: the picture cut out of a page or slide is similar
    to the other image) is verified whatever its cosine. Slices of one volume are never verified: no
    inlier count could make them copies.
    """
    strong = np.isin(np.asarray(tiers, dtype=object), list(SAME_PICTURE_TIERS))
    d = np.asarray(phash_distance)
    out = ~strong & ((np.asarray(cosine) >= config.verify_cosine) | (d <= config.phash_strict))
    if small is not None:
        out |= ~strong & np.asarray(small, bool) & (d <= config.phash_small)
    if framed is not None:
        out |= ~strong & np.asarray(framed, bool)
    return out if other_slices is None else out & ~np.asarray(other_slices, bool)


def candidate_cosine(config: DedupConfig, verifying: bool) -> float:
    """The lowest cosine any rule looks at: embedding candidates below it can't be duplicates."""
    c = config
    return min(c.verify_cosine if verifying else c.copy_cosine_loose, c.near_cosine, c.copy_cosine)



def small_candidates(config: DedupConfig, items: Sequence[Fingerprint], block: int = 1024) -> set[tuple[int, int]]:
    """Pairs (i < j) with pHash distance <= `phash_small` where at least one image has a side
    below `small_side`: how a thumbnail becomes a candidate although the model, which sees it
    as a blur, gives it cosine ~0.4. Costs O(small x N) XOR/popcounts in (block x N) tiles; the
    verifier decides."""
    small = np.array([k for k, it in enumerate(items) if not it.error and 0 < min(it.width, it.height)
                      < config.small_side], np.int64)
    ok = np.array([k for k, it in enumerate(items) if not it.error], np.int64)
    if config.small_side <= 0 or config.phash_small < 0 or not len(small) or len(ok) < 2:
        return set()
    h = hash_array([it.phash for it in items])
    m = hash_array([it.phash_mirror for it in items]) if config.flip_invariant else h
    out: set[tuple[int, int]] = set()
    for r0 in range(0, len(small), block):
        rows = small[r0:r0 + block]
        d = np.minimum(np.bitwise_count(h[rows, None] ^ h[ok][None, :]),
                       np.bitwise_count(h[rows, None] ^ m[ok][None, :]))
        a, b = np.nonzero(d <= config.phash_small)
        s, t = rows[a], ok[b]
        keep = s != t
        out |= set(zip(np.minimum(s, t)[keep].tolist(), np.maximum(s, t)[keep].tolist()))
    return out


def small_pairs(config: DedupConfig, items: Sequence[Fingerprint], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Per pair (i[k], j[k]): at least one image has a side below `small_side` (a thumbnail), the
    pairs the verifier checks pixel by pixel at the small scale as well as with ORB."""
    side = np.array([min(it.width, it.height) if not it.error else 0 for it in items], np.int64)
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    small = (side > 0) & (side < config.small_side)
    return small[i] | small[j]


def other_slices(items: Sequence[Fingerprint], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Per pair (i[k], j[k]) of `items`: both are slices of the same volume or series, at different positions."""
    codes: dict[str, int] = {"": -1}
    vol = np.array([codes.setdefault(it.volume, len(codes) - 1) for it in items], dtype=np.int64)
    pos = np.array([it.slice_index for it in items], dtype=np.int64)
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    return (vol[i] >= 0) & (vol[i] == vol[j]) & (pos[i] != pos[j])
