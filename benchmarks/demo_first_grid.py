"""How long `make demo` makes a new user wait for the first grid of pictures.

Runs `make demo` as a user would (dependencies already installed: `make setup` done), on an empty
data home, and times from the command's start until a real browser (Debian's chromium via
Playwright) shows the Browse page's first thumbnail. Also reports when the dashboard answered its
health check, and the ingest's own seconds from its run report. Each run starts from an empty home
(a fresh ingest); the median of --runs is the figure. Target: first grid <= 90 s.

    python benchmarks/demo_first_grid.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.read().decode().strip() == "ok"
    except OSError:
        return False


def _first_grid(url: str, deadline: float) -> None:
    """Open the dashboard and wait until the Browse grid's first thumbnail has painted."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 950})
        page.goto(f"{url}/?page=Browse", timeout=max(1, deadline - time.time()) * 1000)
        page.wait_for_function(
            "() => [...document.querySelectorAll(\"[data-testid='stImage'] img\")].some(i => i.complete && i.naturalWidth > 0)",
            timeout=max(1, deadline - time.time()) * 1000)
        browser.close()


def _ingest_seconds(home: Path) -> float | None:
    try:
        with sqlite3.connect(home / "catalog.sqlite") as conn:
            row = conn.execute("SELECT report FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
        return float(json.loads(row[0]).get("seconds")) if row and row[0] else None
    except (sqlite3.Error, OSError, TypeError, ValueError):
        return None


def one_run(timeout: float) -> dict[str, float | None]:
    """One `make demo` on an empty home: seconds to a healthy dashboard and to the first painted grid."""
    home = Path(tempfile.mkdtemp(prefix="demo-home-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(home.parent / f"{home.name}.log", "w")
    start = time.time()
    proc = subprocess.Popen(["make", "demo", f"HOME_DIR={home}", f"PORT={port}"], cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "CI": ""})
    try:
        while not _healthy(url):
            if proc.poll() is not None or time.time() - start > timeout:
                raise SystemExit(f"make demo did not serve the dashboard (see {log.name})")
            time.sleep(0.2)
        healthy = time.time() - start
        _first_grid(url, start + timeout)
        grid = time.time() - start
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    return {"dashboard_healthy_s": healthy, "first_grid_s": grid, "ingest_s": _ingest_seconds(home)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="Fresh `make demo` runs; the median is reported.")
    ap.add_argument("--timeout", type=float, default=600, help="Give up on a run after this many seconds.")
    args = ap.parse_args()
    runs = []
    for n in range(args.runs):
        r = one_run(args.timeout)
        runs.append(r)
        print(f"run {n + 1}: first grid {r['first_grid_s']:.1f} s, dashboard healthy {r['dashboard_healthy_s']:.1f} s, "
              f"ingest {r['ingest_s'] or float('nan'):.1f} s", flush=True)
    med = {k: statistics.median(r[k] for r in runs if r[k] is not None) for k in runs[0]}
    print(f"make demo (median of {len(runs)}): first grid {med['first_grid_s']:.1f} s "
          f"(target <= 90 s: {'met' if med['first_grid_s'] <= 90 else 'NOT met'}), "
          f"dashboard healthy {med['dashboard_healthy_s']:.1f} s, ingest {med['ingest_s']:.1f} s; "
          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
