"""evaluate-retrieval on real sample images: metrics by hand, identical to the full cosine matrix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from flows.ingest import ingest_flow
from recommender.errors import ConfigError
from recommender.recommend import Recommender
from recommender.retrieval_eval import evaluate, load_corpus, neighbours_recommender
from recommender.settings import get_settings

pytestmark = pytest.mark.slow  # Prefect ingest flows and real models

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(scope="module")
def home(tmp_path_factory, prefect_harness) -> Path:
    src = tmp_path_factory.mktemp("eval_src") / "samples"
    shutil.copytree(SAMPLES, src, ignore=shutil.ignore_patterns("volumes"))
    home = tmp_path_factory.mktemp("eval_home")
    cfg = get_settings(home=home, projection_label="none")  # query expansion alone here (the projection: test_projection)
    report = ingest_flow(str(src), str(src / "metadata.csv"), settings=cfg.model_dump(mode="json"))
    assert report["failed"] == 0
    return home


def test_metrics_match_a_hand_computation_and_the_classic_matrix(home):
    rec = Recommender(get_settings(home=home))
    try:
        report = evaluate(rec, "genre", k=5)
        corpus = load_corpus(rec, "genre")
    finally:
        rec.close()
    assert report["labelled"] == 24 and report["agreement"]["identical_lists"] == 24
    assert report["agreement"]["max_abs_score_diff"] < 1e-5
    assert report["recommender"] == report["classic"]
    # by hand: neighbours over all points (medical scans included), same genre = relevant
    labelled = [i for i, lab in enumerate(corpus.labels) if lab is not None]
    sims = corpus.vectors @ corpus.vectors.T
    np.fill_diagonal(sims, -np.inf)
    precisions = [np.mean([corpus.labels[j] == corpus.labels[i] for j in np.argsort(-sims[i])[:5]]) for i in labelled]
    assert report["recommender"]["overall"]["precision@5"] == pytest.approx(np.mean(precisions), abs=1e-4)
    assert set(report["recommender"]["per_label"]) == {"Genre", "Landscape", "Naturmort", "Portrait"}
    assert 0 < report["recommender"]["overall"]["map@5"] <= 1


def test_duplicate_cluster_members_are_not_neighbours(home):
    rec = Recommender(get_settings(home=home))
    try:
        before = evaluate(rec, "genre", k=3, compare_classic=False)
        corpus = load_corpus(rec, "genre")
        q = next(i for i, lab in enumerate(corpus.labels) if lab == "Landscape")
        top = rec.similar_to_item(corpus.ids[q], k=1, collapse_duplicates=False)[0].id
        rec.store.mark_duplicates("dup", [corpus.ids[q], top], canonical=corpus.ids[q])
        corpus = load_corpus(rec, "genre")
        assert corpus.exclude[q] == sorted([q, corpus.ids.index(top)])
        after = evaluate(rec, "genre", k=3)
        assert after["agreement"]["identical_lists"] == after["labelled"]
        rows, _ = neighbours_recommender(rec, corpus, [q], 3)
        assert corpus.ids.index(top) not in rows[0] and len(rows[0]) == 3
        assert before["labelled"] == after["labelled"]
    finally:
        rec.close()


def test_cli_writes_table_and_json(home, tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["evaluate-retrieval", "--label", "diagnosis", "--k", "3", "--home", str(home),
                                 "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout.strip().splitlines()[-1])
    # 26 labelled scans in metadata.csv, two of them byte-identical: they share one point
    assert report["labelled"] == 25 and set(report["recommender"]["per_label"]) == {"glioma", "meningioma", "notumor", "pituitary"}
    saved = json.loads((out / "retrieval_diagnosis_k3.json").read_text())
    assert saved["recommender"] == report["recommender"]
    assert "| **overall** | 25 |" in (out / "retrieval_diagnosis_k3.md").read_text()


def test_unknown_label_is_a_clear_error(home):
    rec = Recommender(get_settings(home=home))
    try:
        with pytest.raises(ConfigError, match="artist"):
            evaluate(rec, "artist")
    finally:
        rec.close()


def test_split_queries_and_the_configured_pipeline_beside_plain_cosine(home, tmp_path):
    """--split test: only test-split items ask, every item answers; with query expansion configured the
    pipeline column is the alpha-QE ranking computed by hand, beside the unchanged plain one."""
    from recommender import postprocess as pp

    rec = Recommender(get_settings(home=home, query_expansion=2))
    try:
        report = evaluate(rec, "genre", k=3, split="test")
        corpus = load_corpus(rec, "genre")
        with pytest.raises(ConfigError, match="values present: test, train"):
            evaluate(rec, "genre", split="validation")
    finally:
        rec.close()
    queries = [i for i, lab in enumerate(corpus.labels) if lab is not None and corpus.splits[i] == "test"]
    assert report["labelled"] == len(queries) == 4 and report["split"] == "test"
    assert report["recommender"] == report["classic"] and report["points"] == len(corpus.ids)
    lo, hi = report["recommender"]["overall"]["precision@3_ci95"]
    assert lo <= report["recommender"]["overall"]["precision@3"] <= hi
    x, precisions = corpus.vectors, []
    for q in queries:
        sims = x @ x[q]
        sims[corpus.exclude[q]] = -np.inf
        first = np.argsort(-sims, kind="stable")[:2]
        qv = pp.alpha_qe(x[q], x[first], sims[first], 3.0)
        again = x @ qv
        again[corpus.exclude[q]] = -np.inf
        top = np.argsort(-again, kind="stable")[:3]
        precisions.append(np.mean([corpus.labels[j] == corpus.labels[q] for j in top]))
    assert report["pipeline"]["overall"]["precision@3"] == pytest.approx(np.mean(precisions), abs=1e-4)
    assert report["pipeline_config"]["query_expansion"] == 2 and "train-split" in report["pipeline_config"]["tuned_on"]
    r = CliRunner().invoke(app, ["evaluate-retrieval", "--label", "genre", "--k", "3", "--split", "test",
                                 "--query-expansion", "2", "--home", str(home)])
    assert r.exit_code == 0, r.output
    assert "pipeline precision@3 [95 % CI]" in r.output and "Queries: items with split = test (4)" in r.output
