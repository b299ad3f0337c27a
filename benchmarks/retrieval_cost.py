"""What the retrieval pipeline adds to a similar-by-id query: plain vs query expansion or the supervised
projection, one run.

Issue 16's cost target (<= 2 ms added to p50 similar-by-id at 50k). Builds (or, with --reuse, reopens)
the same 50k x 1280 clustered collection with an ingest's payload as `store_scale.py`, opens it the way
a served process does (`Recommender` on the embedded store, files read into the page cache), then
alternates the same item queries through `Recommender.similar_to_item` with `query_expansion` 0 and N,
so both see the same machine load. Prints p50/p95 per setting and the p50 difference. With
`--projection`, the variant is the supervised projection's re-rank instead (`recommender/projection.py`:
the first 50 answers re-scored from the coordinates saved at fit time), fitted on 5,000 points labelled by
their `bucket` (10 classes: the labels mean nothing here, the cost does not depend on them).

    python benchmarks/retrieval_cost.py --size 50000 --queries 300 --home /tmp/bench/cost
    python benchmarks/retrieval_cost.py --size 50000 --queries 300 --home /tmp/bench/cost --reuse --projection
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

from store_scale import BUCKETS, DIM, clustered, fill, ids_for  # noqa: E402


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


def fit_projection(home: Path, n: int, fit_on: int = 5000) -> str:
    """A projection fitted on `fit_on` points labelled by bucket, saved where the Recommender finds it."""
    from recommender import projection
    from recommender.settings import get_settings

    from recommender.store import open_store

    rows = np.random.default_rng(3).choice(n, fit_on, replace=False)
    x = clustered(n, DIM, seed=n)[rows]
    settings = get_settings(home=home, store_backend="edge")
    store = open_store(settings)
    try:
        fitted = projection.fit(x, [f"b{r % BUCKETS}" for r in rows], [str(r) for r in rows], "bucket",
                                store.model_name() or "")
        projection.save(fitted, projection.path_for(settings.home, settings.collection), store)
    finally:
        store.close()
    return f"projection w{fitted.weight}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--expansion", type=int, default=1, help="query_expansion to compare with 0")
    ap.add_argument("--projection", action="store_true", help="compare the supervised projection's re-rank instead")
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
    variant = fit_projection(args.home, args.size) if args.projection else f"query_expansion={args.expansion}"
    plain = Recommender(get_settings(home=args.home, store_backend="edge", query_expansion=0, use_projection=False))
    expanded = Recommender(get_settings(home=args.home, store_backend="edge", use_projection=args.projection,
                                        query_expansion=0 if args.projection else args.expansion), store=plain.store)
    try:
        plain.store.prefetch(wait=True)
        rng = np.random.default_rng(5)
        for q in rng.choice(args.size, 20, replace=False):  # warm-up, never measured
            plain.similar_to_item(ids[q], k=10), expanded.similar_to_item(ids[q], k=10)
        reason = expanded.similar_to_item(ids[0], k=10)[0].reason
        assert ("projection" if args.projection else "query_expansion") in reason, reason  # the variant really ran
        times: dict[str, list[float]] = {"plain": [], variant: []}
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
    print(f"added by {variant}: {b - a:+.2f} ms at p50 ({b / a:.2f}x)")


if __name__ == "__main__":
    main()
