"""Readers beside writers (issue 13): while an ingest runs in its own process, reader processes
(what the API and the dashboard do) keep answering, never fail a query, and see the new points
once the ingest has written them; the store's owner can be killed mid-ingest and nothing is lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recommender.ingest import run_ingest
from recommender.settings import get_settings
from recommender.store import open_store

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


def _reader(home: Path, item: Path, out: Path, stop: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "tests" / "reader_loop.py"), str(home), str(item), str(out), str(stop)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def _wait_ready(path: Path, proc: subprocess.Popen, timeout: float = 120) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rows = _lines(path)
        if rows and any("count" in r for r in rows):
            return rows[0]
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    raise AssertionError(f"reader not ready: {_lines(path)}")


def test_readers_keep_answering_during_an_ingest_and_survive_their_owner_being_killed(tmp_path):
    home, first, second = tmp_path / "home", tmp_path / "first", tmp_path / "second"
    shutil.copytree(SAMPLES / "art", first)
    shutil.copytree(SAMPLES / "medical", second)
    cfg = get_settings(home=home)
    before = run_ingest(cfg, first).to_dict()
    assert before["failed"] == 0
    item, stop = next(first.rglob("*.jpg")), tmp_path / "stop"
    out1, out2 = tmp_path / "r1.jsonl", tmp_path / "r2.jsonl"
    r1 = _reader(home, item, out1, stop)
    assert _wait_ready(out1, r1)["owns"] is True          # the first reader owns the store
    r2 = _reader(home, item, out2, stop)
    assert _wait_ready(out2, r2)["owns"] is False         # the second goes through it
    env = {**os.environ, "RECOMMENDER_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    ingest = subprocess.Popen([sys.executable, "-m", "cli.main", "ingest", str(second), "--json"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        r1.send_signal(signal.SIGKILL)                    # the owner dies while the ingest runs
        r1.wait(30)
        out, errs = ingest.communicate(timeout=600)
        assert ingest.returncode == 0, errs
        report = json.loads(out.strip().splitlines()[-1])
        time.sleep(1.0)                                   # a few more reads after the commit
    finally:
        stop.touch()
        for p in (r1, r2, ingest):
            if p.poll() is None:
                p.wait(60) if p is not ingest else p.kill()
    rows = [r for r in _lines(out2) if "t" in r]
    errors = [r["error"] for r in rows if "error" in r]
    assert not errors, errors[:3]
    assert r2.returncode == 0, r2.stderr.read()
    store = open_store(cfg)
    try:
        total = store.count()
    finally:
        store.close()
    assert total == report["points"] > before["points"] and report["new"] > 0
    counts = [r["count"] for r in rows]
    assert counts[0] == before["points"] and counts[-1] == total   # it saw the new points once written
    assert all(r["hits"] == 5 for r in rows)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_api_answers_200_to_every_probe_while_an_ingest_of_a_new_folder_runs(tmp_path):
    import httpx

    home, first, second = tmp_path / "home", tmp_path / "first", tmp_path / "second"
    shutil.copytree(SAMPLES / "art", first)
    shutil.copytree(SAMPLES / "medical", second)
    cfg = get_settings(home=home)
    assert run_ingest(cfg, first).failed == 0
    store = open_store(cfg)
    try:
        item = store.find_by_path(str(next(first.rglob("*.jpg")).resolve()))
    finally:
        store.close()
    env = {**os.environ, "RECOMMENDER_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    port = _free_port()
    api = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port)], cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base, probes, statuses = f"http://127.0.0.1:{port}", ["/health", f"/items/{item}", f"/items/{item}/similar?k=5",
                                                          f"/items/{item}/thumbnail"], []
    try:
        with httpx.Client(base_url=base, timeout=120) as http:
            end = time.monotonic() + 120
            while True:
                try:
                    if http.get(probes[2]).status_code == 200:   # the API process now owns the store
                        break
                except httpx.TransportError:
                    assert api.poll() is None and time.monotonic() < end, api.stderr.read() if api.poll() is not None else "no answer"
                    time.sleep(0.3)
            ingest = subprocess.Popen([sys.executable, "-m", "cli.main", "ingest", str(second), "--json"], cwd=REPO,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            while ingest.poll() is None:
                for path in probes:
                    statuses.append((path, http.get(path).status_code))
                time.sleep(0.05)
            out, errs = ingest.communicate()
            assert ingest.returncode == 0, errs
            report = json.loads(out.strip().splitlines()[-1])
            health = http.get("/health").json()
    finally:
        api.terminate()
        api.wait(60)
    printed = api.stderr.read()
    assert f"REST API   {base}" in printed and f"{base}/docs" in printed, printed[:500]  # the URLs it serves
    bad = [s for s in statuses if s[1] != 200]
    assert statuses and not bad, bad[:5]
    assert report["new"] > 0 and report["failed"] == 0
    assert health["points"] == report["points"]    # the API sees the ingest's points
