"""Dedupe on ingest, scored: the planted families ingested chunk by chunk, against the batch sweep.

Ingest does not run the batch sweep (`DedupEngine.find_duplicates` over everything): each chunk is
matched against the stored collection (`match_new_items`, the store's nearest neighbours) and then
against itself, so a copy and its original in different chunks meet only through the store. This
plants the evaluation set (`recommender.dedup.evaluate.planted_set`), copies every file into one
folder under names that scatter each group over the chunks, runs the real ingest
(`recommender.ingest.run_ingest`, MobileNetV2, the embedded store) at each chunk size, reads the
copy clusters back from the store and scores them against the same ground truth as
`recommender evaluate-dedup` (planted groups, with the corpus's natural exact and copy links
trusted), beside the batch sweep on the same files. Prints copy precision, recall, the lowest
family, and the ingest's cluster-stage seconds.

    python benchmarks/ingest_dedup_eval.py ../shared/corpora/brain-mri --families tuning
    python benchmarks/ingest_dedup_eval.py ../shared/corpora/art-louvre --families tuning --chunks 128 512
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recommender import payload as P  # noqa: E402
from recommender.dedup import DedupConfig, DedupEngine  # noqa: E402
from recommender.dedup.embed import model_embedder  # noqa: E402
from recommender.dedup.evaluate import (ground_truth, level_labels, merge_links, natural_links,  # noqa: E402
                                        planted_set, score_partition)
from recommender.ingest import run_ingest  # noqa: E402
from recommender.payload import Tier  # noqa: E402
from recommender.settings import get_settings  # noqa: E402
from recommender.store import open_store  # noqa: E402
from verify_budget import planted_arguments  # noqa: E402  (benchmarks/, on the path as the script's folder)


def scatter(paths: list[str], dest: Path) -> list[Path]:
    """Copy the files into `dest` under hashed names: ingest takes files in name order, so a group's
    members land in different chunks (as files of a real collection arrive)."""
    dest.mkdir(parents=True)
    out = []
    for k, p in enumerate(paths):
        name = hashlib.sha1(f"{k}".encode()).hexdigest()[:12] + f"_{k:05d}{Path(p).suffix}"
        shutil.copyfile(p, dest / name)
        out.append(dest / name)
    return out


def ingest_labels(home: Path, files: list[Path], chunk: int, keypoint_grid: int = 1) -> tuple[np.ndarray, float]:
    """Copy-level cluster label of each file after a real ingest at this chunk size, and the
    ingest's cluster-stage seconds."""
    cfg = get_settings(home=home, collection="eval", chunk_items=chunk, progress=False,
                       dedup_keypoint_grid=keypoint_grid)
    report = run_ingest(cfg, files[0].parent)
    store = open_store(cfg)
    label_of: dict[str, str] = {}
    try:
        for pid, payload, _ in store.scroll(batch=1024):
            same = payload.get(P.TIER) in (Tier.EXACT.value, Tier.COPY.value) and payload.get(P.CLUSTER_ID)
            label = str(payload[P.CLUSTER_ID]) if same else pid
            for path in [payload.get("path"), *(c.get("path") for c in payload.get(P.COPIES, []))]:
                if path:
                    label_of[str(Path(path).resolve())] = label
    finally:
        store.close()
    names = {lab: n for n, lab in enumerate(sorted(set(label_of.values())))}
    fresh = len(names)
    labels = []
    for f in files:
        lab = label_of.get(str(f.resolve()))
        labels.append(names[lab] if lab is not None else fresh + len(labels))  # not stored: its own group
    return np.array(labels), report.stage_seconds.get("cluster", 0.0)


def star_labels(engine: DedupEngine, res, emb: np.ndarray) -> np.ndarray:
    """Copy-level labels of the clusters `recommender dedupe` writes (`DedupEngine.pictures`: every
    member matches its canonical; no chains), not the connected components that `recommender
    evaluate-dedup` scores."""
    labels = np.arange(len(res.items)) + len(res.items)
    for row in engine.pictures(res, emb).itertuples():
        labels[row.index] = hash(row.cluster_id) % (1 << 40)
    return labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    planted_arguments(ap)
    ap.add_argument("--chunks", type=int, nargs="+", default=[256], help="ingest chunk sizes (files per chunk)")
    args = ap.parse_args()
    embed, options = model_embedder("mobilenet_v2")
    with tempfile.TemporaryDirectory(prefix="ingest-dedup-") as tmp:
        work = Path(tmp)
        engine = DedupEngine(DedupConfig(keypoint_grid=args.keypoint_grid), embed, options=options)
        planted, items, emb, _, _ = planted_set(engine, args.source, args.originals, args.distractors, args.seed,
                                                work / "planted", family=args.families)
        res = engine.find_duplicates(items, emb)
        strict = ground_truth(planted, items, Tier.COPY)
        truth = merge_links(strict, natural_links(planted, res.pairs, strict))
        rows = [("batch, components", score_partition(planted, level_labels(len(items), res.pairs, Tier.COPY), truth),
                 res.timings.get("verify", 0.0)),
                ("batch, star clusters", score_partition(planted, star_labels(engine, res, emb), truth),
                 res.timings.get("verify", 0.0))]
        files = scatter([p.path for p in planted], work / "corpus")
        for chunk in args.chunks:
            labels, seconds = ingest_labels(work / f"home{chunk}", files, chunk, args.keypoint_grid)
            rows.append((f"ingest, chunks of {chunk}", score_partition(planted, labels, truth), seconds))
    print(f"{args.source.name}, {args.families} families: {len(items)} files "
          f"({args.originals} originals, {args.distractors} distractors), copy tier")
    print(f"{'':<24}{'precision':>10}{'recall':>8}{'lowest family':>24}{'seconds':>9}")
    for name, s, seconds in rows:
        fam = s["per_transform_recall"]
        low = min(fam, key=fam.get)
        print(f"{name:<24}{s['precision']:>10.4f}{s['recall']:>8.4f}{low + ' ' + format(fam[low], '.2f'):>24}"
              f"{seconds:>9.1f}", flush=True)
    print("recall per family: " + "  ".join(f"{name.split(',')[0][:6]}/{name.split(' ')[-1]}" for name, _, _ in rows))
    for family in rows[0][1]["per_transform_recall"]:
        print(f"  {family:<22}" + "".join(f"{s['per_transform_recall'].get(family, float('nan')):>9.2f}" for _, s, _ in rows))


if __name__ == "__main__":
    main()
