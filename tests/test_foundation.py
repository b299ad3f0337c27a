"""End-to-end foundation: ingest a real folder, re-run it, query it, refuse bad input clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from flows.ingest import ingest_flow
from recommender.errors import MetadataError, ModelMismatchError, NotFoundError
from recommender.recommend import Recommender
from recommender.settings import get_settings
from recommender.store import open_store

ART = sorted((Path(__file__).resolve().parents[1] / "samples" / "art").rglob("*.jpg"))


def _settings(home: Path, **kw):
    return get_settings(home=home, **kw)


@pytest.mark.slow
def test_ingest_twice_second_run_changes_nothing(tmp_path, sample_copy):
    cfg = _settings(tmp_path / "h")
    meta = sample_copy / "metadata.csv"
    first = ingest_flow(str(sample_copy), str(meta), settings=cfg.model_dump(mode="json"))
    assert first["new"] > 40 and first["points"] >= first["new"]
    second = ingest_flow(str(sample_copy), str(meta), settings=cfg.model_dump(mode="json"))
    assert second["new"] == 0
    assert second["unchanged"] == first["new"] + first["duplicate"]
    assert second["points"] == first["points"]
    assert second["failed"] == first["failed"]


@pytest.mark.slow
def test_exact_duplicate_files_share_one_point(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ART[0], src / "a.jpg")
    shutil.copy(ART[0], src / "copy_of_a.jpg")
    shutil.copy(ART[1], src / "b.jpg")
    r = ingest_flow(str(src), settings=_settings(tmp_path / "h").model_dump(mode="json"))
    assert (r["new"], r["duplicate"], r["points"]) == (2, 1, 2)


@pytest.mark.slow
def test_corrupt_and_non_image_files_fail_with_reason_others_ingested(tmp_path, art_source):
    src = art_source(5)
    (src / "broken.jpg").write_bytes(ART[5].read_bytes()[:2000])
    (src / "report.pdf").write_bytes(b"%PDF-1.4 not an image at all")
    r = ingest_flow(str(src), settings=_settings(tmp_path / "h").model_dump(mode="json"))
    assert r["new"] == 5 and r["points"] == 5 and r["failed"] == 2
    reasons = {Path(f["path"]).name: f["reason"] for f in r["failures"]}
    assert "truncated" in reasons["broken.jpg"] or "corrupt" in reasons["broken.jpg"]
    assert "not a recognised image" in reasons["report.pdf"]


@pytest.mark.slow
def test_nearest_neighbour_of_a_resized_crop_is_its_original(tmp_path):
    """Real MobileNetV2 weights: a resized, cropped copy finds its original among unrelated paintings and scans."""
    src = tmp_path / "src"
    shutil.copytree(Path(__file__).resolve().parents[1] / "samples", src)
    original = src / "art" / "landscape" / ART[0].name if (src / "art" / "landscape" / ART[0].name).exists() else None
    original = original or next((src / "art").rglob("*.jpg"))
    img = Image.open(original).convert("RGB")
    w, h = img.size
    crop = img.crop((int(w * 0.08), int(h * 0.08), int(w * 0.92), int(h * 0.92))).resize((300, 300))
    query_path = src / "query_crop.jpg"
    crop.save(query_path, quality=85)
    cfg = _settings(tmp_path / "h")
    ingest_flow(str(src), str(src / "metadata.csv"), settings=cfg.model_dump(mode="json"))
    rec = Recommender(cfg)
    try:
        # raw neighbours: the default query collapses copies of the query, which this copy is
        results = rec.recommend(positive=[str(query_path)], k=3, collapse_duplicates=False)
        collapsed = rec.similar_to_item(str(query_path), k=3)
    finally:
        rec.close()
    assert results[0].path == str(original.resolve())
    assert results[0].score > 0.8
    assert all(r.path != str(query_path.resolve()) for r in results)
    assert results[0].payload.get("tier") in (None, "exact", "copy")
    if results[0].payload.get("cluster_id"):  # found to be the same picture: never recommended for it
        assert str(original.resolve()) not in {r.path for r in collapsed}


@pytest.mark.slow
def test_metadata_becomes_payload_and_filters_apply(tmp_path, sample_copy):
    cfg = _settings(tmp_path / "h")
    ingest_flow(str(sample_copy), str(sample_copy / "metadata.csv"), settings=cfg.model_dump(mode="json"))
    rec = Recommender(cfg)
    try:
        item = str(next((sample_copy / "art" / "portrait").glob("*.jpg")))
        results = rec.similar_to_item(item, k=5, filters={"diagnosis": "glioma"})
    finally:
        rec.close()
    assert len(results) == 5
    assert {r.payload["diagnosis"] for r in results} == {"glioma"}
    assert all(r.payload["collection"] == "medical" for r in results)


@pytest.mark.slow
def test_other_model_into_same_collection_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ART[0], src / "a.jpg")
    cfg = _settings(tmp_path / "h")
    ingest_flow(str(src), settings=cfg.model_dump(mode="json"))
    other = _settings(tmp_path / "h", model="resnet50")
    with pytest.raises(ModelMismatchError, match="built with model 'mobilenet_v2'"):
        ingest_flow(str(src), settings=other.model_dump(mode="json"))
    store = open_store(cfg)
    try:
        assert store.count() == 1
    finally:
        store.close()


@pytest.mark.slow
def test_metadata_without_path_column_names_the_problem(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ART[0], src / "a.jpg")
    bad = tmp_path / "meta.csv"
    bad.write_text("name,genre\na.jpg,Landscape\n")
    with pytest.raises(MetadataError, match="no path column"):
        ingest_flow(str(src), str(bad), settings=_settings(tmp_path / "h").model_dump(mode="json"))


@pytest.mark.slow
def test_unknown_item_is_a_clear_error(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ART[0], src / "a.jpg")
    cfg = _settings(tmp_path / "h")
    ingest_flow(str(src), settings=cfg.model_dump(mode="json"))
    rec = Recommender(cfg)
    try:
        with pytest.raises(NotFoundError, match="not an ingested item"):
            rec.similar_to_item("nowhere/missing.jpg")
    finally:
        rec.close()


@pytest.mark.slow
def test_cli_ingest_json_and_similar_json(tmp_path, art_source):
    src = art_source(6)
    runner = CliRunner()
    home = str(tmp_path / "h")
    res = runner.invoke(app, ["ingest", str(src), "--home", home, "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"run_id", "scanned", "new", "unchanged", "duplicate", "failed", "failures", "points",
            "seconds", "images_per_second"} <= report.keys()
    assert report["new"] == 6
    res = runner.invoke(app, ["similar", str(src / ART[0].name), "-k", "3", "--home", home, "--json"])
    assert res.exit_code == 0, res.output
    results = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(results) == 3
    assert {"id", "path", "score", "payload"} <= results[0].keys()
    res = runner.invoke(app, ["similar", "--image", str(ART[0]), "-k", "1", "--home", home, "--json"])
    top = json.loads(res.stdout.strip().splitlines()[-1])[0]
    assert Path(top["path"]).name == ART[0].name and top["score"] > 0.99


def test_settings_env_then_flag_override(monkeypatch, tmp_path):
    monkeypatch.setenv("RECOMMENDER_COLLECTION", "from_env")
    monkeypatch.setenv("RECOMMENDER_BATCH_SIZE", "7")
    cfg = get_settings()
    assert cfg.collection == "from_env" and cfg.batch_size == 7
    cfg = get_settings(collection="from_flag", home=str(tmp_path))
    assert cfg.collection == "from_flag" and cfg.qdrant_path == tmp_path / "qdrant"
