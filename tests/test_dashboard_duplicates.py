"""The Duplicates page as a curator uses it, driven with AppTest on a collection the real pipeline built:
clusters sorted by size, tier and score; a big cluster's members a page at a time (never a column
per member); two members compared side by side; the view and the decisions exported.

The collection is the session's planted corpus (conftest `pipeline_built`) plus one painting
ingested with 19 byte-identical copies: a 20-member cluster, the shape of the "78 columns" problem.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from corpus import Built
from flows.ingest import ingest_flow
from recommender import payload as P
from recommender.browse import Cluster, duplicate_clusters, score_clusters, sort_clusters
from recommender.decode import DecodeOptions
from recommender.dedup.compare import load_member, pixel_difference
from recommender.recommend import Recommender
from recommender.settings import get_settings
from recommender.store import open_store

pytestmark = pytest.mark.slow

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
ART = sorted((Path(__file__).resolve().parents[1] / "samples" / "art").rglob("*.jpg"))
COPIES = 19


@pytest.fixture(scope="module")
def review_home(pipeline_built: Built, tmp_path_factory) -> dict:
    """A module copy of the pipeline-built home with a 20-member cluster ingested into it, and the
    clusters (scored) the page should show."""
    base = tmp_path_factory.mktemp("dup_review")
    cfg = pipeline_built.copy_home(base / "home")
    big = base / "big"
    big.mkdir()
    for k in range(COPIES + 1):
        shutil.copyfile(ART[-1], big / f"same_{k:02d}.jpg")
    report = ingest_flow(str(big), settings=cfg.model_dump(mode="json"))
    assert not report["failed"]
    store = open_store(cfg)
    try:
        clusters = duplicate_clusters(store)
        score_clusters(store, clusters)
    finally:
        store.close()
    return {"home": cfg.home, "collection": cfg.collection, "clusters": clusters}


@pytest.fixture
def page(review_home, isolated_home, monkeypatch) -> AppTest:
    """The Duplicates page, opened."""
    monkeypatch.setenv("RECOMMENDER_HOME", str(review_home["home"]))
    monkeypatch.setenv("RECOMMENDER_COLLECTION", review_home["collection"])
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.radio(key="page").set_value("Duplicates").run()
    assert not at.exception, at.exception
    return at


def _run(changed) -> AppTest:
    """Rerun after a widget change (or a plain rerun of the app) and check nothing raised."""
    at = changed.run()
    assert not at.exception, at.exception
    return at


def _headings(at: AppTest) -> list[tuple[str, str]]:
    """(tier, cluster id) of every cluster card on the page, top to bottom."""
    out = []
    for m in at.markdown:
        head = re.match(r"\*\*Cluster\*\* `([^`]+)` — tier \*\*(\w+)\*\*", m.value)
        if head:
            out.append((head.group(2), head.group(1)))
    return out


def _widest_row(node) -> int:
    """The most columns any row of the page has (st.columns blocks, nested ones included)."""
    children = list(getattr(node, "children", {}).values())
    here = len(children) if children and all(getattr(c, "type", "") == "column" for c in children) else 0
    return max([here, *(_widest_row(c) for c in children)])


def _count(node, kind: str) -> int:
    """How many elements of a kind the page tree holds (images have no accessor of their own)."""
    return int(getattr(node, "type", "") == kind) + sum(_count(c, kind) for c in getattr(node, "children", {}).values())


def _big(review_home) -> Cluster:
    return max(review_home["clusters"], key=lambda c: len(c.members))


def test_clusters_sort_by_size_tier_and_lowest_score(page, review_home):
    clusters = review_home["clusters"]
    assert page.selectbox(key="dup_sort").value == "size"
    for by in ("size", "tier", "score", "id"):
        _run(page.selectbox(key="dup_sort").set_value(by))
        want = [(c.tier, c.cluster_id) for c in sort_clusters(clusters, by)[:10]]
        assert _headings(page) == want, by
    _run(page.selectbox(key="dup_sort").set_value("score"))
    lows = [float(m) for m in re.findall(r"lowest cos \*\*([0-9.]+)\*\*", "\n".join(m.value for m in page.markdown))]
    assert lows == sorted(lows) and lows[0] < 1.0            # the most doubtful cluster comes first
    _run(page.radio(key="dup_tier").set_value("copy"))       # the tier filter and the order combine
    want = [(c.tier, c.cluster_id) for c in sort_clusters([c for c in clusters if c.tier == "copy"], "score")[:10]]
    assert _headings(page) == want


def test_a_big_cluster_shows_its_members_a_page_at_a_time(page, review_home):
    big = _big(review_home)
    n = len(big.members)
    assert n >= COPIES + 1                    # the copies, plus whatever the painting already matched
    _run(page.radio(key="dup_tier").set_value(big.tier))
    assert _headings(page)[0] == (big.tier, big.cluster_id)   # largest first
    ck = f"{big.tier}-{big.cluster_id}"
    keys = {b.key for b in page.button}
    tiles = [k for k in range(n) if f"dup-sim-{ck}-{k}" in keys]
    assert tiles == list(range(16))
    assert _widest_row(page._tree) <= 8                       # never one column per member
    assert f"members 1–16 of {n} (page 1 of 2)" in [c.value for c in page.caption]
    assert page.button(key=f"dup-mprev-{ck}").disabled
    _run(page.button(key=f"dup-mnext-{ck}").click())
    keys = {b.key for b in page.button}
    assert [k for k in range(n) if f"dup-sim-{ck}-{k}" in keys] == list(range(16, n))
    assert page.button(key=f"dup-mnext-{ck}").disabled
    other = _headings(page)[1]                                 # another cluster keeps its own first page
    assert f"dup-sim-{other[0]}-{other[1]}-0" in keys
    _run(page.button(key=f"dup-mprev-{ck}").click())
    assert f"dup-sim-{ck}-0" in {b.key for b in page.button}


def test_compare_two_members_side_by_side(page, review_home):
    cluster = next(c for c in sort_clusters(review_home["clusters"], "score") if c.tier == P.Tier.COPY.value)
    _run(page.radio(key="dup_tier").set_value("copy"))
    _run(page.selectbox(key="dup_sort").set_value("score"))
    ck = f"{cluster.tier}-{cluster.cluster_id}"
    n_frames, images = len(page.dataframe), _count(page._tree, "image")
    _run(page.toggle(key=f"dup-compare-{ck}").set_value(True))
    a, b = page.selectbox(key=f"dup-compare-a-{ck}").value, page.selectbox(key=f"dup-compare-b-{ck}").value
    doubtful = min((m.score, k) for k, m in enumerate(cluster.members) if not m.canonical)[1]
    assert cluster.members[a].canonical and b == doubtful    # canonical against the lowest-scoring member
    options = DecodeOptions.from_settings(get_settings(home=review_home["home"], collection=review_home["collection"]))
    ma, mb = cluster.members[a], cluster.members[b]
    _, mean = pixel_difference(load_member(ma.path, ma.item_key, options), load_member(mb.path, mb.item_key, options),
                               max_side=1024)
    assert f"mean absolute difference **{mean:.2f}** of 255" in [m.value for m in page.markdown]
    meta = page.dataframe[n_frames].value
    assert list(meta.columns) == ["field", "A", "B"] and "file" in set(meta["field"])
    row = meta.set_index("field").loc["file"]
    assert (row["A"], row["B"]) == (Path(ma.path).name, Path(mb.path).name)
    _run(page.slider(key=f"dup-zoom-{ck}").set_value(3.0))
    _run(page.selectbox(key=f"dup-focus-{ck}").set_value("top left"))
    assert f"mean absolute difference **{mean:.2f}** of 255" in [m.value for m in page.markdown]
    assert _count(page._tree, "image") == images + 5          # A, B and |A-B|, then both at full resolution
    _run(page.toggle(key=f"dup-compare-{ck}").set_value(False))
    assert not any(m.value.startswith("mean absolute difference") for m in page.markdown)
    assert _count(page._tree, "image") == images


def test_byte_identical_members_compare_as_identical_pixels(page, review_home):
    big = _big(review_home)
    ck = f"{big.tier}-{big.cluster_id}"
    _run(page.radio(key="dup_tier").set_value(big.tier))
    _run(page.toggle(key=f"dup-compare-{ck}").set_value(True))
    assert big.members[page.selectbox(key=f"dup-compare-b-{ck}").value].byte_copy
    assert "mean absolute difference **0.00** of 255 — identical pixels" in [m.value for m in page.markdown]


def test_not_duplicate_from_the_page_records_the_cluster_and_exports(page, review_home):
    cluster = sort_clusters([c for c in review_home["clusters"] if c.tier == P.Tier.COPY.value], "id")[0]
    _run(page.radio(key="dup_tier").set_value("copy"))
    _run(page.selectbox(key="dup_sort").set_value("id"))
    k, member = next((k, m) for k, m in enumerate(cluster.members) if not m.canonical)
    keys = {d.key for d in page.get("download_button")}
    assert {"dup_export_csv", "dup_export_parquet"} <= keys
    _run(page.button(key=f"dup-not_duplicate-copy-{cluster.cluster_id}-{k}").click())
    keys = {d.key for d in page.get("download_button")}
    assert {"dup_decisions_csv", "dup_decisions_parquet", "dup_delete_list"} <= keys
    rec = Recommender(get_settings(home=review_home["home"], collection=review_home["collection"]))
    try:
        pairs = rec.decisions().separated_pairs(review_home["collection"])
        others = {m.id for m in cluster.members} - {member.id}
        assert pairs == {frozenset((member.id, o)) for o in others}
        rec.decisions().decide(review_home["collection"], cluster.cluster_id, member.id, member.path, "undecided")
    finally:
        rec.close()


def test_exported_tables_read_back_as_parquet(review_home):
    from dashboard.widgets import parquet_bytes
    from recommender.browse import clusters_frame

    frame = clusters_frame(review_home["clusters"], fields=(P.SPLIT,))
    back = pd.read_parquet(io.BytesIO(parquet_bytes(frame)))
    assert len(back) == len(frame) and list(back.columns) == list(frame.columns)
    assert back["cluster_score"].notna().any()
