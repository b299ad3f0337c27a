"""How much geometric verification the copy tier needs: the per-item cap and the mirror gate, scored.

Verification (ORB + RANSAC, tried mirrored when the direct match fails) is most of dedupe-on-ingest's
time on look-alike collections (docs/benchmarks_dedup.md, "Ingest (dedupe on) against the plain
script"). Two knobs cut it: `max_verify_per_item` (the per-item cap on verified candidates) and
`mirror_gate` (try the mirrored match only when the mirrored pHash is the closer). This builds the
planted benchmark once per corpus (`recommender.dedup.evaluate.planted_set`) and scores each variant
on it with a fresh engine (features recomputed, so the seconds compare): copy precision and recall,
the lowest per-family recall, verified pairs, ORB attempts and verify seconds.

Choose on the tuning families; read the choice on the held-out families (never the other way):

    python benchmarks/verify_budget.py ../shared/corpora/art-louvre --families tuning
    python benchmarks/verify_budget.py ../shared/corpora/brain-mri --families tuning
    python benchmarks/verify_budget.py ../shared/corpora/art-louvre --families heldout --variants 12:off,4:on
    python benchmarks/verify_budget.py ../shared/corpora/brain-mri --variants 12:on:all,12:on:32,12:on:16,12:on:12,12:on:8
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recommender.dedup import DedupConfig, DedupEngine  # noqa: E402
from recommender.dedup.embed import model_embedder  # noqa: E402
from recommender.dedup.evaluate import planted_set, score_engine  # noqa: E402
from recommender.dedup.transforms import FAMILIES  # noqa: E402


def planted_arguments(ap: argparse.ArgumentParser) -> None:
    """The planted set's options, shared by the benchmarks that score variants on one
    (`recommender.dedup.evaluate.planted_set`)."""
    ap.add_argument("source", type=Path)
    ap.add_argument("--originals", type=int, default=100)
    ap.add_argument("--distractors", type=int, default=150)
    ap.add_argument("--families", choices=list(FAMILIES), default="tuning")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keypoint-grid", type=int, default=1, help="the verifier's keypoint grid (DedupConfig.keypoint_grid)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    planted_arguments(ap)
    ap.add_argument("--variants", default="12:off,12:on,6:off,6:on,4:off,4:on,3:on",
                    help="cap:gate[:k] (gate on = mirror_gate; k = embedding candidates kept per item, "
                         "`max_candidates_per_item`, 'all' for every pair; default the config's)")
    args = ap.parse_args()
    embed, options = model_embedder("mobilenet_v2")
    base = DedupConfig(keypoint_grid=args.keypoint_grid)
    with tempfile.TemporaryDirectory(prefix="verify-budget-") as work:
        engine = DedupEngine(base, embed, options=options)
        planted, items, emb, _, _ = planted_set(engine, args.source, args.originals, args.distractors, args.seed,
                                                Path(work), family=args.families)
        print(f"{args.source.name}, {args.families} families: {len(items)} items "
              f"({args.originals} originals, {args.distractors} distractors)", flush=True)
        print(f"{'cap':>4}{'gate':>6}{'k':>5}{'precision':>10}{'recall':>8}{'lowest family':>22}{'verified':>10}"
              f"{'attempts':>10}{'verify s':>10}{'copy pairs':>11}{'near pairs':>11}", flush=True)
        for variant in args.variants.split(","):
            cap, gate, *rest = variant.split(":")
            k = (None if rest[0] == "all" else int(rest[0])) if rest else base.max_candidates_per_item
            cfg = dataclasses.replace(base, max_verify_per_item=int(cap), mirror_gate=gate == "on",
                                      max_candidates_per_item=k)
            eng = DedupEngine(cfg, embed, options=options)
            t = time.perf_counter()
            out = score_engine(eng, planted, items, emb, sweep=False)
            seconds = time.perf_counter() - t
            copy = out["tiers"]["copy"]
            fam = copy["per_transform_recall"]
            low = min(fam, key=fam.get)
            tiers = out["pairs_by_tier"]
            print(f"{cap:>4}{gate:>6}{k or 'all':>5}{copy['precision']:>10.4f}{copy['recall']:>8.4f}"
                  f"{low + ' ' + format(fam[low], '.2f'):>22}{int(out['timings_s'].get('engine.verified_pairs', 0)):>10}"
                  f"{eng.local_verifier().attempts:>10}{out['timings_s'].get('engine.verify', seconds):>10.1f}"
                  f"{tiers.get('copy', 0):>11}{tiers.get('near', 0):>11}", flush=True)


if __name__ == "__main__":
    main()
