"""Similar-by-id top-10 latency in embedded mode: exact index vs Qdrant local mode vs numpy brute force.

One synthetic 512-d collection (clustered unit vectors, like image embeddings)
grows through the sizes; at each size the same random query items go through
  - `Recommender.similar_to_item` with the exact in-process index (the default),
  - `Recommender.similar_to_item` answered by qdrant-client local mode,
  - a numpy brute-force baseline over the same vectors (matrix @ vector, argpartition),
and every top-10 list is checked to be identical across the three.

    python benchmarks/query_latency.py --sizes 10000 50000 100000 --queries 200 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender.recommend import Recommender  # noqa: E402
from recommender.settings import get_settings  # noqa: E402
from recommender.store import open_store, point_id_for  # noqa: E402


def synthetic(n: int, dim: int, seed: int, centers: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    v = c[rng.integers(0, centers, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def interleaved(fns: dict, args: list, only_first: dict[str, int], warmup: int = 3) -> dict[str, tuple[list[float], list]]:
    """Time each function on each argument, round-robin, so machine noise hits all of them alike."""
    for a in args[:warmup]:
        for fn in fns.values():
            fn(a)
    out: dict[str, tuple[list[float], list]] = {name: ([], []) for name in fns}
    for n, a in enumerate(args):
        for name, fn in fns.items():
            if n >= only_first.get(name, len(args)):
                continue
            t = time.perf_counter()
            res = fn(a)
            out[name][0].append(time.perf_counter() - t)
            out[name][1].append(res)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--home", type=Path, default=None, help="Data home (default: a temporary folder).")
    ap.add_argument("--json", action="store_true", help="Print the results as JSON.")
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # local mode warns above 20k points; that is the point of this benchmark

    home = args.home or Path(tempfile.mkdtemp(prefix="query_latency_"))
    cfg = get_settings(home=home, collection="latency")
    store = open_store(cfg)
    store.ensure_collection("synthetic-512", args.dim)
    vectors = synthetic(max(args.sizes), args.dim, seed=0)
    ids = [point_id_for(f"synthetic-{i}") for i in range(len(vectors))]
    rng = np.random.default_rng(1)
    rows = []
    have = 0
    for size in sorted(args.sizes):
        t = time.perf_counter()
        for s in range(have, size, 2000):
            e = min(size, s + 2000)
            store.upsert(ids[s:e], vectors[s:e], [{"path": f"synthetic/{i}.jpg", "label": i % 20} for i in range(s, e)])
        have = size
        load_s = time.perf_counter() - t
        exact = Recommender(cfg.with_overrides(query_engine="exact"), store)
        qdrant = Recommender(cfg.with_overrides(query_engine="qdrant"), store)
        t = time.perf_counter()
        exact.backend()  # build (or load) the index once; queries after that only check its stamp
        build_s = time.perf_counter() - t
        queries = rng.choice(size, args.queries, replace=False).tolist()
        matrix = vectors[:size]

        def brute(i: int) -> list[str]:
            s = matrix @ matrix[i]
            s[i] = -np.inf
            top = np.argpartition(-s, args.k)[: args.k]
            return [ids[j] for j in top[np.argsort(-s[top])]]

        n_q = min(len(queries), 60 if size > 20_000 else len(queries))  # local mode is slow: fewer calls
        timed = interleaved({
            "numpy": brute,
            "exact": lambda i: [r.id for r in exact.similar_to_item(ids[i], k=args.k)],
            "qdrant": lambda i: [r.id for r in qdrant.similar_to_item(ids[i], k=args.k)],
        }, queries, {"qdrant": n_q})
        (t_np, o_np), (t_ex, o_ex), (t_qd, o_qd) = timed["numpy"], timed["exact"], timed["qdrant"]
        diff_np = sum(a != b for a, b in zip(o_ex, o_np))
        diff_qd = sum(a != b for a, b in zip(o_ex, o_qd))
        identical = diff_np == 0 and diff_qd == 0
        row = {
            "points": size, "dim": args.dim, "queries": len(queries), "qdrant_queries": n_q,
            "exact_p50_ms": round(pct(t_ex, 50), 3), "exact_p95_ms": round(pct(t_ex, 95), 3),
            "qdrant_local_p50_ms": round(pct(t_qd, 50), 3), "qdrant_local_p95_ms": round(pct(t_qd, 95), 3),
            "numpy_p50_ms": round(pct(t_np, 50), 3), "numpy_p95_ms": round(pct(t_np, 95), 3),
            "speedup_vs_qdrant_p50": round(statistics.median(t_qd) / statistics.median(t_ex), 1),
            "exact_over_numpy_p50": round(statistics.median(t_ex) / statistics.median(t_np), 2),
            "identical_top_k": identical, "lists_differing_vs_numpy": diff_np, "lists_differing_vs_qdrant": diff_qd, "index_build_s": round(build_s, 2), "upsert_s": round(load_s, 1),
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stdout if not args.json else sys.stderr, flush=True)
    out = {"machine": f"{platform.machine()} {platform.processor() or ''} cpus={__import__('os').cpu_count()}",
           "python": platform.python_version(), "numpy": np.__version__, "results": rows}
    if args.json:
        print(json.dumps(out, indent=2))
    store.close()
    if not all(r["identical_top_k"] for r in rows):
        sys.exit("top-k lists differ between engines")


if __name__ == "__main__":
    main()
