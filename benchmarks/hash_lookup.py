"""Stored pHashes within `phash_strict` bits of each new item: the block index against a full pass.

Dedupe on ingest asks, for every new item, which stored points lie within `phash_strict` (2) bits
of its pHash or mirrored pHash (`StoredHashes.near`, session 41). The plain way is one XOR and
popcount over every stored hash per item; `hashing.HashIndex` (multi-index hashing: three blocks,
sorted) looks up only the rows that share a block. Prints, per collection size, the index build,
the lookups of one ingest chunk (512 items, a quarter of them planted within 2 bits of a stored
hash) and the full pass, median of --repeats, and checks that both return the same rows.

Then the batch sweep's turned pairs (`sweep.turned_pairs`, session 42): every item's three turned
pHashes looked up at once in block indexes of the pHashes and mirrored pHashes (`HashIndex.pairs`),
against the same queries looked up one `within` call at a time, timed on the first --sample queries
and given per 1,000 queries (the whole loop at 1M items would take minutes); the two must agree there.

    python benchmarks/hash_lookup.py [--sizes 100000 1000000] [--repeats 3] [--sample 20000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender.dedup.hashing import HashIndex  # noqa: E402
from recommender.dedup.sweep import turned_pairs  # noqa: E402


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--radius", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sample", type=int, default=20_000)
    args = ap.parse_args()
    print(f"# {platform.platform()} {platform.processor() or ''}, radius {args.radius}, chunk {args.chunk}")
    print(f"{'stored':>10}{'index build s':>15}{'index lookups s':>17}{'full pass s':>13}{'speed-up':>10}")
    for n in args.sizes:
        rng = np.random.default_rng(n)
        stored = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
        mirrored = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
        queries = rng.integers(0, 2**63, args.chunk, dtype=np.int64).astype(np.uint64)
        for k in range(0, args.chunk, 4):  # a quarter are copies of stored items, 0-2 bits apart
            queries[k] = stored[rng.integers(n)] ^ np.uint64(sum(1 << int(b) for b in rng.choice(64, k % 3, replace=False)))
        builds, lookups, passes = [], [], []
        for _ in range(args.repeats):
            t_build, (a, b) = _timed(lambda: (HashIndex(stored, args.radius), HashIndex(mirrored, args.radius)))
            builds.append(t_build)
            t_look, fast = _timed(lambda: [np.union1d(a.within(int(q)), b.within(int(q))) for q in queries])
            lookups.append(t_look)
            t_pass, slow = _timed(lambda: [np.flatnonzero(np.minimum(np.bitwise_count(stored ^ q), np.bitwise_count(
                mirrored ^ q)) <= args.radius) for q in queries])
            passes.append(t_pass)
            assert all(np.array_equal(x, y) for x, y in zip(fast, slow)), "the index and the full pass disagree"
        look, full = statistics.median(lookups), statistics.median(passes)
        print(f"{n:>10,}{statistics.median(builds):>15.2f}{look:>17.3f}{full:>13.2f}{full / look:>9.0f}x", flush=True)
    print(f"{'items':>10}{'turned_pairs s':>16}{'batch ms/1k q':>15}{'one by one ms/1k q':>20}{'speed-up':>10}")
    for n in args.sizes:
        rng = np.random.default_rng(n + 1)
        h = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
        m = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
        turns = np.stack([h, *(rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) for _ in range(3))], axis=1)
        turns[: n // 100, 1] = h[n // 100: 2 * (n // 100)] ^ np.uint64(1)  # 1 % of items: a turn of another
        totals, ones = [], []
        for _ in range(args.repeats):
            totals.append(_timed(lambda: turned_pairs(h, turns, args.radius, m))[0])
            q = turns[:, 1:].ravel()[: args.sample]
            index_h, index_m = HashIndex(h, args.radius), HashIndex(m, args.radius)
            t_one, one = _timed(lambda: [np.union1d(index_h.within(int(v)), index_m.within(int(v))) for v in q])
            ones.append(t_one)
            batch = {(int(a), int(b)) for idx in (index_h, index_m) for a, b in zip(*idx.pairs(q))}
            assert batch == {(k, int(r)) for k, rows in enumerate(one) for r in rows}, "batch and one by one disagree"
        total = statistics.median(totals)
        per_batch, per_one = 1000 * total / (3 * n), 1000 * statistics.median(ones) / len(q)
        print(f"{n:>10,}{total:>16.2f}{1000 * per_batch:>15.3f}{1000 * per_one:>20.3f}{per_one / per_batch:>9.0f}x",
              flush=True)


if __name__ == "__main__":
    main()
