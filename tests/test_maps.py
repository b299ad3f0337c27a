"""The map: a 2-D layout (UMAP, else PCA) computed by the pipeline's map stage, stored under the
data home, and the dashboard's Map page that reads it, selects points and exports them.

Runs on the collection the real pipeline built (conftest's `pipeline_built`: the Prefect ingest
flow, whose map stage stored a layout, then the dedupe sweep) and on small real ingests.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from corpus import Built
from recommender import payload as P
from recommender.browse import facet_candidates
from recommender.ingest import run_ingest
from recommender.maps import compute_layout, cosine_knn, layout_info, layout_path, layout_xy, load_layout, pca
from recommender.settings import Settings, get_settings
from recommender.store import open_store

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


def _points(cfg: Settings) -> dict[str, dict]:
    store = open_store(cfg)
    try:
        return {pid: payload for pid, payload, _ in store.scroll()}
    finally:
        store.close()


def _layout(cfg: Settings) -> pd.DataFrame | None:
    store = open_store(cfg)
    try:
        return load_layout(store, cfg)
    finally:
        store.close()


def _new_picture(folder: Path, seed: int) -> Path:
    """An image no other test has: a new point, whatever the collection holds."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    path = folder / f"noise_{seed}.png"
    Image.fromarray(pixels).save(path)
    return path


# -- the layout itself -------------------------------------------------------------------------
def test_knn_is_exact_and_pca_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 16)).astype(np.float32)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    idx, dist = cosine_knn(unit, unit, 5, block=7)
    brute = np.argsort(-(unit @ unit.T), axis=1)[:, :5]
    assert (idx == brute).all() and (idx[:, 0] == np.arange(50)).all()
    np.testing.assert_allclose(dist, 1 - np.take_along_axis(unit @ unit.T, brute, 1), atol=1e-5)
    np.testing.assert_array_equal(pca(x, 2), pca(x.copy(), 2))


def test_too_few_points_fall_back_to_pca_and_say_so():
    x = np.random.default_rng(1).normal(size=(6, 32)).astype(np.float32)
    xy, used, note = layout_xy(x, "umap")
    assert xy.shape == (6, 2) and np.isfinite(xy).all()
    assert used == "pca" and "too few" in note


@pytest.mark.slow
def test_ingest_stored_one_finite_row_per_point_with_the_facets(pipeline_built: Built, pipeline_home):
    report = pipeline_built.report
    assert report["status"] == "completed" and "map" in report["stage_seconds"]
    assert report["map"]["method"] == "umap" and report["map"]["count"] == report["points"]
    store = open_store(pipeline_home)
    try:
        df = load_layout(store, pipeline_home)
        points = {pid: p for pid, p, _ in store.scroll()}
        fields = facet_candidates(store)
    finally:
        store.close()
    assert df is not None and len(df) == len(points) == report["points"]
    assert set(df["id"]) == set(points) and df["id"].is_unique
    assert np.isfinite(df[["x", "y"]].to_numpy()).all()
    assert {"id", "x", "y", P.PATH, P.RELPATH, P.ITEM_KEY, *fields} <= set(df.columns)
    for row in df.itertuples():
        assert row.path == points[row.id][P.PATH] and row.relpath == points[row.id][P.RELPATH]
    sidecar = json.loads(layout_path(pipeline_home).with_suffix(".json").read_text())
    assert sidecar["method"] == layout_info(df)["method"] == "umap" and sidecar["count"] == len(df)
    assert sidecar["model"] == pipeline_home.model


@pytest.mark.slow
def test_layout_is_reused_relabelled_and_recomputed_when_the_count_changes(pipeline_home, tmp_path, monkeypatch):
    path = layout_path(pipeline_home)
    before = pd.read_parquet(path)
    store = open_store(pipeline_home)
    try:
        again = compute_layout(store, pipeline_home)
        points = {pid: p for pid, p, _ in store.scroll()}
    finally:
        store.close()
    # the sweep labelled clusters after the ingest stored the map: same coordinates, today's labels
    assert again.set_index("id")[["x", "y"]].equals(before.set_index("id")[["x", "y"]])
    for row in again.itertuples():
        want = points[row.id].get(P.TIER)
        assert (None if pd.isna(row.tier) else row.tier) == (None if want is None else str(want))
    stamp = path.stat().st_mtime_ns
    store = open_store(pipeline_home)
    try:
        compute_layout(store, pipeline_home)  # nothing changed: the file is not even rewritten
    finally:
        store.close()
    assert path.stat().st_mtime_ns == stamp

    off = pipeline_home.with_overrides(map_layout="off")
    report = run_ingest(off, _new_picture(tmp_path / "more", 7).parent).to_dict()
    assert report["new"] == 1 and report["map"] == {"method": "off"}
    assert path.stat().st_mtime_ns == stamp and _layout(pipeline_home) is None  # one point more: stale
    store = open_store(pipeline_home)
    try:
        grown = compute_layout(store, pipeline_home)
    finally:
        store.close()
    assert len(grown) == len(before) + 1 and np.isfinite(grown[["x", "y"]].to_numpy()).all()
    assert layout_info(grown)["count"] == len(grown) and _layout(pipeline_home) is not None


