"""The command line as an operator meets it: a mistake ends in one line on stderr and the
documented exit code (README, "Exit codes"); --debug shows the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recommender.locks import CollectionLock

pytestmark = pytest.mark.slow  # each case starts a fresh `recommender` process

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECOMMENDER_HOME": str(home), "COLUMNS": "200"}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def test_mistakes_end_in_one_line_and_a_documented_code(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    cases = [
        (["similar", str(tmp_path / "missing.jpg")], 2, "does not exist yet"),   # empty home
        (["ingest", str(tmp_path / "no-such-folder")], 2, "does not exist"),
        (["ingest", str(src), "--metadata", str(tmp_path / "labels.csv")], 65, "labels.csv"),
        (["ingest", str(src), "--batch-size", "0"], 2, "batch"),
    ]
    for args, code, says in cases:
        r = _cli(*args, home=tmp_path / "home")
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == code, (args, r.returncode, r.stderr[-1500:])
        assert "Traceback" not in r.stderr and len(lines) == 1, (args, r.stderr[-1500:])
        assert says in lines[0], (args, lines)


def test_debug_shows_the_traceback(tmp_path):
    r = _cli("--debug", "similar", str(tmp_path / "missing.jpg"), home=tmp_path / "home")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_locked_collection_exits_75_and_names_the_holder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    lock = CollectionLock(tmp_path / "home", "images").acquire()
    try:
        r = _cli("ingest", str(src), "--wait", "0.5", home=tmp_path / "home")
    finally:
        lock.release()
    assert r.returncode == 75, r.stderr[-1500:]
    assert f"ingest started" in r.stderr and f"by pid {os.getpid()}" in r.stderr
    assert "waiting up to 0 s" in r.stderr or "waiting up to 1 s" in r.stderr  # said whom it waited for, first


def test_mistakes_against_a_built_collection_end_in_one_line(pipeline_home, tmp_path):
    """Issue 14's probes on a collection the real pipeline built: each one line and its documented code."""
    from recommender.store import open_store

    store = open_store(pipeline_home)
    try:
        ingested = next(store.scroll(batch=1))[1]["path"]
    finally:
        store.close()
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not a picture")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    base = ["--collection", pipeline_home.collection]
    cases = [
        (["similar", "x" * 5000, *base], 2, "too long"),
        (["similar", "123", *base], 2, "not an ingested item"),
        (["similar", "~no-such-user-here/x.jpg", *base], 2, "not an ingested item"),
        (["similar", "--image", str(not_image), *base], 65, "notes.jpg"),
        (["similar", "--image", str(tmp_path / "gone.jpg"), *base], 2, "gone.jpg"),
        (["similar", ingested, "--filter", "no_such_field=1", *base], 2, "fields that exist"),
        (["similar", ingested, "--filter", f"width={10**30}", *base], 2, "64 bits"),
        (["check", "--home", str(a_file)], 2, "must be a folder"),
        (["check", "--collection", ""], 2, "collection"),
    ]
    for args, code, says in cases:
        r = _cli(*args, home=pipeline_home.home)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == code, (args[:2], r.returncode, r.stderr[-1500:])
        assert "Traceback" not in r.stderr and len(lines) == 1, (args[:2], r.stderr[-1500:])
        assert says in lines[0], (args[:2], lines)
