"""The supervised projection (issue 16) on a collection built by the real ingest: fitted by the ingest's
projection stage from the train split's labels (named, or chosen by itself: projection_label=auto), queries re-ranked by the blend, checked against
scikit-learn's LDA computed here independently; the command, its errors, and the switch-off paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from typer.testing import CliRunner

from cli.main import app
from flows.ingest import ingest_flow
from recommender import projection
from recommender.recommend import Recommender
from recommender.retrieval_eval import evaluate, load_corpus
from recommender.settings import get_settings

pytestmark = pytest.mark.slow  # Prefect ingest flows and real models

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(scope="module")
def built(tmp_path_factory, prefect_harness) -> tuple[Path, Path, dict]:
    src = tmp_path_factory.mktemp("proj_src") / "samples"
    shutil.copytree(SAMPLES, src, ignore=shutil.ignore_patterns("volumes"))
    home = tmp_path_factory.mktemp("proj_home")
    cfg = get_settings(home=home, projection_label="genre").model_dump(mode="json")  # named: auto leaves a mixed one alone
    report = ingest_flow(str(src), str(src / "metadata.csv"), settings=cfg)
    assert report["failed"] == 0
    return home, src, report


def _by_hand(home: Path, weight: float) -> tuple[list[str], np.ndarray, list]:
    """Every point's id and unit vector, and the blend's projected rows from sklearn's own LDA fitted on the
    genre-labelled train items."""
    rec = Recommender(get_settings(home=home, use_projection=False))
    try:
        corpus = load_corpus(rec, "genre")
    finally:
        rec.close()
    train = [i for i, (lab, sp) in enumerate(zip(corpus.labels, corpus.splits)) if lab is not None and sp == "train"]
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(
        corpus.vectors[train], [corpus.labels[i] for i in train])
    proj = lda.transform(corpus.vectors)
    proj /= np.linalg.norm(proj, axis=1, keepdims=True)
    return corpus.ids, corpus.vectors @ corpus.vectors.T * (1 - weight) + weight * (proj @ proj.T), corpus


def test_the_ingest_fits_it_and_item_queries_rank_by_the_blend(built):
    home, _, report = built
    assert report["projection"]["label"] == "genre" and report["projection"]["refit"] is True
    fitted = projection.load(projection.path_for(home, "images"))
    assert fitted is not None and fitted.trained_on == 20 and fitted.classes == ["Genre", "Landscape", "Naturmort", "Portrait"]
    assert fitted.weight in projection.BLEND and set(fitted.cv) == {str(w) for w in projection.BLEND}
    ids, blend, corpus = _by_hand(home, fitted.weight)
    q = next(i for i, (lab, sp) in enumerate(zip(corpus.labels, corpus.splits)) if lab and sp == "test")
    rec = Recommender(get_settings(home=home))
    try:
        got = rec.similar_to_item(ids[q], k=8, collapse_duplicates=False)
    finally:
        rec.close()
    order = [j for j in np.argsort(-blend[q], kind="stable") if j != q][:8]
    assert [r.id for r in got] == [ids[j] for j in order]
    assert [r.score for r in got] == pytest.approx([blend[q, j] for j in order], abs=1e-4)
    assert got[0].reason["projection"] == {"label": "genre", "weight": fitted.weight}
    from dashboard.views.runs import ranking_line  # what the Runs page says of this run

    assert ranking_line(report) == (f"Ranking: projection learned from **genre** on 20 items (split train), "
                                    f"blend weight {fitted.weight}.")


def test_uploads_rank_the_same_way_and_the_switch_restores_plain_cosine(built):
    home, src, _ = built
    fitted = projection.load(projection.path_for(home, "images"))
    image = src / "art" / "portrait" / sorted(p.name for p in (src / "art" / "portrait").iterdir())[0]
    rec = Recommender(get_settings(home=home))
    plain = Recommender(get_settings(home=home, use_projection=False), store=rec.store)
    try:
        query = rec.embed_image(image)
        ranked = rec.similar_to_image(image, k=5, collapse_duplicates=False)
        unblended = plain.similar_to_image(image, k=5, collapse_duplicates=False)
        ids = [r.id for r in ranked]
        vectors = np.stack([v for _, _, v in rec.store.get_many(ids, with_vectors=True)])
        base = rec.store.query(query, 5)
    finally:
        rec.close()
    assert [r.score for r in ranked] == pytest.approx(list(fitted.rescore(query, vectors)), abs=1e-4)
    assert ranked[0].score == pytest.approx(1.0, abs=1e-3)  # the stored copy of the uploaded file
    assert "projection" in ranked[0].reason and "projection" not in unblended[0].reason
    assert [r.id for r in unblended] == [h.id for h in base]
    assert [r.score for r in unblended] == pytest.approx([h.score for h in base], abs=1e-5)


def test_evaluate_retrieval_scores_the_blend_on_held_out_queries(built):
    home, _, _ = built
    fitted = projection.load(projection.path_for(home, "images"))
    rec = Recommender(get_settings(home=home))
    try:
        report = evaluate(rec, "genre", k=3, split="test", compare_classic=False)
    finally:
        rec.close()
    ids, blend, corpus = _by_hand(home, fitted.weight)
    precisions = []
    for q in (i for i, (lab, sp) in enumerate(zip(corpus.labels, corpus.splits)) if lab and sp == "test"):
        row = blend[q].copy()
        row[corpus.exclude[q]] = -np.inf
        precisions.append(np.mean([corpus.labels[j] == corpus.labels[q] for j in np.argsort(-row, kind="stable")[:3]]))
    assert report["pipeline"]["overall"]["precision@3"] == pytest.approx(np.mean(precisions), abs=1e-4)
    assert report["pipeline_config"]["projection"]["label"] == "genre"
    assert "split=train" in report["pipeline_config"]["projection"]["tuned_on"]
    assert report["pipeline_config"]["query_expansion"] == 0 and "tuned_on" not in report["pipeline_config"]


def test_a_projection_of_another_model_is_ignored(built, tmp_path):
    home, _, _ = built
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    path = projection.path_for(copy, "images")
    fitted = projection.load(path)
    projection.save(projection.Projection(**{**fitted.__dict__, "model": "clip:ViT-B-32:openai"}), path)
    rec = Recommender(get_settings(home=copy))
    try:
        some = rec.store.query(np.ones(1280, np.float32), 1)[0].id
        assert "projection" not in rec.similar_to_item(some, k=3)[0].reason
    finally:
        rec.close()


def test_command_fits_reports_and_removes(built, tmp_path):
    home, _, _ = built
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    path = projection.path_for(copy, "images")
    r = CliRunner().invoke(app, ["fit-projection", "--label", "diagnosis", "--home", str(copy), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    rec = Recommender(get_settings(home=copy))
    try:
        corpus = load_corpus(rec, "diagnosis")
    finally:
        rec.close()
    train = sum(lab is not None and sp == "train" for lab, sp in zip(corpus.labels, corpus.splits))
    assert out["label"] == "diagnosis" and out["trained_on"] == train > 10 and projection.load(path).label == "diagnosis"
    r = CliRunner().invoke(app, ["fit-projection", "--label", "artist", "--home", str(copy)])
    assert r.exit_code != 0 and "No item carries a 'artist' field" in str(r.exception)
    r = CliRunner().invoke(app, ["fit-projection", "--label", "genre", "--split", "validation", "--home", str(copy)])
    assert r.exit_code != 0 and "split values present: test, train" in str(r.exception)
    assert projection.load(path).label == "diagnosis"  # a refused fit leaves the saved one alone
    r = CliRunner().invoke(app, ["fit-projection", "--remove", "--home", str(copy)])
    assert r.exit_code == 0 and not path.exists()


def test_a_no_op_ingest_keeps_the_fit_and_a_missing_label_never_fails_the_run(built, tmp_path):
    home, src, _ = built
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    again = ingest_flow(str(src), str(src / "metadata.csv"),
                        settings=get_settings(home=copy, projection_label="genre").model_dump(mode="json"))
    assert again["new"] == 0 and again["projection"] == {"label": "genre", "refit": False}
    (src / "art" / "extra").mkdir()
    shutil.copy(next((src / "art" / "landscape").iterdir()), src / "art" / "extra" / "flipped.png")
    from PIL import Image, ImageOps

    flipped = src / "art" / "extra" / "flipped.png"
    ImageOps.mirror(Image.open(flipped).convert("RGB")).save(flipped)
    try:
        bad = ingest_flow(str(src), str(src / "metadata.csv"),
                          settings=get_settings(home=copy, projection_label="artist").model_dump(mode="json"))
        assert bad["status"] == "completed" and bad["new"] == 1
        assert "artist" in bad["projection"]["error"]
        fitted = projection.load(projection.path_for(copy, "images"))
        assert fitted.label == "genre"
        # the new point came after the fit: no saved coordinates, so it is projected from its vector
        rec = Recommender(get_settings(home=copy))
        try:
            new = rec.resolve(str(flipped))
            assert not projection.Coordinates(projection.path_for(copy, "images"), fitted).lookup([new])[1][0]
            got = rec.similar_to_item(new, k=5, collapse_duplicates=False)
            query = rec.store.get(new, with_vector=True)[1]
            vectors = np.stack([v for _, _, v in rec.store.get_many([r.id for r in got], with_vectors=True)])
        finally:
            rec.close()
        assert [r.score for r in got] == pytest.approx(list(fitted.rescore(query, vectors)), abs=1e-4)
        assert got == sorted(got, key=lambda r: -r.score) and "projection" in got[0].reason
    finally:
        shutil.rmtree(src / "art" / "extra")


def test_the_rest_api_ranks_items_and_uploads_with_the_projection(built):
    from fastapi.testclient import TestClient

    from api.app import create_app

    home, src, _ = built
    cfg = get_settings(home=home)
    rec = Recommender(cfg)
    try:
        seed = rec.store.query(np.ones(1280, np.float32), 1)[0].id
        expected = rec.similar_to_item(seed, k=5)
        image = next((src / "art" / "naturmort").iterdir())
        with TestClient(create_app(cfg, recommender=rec)) as client:
            got = client.get(f"/items/{seed}/similar", params={"k": 5})
            upload = client.post("/search", data={"k": "3"}, files={"file": (image.name, image.read_bytes())})
    finally:
        rec.close()
    assert got.status_code == 200, got.text
    assert [r["id"] for r in got.json()] == [r.id for r in expected]
    assert [r["score"] for r in got.json()] == pytest.approx([r.score for r in expected], abs=1e-6)
    assert got.json()[0]["reason"]["projection"]["label"] == "genre"
    assert upload.status_code == 200, upload.text
    assert upload.json()[0]["reason"]["projection"]["label"] == "genre" and upload.json()[0]["score"] == pytest.approx(1.0, abs=1e-3)


def _paintings(src: Path, to: Path, split: bool) -> tuple[Path, Path]:
    """The sample paintings alone, with their metadata rows (and the `split` column or not)."""
    import pandas as pd

    shutil.copytree(src / "art", to / "art")
    rows = pd.read_csv(src / "metadata.csv")
    rows = rows[rows["path"].str.startswith("art/")]
    (rows if split else rows.drop(columns=["split"])).to_csv(to / "labels.csv", index=False)
    return to, to / "labels.csv"


def test_the_default_learns_the_label_of_a_collection_of_paintings_and_leaves_a_mixed_one_alone(built, tmp_path):
    home, src, _ = built
    folder, table = _paintings(src, tmp_path / "paintings", split=True)
    report = ingest_flow(str(folder), str(table), settings=get_settings(home=tmp_path / "home").model_dump(mode="json"))
    assert report["projection"]["label"] == "genre" and report["projection"]["split"] == "train"
    assert report["projection"]["trained_on"] == 20 and report["projection"]["refit"] is True  # the train paintings
    # the samples as a whole: 24 of 50 points carry a genre, so the default leaves them to plain cosine
    rec = Recommender(get_settings(home=home))
    try:
        with pytest.raises(projection.NoLabel, match="only 'genre' on 24"):
            projection.resolve(rec.store, projection.AUTO)
    finally:
        rec.close()


def test_without_a_split_it_learns_every_label_and_the_evaluation_cross_fits(built, tmp_path):
    """No `split` column: the default ingest learns from every labelled item, and evaluate-retrieval ranks each
    query by a projection refitted without the query's fold (checked against the fold fits computed here)."""
    _, samples, _ = built
    src, table = _paintings(samples, tmp_path / "paintings", split=False)
    home = tmp_path / "home"
    report = ingest_flow(str(src), str(table), settings=get_settings(home=home).model_dump(mode="json"))
    assert report["projection"]["label"] == "genre" and report["projection"]["split"] == projection.ALL
    assert report["projection"]["trained_on"] == 24  # every genre-labelled painting
    rec = Recommender(get_settings(home=home))
    try:
        got = evaluate(rec, "genre", k=3, compare_classic=False)
        corpus = load_corpus(rec, "genre", ["genre"])
    finally:
        rec.close()
    assert got["pipeline_config"]["projection"]["cross_fitted"]["queries"] == 24
    taught = np.array([i for i, lab in enumerate(corpus.labels) if lab is not None])
    y = np.array([str(corpus.labels[i]) for i in taught])
    precisions = []
    for part in projection.folds(y, 5):
        learn = np.setdiff1d(taught, taught[part])
        refit = projection.fit(corpus.vectors[learn], [corpus.labels[i] for i in learn],
                               [corpus.groups[i] for i in learn], "genre", "", projection.ALL)
        coords = refit.apply(corpus.vectors)
        for q in taught[part]:
            cosine = corpus.vectors @ corpus.vectors[q]
            cosine[corpus.exclude[q]] = -np.inf
            pool = np.argsort(-cosine, kind="stable")[:projection.RERANK_POOL]  # what the product re-ranks
            blend = (1 - refit.weight) * cosine[pool] + refit.weight * (coords[pool] @ coords[q])
            top = pool[np.argsort(-blend, kind="stable")[:3]]
            precisions.append(np.mean([corpus.labels[j] == corpus.labels[q] for j in top]))
    assert got["pipeline"]["overall"]["precision@3"] == pytest.approx(np.mean(precisions), abs=1e-4)
    # an ingest that leaves the labelled items as they were keeps the fit (the new point is projected at query time)
    extra = tmp_path / "extra"
    shutil.copytree(src, extra)
    from PIL import Image, ImageOps

    ImageOps.flip(Image.open(next((extra / "art" / "portrait").iterdir())).convert("RGB")).save(extra / "upside_down.png")
    again = ingest_flow(str(extra), str(table), settings=get_settings(home=home).model_dump(mode="json"))
    assert again["new"] >= 1 and again["projection"]["refit"] is False and again["projection"]["label"] == "genre"