@pytest.mark.slow
def test_map_layout_off_stores_nothing_and_a_small_run_records_pca(art_source, monkeypatch, tmp_path):
    src = art_source(3)
    monkeypatch.setenv("RECOMMENDER_MAP_LAYOUT", "off")
    cfg = get_settings(home=tmp_path / "off", device="cpu")
    report = run_ingest(cfg, src).to_dict()
    assert report["new"] == 3 and report["map"] == {"method": "off"}
    assert not layout_path(cfg).exists() and not layout_path(cfg).parent.exists()

    monkeypatch.delenv("RECOMMENDER_MAP_LAYOUT")
    cfg = get_settings(home=tmp_path / "on", device="cpu")
    report = run_ingest(cfg, src).to_dict()
    assert report["map"]["method"] == "pca" and report["map"]["requested"] == "umap"
    assert "too few" in report["map"]["note"]
    assert len(_layout(cfg)) == 3


@pytest.mark.slow
def test_a_broken_map_stage_does_not_fail_the_ingest(art_source, tmp_path):
    cfg = get_settings(home=tmp_path / "home", device="cpu")
    layout_path(cfg).parent.parent.mkdir(parents=True)
    layout_path(cfg).parent.write_text("a file where the maps folder should be")
    report = run_ingest(cfg, art_source(3)).to_dict()
    assert report["status"] == "completed" and report["new"] == 3 and report["points"] == 3
    assert "error" in report["map"] and "map" in report["stage_seconds"]
    assert len(_points(cfg)) == 3


@pytest.mark.slow
def test_cli_map_and_dedupe_store_the_layout(pipeline_home):
    from cli.main import app

    env = {"RECOMMENDER_HOME": str(pipeline_home.home), "RECOMMENDER_COLLECTION": pipeline_home.collection}
    shutil.rmtree(layout_path(pipeline_home).parent)
    runner = CliRunner()
    out = runner.invoke(app, ["map", "--method", "pca", "--json"], env=env)
    assert out.exit_code == 0, out.output
    info = json.loads(out.stdout)
    assert info["method"] == "pca" and info["path"] == str(layout_path(pipeline_home))
    assert layout_info(_layout(pipeline_home))["method"] == "pca"
    out = runner.invoke(app, ["dedupe", "--json"], env=env)  # the configured method (umap) replaces it
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["map"]["method"] == "umap" and summary["map"]["count"] == summary["points"]
    assert layout_info(_layout(pipeline_home))["method"] == "umap"
    bad = runner.invoke(app, ["map", "--method", "tsne"], env=env)
    assert bad.exit_code != 0


# -- the Map page ------------------------------------------------------------------------------
@pytest.fixture
def map_app(pipeline_home, monkeypatch) -> AppTest:
    monkeypatch.setenv("RECOMMENDER_HOME", str(pipeline_home.home))
    monkeypatch.setenv("RECOMMENDER_COLLECTION", pipeline_home.collection)
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    at.radio(key="page").set_value("Map").run()
    assert not at.exception, at.exception
    return at


def _chart(at: AppTest):
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith("map_chart")]
    assert len(charts) == 1, "the map chart is missing"
    return charts[0]


def _select(at: AppTest, customdata: list[int]) -> AppTest:
    """Run the page as the browser does after a lasso: the chart widget's value is the selection event.
    (AppTest has no setter for a plotly chart; the event is the JSON the frontend sends.)"""
    states = at._tree.get_widget_states()
    widget = states.widgets.add()
    widget.id = _chart(at).proto.id
    widget.string_value = json.dumps({"selection": {
        "points": [{"curve_number": 0, "point_index": 0, "customdata": c} for c in customdata],
        "point_indices": customdata, "box": [], "lasso": [{"x": [0], "y": [0]}]}})
    at._run(states)
    assert not at.exception, at.exception
    return at


def _cards(at: AppTest, names: set[str]) -> list[str]:
    """File names shown in bold on the page's cards (the selection grid)."""
    bold = [m.value.split("**")[1] for m in at.markdown if m.value.startswith("**") and m.value.count("**") >= 2]
    return [b for b in bold if b in names]


def _markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


