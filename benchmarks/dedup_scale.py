"""All-pairs cosine sweep at scale: 100k clustered 512-d vectors with planted duplicates.

Prints seconds, peak RSS and recall of planted pairs for the blocked sweep
(recommender.dedup.sweep.cosine_pairs), and, in the same run, the naive full
N x N matrix on a subset (timed, then extrapolated by (N/n)^2), plus blocked
fp32 vs bf16 on that subset. Each measurement runs in its own subprocess so
peak RSS is its own. Repeats report the median.

    python benchmarks/dedup_scale.py                  # 100k, subset 16k, 3 repeats
    python benchmarks/dedup_scale.py --n 20000 --subset 8000 --repeats 1   # quick
    python benchmarks/dedup_scale.py --n 200000 --dense-size 500     # look-alikes: every pair vs 16 best per item
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_data(n: int, d: int = 512, clusters: int = 2000, planted: int = 1000, seed: int = 0):
    """Clustered unit vectors (cluster-mates at cosine ~0.5) with `planted` near-copies (cosine ~0.97)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    x = centres[rng.integers(0, clusters, n)]
    x += rng.standard_normal((n, d), dtype=np.float32)  # within-cluster cosine ~0.5
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    src = rng.choice(n, planted, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), planted, replace=False)
    x[dst] = x[src] + 0.15 * rng.standard_normal((planted, d), dtype=np.float32) / np.sqrt(d)
    x[dst] /= np.linalg.norm(x[dst], axis=1, keepdims=True)
    pairs = {(int(min(a, b)), int(max(a, b))) for a, b in zip(src, dst)}
    return x, pairs


