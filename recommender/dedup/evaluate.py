"""Evaluation harness: planted duplicates with known transforms, scored per tier.

Ground truth: each sampled original and its transformed copies form one group;
untouched distractors are singletons -- except that natural duplicates already
in the corpus (same SHA-256 or same decoded pixels, e.g. brain-mri's repeated
slices) are merged into one group, because finding them is correct, not a
false positive. Pairs between two untouched corpus files that are *not* byte
or pixel identical but still linked are counted as false positives in the
strict score and also listed separately ("natural" pairs) so a reader can see
whether they are real near-duplicates of the corpus.

Scores are pair-level over clusters: a predicted positive is any two items in
one cluster at that tier or stronger (exact < copy < near are cumulative).
The baseline (imagededup-style pHash, Hamming <= 10, no flip handling) is
scored on the same items with the same clustering in the same run.

The planted files are written to disk (`plant.py`) and then decoded and
deduplicated by the production code: `recommender.decode` with ingest's decode
options for the model, the fingerprints ingest stores, `tiers.decide_tiers` and the
connected-component clusters. This module scores; it uses only the public API of
`recommender.dedup` (the engine, and a `PerceptualHash` method for the baseline).

Run: python -m recommender.dedup.evaluate /path/to/images --originals 200 --distractors 300
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from recommender.decode import DecodeOptions
from recommender.dedup import (TIER_RANK, TIERS, DedupConfig, DedupEngine, EmbedFn, Fingerprint, PerceptualHash,
                               connected_labels)
from recommender.dedup.plant import Planted, list_images, plant, sample_files
from recommender.dedup.transforms import ALL_TRANSFORMS, EXPECTED_TIER, FAMILIES, FAMILY_NOTES
from recommender import payload as P
from recommender.payload import SAME_PICTURE_TIERS, Tier

LEVELS: tuple[str, ...] = tuple(t.value for t in TIERS)  # exact, copy, near: cumulative scoring levels

def slice_table(table: Path) -> dict[str, tuple[str, int]]:
    """Volume and slice index by absolute file path, from a metadata table (CSV or Parquet, read as ingest
    reads one: `recommender.metadata`) with `volume` and `slice_index` columns and paths relative to the
    table's folder (mri-slices' manifest.csv is one). Why: ingest with such a table never makes two slices
    of one volume a copy (`tiers.other_slices`), so the harness can score what that ingest does."""
    from recommender.metadata import load_metadata

    rows = load_metadata(Path(table), Path(table).resolve().parent).rows
    out = {path: (str(r[P.VOLUME]), int(r[P.SLICE_INDEX])) for path, r in rows.items()
           if P.VOLUME in r and P.SLICE_INDEX in r}
    if not out:
        raise ValueError(f"metadata table '{table}' has no row with both '{P.VOLUME}' and '{P.SLICE_INDEX}'; "
                         "add those columns to score slices as an ingest with them does")
    return out


def mark_slices(items: Sequence[Fingerprint], origins: Sequence[str | Path],
                slices: dict[str, tuple[str, int]] | None) -> None:
    """Give each item the volume and slice index of the file it was made from (a planted copy of a slice
    is that slice), as ingest's metadata would."""
    if not slices:
        return
    for it, origin in zip(items, origins):
        found = slices.get(str(Path(origin).resolve()))
        if found:
            it.volume, it.slice_index = found


