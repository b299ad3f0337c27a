"""Fingerprint-stage throughput on brain-mri: decode + SHA-256 + pixel hash + pHash (+ mirror).

Prints images/s for the in-process loop and for the process pool the engine
uses (`DedupConfig.workers`), and, as the baseline in the same run,
`imagehash.phash` alone (what imagededup's PHash computes) on images decoded by
the same production decoder (`recommender.decode.load_image`), so the two differ
only in the hashing.
Each figure is the median of --repeats runs over the same files (page cache warm
after the first pass, which is also discarded).

    python benchmarks/dedup_phash_speed.py [--corpus ../shared/corpora/brain-mri] [--limit 0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import imagehash  # noqa: E402

from recommender.decode import load_image  # noqa: E402
from recommender.dedup.hashing import fingerprint_files  # noqa: E402
from recommender.dedup.plant import list_images  # noqa: E402


def baseline(paths: list[str]) -> None:
    for p in paths:
        imagehash.phash(load_image(p))


def main() -> None:
    default = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "brain-mri"
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=default)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N files (0 = all)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    paths = [str(p) for p in list_images(args.corpus)]
    if args.limit:
        paths = paths[: args.limit]
    fingerprint_files(paths[:500], workers=0)  # warm the page cache and imports

    def rate(fn) -> tuple[float, list[float]]:
        runs = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            runs.append(len(paths) / (time.perf_counter() - t))
        return statistics.median(runs), runs

    results = {
        "baseline imagehash.phash only, 1 process": rate(lambda: baseline(paths)),
        "engine fingerprint, 1 process": rate(lambda: fingerprint_files(paths, workers=0)),
        "engine fingerprint, 2 processes": rate(lambda: fingerprint_files(paths, workers=2)),
    }
    items = fingerprint_files(paths, workers=2)
    print(f"{len(paths)} images from {args.corpus} ({sum(1 for i in items if i.error)} failed), "
          f"median of {args.repeats} runs")
    for name, (med, runs) in results.items():
        print(f"  {name:<42} {med:8.0f} images/s   runs {[round(r) for r in runs]}")
    eng = results["engine fingerprint, 2 processes"][0]
    print(f"  engine (2 processes) vs baseline: {eng / results['baseline imagehash.phash only, 1 process'][0]:.2f}x; "
          f"target >= 300 images/s: {'met' if eng >= 300 else 'NOT met'}")


if __name__ == "__main__":
    main()
