"""The Streamlit dashboard driven with AppTest on the collection the real pipeline built.

The session's `pipeline_built` collection: the planted corpus (tests/corpus.py: sample
paintings and MRI slices, a cut NIfTI volume, planted exact/copy/near duplicates,
metadata.csv) ingested by the Prefect flow and swept by the dedupe. Every page's main
interaction is exercised and its output checked against what that run wrote.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from corpus import SEED, Built
from recommender import payload as P
from recommender.browse import duplicate_clusters
from recommender.catalog import Catalog
from recommender.recommend import Recommender
from recommender.settings import get_settings
from recommender.store import open_store

pytestmark = pytest.mark.slow

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(scope="module")
def sample_home(pipeline_built: Built, tmp_path_factory) -> dict:
    """A module copy of the pipeline-built home; what the pages should show (read before the app opens the store)."""
    cfg = pipeline_built.copy_home(tmp_path_factory.mktemp("dash_home") / "home")
    store = open_store(cfg)
    try:
        items = list(store.scroll())
        landscape = store.facet(P.GENRE).get("Landscape", 0)
        clusters = duplicate_clusters(store)
    finally:
        store.close()
    cat = Catalog(cfg.catalog_path)
    report = cat.runs(cfg.collection)[0]["report"]
    cat.close()
    by_path = {p[P.PATH]: pid for pid, p, _ in items}
    return {
        "home": cfg.home, "collection": cfg.collection, "count": len(items), "landscape": landscape,
        "clusters": clusters, "report": report, "by_path": by_path, "payloads": {pid: p for pid, p, _ in items},
        "seed": by_path[pipeline_built.corpus.path(SEED)], "built": pipeline_built,
        "widths": [p[P.WIDTH] for _, p, _ in items if isinstance(p.get(P.WIDTH), int)],
    }


@pytest.fixture
def app(sample_home, isolated_home, monkeypatch) -> AppTest:
    monkeypatch.setenv("RECOMMENDER_HOME", str(sample_home["home"]))
    monkeypatch.setenv("RECOMMENDER_COLLECTION", sample_home["collection"])
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


def _shown_clusters(at: AppTest) -> list[tuple[str, set[str]]]:
    """(tier, member file names) of every cluster on the Duplicates page, read from its markdown."""
    shown: list[tuple[str, set[str]]] = []
    for m in at.markdown:
        head = re.match(r"\*\*Cluster\*\* `[^`]+` — tier \*\*(\w+)\*\*", m.value)
        if head:
            shown.append((head.group(1), set()))
        elif shown and (name := re.search(r"\n`([^`]+)`$", m.value)):
            shown[-1][1].add(name.group(1))
    return shown


def test_browse_grid_filters_pagination_and_detail(app, sample_home):
    at = app
    at.run()
    assert not at.exception, at.exception
    text = _markdown(at)
    assert f"**{sample_home['count']}** items match" in text
    assert len(at.image) == 24  # first page of the default page size
    genre = at.multiselect(key="browse_f_genre")
    assert f"Landscape ({sample_home['landscape']})" in genre.options
    genre.set_value(["Landscape"]).run()
    assert f"**{sample_home['landscape']}** items match (of {sample_home['count']})" in _markdown(at)
    assert len(at.image) == sample_home["landscape"]
    # any of several values: the counts add up
    portraits = int(re.search(r"Portrait \((\d+)\)", " ".join(at.multiselect(key="browse_f_genre").options)).group(1))
    at.multiselect(key="browse_f_genre").set_value(["Landscape", "Portrait"]).run()
    assert f"**{sample_home['landscape'] + portraits}** items match" in _markdown(at)
    at.multiselect(key="browse_f_genre").set_value([]).run()
    at.multiselect(key="browse_f_tier").set_value([P.Tier.COPY.value]).run()  # the schema's facets include the dedup tier
    plants = [p for p in sample_home["built"].corpus.plants if p.tier == P.Tier.COPY]
    copies = len(plants) + len({p.original for p in plants})  # the canonical carries its cluster's tier
    assert f"**{copies}** items match" in _markdown(at)
    at.multiselect(key="browse_f_tier").set_value([]).run()
    # a numeric range (the width slider) narrows to the items inside it
    lo, hi = at.slider(key="browse_range_width").value
    widths = sample_home["widths"]
    cut = sorted(widths)[len(widths) // 2]
    at.slider(key="browse_range_width").set_value((lo, cut)).run()
    assert f"**{sum(1 for w in widths if w <= cut)}** items match" in _markdown(at)
    at.slider(key="browse_range_width").set_value((lo, hi)).run()
    at.button(key="browse_next").click().run()
    assert "page 2 of" in _markdown(at)
    # detail view of one item
    first = next(b for b in at.button if b.key and b.key.startswith("browse-details-"))
    pid = first.key.removeprefix("browse-details-")
    first.click().run()
    assert at.subheader, "detail view did not open"
    fields = {row["field"]: row["value"] for row in at.dataframe[0].value.to_dict("records")}
    assert fields[P.PATH].startswith(str(sample_home["built"].corpus.root))
    assert at.session_state["detail_id"] == pid


def test_browse_detail_shows_duplicate_cluster_with_byte_copies(app, sample_home):
    built = sample_home["built"]
    plant = next(p for p in built.corpus.plants if p.tier == P.Tier.EXACT and "bytes" in p.relpath)
    original = sample_home["by_path"][built.corpus.path(plant.original)]
    at = app
    at.session_state["detail_id"] = original
    at.run()
    assert not at.exception, at.exception
    text = _markdown(at)
    cid = sample_home["payloads"][original][P.CLUSTER_ID]
    assert f"**Duplicate cluster** `{cid}` — tier **exact**, 2 items" in text
    assert "★ **canonical**" in text and "← this item" in text and "same bytes" in text


def test_browse_detail_of_a_slice_shows_its_near_cluster(app, sample_home):
    built = sample_home["built"]
    slice_id = sample_home["by_path"][str(built.corpus.volume)]  # any slice of the cut volume
    at = app
    at.session_state["detail_id"] = slice_id
    at.run()
    assert not at.exception, at.exception
    assert re.search(r"\*\*Duplicate cluster\*\* `[^`]+` — tier \*\*near\*\*, \d+ items", _markdown(at))


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
    # a negative example; the marks live in the feedback log under this browser's session
    disliked = after[0]
    at.button(key=f"sim-dislike-{disliked}").click().run()
    assert at.session_state["sim_neg"] == [disliked]
    assert ":material/thumb_down: Less like** (1)" in _markdown(at)
    rec = Recommender(get_settings(home=sample_home["home"], collection=sample_home["collection"]))
    try:
        session = at.session_state["feedback_default"]
        marks = rec.feedback().examples(rec.settings.collection, session)
        assert marks.likes == [liked] and marks.dislikes == [disliked]
        steered = rec.recommend([sample_home["seed"]], k=12, session=session)
    finally:
        rec.close()
    assert [k.removeprefix("sim-like-") for k in (b.key for b in at.button) if k and k.startswith("sim-like-")] == \
        [r.id for r in steered]
    # undo takes the dislike back; a named session starts empty and keeps its own marks; clear empties it
    at.button(key="sim_undo").click().run()
    assert at.session_state["sim_pos"] == [liked] and at.session_state["sim_neg"] == []
    at.text_input(key="feedback_session").set_value("analyst-a").run()
    assert at.session_state["sim_pos"] == [] and at.session_state["sim_neg"] == []
    at.text_input(key="feedback_session").set_value("").run()
    assert at.session_state["sim_pos"] == [liked]
    at.button(key="sim_clear").click().run()
    assert at.session_state["sim_pos"] == [] and at.session_state["sim_neg"] == []


def test_similar_filters_one_per_group_and_diversity(app, sample_home):
    at = app
    at.session_state["sim_item"] = sample_home["seed"]
    _open(at, "Similar")
    at.multiselect(key="sim_f_collection").set_value(["art"]).run()
    assert "**12 results**" in _markdown(at)
    cards = [b.key.removeprefix("sim-like-") for b in at.button if b.key and b.key.startswith("sim-like-")]
    art = {pid for pid, p in sample_home["payloads"].items() if p.get("collection") == "art"}
    assert len(cards) == 12 and set(cards) <= art
    clusters = [sample_home["payloads"][c].get(P.CLUSTER_ID) for c in cards]
    assert len({c for c in clusters if c}) == sum(1 for c in clusters if c), "copies of one picture collapse to one"
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


def test_duplicates_shows_exact_copy_and_near_clusters_of_the_real_run(app, sample_home):
    """Every planted duplicate (and the samples' natural exact pair) is shown in a cluster of its tier."""
    corpus = sample_home["built"].corpus
    at = _open(app, "Duplicates")
    clusters = sample_home["clusters"]
    text = _markdown(at)
    assert f"**{len(clusters)} clusters**" in text
    assert "★ **canonical**" in text and "cos 1.000" in text and "same bytes" in text
    assert at.get("download_button"), "CSV export button missing"
    for tier in P.Tier:
        at.radio(key="dup_tier").set_value(tier.value).run()
        assert not at.exception, at.exception
        n = sum(1 for c in clusters if c.tier == tier)
        assert f"**{n} clusters**" in _markdown(at)
        shown = _shown_clusters(at)
        assert shown and {t for t, _ in shown} == {tier.value}
        for want, original, duplicate in corpus.pairs():
            if want == tier:
                assert any({original, duplicate} <= names for _, names in shown), (tier, original, duplicate, shown)
    assert any(set(corpus.slices[:2]) <= names for _, names in shown), shown  # nearby slices: near
    at.radio(key="dup_tier").set_value("all").run()
    leak = at.dataframe[0].value
    leaking = " ".join(leak["paths"])
    for name in ("Te-me_0135.jpg", "Tr-me_0071.jpg", "landscape_bytes_copy.jpg", "naturmort_small.jpg"):
        assert name in leaking  # clusters with members in both splits
    assert any("Split leakage" in s.value for s in at.subheader)


def test_map_stored_layout_and_colour(app, sample_home):
    at = _open(app, "Map")
    assert f"**{sample_home['count']} points**" in _markdown(at)
    assert (Path(sample_home["home"]) / "maps" / f"{sample_home['collection']}.parquet").is_file()
    assert at.selectbox(key="map_color").value == "collection"
    at.selectbox(key="map_color").set_value("genre").run()
    assert not at.exception, at.exception
    chart = at.get("plotly_chart")[0].proto
    assert "genre" in chart.spec


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
    # the sample corpus mixes paintings and scans: the default projection is skipped, and the page says why
    assert "skipped" in rep["projection"] and f"Ranking: plain cosine. {rep['projection']['skipped']}" in _markdown(at)


def test_runs_page_names_the_templates_a_run_left_out(isolated_home, monkeypatch, tmp_path):
    """A run over a slide deck learns the deck's template; the Runs page says which image size it was
    and that its duplicates were judged on the pictures (read from the report the real ingest wrote)."""
    from corpus import slide_deck
    from recommender.ingest import run_ingest

    folder = tmp_path / "deck"
    folder.mkdir()
    for k, slide in enumerate(slide_deck(sorted((SAMPLES / "art").rglob("*.jpg"))[:18])):
        slide.save(folder / f"slide{k:02d}.jpg", quality=85)
    cfg = get_settings(home=tmp_path / "home", map_layout="off")
    report = run_ingest(cfg, folder)
    assert set(report.templates) == {"1024x768"} and report.cut_outs == 18  # every slide's painting cut out
    monkeypatch.setenv("RECOMMENDER_HOME", str(cfg.home))
    monkeypatch.setenv("RECOMMENDER_COLLECTION", cfg.collection)
    at = _open(AppTest.from_file(str(APP), default_timeout=120), "Runs")
    assert re.search(r"\*\*Templates left out of matching\*\*: 1024x768 px \(\d+% of keypoints\)", _markdown(at))
    assert "**18 pictures** were cut out of their frames" in _markdown(at)


def test_empty_collection_says_how_to_ingest(isolated_home, monkeypatch):
    monkeypatch.setenv("RECOMMENDER_COLLECTION", "nothing_here")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert any("recommender ingest" in i.value for i in at.info)


def test_pages_keep_answering_while_another_process_holds_the_store(pipeline_home, sample_home, isolated_home,
                                                                     monkeypatch):
    """While another process (an ingest, say) owns the embedded store, the page reads through it and
    shows the collection; when that process exits, the next reload takes the store over."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from recommender.settings import get_settings; from recommender.store import open_store; "
         f"s = open_store(get_settings(home={str(pipeline_home.home)!r}, collection={pipeline_home.collection!r})); "
         "s.count(); print('held', flush=True); sys.stdin.readline(); s.close()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("RECOMMENDER_HOME", str(pipeline_home.home))
        monkeypatch.setenv("RECOMMENDER_COLLECTION", pipeline_home.collection)
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        assert f"**{sample_home['count']}** items match" in _markdown(at)
    finally:
        holder.communicate("\n", timeout=60)
    at.run()  # the owner has gone: this reload owns the store
    assert f"**{sample_home['count']}** items match" in _markdown(at)


def test_duplicates_page_records_decisions_and_exports_them(app, sample_home):
    """A curator discards a member of a copy cluster from the page: the decision shows on the card,
    lives in the catalog, and the decisions CSV and the delete list are offered for download."""
    at = _open(app, "Duplicates")
    at.radio(key="dup_tier").set_value("copy").run()
    button = next(b for b in at.button if b.key and b.key.startswith("dup-discard-copy-"))
    cluster_id = button.key.removeprefix("dup-discard-copy-").rsplit("-", 1)[0]
    button.click().run()
    assert not at.exception, at.exception
    assert "decision: **discard**" in _markdown(at) and "**Decisions**: discard 1" in _markdown(at)
    keys = {b.key for b in at.get("download_button")}
    assert {"dup_decisions_csv", "dup_delete_list"} <= keys
    rec = Recommender(get_settings(home=sample_home["home"], collection=sample_home["collection"]))
    try:
        df = rec.decisions().frame(sample_home["collection"])
        assert df[["cluster_id", "decision"]].values.tolist() == [[cluster_id, "discard"]]
        assert rec.decisions().delete_list(sample_home["collection"]) == df["path"].tolist()
        rec.decisions().decide(sample_home["collection"], cluster_id, df["point_id"][0], df["path"][0], "undecided")
    finally:
        rec.close()


def test_detail_steps_through_the_slices_of_a_volume(app, sample_home):
    """An item that is a NIfTI slice shows its place in the volume; 'Slice →' opens the next slice,
    '← Slice' goes back, and the first slice cannot go further back."""
    slices = sorted((p[P.SLICE_INDEX], pid) for pid, p in sample_home["payloads"].items()
                    if str(p.get(P.PATH, "")).endswith("t1_cut.nii.gz"))
    assert len(slices) >= 3
    at = app
    at.session_state["detail_id"] = slices[0][1]
    at.run()
    assert not at.exception, at.exception
    assert f"slice **1** of {len(slices)}" in _markdown(at)
    assert at.button(key="detail_prev_slice").disabled
    at.button(key="detail_next_slice").click().run()
    assert at.session_state["detail_id"] == slices[1][1] and f"slice **2** of {len(slices)}" in _markdown(at)
    at.button(key="detail_prev_slice").click().run()
    assert at.session_state["detail_id"] == slices[0][1]


def test_sidebar_switches_collection_and_forgets_the_other_collections_filters(pipeline_home, isolated_home,
                                                                              monkeypatch, tmp_path):
    """A data home with two collections: the sidebar lists both; switching shows the other one's items
    and drops filters that named the first one's values."""
    import shutil

    from pydicom.data import get_testdata_file

    from recommender.ingest import run_ingest

    src = tmp_path / "dicom"
    src.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(get_testdata_file(name), src / name)
    assert run_ingest(pipeline_home.with_overrides(collection="dicom"), src).failed == 0
    monkeypatch.setenv("RECOMMENDER_HOME", str(pipeline_home.home))
    monkeypatch.setenv("RECOMMENDER_COLLECTION", pipeline_home.collection)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert set(at.selectbox(key="collection").options) == {pipeline_home.collection, "dicom"}
    at.multiselect(key="browse_f_genre").set_value(["Landscape"]).run()
    at.selectbox(key="collection").set_value("dicom").run()
    assert not at.exception, at.exception
    assert "**2** items match" in _markdown(at) and "browse_f_genre" not in at.session_state
    at.selectbox(key="collection").set_value(pipeline_home.collection).run()
    assert "(of " not in _markdown(at)  # back on the first collection, unfiltered


def test_similar_page_ranks_with_the_projection_and_says_so(sample_home, isolated_home, monkeypatch, tmp_path):
    """A collection with a supervised projection: the page's scores are the blend the Recommender returns,
    and the results line names the label it was learned from."""
    from recommender import projection

    cfg = sample_home["built"].copy_home(tmp_path / "home")
    store = open_store(cfg)
    try:
        projection.save(projection.fit_store(store, "genre"), projection.path_for(cfg.home, cfg.collection), store)
    finally:
        store.close()
    rec = Recommender(cfg)
    try:
        expected = [r.score for r in rec.similar_to_item(sample_home["seed"], k=12)]
    finally:
        rec.close()
    monkeypatch.setenv("RECOMMENDER_HOME", str(cfg.home))
    monkeypatch.setenv("RECOMMENDER_COLLECTION", cfg.collection)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["sim_item"] = sample_home["seed"]
    _open(at, "Similar")
    assert "ranked with the projection learned from **genre**" in _markdown(at)
    assert _result_scores(at) == pytest.approx([round(s, 3) for s in expected], abs=1e-3)