def make_dense(n: int, d: int = 512, size: int = 500, seed: int = 0) -> np.ndarray:
    """Look-alikes: groups of `size` vectors around one centre at cosine ~0.95 to each other, so every
    item has `size - 1` partners above a 0.9 threshold (N * size / 2 pairs: MRI slices of one kind)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // size + 1, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[np.arange(n) // size]
    for s in range(0, n, 65_536):  # in place, a slice at a time: the data's peak stays N x d floats
        part = x[s:s + 65_536]
        part += 0.23 / np.sqrt(d) * rng.standard_normal(part.shape, dtype=np.float32)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
    return x


def dense_child(args) -> dict:
    """The sweep over look-alikes, every pair or the k best per item (`--max-per-item`)."""
    import torch

    from recommender.dedup.sweep import cosine_pairs

    torch.set_num_threads(args.threads)
    x = make_dense(args.n, d=args.dim, size=args.dense_size, seed=args.seed)
    rss_before = peak_rss_mb()
    t = time.perf_counter()
    i, j, s = cosine_pairs(x, args.threshold, block_size=args.block, precision=args.precision,
                           max_per_item=args.max_per_item or None)
    return {"mode": "dense", "max_per_item": args.max_per_item, "n": args.n, "seconds": time.perf_counter() - t,
            "peak_rss_mb": peak_rss_mb(), "rss_before_mb": rss_before, "pairs": len(i),
            "mean_score": float(s.mean()) if len(s) else 0.0}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(args) -> dict:
    """One measurement in this process: returns seconds, peak RSS, pairs found, recall."""
    import torch

    torch.set_num_threads(args.threads)
    x, planted = make_data(args.n, seed=args.seed)
    if args.mode == "naive":
        x = x[: args.subset]
        planted = {p for p in planted if p[1] < args.subset}
    rss_before = peak_rss_mb()
    t = time.perf_counter()
    if args.mode == "naive":
        s = x @ x.T  # the N x N matrix the blocked sweep avoids
        i, j = np.nonzero(np.triu(s >= args.threshold, 1))
        found = set(zip(i.tolist(), j.tolist()))
    else:
        from recommender.dedup.sweep import cosine_pairs

        xx = x[: args.subset] if args.mode == "blocked_subset" else x
        if args.mode == "blocked_subset":
            planted = {p for p in planted if p[1] < args.subset}
        i, j, _ = cosine_pairs(xx, args.threshold, block_size=args.block, precision=args.precision)
        found = set(zip(i.tolist(), j.tolist()))
    secs = time.perf_counter() - t
    return {"mode": args.mode, "precision": args.precision, "n": len(x) if args.mode != "blocked_subset" else args.subset,
            "seconds": secs, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": rss_before, "pairs": len(found),
            "planted": len(planted), "recall": len(planted & found) / max(1, len(planted)),
            "pairs_hash": hash(tuple(sorted(found))) if len(found) < 5_000_000 else None}


def run_child(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--subset", type=int, default=16_000)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--block", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", default="blocked")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--dense-size", type=int, default=0,
                    help="instead: look-alike groups of this size (every item has size-1 partners above the "
                         "threshold), swept with every pair and with --max-per-item")
    ap.add_argument("--max-per-item", type=int, default=16, help="with --dense-size: the bounded run's k")
    ap.add_argument("--dim", type=int, default=512, help="with --dense-size: vector dimension")
    ap.add_argument("--bounded-only", action="store_true", help="with --dense-size: skip the every-pair run")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(dense_child(args) if args.mode == "dense" else child(args)))
        return
    if args.dense_size:
        return dense(args)
    common = ["--n", str(args.n), "--subset", str(args.subset), "--threshold", str(args.threshold),
              "--block", str(args.block), "--threads", str(args.threads), "--seed", str(args.seed)]

    def median_of(extra: list[str], repeats: int) -> dict:
        runs = [run_child(common + extra) for _ in range(repeats)]
        best = dict(runs[0])
        best["seconds"] = statistics.median(r["seconds"] for r in runs)
        best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
        best["runs_s"] = [round(r["seconds"], 2) for r in runs]
        return best

    full = median_of(["--mode", "blocked", "--precision", "auto"], 1)
    naive = median_of(["--mode", "naive"], args.repeats)
    sub32 = median_of(["--mode", "blocked_subset", "--precision", "fp32"], args.repeats)
    sub16 = median_of(["--mode", "blocked_subset", "--precision", "auto"], args.repeats)
    scale = (args.n / args.subset) ** 2
    matrix_gb = args.n * args.n * 4 / 1e9
    print(f"data: {args.n} x 512 clustered unit vectors, {full['planted']} planted duplicate pairs, threshold {args.threshold}, "
          f"block {args.block}, torch threads {args.threads}")
    print(f"blocked sweep, {args.n:>7}: {full['seconds']:7.2f} s  peak RSS {full['peak_rss_mb']:7.0f} MB  "
          f"pairs {full['pairs']}  planted recall {full['recall']:.4f}")
    print(f"subset {args.subset} (median of {args.repeats}):")
    for name, r in (("naive N x N fp32", naive), ("blocked fp32", sub32), ("blocked auto", sub16)):
        print(f"  {name:<18} {r['seconds']:7.2f} s  peak RSS {r['peak_rss_mb']:7.0f} MB  pairs {r['pairs']}  "
              f"recall {r['recall']:.4f}  runs {r['runs_s']}")
    same = naive["pairs_hash"] == sub32["pairs_hash"] == sub16["pairs_hash"]
    print(f"  identical pair sets (naive, blocked fp32, blocked auto): {same}")
    print(f"  speedup of blocked auto over naive on the subset: {naive['seconds'] / sub16['seconds']:.2f}x, "
          f"over blocked fp32: {sub32['seconds'] / sub16['seconds']:.2f}x")
    print(f"naive extrapolated to {args.n}: {naive['seconds'] * scale:7.1f} s and a {matrix_gb:.1f} GB matrix "
          f"(blocked: {full['seconds']:.1f} s, {full['peak_rss_mb']:.0f} MB peak RSS in total)")


def dense(args) -> None:
    """Every pair against the k best per item on look-alikes, each in a fresh process (its own peak RSS)."""
    common = ["--n", str(args.n), "--threshold", str(args.threshold), "--block", str(args.block), "--threads",
              str(args.threads), "--seed", str(args.seed), "--precision", args.precision, "--mode", "dense",
              "--dense-size", str(args.dense_size), "--dim", str(args.dim)]
    print(f"data: {args.n:,} x {args.dim} look-alikes in groups of {args.dense_size} (cosine ~0.95 within a group), "
          f"threshold {args.threshold}, block {args.block}, torch threads {args.threads}", flush=True)
    for k in (args.max_per_item,) if args.bounded_only else (args.max_per_item, 0):
        label = f"{k} best per item" if k else "every pair"
        try:
            r = run_child(common + ["--max-per-item", str(k)])
        except subprocess.CalledProcessError as exc:
            print(f"  {label:<18} failed: exit {exc.returncode}")
            continue
        print(f"  {label:<18} {r['seconds']:8.2f} s  peak RSS "
              f"{r['peak_rss_mb']:7.0f} MB (data {r['rss_before_mb']:.0f} MB)  pairs {r['pairs']:,}", flush=True)


if __name__ == "__main__":
    main()
