"""REST API under load: N concurrent clients on loopback for a fixed time, similar-by-id top-10.

Starts `recommender serve` (the real CLI) on 127.0.0.1 on a free port, waits for
/health, runs `--clients` threads for `--seconds`, each with its own HTTP
connection asking `/items/{random id}/similar?k=10`, then stops the server it
started. Reports throughput, p50/p95/p99 latency and every non-200 answer.

    python benchmarks/api_load.py --home /tmp/home --clients 8 --seconds 30 --json
Without --home a synthetic 512-d collection of --points points is built first.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender.settings import get_settings  # noqa: E402
from recommender.store import open_store, point_id_for  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synthetic_home(points: int, dim: int = 512) -> Path:
    home = Path(tempfile.mkdtemp(prefix="api_load_"))
    store = open_store(get_settings(home=home))
    store.ensure_collection("synthetic-512", dim)
    rng = np.random.default_rng(0)
    for s in range(0, points, 2000):
        n = min(points, s + 2000) - s
        v = rng.standard_normal((n, dim)).astype(np.float32)
        store.upsert([point_id_for(f"p{i}") for i in range(s, s + n)], v,
                     [{"path": f"synthetic/{i}.jpg", "label": i % 20} for i in range(s, s + n)])
    store.close()
    return home


def item_ids(home: Path, collection: str | None) -> list[str]:
    store = open_store(get_settings(home=home, **({"collection": collection} if collection else {})))
    try:
        return [pid for pid, _, _ in store.scroll(batch=1024)]
    finally:
        store.close()  # the server needs the embedded store's lock


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path)
    ap.add_argument("--collection")
    ap.add_argument("--points", type=int, default=5000, help="Synthetic collection size when no --home.")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    home = args.home or synthetic_home(args.points)
    ids = item_ids(home, args.collection)
    port = free_port()
    cmd = [sys.executable, "-c", "from cli.main import main; main()", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--home", str(home)] + (["--collection", args.collection] if args.collection else [])
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                health = httpx.get(f"{base}/health", timeout=30).json()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"server did not start: {server.stderr.read().decode()[-2000:]}")
                time.sleep(0.3)
        with httpx.Client(base_url=base) as warm:  # build the exact index before the clock starts
            for pid in ids[:5]:
                warm.get(f"/items/{pid}/similar", params={"k": 10}, timeout=120)
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop_at = time.perf_counter() + args.seconds

        def client(seed: int) -> None:
            rnd = random.Random(seed)
            mine, bad = [], []
            with httpx.Client(base_url=base, timeout=10) as c:
                while time.perf_counter() < stop_at:
                    t = time.perf_counter()
                    try:
                        r = c.get(f"/items/{rnd.choice(ids)}/similar", params={"k": 10})
                        if r.status_code != 200 or len(r.json()) != min(10, len(ids) - 1):
                            bad.append(f"{r.status_code}: {r.text[:200]}")
                    except httpx.HTTPError as exc:
                        bad.append(repr(exc))
                    mine.append(time.perf_counter() - t)
            with lock:
                latencies.extend(mine)
                errors.extend(bad)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    ms = np.asarray(latencies) * 1000
    out = {
        "points": health["points"], "model": health["model"], "engine": health["engine"],
        "clients": args.clients, "seconds": round(wall, 1), "requests": len(latencies),
        "throughput_rps": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2), "errors": len(errors), "error_samples": errors[:5],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(out, indent=2 if args.json else None))
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
