"""Shared fixtures: one Prefect test harness per session, isolated data homes, the sample corpus,
and one collection built by the real pipeline from a corpus with planted duplicates.

Tests marked `slow` need that collection, the browser, Prefect flows or models;
`pytest -m "not slow"` (`make test-fast`) runs the unit-level rest.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from corpus import Built, build_collection, plant_corpus

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
CORPORA = REPO.parent / "shared" / "corpora"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: needs the pipeline-built collection, the browser, Prefect flows or models "
                   "(deselect with -m 'not slow': make test-fast)")


@pytest.fixture(scope="session")
def prefect_harness():
    """All flows in the suite run against one temporary Prefect API (SQLite)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def _prefect_for_slow_tests(request):
    """Slow tests run flows: they share the harness. The unit-level rest never waits for its start."""
    if request.node.get_closest_marker("slow"):
        request.getfixturevalue("prefect_harness")


@pytest.fixture(autouse=True)
def _keep_main_module(monkeypatch):
    """Streamlit's AppTest runs a page as `__main__` and leaves it there; a later test that spawns
    processes (Dask workers) would then re-run that page in every child, which dies at start."""
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])


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


@pytest.fixture(scope="session")
def pipeline_built(tmp_path_factory, prefect_harness) -> Built:
    """The planted corpus (tests/corpus.py) ingested by the real Prefect flow and swept by the real
    dedupe, once per session. Its home is shared: copy it (`copy_home`) before opening the store."""
    base = tmp_path_factory.mktemp("pipeline")
    corpus = plant_corpus(base / "corpus")
    return build_collection(corpus, base / "home", "planted")


@pytest.fixture
def pipeline_home(pipeline_built, tmp_path):
    """Settings for this test's own writable copy of the pipeline-built collection."""
    return pipeline_built.copy_home(tmp_path / "pipeline_home")
