"""Readers beside writers (issue 13): what going through the store's owner costs.

The edge engine admits one process per shard, so the first process on a home owns the store and
the others send it their calls (`recommender/store/share.py`). In one run, on one home of N
clustered 1280-d vectors (the default model's dimension):

  - similar-by-id top-10 p50/p95 in the owner (direct) and in a second process (through the owner);
  - upsert points/s of batches of 256 (the ingest's batch) direct and through the owner;
  - while the owner builds the index (`optimize`, the end of an ingest), the longest wait of a
    query sent by the other process, and how many queries it answered during the build;
  - takeover: seconds from the owner's death (SIGKILL) to the other process's next answer.

    python benchmarks/shared_store.py --n 20000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from store_scale import DIM, K, clustered, ids_for  # noqa: E402

BATCH = 256


def _open(home: str):
    from recommender.settings import get_settings
    from recommender.store import open_store

    return open_store(get_settings(home=home, store_backend="edge", collection="bench"))


def _upsert(store, x: np.ndarray, ids: list[str], start: int) -> float:
    t = time.perf_counter()
    for s in range(0, len(x), BATCH):
        store.upsert(ids[s:s + BATCH], x[s:s + BATCH], [{"path": f"/b/{start + i}.jpg"} for i in range(s, min(s + BATCH, len(x)))])
    return len(x) / (time.perf_counter() - t)


def _latency(store, ids: list[str], queries: np.ndarray) -> tuple[float, float]:
    times = []
    for q in queries:
        t = time.perf_counter()
        store.query(ids[q], K)
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1000), float(np.percentile(times, 95) * 1000)


def owner(home: str, n: int, conn) -> None:
    """Owns the store: fills the first half, answers, builds the index when told, then waits to die."""
    x = clustered(n, DIM, seed=n)
    ids = ids_for(n)
    store = _open(home)
    store.ensure_collection("bench", DIM)
    half = n // 2
    conn.send({"upsert_direct": _upsert(store, x[:half], ids[:half], 0), "owns": store.client.owns})
    store.optimize()
    queries = np.random.default_rng(1).choice(half, 200, replace=False)
    p50, p95 = _latency(store, ids, queries)
    conn.send({"direct_p50_ms": p50, "direct_p95_ms": p95})
    conn.recv()                      # the client has written the second half: build its index
    t = time.perf_counter()
    store.optimize()
    conn.send({"optimize_s": time.perf_counter() - t})
    time.sleep(3600)                 # killed by the parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    n, half = args.n, args.n // 2
    home = tempfile.mkdtemp(prefix="shared_store_")
    print(f"# {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, n {n:,} x {DIM}", flush=True)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=owner, args=(home, n, child))
    proc.start()
    res = dict(parent.recv())
    res.update(parent.recv())
    x = clustered(n, DIM, seed=n)
    ids = ids_for(n)
    store = _open(home)
    res["client_is_owner"] = store.client.owns
    queries = np.random.default_rng(1).choice(half, 200, replace=False)
    res["via_owner_p50_ms"], res["via_owner_p95_ms"] = _latency(store, ids, queries)
    res["upsert_via_owner"] = _upsert(store, x[half:], ids[half:], half)
    parent.send("optimize")
    waits, t0 = [], time.perf_counter()
    while not parent.poll():
        t = time.perf_counter()
        store.query(ids[int(queries[len(waits) % len(queries)])], K)
        waits.append(time.perf_counter() - t)
    res.update(parent.recv())
    res["during_build_answered"] = len(waits)
    res["during_build_max_wait_s"] = max(waits) if waits else 0.0
    os.kill(proc.pid, signal.SIGKILL)
    t = time.perf_counter()
    store.query(ids[0], K)
    res["takeover_s"] = time.perf_counter() - t
    res["client_owns_after_kill"] = store.client.owns
    res["count_after_takeover"] = store.count()
    store.close()
    proc.join()
    print(f"similar top-10   direct p50 {res['direct_p50_ms']:.2f} ms p95 {res['direct_p95_ms']:.2f} | "
          f"via owner p50 {res['via_owner_p50_ms']:.2f} ms p95 {res['via_owner_p95_ms']:.2f} "
          f"(x{res['via_owner_p50_ms'] / res['direct_p50_ms']:.2f})")
    print(f"upsert           direct {res['upsert_direct']:,.0f} pts/s | via owner {res['upsert_via_owner']:,.0f} pts/s "
          f"(x{res['upsert_via_owner'] / res['upsert_direct']:.2f})")
    print(f"during build     optimize {res['optimize_s']:.1f} s, the other process answered {res['during_build_answered']} "
          f"queries, longest wait {res['during_build_max_wait_s']:.2f} s")
    print(f"owner killed     next answer after {res['takeover_s']:.2f} s (now the owner: {res['client_owns_after_kill']}), "
          f"count {res['count_after_takeover']:,} of {n:,}")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
