"""precision@10 / mAP@10 of same-label neighbours on the real corpora, MobileNetV2.

Ingests each corpus with the real flow into `<home-root>/<corpus>` unless a
collection is already there (brain-mri takes several minutes on 2 cores: run
once, reuse), then runs the same evaluation as `recommender evaluate-retrieval`,
which also checks the results against the full cosine-similarity matrix.

    python benchmarks/retrieval_quality.py --home-root /tmp/r5 --out /tmp/r5/eval

Each line gives plain cosine and the product's default pipeline (the supervised projection the ingest fits
from the metadata's label on the train split, `projection_label=auto`) on the same queries: the test
split by default (`--split all`: every labelled item asks; those whose labels taught the projection are
ranked by one refitted without them).

`--ablation` runs issue 16's post-processing variants instead (GeM, scales, PCA and whitening,
query expansion, database-side augmentation, diffusion; `benchmarks/retrieval_ablation.py`), tuned on the
train split and reported on the test split:

    python benchmarks/retrieval_quality.py --ablation --cache /tmp/r16 --out /tmp/r16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from recommender.recommend import Recommender  # noqa: E402
from recommender.retrieval_eval import evaluate, write  # noqa: E402
from recommender.settings import get_settings  # noqa: E402
from recommender.store import open_store  # noqa: E402

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
TARGETS = {"art-louvre": ("art", "genre"), "brain-mri": ("mri", "diagnosis")}


def ensure_ingested(corpus: str, home: Path) -> None:
    store = open_store(get_settings(home=home))
    try:
        if store.exists() and store.count():
            return
    finally:
        store.close()
    src = CORPORA / corpus
    cmd = [sys.executable, "-c", "from cli.main import main; main()", "ingest", str(src),
           "--metadata", str(src / "labels.csv"), "--home", str(home), "--json"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home-root", type=Path, help="Parent of one data home per corpus.")
    ap.add_argument("--ablation", action="store_true", help="Score the post-processing variants (issue 16).")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/retrieval_ablation"), help="Descriptor cache (--ablation).")
    ap.add_argument("--corpora", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--split", default="test", help="Queries: items of this split ('all': every labelled item).")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.ablation:
        from retrieval_ablation import run, table

        results = run({c: CORPORA / c for c in args.corpora}, args.cache)
        text = table(results)
        print(text)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "retrieval_ablation.md").write_text(text + "\n")
            (args.out / "retrieval_ablation.json").write_text(json.dumps(results, indent=1))
        return
    if args.home_root is None:
        ap.error("--home-root is required (or --ablation)")
    summary = {}
    for corpus in args.corpora:
        sub, label = TARGETS[corpus]
        home = args.home_root / sub
        ensure_ingested(corpus, home)
        rec = Recommender(get_settings(home=home))
        try:
            report = evaluate(rec, label, args.k, split=None if args.split == "all" else args.split)
        finally:
            rec.close()
        if args.out:
            write(report, args.out)
        p = f"precision@{args.k}"
        overall, pipeline = report["recommender"]["overall"], report.get("pipeline", {}).get("overall")
        summary[corpus] = {"label": label, "points": report["points"], "split": args.split, **overall,
                           "identical_to_cosine_matrix": f"{report['agreement']['identical_lists']}/{report['agreement']['queries']}",
                           "pipeline": pipeline, "pipeline_config": report.get("pipeline_config")}
        line = f"{corpus}: {label} {p} plain {overall[p]:.4f} {overall[p + '_ci95']}"
        if pipeline:
            line += f", pipeline {pipeline[p]:.4f} {pipeline[p + '_ci95']} ({pipeline[p] / overall[p] - 1:+.1%})"
        print(f"{line}, over {overall['queries']} queries ({args.split})", flush=True)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
