"""A curator's not-a-duplicate holds: the real pipeline (ingest, `recommender dedupe`, reembed) never
puts a file marked not-a-duplicate back in the same-picture cluster it was taken out of, while the
cluster's other members stay together; taking the decision back lets them cluster again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from flows.ingest import ingest_flow
from recommender.recommend import Recommender
from recommender.reembed import reembed
from recommender.settings import Settings, get_settings
from recommender.store import open_store

REPO = Path(__file__).resolve().parents[1]
ART = sorted((REPO / "samples" / "art").rglob("*.jpg"))

pytestmark = pytest.mark.slow  # Prefect flows


def _resized(original: Path, dst: Path, scale: float, quality: int) -> Path:
    img = Image.open(original).convert("RGB")
    img.resize((int(img.width * scale), int(img.height * scale))).save(dst, quality=quality)
    return dst


def _folder(root: Path, painting: Path, others: list[Path]) -> dict[str, Path]:
    """The original painting, a half-size copy and a 3/4-size quality-30 copy, plus other paintings."""
    root.mkdir(parents=True)
    files = {"original": root / "original.jpg"}
    shutil.copy(painting, files["original"])
    (root / "copies").mkdir()
    files["half"] = _resized(painting, root / "copies" / "half.jpg", 0.5, 90)
    files["q30"] = _resized(painting, root / "copies" / "q30.jpg", 0.75, 30)
    for p in others:
        shutil.copy(p, root / p.name)
    return {k: v.resolve() for k, v in files.items()}


def _payloads(cfg: Settings) -> dict[str, tuple[str, dict]]:
    """path -> (point id, payload) of every stored point."""
    store = open_store(cfg)
    try:
        return {p["path"]: (pid, p) for pid, p, _ in store.scroll()}
    finally:
        store.close()


def _cluster_of(cfg: Settings, path: Path) -> str | None:
    return _payloads(cfg)[str(path)][1].get("cluster_id")


def _decide(cfg: Settings, path: Path, decision: str, with_members: bool) -> None:
    """Record a decision on a member the way the dashboard does (with the cluster's members) or the
    API does (point and cluster only)."""
    points = _payloads(cfg)
    pid, payload = points[str(path)]
    cid = payload["cluster_id"] if decision != "undecided" else "any"
    members = [q for q, p in points.values() if p.get("cluster_id") == cid] if with_members else None
    rec = Recommender(cfg)
    try:
        rec.decisions().decide(cfg.collection, cid, pid, str(path), decision, members=members)
    finally:
        rec.close()


def _dedupe(cfg: Settings) -> dict:
    res = CliRunner().invoke(app, ["dedupe", "--home", str(cfg.home), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_dedupe_and_reembed_keep_a_not_duplicate_out_of_its_cluster(tmp_path):
    files = _folder(tmp_path / "src", ART[3], ART[20:24])
    cfg = get_settings(home=tmp_path / "h")
    ingest_flow(str(tmp_path / "src"), settings=cfg.model_dump(mode="json"))
    cluster = _cluster_of(cfg, files["original"])
    assert cluster and {_cluster_of(cfg, files[k]) for k in ("half", "q30")} == {cluster}
    _decide(cfg, files["q30"], "not_duplicate", with_members=False)

    _dedupe(cfg)
    assert _cluster_of(cfg, files["half"]) == _cluster_of(cfg, files["original"]) == cluster
    assert _cluster_of(cfg, files["q30"]) is None
    rec = Recommender(cfg)
    try:  # recommendations collapse clusters: the separated file is a result of its own again
        shown = {r.path for r in rec.similar_to_item(str(files["original"]), k=6)}
    finally:
        rec.close()
    assert str(files["q30"]) in shown and str(files["half"]) not in shown

    # a second sweep, and a reembed (new generation, same content-derived ids) then a sweep: still apart
    _dedupe(cfg)
    reembed(cfg, cfg.model)
    _dedupe(cfg)
    assert _cluster_of(cfg, files["half"]) == _cluster_of(cfg, files["original"]) == cluster
    assert _cluster_of(cfg, files["q30"]) is None

    _decide(cfg, files["q30"], "undecided", with_members=False)  # taken back: the next sweep rejoins it
    _dedupe(cfg)
    assert _cluster_of(cfg, files["q30"]) == cluster


def test_reingest_keeps_a_not_duplicate_out_while_new_copies_join(tmp_path):
    src = tmp_path / "src"
    files = _folder(src, ART[4], ART[24:28])
    cfg = get_settings(home=tmp_path / "h")
    ingest_flow(str(src), settings=cfg.model_dump(mode="json"))
    cluster = _cluster_of(cfg, files["original"])
    assert {_cluster_of(cfg, files[k]) for k in ("half", "q30")} == {cluster}
    q30_id = _payloads(cfg)[str(files["q30"])][0]
    _decide(cfg, files["q30"], "not_duplicate", with_members=True)

    # a new copy arrives and the folder is ingested again: ingest-time clustering matches the new file
    # with the whole cluster, the separated file included, and must still leave that one out
    third = _resized(ART[4], src / "copies" / "three_fifths.jpg", 0.6, 85).resolve()
    report = ingest_flow(str(src), settings=cfg.model_dump(mode="json"))
    assert report["new"] == 1
    points = _payloads(cfg)
    assert {points[str(files[k])][1].get("cluster_id") for k in ("original", "half")} == {cluster}
    assert points[str(third)][1].get("cluster_id") == cluster
    q30_id_after, q30 = points[str(files["q30"])]
    assert q30_id_after == q30_id                          # same content, same point: the decision still names it
    assert not {"cluster_id", "tier", "canonical"} & set(q30)
    rec = Recommender(cfg)
    try:
        kept = rec.decisions().frame(cfg.collection)
    finally:
        rec.close()
    assert kept[["point_id", "path", "decision"]].values.tolist() == [[q30_id, str(files["q30"]), "not_duplicate"]]
    # and the full sweep agrees with ingest
    _dedupe(cfg)
    points = _payloads(cfg)
    assert {points[str(p)][1].get("cluster_id") for p in (files["original"], files["half"], third)} == {cluster}
    assert points[str(files["q30"])][1].get("cluster_id") is None
