"""Stored pHashes within `phash_strict` bits of each new item: the block index against a full pass.

Dedupe on ingest asks, for every new item, which stored points lie within `phash_strict` (2) bits
of its pHash or mirrored pHash (`StoredHashes.near`, session 41). The plain way is one XOR and
popcount over every stored hash per item; `hashing.HashIndex` (multi-index hashing: three blocks,
sorted) looks up only the rows that share a block. Prints, per collection size, the index build,
the lookups of one ingest chunk (512 items, a quarter of them planted within 2 bits of a stored
hash) and the full pass, median of --repeats, and checks that both return the same rows.

    python benchmarks/hash_lookup.py [--sizes 100000 1000000] [--repeats 3]
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


if __name__ == "__main__":
    main()