def screen_pool(engine: DedupEngine, files: Sequence[Path], need: int,
                slices: dict[str, tuple[str, int]] | None = None
                ) -> tuple[list[int], list[Fingerprint], np.ndarray, dict[str, Any]]:
    """Keep at most one file per natural duplicate cluster of the pool, in pool order.

    Returns kept positions, the pool's fingerprints and embeddings (reused later) and stats.
    The screen is the engine itself at the copy tier: the corpus has no labels for its own
    duplicates, and without this step every re-cropped repeat of a brain-mri scan that lands
    on two sides of the benchmark counts as an engine error (see docs/dedup.md).
    """
    items = engine.fingerprint([str(f) for f in files])
    mark_slices(items, files, slices)
    emb = engine.embed_items(items)
    res = engine.find_duplicates(items, emb)
    labels = level_labels(len(items), res.pairs, Tier.COPY)
    seen: set[int] = set()
    kept: list[int] = []
    for k, lab in enumerate(labels.tolist()):
        if items[k].error or lab in seen:
            continue
        seen.add(lab)
        kept.append(k)
    if len(kept) < need:
        raise ValueError(f"pool of {len(files)} has only {len(kept)} distinct images, {need} needed; "
                         "raise pool_factor")
    clusters = Counter(labels.tolist())
    stats = {"pool": len(files), "pool_natural_clusters": sum(1 for c in clusters.values() if c > 1),
             "pool_dropped": len(files) - len(kept)}
    return kept[:need], items, emb, stats


def ground_truth(planted: Sequence[Planted], items: Sequence[Fingerprint], level: str) -> np.ndarray:
    """Group label per item at a tier level: planted groups merged with natural exact duplicates.

    At the exact level only lossless copies (EXPECTED_TIER == 'exact') join their original.
    """
    n = len(planted)
    ii, jj = [], []
    first: dict[int, int] = {}
    for k, p in enumerate(planted):
        if p.transform in ("original", "distractor"):
            first.setdefault(p.group, k)
    for k, p in enumerate(planted):
        if p.transform in ("original", "distractor"):
            continue
        if level == Tier.EXACT and EXPECTED_TIER[p.transform] != Tier.EXACT:
            continue
        ii.append(first[p.group])
        jj.append(k)
    for field in (P.SHA256, P.PIXEL_HASH):
        seen: dict[str, int] = {}
        for k, it in enumerate(items):
            key = getattr(it, field)
            if key and key in seen:
                ii.append(seen[key])
                jj.append(k)
            elif key:
                seen[key] = k
    return connected_labels(n, np.array(ii, np.int64), np.array(jj, np.int64))


def natural_links(planted: Sequence[Planted], pairs: pd.DataFrame, strict: np.ndarray) -> pd.DataFrame:
    """Exact/copy links the engine found between two untouched corpus files of different true groups.

    These are the corpus's own duplicates beyond byte/pixel identity (brain-mri has many: the
    same scan re-cropped or re-scaled). No label says whether they are right, so the main
    score trusts them (merges the two groups) and the strict score counts them as errors; they
    are listed in the result, and report.html of a `recommender dedupe` run shows them.
    """
    untouched = np.array([p.transform in ("original", "distractor") for p in planted])
    sel = pairs[pairs[P.TIER].isin([t.value for t in SAME_PICTURE_TIERS])]
    i, j = sel["i"].to_numpy(), sel["j"].to_numpy()
    keep = untouched[i] & untouched[j] & (strict[i] != strict[j])
    return sel[keep][["i", "j", "path_a", "path_b", P.TIER, "cosine", "phash_distance", "inliers"]].reset_index(drop=True)


def merge_links(labels: np.ndarray, links: pd.DataFrame) -> np.ndarray:
    """Labels with the groups joined by `links` (i, j) merged."""
    n = len(labels)
    first: dict[int, int] = {}
    ii, jj = [], []
    for k, lab in enumerate(labels.tolist()):
        if lab in first:
            ii.append(first[lab])
            jj.append(k)
        else:
            first[lab] = k
    ii += links["i"].tolist()
    jj += links["j"].tolist()
    return connected_labels(n, np.array(ii, np.int64), np.array(jj, np.int64))


