"""The one tier rule: every combination of evidence, and which pairs go to verification (pure logic)."""

from __future__ import annotations

import numpy as np

from recommender.dedup import DedupConfig, decide_tiers, needs_verification
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