@pytest.mark.slow
def test_map_page_draws_the_stored_layout_selects_and_exports(map_app, pipeline_home):
    at = map_app
    layout = _layout(pipeline_home)
    spec = json.loads(_chart(at).proto.spec)
    assert sum(len(t["hovertext"]) for t in spec["data"]) == len(layout)
    assert f"**{len(layout)} points** (UMAP layout" in _markdown(at)
    assert at.selectbox(key="map_color").value == "collection"
    at.selectbox(key="map_color").set_value("genre").run()
    spec = json.loads(_chart(at).proto.spec)
    assert {"Landscape", "Portrait"} <= {t["name"] for t in spec["data"]}
    hover = {h for t in spec["data"] for h in t["hovertext"]}
    assert "cl010052607.jpg" in hover and not any(i in hover for i in layout["id"])  # file names, not ids

    picked = list(range(30))
    _select(at, picked)
    assert "**30 selected**" in _markdown(at)
    names = {str(k).rsplit("/", 1)[-1] for k in layout[P.ITEM_KEY]}
    shown = _cards(at, names)
    assert len(shown) == 24 and set(shown) <= names  # first page of the selection grid
    buttons = {b.proto.id.rsplit("-", 1)[-1]: b for b in at.get("download_button")}
    assert {"map_export_csv", "map_export_parquet"} <= set(buttons)
    assert at.button(key="map_sel_next").disabled is False
    at.button(key="map_sel_next").click()
    _select(at, picked)
    shown = _cards(at, names)
    assert len(shown) == 6 and "page 2 of 2" in "\n".join(c.value for c in at.caption)


@pytest.mark.slow
def test_map_exports_and_one_point_opens_similar(map_app, pipeline_home):
    from dashboard.views.map import export_frame, labels_of

    at = _select(map_app, [3])
    assert "**1 selected**" in _markdown(at)
    at.button(key="map_similar").click().run()
    assert at.radio(key="page").value == "Similar"
    # the export holds the selected rows with id, file and facet columns
    layout = _layout(pipeline_home)
    out = export_frame(layout.iloc[[0, 5, 9]], labels_of(layout))
    back = pd.read_parquet(io.BytesIO(out.to_parquet(index=False)))
    assert list(back["id"]) == list(layout["id"].iloc[[0, 5, 9]])
    assert {P.RELPATH, P.PATH, "genre", "split"} <= set(back.columns)


@pytest.mark.slow
def test_map_page_without_a_stored_layout_offers_to_compute_it(pipeline_home, monkeypatch):
    shutil.rmtree(layout_path(pipeline_home).parent)
    monkeypatch.setenv("RECOMMENDER_HOME", str(pipeline_home.home))
    monkeypatch.setenv("RECOMMENDER_COLLECTION", pipeline_home.collection)
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    at.radio(key="page").set_value("Map").run()
    assert not at.exception, at.exception
    assert not [c for c in at.get("plotly_chart")]
    at.button(key="map_compute").click().run()
    assert not at.exception, at.exception
    _chart(at)
    assert layout_path(pipeline_home).is_file()


# -- in a real browser -------------------------------------------------------------------------
@pytest.mark.slow
def test_analyst_lassos_points_on_the_map_and_exports_them(pipeline_home, tmp_path):
    """`streamlit run` and Debian's chromium (tests/test_browser.py's setup): drag a lasso over the
    map, see the selection, download it as CSV and find the selected files in it."""
    import os

    from playwright.sync_api import sync_playwright
    from test_browser import CHROMIUM, TIMEOUT_MS, _download, _settle, _shot, dashboard_server

    layout = _layout(pipeline_home)
    with dashboard_server(pipeline_home.home, pipeline_home.collection, tmp_path / "streamlit.log") as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            pg = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            pg.set_default_timeout(TIMEOUT_MS)
            pg.goto(f"{url}/?page=Map")
            pg.get_by_text(f"{len(layout)} points").first.wait_for()
            drag = pg.locator(".st-key-map_chart .nsewdrag").first
            drag.wait_for()
            _settle(pg)
            box = drag.bounding_box()
            x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
            pg.mouse.move(x0 + 0.02 * w, y0 + 0.02 * h)
            pg.mouse.down()
            for fx, fy in ((0.98, 0.02), (0.98, 0.98), (0.02, 0.98), (0.02, 0.03)):  # a lasso round the whole map
                pg.mouse.move(x0 + fx * w, y0 + fy * h, steps=12)
            pg.mouse.up()
            pg.get_by_text(re.compile(r"\d+ selected")).first.wait_for()
            _settle(pg)
            selected = int(pg.get_by_text(re.compile(r"\d+ selected")).first.inner_text().split()[0])
            shots = Path(os.environ.get("RECOMMENDER_SCREENSHOTS_DIR") or tmp_path)
            shots.mkdir(parents=True, exist_ok=True)
            _shot(pg, shots, "map_selection")
            assert selected > len(layout) // 2  # a lasso, not one click
            exported = pd.read_csv(io.BytesIO(_download(pg, "map_export_csv")))
            browser.close()
    assert len(exported) == selected and exported["id"].is_unique
    assert set(exported["id"]) <= set(layout["id"])
    assert {"id", P.RELPATH, P.PATH, "genre"} <= set(exported.columns)
    by_id = layout.set_index("id")
    assert all(by_id.loc[i, P.PATH] == path for i, path in zip(exported["id"], exported[P.PATH]))
