"""Operations: incremental runs, crash safety, concurrency, retries, model upgrade without downtime."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from flows.ingest import ingest_flow
from recommender.catalog import Catalog
from recommender.consistency import check
from recommender.locks import CollectionLock, IngestLockedError
from recommender.recommend import Recommender
from recommender.reembed import reembed
from recommender.runs import run_history
from recommender.settings import get_settings
from recommender.store import VectorStore, open_store, with_retries

REPO = Path(__file__).resolve().parents[1]
ART = sorted((REPO / "samples" / "art").rglob("*.jpg"))
MRI = sorted((REPO / "samples" / "medical").rglob("*.jpg"))


def _run(src: Path, cfg, **kw) -> dict:
    return ingest_flow(str(src), settings=cfg.with_overrides(**kw).model_dump(mode="json"))


def _state(cfg) -> tuple[dict, dict]:
    """What a run leaves behind: points (id -> path, sha, rounded vector) and catalog rows."""
    store = open_store(cfg)
    try:
        points = {pid: (p["path"], p["sha256"], tuple(np.round(v, 4))) for pid, p, v in store.scroll(with_vectors=True)}
    finally:
        store.close()
    cat = Catalog(cfg.catalog_path)
    try:
        files = {p: (r.sha256, r.status, tuple(r.point_ids)) for p, r in cat.files(cfg.collection).items()}
    finally:
        cat.close()
    return points, files


@pytest.mark.slow
def test_incremental_add_change_delete(tmp_path, art_source):
    src = art_source(4)
    cfg = get_settings(home=tmp_path / "h")
    assert _run(src, cfg)["new"] == 4
    shutil.copy(ART[4], src / ART[4].name)                       # added
    shutil.copy(ART[5], src / ART[0].name)                       # same path, new content
    os.remove(src / ART[1].name)                                 # deleted
    r = _run(src, cfg)
    assert (r["new"], r["changed"], r["deleted"], r["unchanged"]) == (1, 1, 1, 2)
    points, files = _state(cfg)
    assert r["points"] == 4 == len(points)
    assert str((src / ART[1].name).resolve()) not in files
    assert {v[0] for v in points.values()} == {str(p.resolve()) for p in src.iterdir()}
    changed = files[str((src / ART[0].name).resolve())]
    assert points[changed[2][0]][1] == changed[0]                # the point holds the new content
    assert check(cfg).consistent


@pytest.mark.slow
def test_delete_one_of_two_identical_files_keeps_the_point(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ART[0], src / "a.jpg")
    shutil.copy(ART[0], src / "b.jpg")
    cfg = get_settings(home=tmp_path / "h")
    _run(src, cfg)
    os.remove(src / "a.jpg")
    r = _run(src, cfg)
    assert r["deleted"] == 1 and r["points"] == 1
    points, _ = _state(cfg)
    assert [v[0] for v in points.values()] == [str((src / "b.jpg").resolve())]


@pytest.mark.slow
def test_mark_instead_of_remove(tmp_path, art_source):
    src = art_source(2)
    cfg = get_settings(home=tmp_path / "h", on_delete="mark")
    _run(src, cfg)
    os.remove(src / ART[0].name)
    r = _run(src, cfg)
    assert r["deleted"] == 1 and r["points"] == 2
    store = open_store(cfg)
    try:
        flags = {p["path"]: p.get("deleted", False) for _, p, _ in store.scroll()}
    finally:
        store.close()
    assert flags[str((src / ART[0].name).resolve())] is True


def _ingest_subprocess(src: Path, home: Path, tag: str = "") -> subprocess.Popen:
    """`recommender ingest` in its own process (and its own ephemeral Prefect API)."""
    (home / f"prefect{tag}").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RECOMMENDER_HOME": str(home), "RECOMMENDER_BATCH_SIZE": "2", "RECOMMENDER_CHUNK_ITEMS": "4",
           "PREFECT_HOME": str(home / f"prefect{tag}"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    return subprocess.Popen([sys.executable, "-m", "cli.main", "ingest", str(src), "--json"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _catalog_rows(home: Path) -> int:
    try:
        with sqlite3.connect(home / "catalog.sqlite", timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM files").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_files", [0, 7])
def test_sigkill_then_rerun_equals_clean_run(tmp_path, kill_after_files):
    """Kill the ingest process (SIGKILL) after N files are recorded; a rerun ends exactly like a clean run."""
    src = tmp_path / "src"
    src.mkdir()
    files = (ART + MRI)[:40]
    for i, p in enumerate(files):
        shutil.copy(p, src / f"{i:02d}_{p.name}")
    clean_home, crash_home = tmp_path / "clean", tmp_path / "crash"
    proc = _ingest_subprocess(src, crash_home)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and _catalog_rows(crash_home) < kill_after_files:
        time.sleep(0.05)
    if kill_after_files == 0:
        while time.time() < deadline and proc.poll() is None and not (crash_home / "qdrant").exists():
            time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _catalog_rows(crash_home) < len(files), "the run finished before it was killed; the test proves nothing"
    crashed = get_settings(home=crash_home)
    history = run_history(crashed)                                    # empty if killed before the run was recorded
    assert all(r["status"] == "interrupted" for r in history)          # never 'running' forever
    rerun = _run(src, crashed)
    assert [r["run_id"] for r in rerun["resumes"]] == [r["run_id"] for r in history]
    assert [r["status"] for r in run_history(crashed)] == ["completed"] + ["interrupted"] * len(history)
    clean = get_settings(home=clean_home)
    _run(src, clean)
    assert _state(crashed) == _state(clean)
    assert check(crashed).consistent


@pytest.mark.slow
def test_second_ingest_while_one_runs_fails_clearly(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ART[0], src / "a.jpg")
    cfg = get_settings(home=tmp_path / "h")
    holder = CollectionLock(cfg.home, cfg.collection).acquire()   # what a running ingest holds
    try:
        with pytest.raises(IngestLockedError, match=rf"locked by ingest started \d\d:\d\d by pid {os.getpid()} "):
            _run(src, cfg)
        started = time.monotonic()
        threading.Timer(1.0, holder.release).start()
        r = _run(src, cfg, lock_timeout=30)                          # waits, then runs
        assert r["new"] == 1 and time.monotonic() - started >= 1.0
    finally:
        holder.release()


@pytest.mark.slow
def test_two_concurrent_ingest_processes_never_corrupt_the_store(tmp_path, art_source):
    src = art_source(8)
    home = tmp_path / "h"
    procs = [_ingest_subprocess(src, home, tag=str(i)) for i in range(2)]
    codes = sorted(p.wait(timeout=300) for p in procs)
    assert codes[0] == 0 and codes[1] in (0, 75)                      # one ran; the other waited or exited 75 (locked)
    cfg = get_settings(home=home)
    points, files = _state(cfg)
    assert len(points) == 8 and len(files) == 8
    assert check(cfg).consistent


class _FlakyClient:
    """The real local client with a transient failure injected at the Qdrant boundary."""

    def __init__(self, client, failures: int):
        self._client, self.failures, self.calls = client, failures, 0

    def upsert(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            from qdrant_client.http.exceptions import ResponseHandlingException

            raise ResponseHandlingException(ConnectionError("connection refused (injected)"))
        return self._client.upsert(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_transient_qdrant_failure_is_retried_permanent_one_is_not(tmp_path):
    cfg = get_settings(home=tmp_path / "h", retry_backoff=0.01)
    real = open_store(cfg)
    flaky = _FlakyClient(real.client, failures=2)
    store = VectorStore(flaky, cfg.collection, attempts=3, backoff=0.01)
    try:
        store.ensure_collection("m", 4)
        store.upsert(["00000000-0000-0000-0000-000000000001"], np.eye(4, dtype=np.float32)[:1], [{"path": "x"}])
        assert flaky.calls == 3 and store.count() == 1
        with pytest.raises(Exception) as info:                         # wrong dimension: permanent, no retry
            store.upsert(["00000000-0000-0000-0000-000000000002"], np.ones((1, 3), np.float32), [{}])
        assert flaky.calls == 4 and "ResponseHandling" not in type(info.value).__name__
        attempts = []
        with pytest.raises(ConnectionError):
            with_retries(lambda: attempts.append(1) or (_ for _ in ()).throw(ConnectionError("down")),
                         attempts=3, backoff=0.0)
        assert len(attempts) == 3
    finally:
        real.close()


@pytest.mark.slow
def test_reembed_switches_alias_while_queries_keep_working(tmp_path, art_source):
    src = art_source(6)
    cfg = get_settings(home=tmp_path / "h")
    _run(src, cfg)
    ckpt = tmp_path / "resnet50.pth"
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), ckpt)
    store = open_store(cfg)
    rec = Recommender(cfg, store=store)
    errors, answers, stop = [], [], threading.Event()
    query = str((src / ART[0].name).resolve())

    def keep_querying():
        while not stop.is_set():
            try:
                answers.append(len(rec.similar_to_item(query, k=3)))
            except Exception as exc:  # any failure during the switch is a bug
                errors.append(exc)

    t = threading.Thread(target=keep_querying)
    t.start()
    try:
        result = reembed(cfg, f"resnet50:{ckpt}", store=store)
    finally:
        stop.set()
        t.join()
    try:
        assert not errors and len(answers) > 0 and set(answers) == {3}
        assert result["to_model"] == f"resnet50:{ckpt}" and result["points"] == 6
        assert store.model_name() == f"resnet50:{ckpt}"
        _, vec = store.get(store.find_by_path(query), with_vector=True)
        assert vec.shape == (2048,)
    finally:
        store.close()
    assert _run(src, cfg, model=f"resnet50:{ckpt}")["unchanged"] == 6


@pytest.mark.slow
def test_check_finds_and_repairs_differences(tmp_path, art_source):
    src = art_source(3)
    cfg = get_settings(home=tmp_path / "h")
    _run(src, cfg)
    assert check(cfg).consistent
    store = open_store(cfg)
    try:
        lost = store.find_by_path(str((src / ART[0].name).resolve()))
        store.delete([lost])                                              # a point lost behind the catalog's back
        store.upsert(["00000000-0000-0000-0000-00000000beef"], np.ones((1, 1280), np.float32) / 1280 ** 0.5,
                     [{"path": "/nowhere/orphan.jpg"}])                   # a point no file references
    finally:
        store.close()
    report = check(cfg)
    assert not report.consistent
    assert report.orphan_points == ["00000000-0000-0000-0000-00000000beef"]
    assert report.files_missing_points == [str((src / ART[0].name).resolve())]
    assert check(cfg, repair=True).repaired and check(cfg).consistent
    r = _run(src, cfg)                                                    # the next ingest restores the file
    assert r["new"] == 1 and r["points"] == 3 and check(cfg).consistent


@pytest.mark.slow
def test_one_off_ingest_runs_in_process_and_records_its_run(tmp_path):
    """Without PREFECT_API_URL, `recommender ingest` runs the stages here: no Prefect imported (so no
    temporary server started), and the run is in the catalog's history like a flow run's."""
    src = tmp_path / "src"
    src.mkdir()
    for p in ART[:3]:
        shutil.copy(p, src / p.name)
    env = {**os.environ, "RECOMMENDER_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)
    script = ("import json, sys\nfrom cli.main import main\nsys.argv = ['recommender', 'ingest', sys.argv[1], '--json']\n"
              "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
              "assert 'prefect' not in sys.modules, 'a one-off ingest imported prefect'\n")
    out = subprocess.run([sys.executable, "-c", script, str(src)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["new"] == 3 and report["status"] == "completed"
    catalog = Catalog(tmp_path / "home" / "catalog.sqlite")
    try:
        runs = catalog.runs()
    finally:
        catalog.close()
    assert [(r["run_id"], r["status"], r["report"]["new"]) for r in runs] == [(report["run_id"], "completed", 3)]


@pytest.mark.slow
@pytest.mark.parametrize("chunk_items", [16, 1])  # the swapped files in one chunk, and in different chunks
def test_swapping_and_rotating_file_names_loses_nothing(tmp_path, chunk_items):
    """Files that swap or rotate names between runs keep one point per picture, each point's payload
    names the file that now holds it, and the catalog agrees (issue 14: a swap used to delete both)."""
    from recommender.ingest import run_ingest
    from recommender.store import point_id_for
    import hashlib

    src = tmp_path / "src"
    src.mkdir()
    for name, p in zip("abcd", ART):
        shutil.copy(p, src / f"{name}.jpg")
    cfg = get_settings(home=tmp_path / "h", device="cpu", chunk_items=chunk_items)
    run_ingest(cfg, src)

    def rename(pairs):
        for old, new in pairs:
            (src / old).rename(src / f"tmp_{new}")
        for _, new in pairs:
            (src / f"tmp_{new}").rename(src / new)

    rename([("a.jpg", "b.jpg"), ("b.jpg", "a.jpg")])                      # swap
    rename([("b.jpg", "c.jpg"), ("c.jpg", "d.jpg"), ("d.jpg", "b.jpg")])  # 3-way rotation
    for _ in range(2):                                                    # and a re-run changes nothing
        report = run_ingest(cfg, src)
        assert report.failed == 0 and report.status == "completed"
        points, files = _state(cfg)
        assert len(points) == 4 and len(files) == 4
        store = open_store(cfg)
        try:
            for f in sorted(src.glob("*.jpg")):
                pid = point_id_for(hashlib.sha256(f.read_bytes()).hexdigest())
                payload, _ = store.get(pid)
                assert payload["path"] == str(f) and payload["relpath"] == f.name and payload["item_key"] == str(f)
        finally:
            store.close()
        assert check(cfg).consistent


def test_refingerprint_gives_old_points_the_fields_they_lack_and_touches_nothing_else(tmp_path, art_source):
    """A collection ingested by the real pipeline, made "old": its points lose the turned pHashes, an askew
    scan (large: decoded at a JPEG draft's scale, as ingest decodes it) its frame and tilt, one point gets a stale frame, one file is deleted. `refingerprint` writes back
    exactly what ingest stored, leaves the stale frame of a point that lacks no field alone until `everything`,
    names the deleted file, and changes no vector and no other field."""
    from PIL import Image

    from recommender import payload as P
    from recommender.ingest import run_ingest
    from recommender.refingerprint import refingerprint

    src = art_source(4)
    painting = Image.open(sorted(src.iterdir())[0]).convert("RGB").crop((100, 100, 400, 400)).resize((900, 900))
    painting.rotate(9, expand=True, fillcolor="white", resample=Image.Resampling.BICUBIC).save(src / "scan.jpg", quality=90)
    cfg = get_settings(home=tmp_path / "h", map_layout="off")
    run_ingest(cfg, src)
    store = open_store(cfg)
    try:
        stored = {Path(p[P.PATH]).name: (pid, p, v) for pid, p, v in store.scroll(with_vectors=True)}
        assert stored["scan.jpg"][1].get(P.FRAME_TILT)  # the scan lies askew: a frame and its angle stored
        keep, gone = sorted(n for n in stored if n != "scan.jpg")[:2]
        for name, (pid, _, _) in stored.items():
            if name != keep:
                store.delete_payload_keys([pid], [P.PHASH_TURNS, P.FRAME, P.FRAME_TILT])
        store.set_payload([stored[keep][0]], {P.FRAME: [1, 2, 3, 4]})
    finally:
        store.close()
    (src / gone).unlink()

    result = refingerprint(cfg)
    assert result["points"] == len(stored) and result["checked"] == len(stored) - 1
    assert result["updated"] == len(stored) - 2  # all but the stale one (not checked) and the deleted one
    assert [(Path(u["path"]).name, u["reason"].startswith("cannot read")) for u in result["unreadable"]] == [(gone, True)]
    store = open_store(cfg)
    try:
        after = {Path(p[P.PATH]).name: (p, v) for _, p, v in store.scroll(with_vectors=True)}
    finally:
        store.close()
    for name, (_, payload, vector) in stored.items():
        np.testing.assert_array_equal(after[name][1], vector)
        if name not in (keep, gone):
            assert after[name][0] == payload, name  # exactly what ingest wrote, the scan's frame and tilt included
    assert P.PHASH_TURNS not in after[gone][0] and after[keep][0][P.FRAME] == [1, 2, 3, 4]

    again = refingerprint(cfg, everything=True)
    assert again["checked"] == len(stored) and again["updated"] == 1  # only the stale frame was wrong
    store = open_store(cfg)
    try:
        fixed = {Path(p[P.PATH]).name: p for _, p, _ in store.scroll()}
    finally:
        store.close()
    assert fixed[keep] == stored[keep][1]
