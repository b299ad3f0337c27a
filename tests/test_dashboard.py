"""The Streamlit dashboard driven with AppTest on a collection ingested from samples/.

One module-scoped collection: the real Prefect ingest flow over samples/ (with
metadata.csv) into a tmp data home, then the real dedup engine labels clusters.
Every page's main interaction is exercised and its output checked.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.demo_data import SAMPLES, sample_home_once
from recommender.catalog import Catalog
from recommender.browse import duplicate_clusters
from recommender.settings import get_settings
from recommender.store import open_store

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
COLLECTION = "dash_samples"


@pytest.fixture(scope="module")
def sample_home(tmp_path_factory, prefect_harness) -> dict:
    """Ingest samples/ once; return what the pages should show (read before the app opens the store)."""
    pristine = sample_home_once(tmp_path_factory.getbasetemp() / "dash_pristine", COLLECTION)
    home = tmp_path_factory.mktemp("dash_home") / "home"
    shutil.copytree(pristine, home)
    cfg = get_settings(home=home, collection=COLLECTION)
    store = open_store(cfg)
    try:
        items = list(store.scroll())
        landscape = store.facet("genre").get("Landscape", 0)
        clusters = duplicate_clusters(store)
    finally:
        store.close()
    cat = Catalog(cfg.catalog_path)
    report = cat.runs(COLLECTION)[0]["report"]
    cat.close()
    clustered = sum(len(c.members) for c in clusters)
    by_path = {p["path"]: pid for pid, p, _ in items}
    return {
        "home": home, "count": len(items), "landscape": landscape, "clustered": clustered, "clusters": clusters,
        "report": report, "by_path": by_path,
        "seed": by_path[str(SAMPLES / "art" / "landscape" / "cl010052607.jpg")],
    }


@pytest.fixture
def app(sample_home, isolated_home, monkeypatch) -> AppTest:
    monkeypatch.setenv("RECOMMENDER_HOME", str(sample_home["home"]))
    monkeypatch.setenv("RECOMMENDER_COLLECTION", COLLECTION)
    at = AppTest.from_file(str(APP), default_timeout=120)
    return at


def _markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def _open(at: AppTest, page: str) -> AppTest:
    at.run()
    at.radio(key="page").set_value(page).run()
    assert not at.exception, at.exception
    return at


def _result_scores(at: AppTest) -> list[float]:
    return [float(m.value.split("**")[1]) for m in at.markdown if m.value.startswith("score **")]


def test_browse_grid_filters_pagination_and_detail(app, sample_home):
    at = app
    at.run()
    assert not at.exception, at.exception
    text = _markdown(at)
    assert f"**{sample_home['count']}** items match" in text
    assert len(at.image) == 24  # first page of the default page size
    genre = at.selectbox(key="browse_f_genre")
    assert f"Landscape ({sample_home['landscape']})" in genre.options
    genre.set_value("Landscape").run()
    assert f"**{sample_home['landscape']}** items match (of {sample_home['count']})" in _markdown(at)
    assert len(at.image) == sample_home["landscape"]
    at.selectbox(key="browse_f_genre").set_value("(any)").run()
    at.button(key="browse_next").click().run()
    assert "page 2 of" in _markdown(at)
    # detail view of one item
    first = next(b for b in at.button if b.key and b.key.startswith("browse-details-"))
    pid = first.key.removeprefix("browse-details-")
    first.click().run()
    assert at.subheader, "detail view did not open"
    fields = {row["field"]: row["value"] for row in at.dataframe[0].value.to_dict("records")}
    assert fields["path"].startswith(str(SAMPLES))
    assert at.session_state["detail_id"] == pid


def test_browse_detail_shows_duplicate_cluster(app, sample_home):
    assert sample_home["clusters"], "the sample corpus has known duplicates; the dedup engine found none"
    cluster = sample_home["clusters"][0]
    member = next(m for m in cluster.members if not m.canonical)
    at = app
    at.session_state["detail_id"] = member.id
    at.run()
    text = _markdown(at)
    assert f"**Duplicate cluster** `{cluster.cluster_id}`" in text
    assert "★ **canonical**" in text
    assert "← this item" in text


def test_browse_to_similar_then_positive_example(app, sample_home):
    at = app
    at.run()
    at.session_state["detail_id"] = sample_home["seed"]
    at.run()
    at.button(key="detail_similar").click().run()
    assert not at.exception, at.exception
    assert at.radio(key="page").value == "Similar"
    assert at.text_input(key="sim_item").value == sample_home["seed"]
    assert "**12 results**" in _markdown(at)
    scores = _result_scores(at)
    assert len(scores) == 12 and scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1.0001
    before = [k for k in (b.key for b in at.button) if k and k.startswith("sim-like-")]
    liked = before[3].removeprefix("sim-like-")
    at.button(key=before[3]).click().run()
    assert not at.exception, at.exception
    assert at.session_state["sim_pos"] == [liked]
    text = _markdown(at)
    assert ":material/thumb_up: More like** (1)" in text and "**12 results**" in text
    after = [k.removeprefix("sim-like-") for k in (b.key for b in at.button) if k and k.startswith("sim-like-")]
    assert liked not in after, "a positive example must not come back as a result"
    assert after != [k.removeprefix("sim-like-") for k in before]
    # a negative example, then clear
    disliked = after[0]
    at.button(key=f"sim-dislike-{disliked}").click().run()
    assert at.session_state["sim_neg"] == [disliked]
    assert ":material/thumb_down: Less like** (1)" in _markdown(at)
    at.button(key="sim_clear").click().run()
    assert at.session_state["sim_pos"] == [] and at.session_state["sim_neg"] == []


def test_similar_filters_one_per_group_and_diversity(app, sample_home):
    at = app
    at.session_state["sim_item"] = sample_home["seed"]
    _open(at, "Similar")
    at.selectbox(key="sim_f_collection").set_value("art").run()
    art_paths = [p for p in sample_home["by_path"] if "/art/" in p]
    assert f"**{min(12, len(art_paths) - 1)} results**" in _markdown(at)
    cards = [b.key.removeprefix("sim-like-") for b in at.button if b.key and b.key.startswith("sim-like-")]
    ids_art = {sample_home["by_path"][p] for p in art_paths}
    assert cards and set(cards) <= ids_art
    at.selectbox(key="sim_group").set_value("genre").run()
    text = _markdown(at)
    assert "**4 results**" in text  # four genres in the art samples: one per group
    at.selectbox(key="sim_group").set_value("(none)").run()
    plain = _result_scores(at)
    at.slider(key="sim_div").set_value(0.8).run()
    diverse = _result_scores(at)
    assert len(diverse) == len(plain) and diverse != plain


def test_search_text_unavailable_and_image_upload(app, sample_home):
    at = _open(app, "Search")
    assert any("Text search is not available" in i.value and "mobilenet_v2" in i.value for i in at.info)
    data = (SAMPLES / "art" / "portrait" / "cl010059566.jpg").read_bytes()
    at.file_uploader(key="search_upload").set_value(("query.jpg", data, "image/jpeg")).run()
    assert not at.exception, at.exception
    assert "**12 results**" in _markdown(at)
    scores = _result_scores(at)
    assert scores[0] > 0.99  # the same picture is stored: it must come first, with cosine ~1
    # a file that is not an image gets a clear message, not a traceback
    at.file_uploader(key="search_upload").set_value(("notes.png", b"not an image", "image/png")).run()
    assert any("notes.png" in e.value or "upload" in e.value for e in at.error)


def test_duplicates_tiers_leakage_and_export(app, sample_home):
    at = _open(app, "Duplicates")
    clusters = sample_home["clusters"]
    text = _markdown(at)
    assert f"**{len(clusters)} clusters**" in text
    assert "★ **canonical**" in text and "cos 1.000" in text
    assert at.get("download_button"), "CSV export button missing"
    tiers = sorted({c.tier for c in clusters})
    at.radio(key="dup_tier").set_value(tiers[0]).run()
    n = sum(1 for c in clusters if c.tier == tiers[0])
    assert f"**{n} clusters**" in _markdown(at)
    assert any("Split leakage" in s.value for s in at.subheader)


def test_map_projection_cached_and_colour(app, sample_home):
    at = _open(app, "Map")
    assert f"**{sample_home['count']} points**" in _markdown(at)
    assert (Path(sample_home["home"]) / "projections" / f"{COLLECTION}.parquet").is_file()
    assert at.selectbox(key="map_color").value == "collection"
    at.selectbox(key="map_color").set_value("genre").run()
    assert not at.exception, at.exception
    chart = at.get("vega_lite_chart")[0].proto
    assert '"genre' in chart.spec


def test_runs_history_and_failures(app, sample_home):
    at = _open(app, "Runs")
    df = at.dataframe[0].value
    assert len(df) == 1
    row = df.iloc[0]
    rep = sample_home["report"]
    assert row["scanned"] == rep["scanned"] and row["new"] == rep["new"] and row["status"] == "completed"
    assert row["images/s"] == rep["images_per_second"]
    assert [m.value for m in at.metric if m.label == "scanned"] == [str(rep["scanned"])]
    assert f"**Failures ({rep['failed']})**" in _markdown(at)


def test_empty_collection_says_how_to_ingest(isolated_home, monkeypatch):
    monkeypatch.setenv("RECOMMENDER_COLLECTION", "nothing_here")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert any("recommender ingest" in i.value for i in at.info)


def test_store_held_by_an_ingest_shows_a_clear_message(tmp_path_factory, sample_home, isolated_home, monkeypatch):
    """While another holder (an ingest) has the embedded store, pages say so instead of crashing."""
    home = tmp_path_factory.mktemp("locked") / "home"
    shutil.copytree(tmp_path_factory.getbasetemp() / "dash_pristine", home)
    holder = open_store(get_settings(home=home, collection=COLLECTION))
    try:
        monkeypatch.setenv("RECOMMENDER_HOME", str(home))
        monkeypatch.setenv("RECOMMENDER_COLLECTION", COLLECTION)
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.run()
        assert not at.exception, at.exception
        assert any("vector store is busy" in e.value and "ingest" in e.value for e in at.error)
    finally:
        holder.close()
    at.run()  # once the ingest has finished, a reload works
    assert f"**{sample_home['count']}** items match" in _markdown(at)
