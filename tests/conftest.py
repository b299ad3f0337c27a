"""Shared fixtures: one Prefect test harness per session, isolated data homes, the sample corpus."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
CORPORA = REPO.parent / "shared" / "corpora"


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    """All flows in the suite run against one temporary Prefect API (SQLite)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """No test may write into ./var: point RECOMMENDER_HOME at a fresh folder."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("RECOMMENDER_HOME", str(home))
    return home


@pytest.fixture
def sample_copy(tmp_path) -> Path:
    """A writable copy of the bundled sample corpus (images and metadata.csv)."""
    dst = tmp_path / "samples"
    shutil.copytree(SAMPLES, dst)
    return dst


@pytest.fixture
def art_source(tmp_path) -> Callable[[int], Path]:
    """Makes `tmp_path/src` holding copies of the first n sample paintings under their own names."""

    def make(n: int) -> Path:
        src = tmp_path / "src"
        src.mkdir()
        for p in sorted((SAMPLES / "art").rglob("*.jpg"))[:n]:
            shutil.copy(p, src / p.name)
        return src

    return make


@pytest.fixture(scope="session")
def corpora() -> Path:
    """The shared real corpora (../shared/corpora); CI has them too."""
    assert CORPORA.is_dir(), f"shared corpora not found at {CORPORA}; clone the repo next to shared/"
    return CORPORA