def test_a_collection_without_labels_skips_the_stage_and_ranks_by_cosine(tmp_path, prefect_harness):
    src = tmp_path / "src"
    src.mkdir()
    for image in sorted((SAMPLES / "art" / "portrait").iterdir())[:4]:
        shutil.copy(image, src / image.name)
    home = tmp_path / "home"
    report = ingest_flow(str(src), settings=get_settings(home=home).model_dump(mode="json"))
    assert report["status"] == "completed" and report["new"] == 4
    assert report["projection"]["label"] == "auto" and "plain cosine" in report["projection"]["skipped"]
    assert not projection.path_for(home, "images").exists()


def test_reembed_learns_the_projection_again_for_the_new_model(built, tmp_path):
    """A fit belongs to one model's vectors: after `reembed` the new generation gets its own."""
    import torch
    import torchvision

    from recommender.reembed import reembed

    _, samples, _ = built
    folder, table = _paintings(samples, tmp_path / "paintings", split=True)
    cfg = get_settings(home=tmp_path / "home")
    assert ingest_flow(str(folder), str(table), settings=cfg.model_dump(mode="json"))["projection"]["refit"] is True
    ckpt = tmp_path / "resnet50.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), ckpt)
    result = reembed(cfg, f"resnet50:{ckpt}")
    assert result["projection"]["label"] == "genre" and result["projection"]["refit"] is True
    fitted = projection.load(projection.path_for(cfg.home, "images"))
    assert fitted.model == f"resnet50:{ckpt}" and fitted.matrix.shape[0] == 2048
    rec = Recommender(cfg)
    try:
        some = rec.store.query(np.ones(2048, np.float32), 1)[0].id
        assert rec.similar_to_item(some, k=3)[0].reason["projection"]["label"] == "genre"
    finally:
        rec.close()


def test_too_few_labels_to_cross_fit_is_a_clear_error(built, tmp_path):
    """Twelve paintings, four per genre, no split: the ingest learns from all twelve, but a fit on four fifths
    of them has three of each genre, too few to learn, so evaluate-retrieval says it can't score them."""
    import pandas as pd

    _, samples, _ = built
    src, rows = tmp_path / "twelve", []
    for genre in ("landscape", "portrait", "naturmort"):
        (src / genre).mkdir(parents=True)
        for image in sorted((samples / "art" / genre).iterdir())[:4]:
            shutil.copy(image, src / genre / image.name)
            rows.append({"path": f"{genre}/{image.name}", "genre": genre})
    pd.DataFrame(rows).to_csv(src / "labels.csv", index=False)
    home = tmp_path / "home"
    report = ingest_flow(str(src), str(src / "labels.csv"), settings=get_settings(home=home).model_dump(mode="json"))
    assert report["projection"]["split"] == projection.ALL and report["projection"]["trained_on"] == 12
    r = CliRunner().invoke(app, ["evaluate-retrieval", "--label", "genre", "--k", "2", "--home", str(home)])
    assert r.exit_code != 0 and "can't be scored on the items it learned from" in str(r.exception)
