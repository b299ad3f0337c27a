"""What the retrieval pipeline adds to a similar-by-id query: plain vs query expansion, one run.

Issue 16's cost target (<= 2 ms added to p50 similar-by-id at 50k). Builds (or, with --reuse, reopens)
the same 50k x 1280 clustered collection with an ingest's payload as `store_scale.py`, opens it the way
a served process does (`Recommender` on the embedded store, files read into the page cache), then
alternates the same item queries through `Recommender.similar_to_item` with `query_expansion` 0 and N,
so both see the same machine load. Prints p50/p95 per setting and the p50 difference.

    python benchmarks/retrieval_cost.py --size 50000 --queries 300 --home /tmp/bench/cost
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from store_scale import DIM, clustered, fill, ids_for  # noqa: E402


def build(home: Path, n: int, reuse: bool) -> list[str]:
    from recommender.settings import get_settings
    from recommender.store import open_store

    ids = ids_for(n)
    store = open_store(get_settings(home=home, store_backend="edge"))
    try:
        if not (reuse and store.exists() and store.count() == n):
            fill(store, store.collection, clustered(n, DIM, seed=n))
        return ids
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--expansion", type=int, default=1, help="query_expansion to compare with 0")
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--reuse", action="store_true")
    args = ap.parse_args()
    from recommender.recommend import Recommender
    from recommender.settings import get_settings

    print(f"# {platform.platform()} {os.cpu_count()} cpus, python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    t = time.perf_counter()
    ids = build(args.home, args.size, args.reuse)
    print(f"collection of {args.size:,} ready in {time.perf_counter() - t:.1f} s", flush=True)
    plain = Recommender(get_settings(home=args.home, store_backend="edge", query_expansion=0))
    expanded = Recommender(get_settings(home=args.home, store_backend="edge", query_expansion=args.expansion),
                           store=plain.store)
    try:
        plain.store.prefetch(wait=True)
        rng = np.random.default_rng(5)
        for q in rng.choice(args.size, 20, replace=False):  # warm-up, never measured
            plain.similar_to_item(ids[q], k=10), expanded.similar_to_item(ids[q], k=10)
        times: dict[str, list[float]] = {"plain": [], f"query_expansion={args.expansion}": []}
        for q in rng.choice(args.size, args.queries, replace=False):
            for (name, rec) in zip(times, (plain, expanded)):
                t = time.perf_counter()
                rec.similar_to_item(ids[q], k=10)
                times[name].append(time.perf_counter() - t)
    finally:
        plain.close()
    p50 = {}
    for name, ts in times.items():
        p50[name] = 1000 * float(np.median(ts))
        print(f"{args.size:>9,} similar-by-id top-10 {name:<20} p50 {p50[name]:.2f} ms "
              f"p95 {1000 * float(np.percentile(ts, 95)):.2f} ms", flush=True)
    a, b = p50.values()
    print(f"added by query expansion: {b - a:+.2f} ms at p50 ({b / a:.2f}x)")


if __name__ == "__main__":
    main()
