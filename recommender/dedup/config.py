"""Thresholds of the deduplication tiers, in one frozen object.

Plain defaults, so the library, its tests and the evaluation harness run without
any settings machinery; `recommender.duplicates.dedup_config` overrides them with
the model's measured thresholds and the user's settings. Every number was chosen
by measurement on the evaluation harness (see docs/dedup.md), not by guess.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class DedupConfig:
    """Defaults for every tier; override single fields with `with_overrides`.

    The rule itself is `tiers.decide_tiers`; in words (measured, docs/dedup.md), a pair is a `copy` when
      phash distance <= phash_strict and cosine >= copy_cosine   (both say "unchanged"), or
      (cosine >= verify_cosine or phash distance <= phash_strict) and at least
      min_inliers ORB matches agree on one similarity transform and cover the
      picture (crop, rotation, border, resize: verify.py).
    Without OpenCV (or verify=False) the rule is thresholds alone:
      d <= phash_strict or cosine >= copy_cosine or (d <= phash_loose and cosine >= copy_cosine_loose).
    Without embeddings: d <= phash_strict. With flip_invariant the phash distance is invariant to
    flips and quarter turns: min(d(a, b), d(a, mirror(b))), and the same with either turned by 90,
    180 or 270 degrees (hashing.phash_turns).
    Small images (issue 15): when the smaller image of a verified pair has a side below
    small_side, the verifier also accepts it when the two images, aligned at the small one's
    scale, correlate >= small_min_corr (verify.aligned_correlation); pairs with one side small
    and phash distance <= phash_small are candidates (tiers.small_candidates) and verified.
    """

    # exact tier: SHA-256 of bytes, or BLAKE3 of the decoded RGB pixels (EXIF applied)
    exact_pixels: bool = True
    # copy tier
    phash_strict: int = 2
    copy_cosine: float = 0.985
    verify: bool = True
    verify_cosine: float = 0.80
    min_inliers: int = 40
    max_verify_per_item: int = 12
    # a pair the pHash vouches for (within phash_strict) that ORB rejects is compared again on both images
    # smoothed by a Gaussian of this many px (`LocalFeatureVerifier._smooth_pair`: grain, noise or blur on a
    # smooth picture); 0 = never
    smooth_sigma: float = 1.2
    # try a pair mirrored only when the mirrored pHash is the closer: on the tuning families (benchmarks/
    # verify_budget.py) 19 % (art-louvre) and 22 % (brain-mri) fewer ORB attempts, the same copies found
    mirror_gate: bool = True
    phash_loose: int = 16
    copy_cosine_loose: float = 0.90
    flip_invariant: bool = True
    # small images (issue 15; chosen on the tuning thumbnails, docs/dedup.md "Small images"):
    # ORB verified 0/100 brain-mri thumbnails at 144 px and 90/100 at 192 px, so below 160 px the
    # aligned-pixel check runs too; 0.988 is halfway between the hardest tuning non-copy (0.983,
    # two consecutive brain-mri slices at 120 px) and the weakest tuning thumbnail (0.993, 96 px
    # q50). phash_small is imagededup's default distance, not tuned here.
    small_side: int = 160
    small_min_corr: float = 0.988
    phash_small: int = 10
    # the verifier's keypoints spread over an N x N grid (odd; 1 = ORB's own choice; session 36,
    # docs/dedup.md "Keypoints spread over a grid"): more copies under overlays verify (tuning and a
    # third held-out set), but it costs about 20 % more verification time, and the brain-mri ingest
    # fell below 2x the plain script (1.74x against 2.03x), so it is off by default
    keypoint_grid: int = 1
    # templates (session 37, docs/dedup.md "Templates"): when at least this many images of one size are
    # verified together, the keypoints that recur at the same place in a quarter of a sample of them
    # (a slide deck's text, a viewer's frame) are left out of matching; 0 = off
    template_members: int = 16
    # frames without a template (session 39, docs/dedup.md "Frames without a template"): a picture on a flat
    # background (`frames.picture_frame`) is cut out at full resolution and matched when its image falls short;
    # when text or a panel lies beside it (a viewer's capture, a web page) the picture is also embedded and
    # searched for candidates, and the image is compared by its picture only, never whole
    frames: bool = True
    # near tier: embedding cosine only, higher recall
    near_cosine: float = 0.90
    # sweep
    block_size: int = 4096
    # embedding candidates kept per item (its most similar partners above the lowest cosine any rule
    # needs): bounds the sweep's memory to O(N * k) on look-alike collections (None = every pair).
    # Chosen on the tuning families (docs/benchmarks_dedup.md, "Candidates per item"): 16 is the least
    # of 8/12/16/32 with every pair's copy clusters on both corpora, and 37 % fewer ORB verifications
    # on brain-mri; 12 lost one art-louvre copy
    max_candidates_per_item: int | None = 16
    precision: str = "auto"  # "fp32", "bf16" (exact after fp32 re-scoring) or "auto"
    # fingerprint stage
    workers: int = 2  # fingerprint processes (0 = in the calling process)

    def with_overrides(self, **overrides: Any) -> "DedupConfig":
        """Copy with the non-None overrides applied (CLI flags win over settings)."""
        values = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **values) if values else self
