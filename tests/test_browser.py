"""The dashboard in a real browser: `streamlit run` as a subprocess, Debian's chromium via Playwright.

Opens every page on the collection the real pipeline built (conftest's
`pipeline_built`: sample images plus planted exact, copy and near duplicates),
clicks Browse -> Similar -> a positive example, uploads a query image, and asserts
on what the pages show (item and result counts, scores, every duplicate tier),
saving a screenshot of each page. Screenshots go to
tmp_path, or to $RECOMMENDER_SCREENSHOTS_DIR (docs/screenshots for the README).

Needs /usr/bin/chromium: run scripts/install_chromium.sh (the Makefile's test
target does). Never `playwright install`: there is no network for it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from corpus import Built
from recommender import payload as P
from recommender.browse import duplicate_clusters
from recommender.store import open_store

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
APP = REPO / "dashboard" / "app.py"
CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 90_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit not healthy after {timeout}s:\n{log.read_text()[-3000:]}")


@contextmanager
def dashboard_server(home: Path, collection: str, log: Path) -> Iterator[str]:
    """`streamlit run dashboard/app.py` on a free port over a data home; yields its URL and stops it after.
    Fails with what to do when Debian's chromium is missing."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install_chromium.sh (apt-get install chromium), "
                    "then rerun the browser test.")
    port = _free_port()
    env = {**os.environ, "RECOMMENDER_HOME": str(home), "RECOMMENDER_COLLECTION": collection,
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=str(REPO))
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def server(pipeline_built: Built, tmp_path_factory):
    """A streamlit server on a free port over a copy of the pipeline-built collection."""
    cfg = pipeline_built.copy_home(tmp_path_factory.mktemp("browser") / "home")
    store = open_store(cfg)  # what the Duplicates page must show, read before the server holds the store
    try:
        clusters = len(duplicate_clusters(store))
    finally:
        store.close()
    with dashboard_server(cfg.home, cfg.collection, cfg.home.parent / "streamlit.log") as url:
        yield url, clusters


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    target = os.environ.get("RECOMMENDER_SCREENSHOTS_DIR")
    out = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        pg = browser.new_page(viewport={"width": 1400, "height": 950})
        pg.set_default_timeout(TIMEOUT_MS)
        yield pg
        browser.close()


def _settle(pg) -> None:
    """Wait until streamlit has finished the current run (no 'Running…' status widget)."""
    pg.wait_for_timeout(300)
    pg.locator("[data-testid='stStatusWidget']").wait_for(state="detached", timeout=TIMEOUT_MS)
    pg.wait_for_timeout(300)


def _download(pg, key: str) -> bytes:
    """The file behind a download button. Each script run registers the button's file anew and
    releases the last run's, so a click that lands while a run finishes can fetch a released file
    and start no download (seen once in CI on 2 busy cores); a user would click again, and so does
    this, once, after the page settles."""
    from playwright.sync_api import TimeoutError as TimeoutError_

    def click(timeout_ms: int) -> bytes:
        _settle(pg)
        with pg.expect_download(timeout=timeout_ms) as info:
            pg.locator(f".st-key-{key} button").click()
        return Path(info.value.path()).read_bytes()

    try:
        return click(30_000)
    except TimeoutError_:
        return click(90_000)


def _shot(pg, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    pg.wait_for_timeout(1500)  # dataframes and images paint after the run ends
    pg.screenshot(path=str(path))
    _shrink(path)
    return path


def _shrink(path: Path) -> None:
    """Keep committed screenshots modest: 256-colour PNG."""
    from PIL import Image

    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def _scores(pg) -> list[float]:
    texts = pg.locator("[data-testid='stMarkdownContainer']").filter(has_text=re.compile(r"^score ")).all_inner_texts()
    return [float(re.search(r"score\s+([0-9.]+)", t).group(1)) for t in texts]


def test_pages_in_browser(server, page, shots, pipeline_built: Built):
    server, clusters = server
    pg = page
    points = pipeline_built.report["points"]
    # Browse
    pg.goto(f"{server}/?page=Browse")
    total = pg.get_by_text(re.compile(r"\d+ items match")).first
    total.wait_for()
    _settle(pg)
    assert re.match(rf"{points} items match", total.inner_text()), total.inner_text()
    pg.locator("[data-testid='stImage'] img").nth(23).wait_for()  # the first page's 24 thumbnails
    _shot(pg, shots, "browse")

    # Browse -> Similar (first card's button)
    pg.locator("[class*='st-key-browse-similar-'] button").first.click()
    results = pg.get_by_text(re.compile(r"^12 results")).first
    results.wait_for()
    _settle(pg)
    assert "Similar items" in pg.locator("h1").first.inner_text()
    scores = _scores(pg)
    assert len(scores) == 12 and all(0 < s <= 1.0001 for s in scores), scores
    assert scores == sorted(scores, reverse=True)
    _shot(pg, shots, "similar")

    # a positive example: results update in place, the liked item leaves the results
    pg.locator("[class*='st-key-sim-like-'] button").nth(2).click()
    pg.get_by_text("More like").first.wait_for()
    _settle(pg)
    assert pg.get_by_text(re.compile(r"^12 results")).count() >= 1
    after = _scores(pg)
    assert len(after) == 12 and after != scores
    assert pg.get_by_role("button", name="remove").count() == 1
    _shot(pg, shots, "similar_positive")

    # Search by uploaded image: the stored copy of the same picture comes first with cosine ~1
    pg.goto(f"{server}/?page=Search")
    pg.get_by_role("tab", name="Image").click()
    pg.locator("input[type='file']").set_input_files(str(SAMPLES / "art" / "portrait" / "cl010059566.jpg"))
    pg.get_by_text(re.compile(r"^12 results")).first.wait_for()
    _settle(pg)
    top = _scores(pg)
    assert len(top) == 12 and top[0] > 0.99, top
    _shot(pg, shots, "search")

    # Duplicates
    pg.goto(f"{server}/?page=Duplicates")
    head = pg.get_by_text(re.compile(r"\d+ clusters")).first
    head.wait_for()
    _settle(pg)
    assert int(re.match(r"(\d+) clusters", head.inner_text()).group(1)) == clusters
    for tier in P.Tier:  # the real run's clusters of every tier are on the page
        assert pg.get_by_text(re.compile(rf"— tier {tier.value} —")).count() >= 1, tier
    for _, original, duplicate in pipeline_built.corpus.pairs():
        assert pg.get_by_text(original, exact=True).count() >= 1 and pg.get_by_text(duplicate, exact=True).count() >= 1
    assert pg.get_by_text("canonical").count() >= 1
    assert pg.get_by_text(re.compile(r"Split leakage")).count() == 1
    _shot(pg, shots, "duplicates")

    # Map
    pg.goto(f"{server}/?page=Map")
    pts = pg.get_by_text(re.compile(rf"{points} points")).first
    pts.wait_for()
    pg.locator("canvas, svg.marks").first.wait_for()
    _settle(pg)
    _shot(pg, shots, "map")

    # Runs
    pg.goto(f"{server}/?page=Runs")
    pg.get_by_text(re.compile(r"1 runs of collection")).first.wait_for()
    _settle(pg)
    pg.get_by_text("Failures (0)").first.wait_for()  # rendered after the header: under load, later than the settle
    assert pg.get_by_text("Failures (0)").count() == 1
    _shot(pg, shots, "runs")
