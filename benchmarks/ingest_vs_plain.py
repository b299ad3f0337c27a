"""A full ingest (dedupe on) against the plain script a user would write instead, side by side.

Both run as fresh processes on the same corpus, one after the other, in one run:

- **ours**: `recommender ingest CORPUS --metadata labels.csv --json` into an empty home (decode, embed
  with MobileNetV2, exact/copy/near dedupe against the chunk and the collection, upsert into the
  embedded engine, the map stage). Its run report gives the seconds of each stage; the dedupe share
  is (`dedupe` + `cluster`) / the process's wall time.
- **plain**: the script below (`PLAIN`): torchvision MobileNetV2 with its ImageNet weights (on CUDA
  where there is one, as ours picks it), a DataLoader with 2 workers (`--plain-workers`) and batch 32,
  qdrant-client upserts into a local-mode collection, no
  dedupe, no metadata checks, no resumability.

A third process, **ours without dedupe** (`RECOMMENDER_DEDUP_ON_INGEST=false`, otherwise the same),
gives the wall time dedupe adds: the cluster stage runs beside the embedding of later chunks, so its
own seconds overlap work the ingest does anyway, and both readings are printed.

Issue 15's targets: dedupe <= 20 % of the ingest's wall time; the full ingest at least 2x faster than
the plain script on brain-mri. Wall times are of fresh processes (imports and model load included);
peak RSS is the largest process of each (os.wait4). The median of --repeats runs is reported.

    python benchmarks/ingest_vs_plain.py ../shared/corpora/brain-mri --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cli_latency import reap  # benchmarks/, on the path as the script's folder: wait4, the child's peak RSS

REPO = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).with_name("recommender")
# The installed console script; where the project is not installed (a bare GPU machine), the same CLI as a module.
RECOMMENDER = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "cli.main"]

PLAIN = r'''
import csv, sys, uuid
from pathlib import Path
import torch, torchvision
from PIL import Image
from qdrant_client import QdrantClient, models

root, home = Path(sys.argv[1]), sys.argv[2]
rows = list(csv.DictReader(open(root / "labels.csv")))
weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
tf = weights.transforms()


class Files(torch.utils.data.Dataset):
    def __len__(self):
        return len(rows)

    def __getitem__(self, i):
        return tf(Image.open(root / rows[i]["path"]).convert("RGB")), i


device = "cuda" if torch.cuda.is_available() else "cpu"
model = torchvision.models.mobilenet_v2(weights=weights)
model.classifier = torch.nn.Identity()
model.eval().to(device)
client = QdrantClient(path=home)
client.create_collection("images", vectors_config=models.VectorParams(size=1280, distance=models.Distance.COSINE))
loader = torch.utils.data.DataLoader(Files(), batch_size=32, num_workers=int(sys.argv[3]))
with torch.no_grad():
    for x, idx in loader:
        vecs = model(x.to(device)).cpu().numpy()
        client.upsert("images", points=[
            models.PointStruct(id=str(uuid.uuid5(uuid.NAMESPACE_URL, rows[i]["path"])), vector=v.tolist(),
                               payload=dict(rows[i])) for i, v in zip(idx.tolist(), vecs)])
print(client.count("images").count)
'''


def _run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB, largest process) and stdout of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=REPO, text=True)
    out = proc.stdout.read()
    rc, rss = reap(proc)
    wall = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"{cmd[:3]} failed with exit code {rc}")
    return wall, rss, out


def ours(corpus: Path, work: Path, dedupe: bool = True) -> dict:
    home = work / "ours"
    env = {**os.environ, "RECOMMENDER_HOME": str(home), "RECOMMENDER_DEDUP_ON_INGEST": str(dedupe).lower()}
    wall, rss, out = _run([*RECOMMENDER, "ingest", str(corpus), "--metadata", str(corpus / "labels.csv"),
                           "--json"], env)
    report = json.loads(out)
    stages = report.get("stage_seconds", {})
    dedupe = stages.get("dedupe", 0.0) + stages.get("cluster", 0.0)
    shutil.rmtree(home)
    return {"wall": wall, "rss": rss, "points": report.get("points"), "dedupe": dedupe,
            "map": stages.get("map", 0.0), "stages": stages}


def plain(corpus: Path, work: Path, workers: int) -> dict:
    home = work / "plain"
    wall, rss, out = _run([sys.executable, "-c", PLAIN, str(corpus), str(home), str(workers)])
    shutil.rmtree(home)
    return {"wall": wall, "rss": rss, "points": int(out.strip().splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path, help="A folder with labels.csv (path column relative to the folder).")
    ap.add_argument("--repeats", type=int, default=1, help="Runs of each; medians are reported.")
    ap.add_argument("--plain-workers", type=int, default=2, help="The plain script's DataLoader workers (issue 15: 2).")
    args = ap.parse_args()
    n = sum(1 for _ in open(args.corpus / "labels.csv")) - 1
    runs: dict[str, list[dict]] = {"ours": [], "off": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="ingest-vs-plain-") as tmp:
        for _ in range(args.repeats):
            runs["ours"].append(ours(args.corpus, Path(tmp)))
            runs["off"].append(ours(args.corpus, Path(tmp), dedupe=False))
            runs["plain"].append(plain(args.corpus, Path(tmp), args.plain_workers))
            o, f, p = runs["ours"][-1], runs["off"][-1], runs["plain"][-1]
            print(f"run: ours {o['wall']:.1f} s ({o['points']} points, dedupe {o['dedupe']:.1f} s, map {o['map']:.1f} s, "
                  f"rss {o['rss']:.0f} MB); ours without dedupe {f['wall']:.1f} s; plain {p['wall']:.1f} s "
                  f"({p['points']} points, rss {p['rss']:.0f} MB)", flush=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("wall", "rss")} for k, v in runs.items()}
    added = med["ours"]["wall"] - med["off"]["wall"]
    dedupe = statistics.median(r["dedupe"] for r in runs["ours"])
    share = dedupe / med["ours"]["wall"]
    ratio = med["plain"]["wall"] / med["ours"]["wall"]
    print(f"{args.corpus.name} ({n} files, median of {args.repeats}; load {os.getloadavg()[0]:.1f}): "
          f"ours {med['ours']['wall']:.1f} s wall, {n / med['ours']['wall']:.1f} img/s, rss {med['ours']['rss']:.0f} MB; "
          f"plain script {med['plain']['wall']:.1f} s, {n / med['plain']['wall']:.1f} img/s, rss {med['plain']['rss']:.0f} MB; "
          f"speed-up {ratio:.2f}x (target >= 2x on brain-mri: {'met' if ratio >= 2 else 'NOT met'}); "
          f"dedupe {dedupe:.1f} s = {share:.1%} of the ingest's wall (target <= 20 %: {'met' if share <= 0.2 else 'NOT met'}); "
          f"the same ingest without dedupe {med['off']['wall']:.1f} s: dedupe adds {added:.1f} s = "
          f"{added / med['ours']['wall']:.1%} of the wall")
    print("ours stage seconds (last run):", json.dumps(runs["ours"][-1]["stages"]))


if __name__ == "__main__":
    main()
