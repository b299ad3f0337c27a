"""The one tier rule: every combination of evidence, and which pairs go to verification (pure logic)."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.dedup import DedupConfig, decide_tiers, needs_verification, verification_floors
from recommender.dedup.engine import above_floor
from recommender.payload import Tier

C = DedupConfig()  # phash_strict 2, copy_cosine 0.985, near 0.90, verify_cosine 0.80, min_inliers 40, loose 16/0.90


def tiers(d, cos=None, **kw) -> list[str]:
    out = decide_tiers(C, np.array(d), None if cos is None else np.array(cos), **kw)
    return [str(t) for t in out]


def test_hashes_only_copy_means_strict_phash():
    assert tiers([0, 2, 3, 40]) == ["copy", "copy", "", ""]


def test_verifying_copy_needs_both_global_signals_or_enough_inliers():
    d, cos = [1, 1, 20, 20, 20, 20], [0.99, 0.95, 0.99, 0.95, 0.85, 0.5]
    assert tiers(d, cos, verifying=True) == ["copy", "near", "near", "near", "", ""]
    inl = np.array([-1, 40, 39, 60, 40, -1])
    assert tiers(d, cos, verifying=True, inliers=inl) == ["copy", "copy", "near", "copy", "copy", ""]


def test_without_verification_thresholds_alone_decide():
    d, cos = [2, 30, 16, 17, 30], [0.5, 0.985, 0.90, 0.95, 0.95]
    assert tiers(d, cos, verifying=False) == ["copy", "copy", "copy", "near", "near"]


def test_exact_evidence_wins_and_tiers_are_the_enum():
    out = decide_tiers(C, np.array([40, 0]), np.array([0.1, 0.99]), exact=np.array([True, False]), verifying=True)
    assert list(out) == [Tier.EXACT, Tier.COPY] and out[0] == "exact"


def test_needs_verification_is_the_ambiguous_pairs_only():
    d = np.array([1, 10, 10, 1, 30])
    cos = np.array([0.99, 0.85, 0.70, 0.70, 0.79])
    t = decide_tiers(C, d, cos, exact=np.array([False, False, False, False, False]), verifying=True)
    # copy already; model finds it similar; neither signal; grayscale-like (small pHash, low cosine); neither
    assert needs_verification(C, t, cos, d).tolist() == [False, True, False, True, False]


def _fan(cosines: list[float]) -> np.ndarray:
    """Item 0 and one item per cosine, each at exactly that cosine to item 0 (orthogonal otherwise)."""
    out = np.zeros((len(cosines) + 1, len(cosines) + 1), np.float32)
    out[0, 0] = 1.0
    for k, c in enumerate(cosines, start=1):
        out[k, 0], out[k, k] = c, np.sqrt(1 - c * c)
    return out


def test_one_verification_budget_per_item_across_its_chunk_and_the_collection():
    cfg = DedupConfig(max_verify_per_item=3)
    emb = _fan([0.95, 0.90, 0.85, 0.82, 0.60])
    outside = [[0.97, 0.70]] + [[] for _ in range(5)]  # item 0's cosines to stored points
    floors = verification_floors(cfg, emb, outside)
    # item 0's three most similar candidates anywhere: 0.97 (stored), 0.95, 0.90 -> the floor is 0.90;
    # cosines under verify_cosine (0.70, 0.60) never count
    assert floors[0] == pytest.approx(0.90, abs=1e-6)
    # an item with fewer candidates than the cap keeps every one of them
    assert np.isneginf(floors[5])
    ci, cj = np.array([0, 0, 0, 0]), np.array([1, 3, 3, 3])
    cos, dist = np.array([0.95, 0.85, 0.85, 0.85]), np.array([20, 20, 1, 20])
    small = np.array([False, False, False, True])
    # under the floor a pair is still verified for its pHash (within phash_strict) or as a thumbnail pair
    assert above_floor(cfg, floors, ci, cj, cos, dist, small).tolist() == [True, False, True, True]
    assert above_floor(cfg, None, ci, cj, cos, dist, small).all()