def _pairs_in(labels: np.ndarray) -> int:
    return int(sum(c * (c - 1) // 2 for c in Counter(labels.tolist()).values()))


def pair_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Pair-level precision, recall, F1 of a predicted partition against a true one."""
    tp = _pairs_in(np.array([hash((a, b)) for a, b in zip(pred.tolist(), truth.tolist())]))
    pp, tt = _pairs_in(pred), _pairs_in(truth)
    p = tp / pp if pp else 1.0
    r = tp / tt if tt else 1.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "true_pairs": tt, "predicted_pairs": pp, "correct_pairs": tp}


def level_labels(n: int, pairs: pd.DataFrame, level: str) -> np.ndarray:
    """Clusters formed by the pairs of tier `level` or stronger."""
    sel = pairs[pairs[P.TIER].map(TIER_RANK) <= TIER_RANK[level]]
    return connected_labels(n, sel["i"].to_numpy(), sel["j"].to_numpy())


def per_transform_recall(planted: Sequence[Planted], pred: np.ndarray) -> dict[str, float]:
    """Fraction of (original, transformed copy) pairs that share a predicted cluster, per transform."""
    orig = {p.group: k for k, p in enumerate(planted) if p.transform == "original"}
    hit: Counter = Counter()
    tot: Counter = Counter()
    for k, p in enumerate(planted):
        if p.transform in ("original", "distractor"):
            continue
        tot[p.transform] += 1
        hit[p.transform] += int(pred[k] == pred[orig[p.group]])
    return {t: hit[t] / tot[t] for t in tot}


def false_pairs(planted: Sequence[Planted], pred: np.ndarray, truth: np.ndarray) -> pd.DataFrame:
    """Predicted pairs that the ground truth does not contain (for inspection)."""
    rows = []
    by: dict[int, list[int]] = {}
    for k, lab in enumerate(pred.tolist()):
        by.setdefault(lab, []).append(k)
    for members in by.values():
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                a, b = members[x], members[y]
                if truth[a] != truth[b]:
                    rows.append({"a": planted[a].path, "b": planted[b].path,
                                 "transform_a": planted[a].transform, "transform_b": planted[b].transform,
                                 "natural": planted[a].transform in ("original", "distractor")
                                 and planted[b].transform in ("original", "distractor")})
    return pd.DataFrame(rows, columns=["a", "b", "transform_a", "transform_b", "natural"])


def score_partition(planted: Sequence[Planted], pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    s = pair_scores(pred, truth)
    fp = false_pairs(planted, pred, truth)
    s["false_pairs"] = int(len(fp))
    s["false_pairs_natural"] = int(fp["natural"].sum()) if len(fp) else 0
    s["per_transform_recall"] = per_transform_recall(planted, pred)
    return s


def baseline_labels(items: Sequence[Fingerprint], max_distance: int = 10) -> np.ndarray:
    """imagededup-style baseline: pHash Hamming <= 10, no flip handling, connected-component clusters."""
    pairs = PerceptualHash(max_distance, flip_invariant=False).find_duplicates(items)
    return connected_labels(len(items), pairs.i, pairs.j)


SWEEPS: dict[str, list[Any]] = {
    "min_inliers": [10, 20, 30, 40, 60, 80],
    "verify_cosine": [0.75, 0.80, 0.85, 0.90],
    "copy_cosine": [0.95, 0.97, 0.985, 1.01],
    "phash_strict": [-1, 0, 2, 4, 6],
    "verify": [False],
    "near_cosine": [0.85, 0.88, 0.90, 0.92, 0.95],
}


def threshold_sweep(engine: DedupEngine, items: list[Fingerprint], emb: np.ndarray,
                    planted: Sequence[Planted], truth: np.ndarray) -> pd.DataFrame:
    """Copy- and near-level scores while one threshold moves and the others stay at the config.

    Candidates and verifier results are cached on the engine, so a sweep costs little more than one run.
    """
    base = engine.config
    rows = []
    for param, values in SWEEPS.items():
        for v in values:
            engine.config = base.with_overrides(**{param: v})
            res = engine.find_duplicates(items, emb)
            level = Tier.NEAR if param == "near_cosine" else Tier.COPY
            s = pair_scores(level_labels(len(items), res.pairs, level), truth)
            rows.append({"param": param, "value": v, "level": level.value, "precision": s["precision"],
                         "recall": s["recall"], "f1": s["f1"], "predicted_pairs": s["predicted_pairs"]})
    engine.config = base
    return pd.DataFrame(rows)


def evaluate(source: Path, embed: EmbedFn, n_originals: int = 200, n_distractors: int = 300, seed: int = 0,
             config: DedupConfig | None = None, work: Path | None = None, sweep: bool = True,
             screen: bool = True, pool_factor: float = 1.25, options: DecodeOptions | None = None,
             log: Callable[[str], None] = print, family: str = "tuning",
             slices: dict[str, tuple[str, int]] | None = None) -> dict[str, Any]:
    """Build the planted benchmark from `source`, run engine and baseline, return all scores.

    With `screen` (default) the sample is drawn from a pool of need * pool_factor files with
    the corpus's own duplicate clusters reduced to one file each (`screen_pool`). `options`
    are the decode options of the run; pass ingest's for the model (`embed.model_embedder`
    returns both) to score what ingest does. `family` picks the planted edits: "tuning" (the
    ones thresholds are chosen on, with the threshold sweep), "heldout" or "framed" (never tuned
    on: no sweep, so nobody reads a threshold off them). `slices` (`slice_table`) scores slices as an
    ingest with their volume and slice index does.
    """
    tmp = None
    if work is None:
        tmp = tempfile.mkdtemp(prefix="dedup-eval-")
        work = Path(tmp)
    try:
        engine = DedupEngine(config or DedupConfig(), embed, options=options)
        planted, items, emb, stats, timings = planted_set(engine, Path(source), n_originals, n_distractors, seed,
                                                          Path(work), screen, pool_factor, family, slices)
        out = score_engine(engine, planted, items, emb, sweep=sweep and family == "tuning")
        out.update({"family": family, "source": str(source), "originals": n_originals, "distractors": n_distractors, "seed": seed,
                    "screen": stats, "slices_known": sum(1 for it in items if it.volume)})
        out["timings_s"] = {**timings, **out["timings_s"]}
        log(format_report(out))
        return out
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def planted_set(engine: DedupEngine, source: Path, n_originals: int, n_distractors: int, seed: int, work: Path,
                screen: bool = True, pool_factor: float = 1.25, family: str = "tuning",
                slices: dict[str, tuple[str, int]] | None = None
                ) -> tuple[list[Planted], list[Fingerprint], np.ndarray, dict[str, Any], dict[str, float]]:
    """The planted benchmark, fingerprinted and embedded by `engine`: (planted, items, embeddings,
    screening stats, stage seconds). Built once, it can score several engine configurations."""
    t0 = time.perf_counter()
    need = n_originals + n_distractors
    pool = sample_files(source, min(len(list_images(source)), int(need * pool_factor)), seed) \
        if screen else sample_files(source, need, seed)
    if screen:
        kept, pool_items, pool_emb, stats = screen_pool(engine, pool, need, slices)
    else:
        kept, pool_items, pool_emb, stats = list(range(need)), None, None, {"pool": need}
    t_screen = time.perf_counter() - t0
    chosen = [pool[k] for k in kept]
    t = time.perf_counter()
    planted = plant(chosen[:n_originals], chosen[n_originals:], work, seed, FAMILIES[family])
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    known = {str(pool[k]): k for k in kept} if pool_items is not None else {}
    todo = [p.path for p in planted if p.path not in known]
    new_items = engine.fingerprint(todo)
    origin = {p.path: p.origin for p in planted}
    mark_slices(new_items, [origin[it.path] for it in new_items], slices)
    t_fp = time.perf_counter() - t
    t = time.perf_counter()
    new_emb = engine.embed_items(new_items)
    t_emb = time.perf_counter() - t
    by_path = {it.path: (it, new_emb[k]) for k, it in enumerate(new_items)}
    for path, k in known.items():
        by_path[path] = (pool_items[k], pool_emb[k])
    items = [by_path[p.path][0] for p in planted]
    for s, it in enumerate(items):
        it.seq = float(s)
    emb = np.stack([by_path[p.path][1] for p in planted]).astype(np.float32)
    engine._cache.clear()
    return planted, items, emb, stats, {"screen_pool": t_screen, "build": t_build, "fingerprint": t_fp,
                                        "embed": t_emb}


def score_engine(engine: DedupEngine, planted: Sequence[Planted], items: list[Fingerprint], emb: np.ndarray,
                 sweep: bool = True) -> dict[str, Any]:
    """Run the engine on fingerprinted, embedded planted items and score it and the baseline."""
    t = time.perf_counter()
    res = engine.find_duplicates(items, emb)
    t_find = time.perf_counter() - t
    n = len(items)
    strict = {lvl: ground_truth(planted, items, Tier.EXACT if lvl == Tier.EXACT else Tier.COPY) for lvl in LEVELS}
    links = natural_links(planted, res.pairs, strict[Tier.COPY])
    truth = {lvl: merge_links(strict[lvl], links if lvl != Tier.EXACT else links[links[P.TIER] == Tier.EXACT])
             for lvl in LEVELS}
    natural_groups = sum(1 for c in Counter(strict[Tier.EXACT].tolist()).values() if c > 1) - sum(
        1 for p in planted if p.transform == "png_resave")
    tiers = {lvl: score_partition(planted, level_labels(n, res.pairs, lvl), truth[lvl]) for lvl in LEVELS}
    tiers_strict = {lvl: score_partition(planted, level_labels(n, res.pairs, lvl), strict[lvl]) for lvl in LEVELS}
    base_lab = baseline_labels(items)
    out: dict[str, Any] = {
        "items": n, "transforms": sorted({p.transform for p in planted} - {"original", "distractor"},
                                         key=list(ALL_TRANSFORMS).index),
        "natural_exact_groups": max(0, natural_groups), "config": dict(engine.config.__dict__),
        "timings_s": {"find_duplicates": t_find, **{f"engine.{k}": v for k, v in res.timings.items()}},
        "tiers": tiers, "baseline_phash10": score_partition(planted, base_lab, truth[Tier.COPY]),
        "tiers_strict": tiers_strict, "baseline_phash10_strict": score_partition(planted, base_lab, strict[Tier.COPY]),
        "natural_links": links.to_dict("records"),
        "pairs_by_tier": {str(t): int(c) for t, c in res.pairs[P.TIER].value_counts().items()},
    }
    if sweep:
        t = time.perf_counter()
        out["sweep"] = threshold_sweep(engine, items, emb, planted, truth[Tier.COPY]).to_dict("records")
        out["timings_s"]["sweep"] = time.perf_counter() - t
    out["false_pairs_copy"] = false_pairs(planted, level_labels(n, res.pairs, Tier.COPY),
                                          truth[Tier.COPY]).head(50).to_dict("records")
    return out


def format_report(r: dict[str, Any]) -> str:
    """Plain-text tables of an evaluation result."""
    sc = r.get("screen", {})
    lines = [f"pool screening: {sc.get('pool_natural_clusters', 0)} natural duplicate clusters in a pool of "
             f"{sc.get('pool', 0)}, {sc.get('pool_dropped', 0)} files dropped before sampling" if sc else "",
             f"== {r.get('family', 'tuning')} families ==",
             f"source {r['source']}: {r['originals']} originals x {len(r['transforms'])} transforms + "
             f"{r['distractors']} distractors = {r['items']} items; natural exact-duplicate groups "
             f"merged into ground truth: {r['natural_exact_groups']}; natural copy links between untouched "
             f"files (trusted in the main rows, errors in the strict rows): {len(r['natural_links'])}"
             + (f"; items with a volume and slice index (never a copy of another slice): {r['slices_known']}"
                if r.get("slices_known") else ""),
             "timings " + ", ".join(f"{k} {v:.1f}s" for k, v in r["timings_s"].items() if k != "engine.verified_pairs")
             + f"; verified pairs {int(r['timings_s'].get('engine.verified_pairs', 0))}",
             "", f"{'method/level':<24}{'precision':>10}{'recall':>8}{'F1':>8}{'pairs':>8}{'false':>7}{'natural':>8}"]
    rows = ([(f"engine {lvl}", r["tiers"][lvl]) for lvl in LEVELS] + [("baseline phash<=10", r["baseline_phash10"])]
            + [(f"strict: engine {lvl}", r["tiers_strict"][lvl]) for lvl in (Tier.COPY.value, Tier.NEAR.value)]
            + [("strict: baseline", r["baseline_phash10_strict"])])
    for name, s in rows:
        lines.append(f"{name:<24}{s['precision']:>10.4f}{s['recall']:>8.4f}{s['f1']:>8.4f}"
                     f"{s['predicted_pairs']:>8}{s['false_pairs']:>7}{s['false_pairs_natural']:>8}")
    lines += ["", "recall per transform (cluster shares the original):",
              f"{'transform':<16}" + "".join(f"{'engine ' + lvl:>14}" for lvl in LEVELS) + f"{'baseline':>10}"]
    for t in r["transforms"]:
        lines.append(f"{t:<16}" + "".join(f"{r['tiers'][lvl]['per_transform_recall'].get(t, 0):>14.3f}" for lvl in LEVELS)
                     + f"{r['baseline_phash10']['per_transform_recall'].get(t, 0):>10.3f}")
    if r.get("sweep"):
        lines += ["", "threshold sweep (one parameter moves, others at config):",
                  f"{'param':<20}{'value':>7}{'level':>6}{'precision':>10}{'recall':>8}{'F1':>8}"]
        for s in r["sweep"]:
            lines.append(f"{s['param']:<20}{s['value']:>7}{s['level']:>6}{s['precision']:>10.4f}"
                         f"{s['recall']:>8.4f}{s['f1']:>8.4f}")
    return "\n".join(lines)


def _families_epilog() -> str:
    """The planted sets `--families` takes, one per line with what it holds (`transforms.FAMILY_NOTES`)."""
    width = max(map(len, FAMILIES))
    lines = []
    for name in FAMILIES:
        wrapped = textwrap.wrap(FAMILY_NOTES[name], 100 - width)
        lines += [f"  {name if k == 0 else '':<{width}}  {text}" for k, text in enumerate(wrapped)]
    return "planted sets (--families):\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=_families_epilog(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="folder of real images")
    ap.add_argument("--originals", type=int, default=200)
    ap.add_argument("--distractors", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--no-screen", action="store_true", help="sample without removing the corpus's own duplicates")
    ap.add_argument("--json", type=Path, help="write the full result as JSON here")
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--metadata", type=Path, help="a table with path, volume and slice_index columns (paths relative "
                    "to its folder, as in mri-slices' manifest.csv): slices scored as an ingest with that metadata "
                    "does, two slices of one volume never a copy")
    ap.add_argument("--keypoint-grid", type=int, default=DedupConfig.keypoint_grid,
                    help="the verifier's keypoints spread over an N x N grid (odd; 1 = off): DedupConfig.keypoint_grid")
    ap.add_argument("--template-members", type=int, default=DedupConfig.template_members,
                    help="images of one size verified together that learn a template (0 = off): DedupConfig.template_members")
    ap.add_argument("--frames", type=int, choices=[0, 1], default=int(DedupConfig.frames),
                    help="find pictures on a flat background (screen captures, web pages) and match them cut out: "
                         "DedupConfig.frames")
    ap.add_argument("--families", choices=[*FAMILIES, "both"], default="tuning",
                    help="planted edits: one set by name (listed below), or both (tuning and heldout), reported apart")
    args = ap.parse_args(argv)
    from recommender.dedup.embed import model_embedder

    embed, options = model_embedder(args.model)
    families = ["tuning", "heldout"] if args.families == "both" else [args.families]
    config = DedupConfig(keypoint_grid=args.keypoint_grid, template_members=args.template_members,
                          frames=bool(args.frames))
    slices = slice_table(args.metadata) if args.metadata else None
    runs = {f: evaluate(args.source, embed, args.originals, args.distractors, args.seed, config=config,
                        sweep=not args.no_sweep, screen=not args.no_screen, options=options, family=f,
                        slices=slices) for f in families}
    res = runs[families[0]] if len(runs) == 1 else runs
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
