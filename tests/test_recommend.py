"""Every query kind of the Recommender on the real sample corpus (ingested once with MobileNetV2).

Both engines answer every query: the in-process exact index (embedded default) and
Qdrant's own search; their results must be identical.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.ingest import ingest_flow
from recommender.errors import ConfigError, NotFoundError, RecommenderError
from recommender.recommend import Recommender, parse_filters
from recommender.settings import get_settings
from recommender.store import open_store

pytestmark = pytest.mark.slow  # Prefect ingest flows and real models

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
LANDSCAPE = "art/landscape/cl010052607.jpg"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("rec_home")
    cfg = get_settings(home=home, projection_label="none")  # the plain engine's answers (the projection: test_projection)
    report = ingest_flow(str(SAMPLES), str(SAMPLES / "metadata.csv"), settings=cfg.model_dump(mode="json"))
    assert report["failed"] == 0 and report["points"] > 100
    return home


@pytest.fixture(scope="module")
def engines(home):
    """(exact, qdrant) Recommenders sharing one embedded store (local mode allows one client per folder)."""
    cfg = get_settings(home=home)
    store = open_store(cfg)
    exact = Recommender(cfg.with_overrides(query_engine="exact"), store)
    qdrant = Recommender(cfg.with_overrides(query_engine="qdrant"), store)
    assert (exact.engine, qdrant.engine) == ("exact", "qdrant")
    yield exact, qdrant
    store.close()


@pytest.fixture(scope="module")
def rec(engines) -> Recommender:
    return engines[0]


def _id(rec: Recommender, relpath: str) -> str:
    return rec.store.find_by_path(relpath)


def _ids(results) -> list[str]:
    return [r.id for r in results]


def _vectors(rec: Recommender, ids) -> np.ndarray:
    rows = rec.store.get_many(list(ids), with_vectors=True)
    return np.stack([v / np.linalg.norm(v) for _, _, v in rows])


def _same(a, b) -> None:
    assert _ids(a) == _ids(b)
    np.testing.assert_allclose([r.score for r in a], [r.score for r in b], atol=2e-6)


QUERIES = [
    {},
    {"filters": {"collection": "art"}},
    {"filters": {"genre": ["Landscape", "Portrait"]}},
    {"filters": {"height": {"gte": 200}, "collection": "medical"}},
    {"group_by": "genre"},
    {"group_by": "diagnosis", "group_size": 2, "k": 6},
    {"offset": 4, "k": 5},
    {"score_threshold": 0.6},
    {"mmr_lambda": 0.5},
]


@pytest.mark.parametrize("options", QUERIES, ids=[str(q) for q in QUERIES])
def test_exact_index_equals_qdrant(engines, options):
    exact, qdrant = engines
    seed = _id(exact, LANDSCAPE)
    _same(exact.recommend([seed], **options), qdrant.recommend([seed], **options))
    neg = _id(exact, "medical/train/glioma/" + sorted((SAMPLES / "medical/train/glioma").iterdir())[0].name)
    _same(exact.recommend([seed], [neg], **options), qdrant.recommend([seed], [neg], **options))


def test_exact_index_equals_numpy_brute_force(rec):
    seed = _id(rec, LANDSCAPE)
    rows = list(rec.store.scroll(with_vectors=True))
    ids = [r[0] for r in rows]
    m = np.stack([r[2] / np.linalg.norm(r[2]) for r in rows])
    sims = m @ m[ids.index(seed)]
    sims[ids.index(seed)] = -np.inf
    top = np.argsort(-sims)[:10]
    results = rec.similar_to_item(seed, k=10)
    assert _ids(results) == [ids[i] for i in top]
    np.testing.assert_allclose([r.score for r in results], sims[top], atol=1e-5)


def test_by_id_and_by_path_agree_and_explain(rec):
    by_path = rec.similar_to_item(LANDSCAPE, k=5)
    by_id = rec.similar_to_item(_id(rec, LANDSCAPE), k=5)
    assert _ids(by_path) == _ids(by_id) and len(by_id) == 5
    assert _id(rec, LANDSCAPE) not in _ids(by_id)
    first = by_id[0]
    assert first.path and first.payload["sha256"] and "collection" in first.payload
    assert first.reason == {"query": "item", "model": "mobilenet_v2", "vector": "image", "engine": "exact"}
    assert [r.score for r in by_id] == sorted((r.score for r in by_id), reverse=True)


def test_unknown_filter_or_group_field_names_the_fields_that_exist(rec):
    assert rec.recommend([LANDSCAPE], k=3, filters={"collection": "art", "genre": "Landscape"})  # metadata + declared
    with pytest.raises(ConfigError, match=r"unknown filter field 'colection'; fields that exist: .*collection.*genre"):
        rec.recommend([LANDSCAPE], k=3, filters={"colection": "art"})
    with pytest.raises(ConfigError, match=r"unknown group-by field 'genr'"):
        rec.recommend([LANDSCAPE], k=3, group_by="genr")


def test_unknown_item_is_not_found(rec):
    with pytest.raises(NotFoundError):
        rec.similar_to_item("00000000-0000-0000-0000-000000000000")
    with pytest.raises(NotFoundError, match="not an ingested item"):
        rec.similar_to_item("art/nowhere.jpg")


def test_uploaded_image_finds_its_original(rec, engines):
    original = SAMPLES / LANDSCAPE
    img = Image.open(original).convert("RGB")
    w, h = img.size
    buf = io.BytesIO()
    img.crop((w // 10, h // 10, w - w // 10, h - h // 10)).resize((320, 240)).save(buf, "JPEG", quality=80)
    results = rec.similar_to_image(buf.getvalue(), k=3)
    assert results[0].id == _id(rec, LANDSCAPE)
    assert results[0].reason["query"] == "image" and results[0].score > 0.6
    _same(results, engines[1].similar_to_image(buf.getvalue(), k=3))


def test_text_query_needs_a_text_tower(rec):
    with pytest.raises(RecommenderError, match="(?i)text"):
        rec.similar_to_text("a landscape with trees")


def test_negative_example_pushes_results_away(rec):
    seed = _id(rec, LANDSCAPE)
    plain = rec.recommend([seed], k=8, filters={"collection": "art"})
    negative = next(r.id for r in plain if r.payload["genre"] != "Landscape")  # an off-genre neighbour
    pushed = rec.recommend([seed], [negative], k=8, filters={"collection": "art"})
    assert negative not in _ids(pushed)
    neg_vec = _vectors(rec, [negative])[0]
    seed_vec = _vectors(rec, [seed])[0]
    closer_to_negative = [r.id for r in pushed if _vectors(rec, [r.id])[0] @ neg_vec > _vectors(rec, [r.id])[0] @ seed_vec]
    positives_scored = [r for r in pushed if r.score > 0]
    assert not set(closer_to_negative) & {r.id for r in positives_scored}
    mean_sim = lambda res: float(np.mean(_vectors(rec, _ids(res)) @ neg_vec))  # noqa: E731
    assert mean_sim(pushed) < mean_sim(plain)
    assert pushed[0].reason["strategy"] == "best_score" and pushed[0].reason["negatives"] == 1


def test_several_positives_use_best_score(rec):
    a, b = _id(rec, LANDSCAPE), _id(rec, "art/portrait/cl010054342.jpg")
    results = rec.recommend([a, b], k=10, filters={"collection": "art"})
    genres = {r.payload["genre"] for r in results}
    assert {"Landscape", "Portrait"} <= genres  # neighbours of both examples
    assert {a, b}.isdisjoint(_ids(results))


def test_grouping_returns_one_per_value(rec):
    seed = _id(rec, LANDSCAPE)
    grouped = rec.recommend([seed], k=10, group_by="genre")
    genres = [r.payload["genre"] for r in grouped]
    assert sorted(genres) == ["Genre", "Landscape", "Naturmort", "Portrait"]  # every value once, nothing else
    assert [r.reason["group"] for r in grouped] == genres
    two = rec.recommend([seed], k=20, group_by="genre", group_size=2)
    assert len(two) == 8 and all(sum(r.payload["genre"] == g for r in two) == 2 for g in set(genres))


def test_mmr_reorders_towards_diversity(rec):
    seed = _id(rec, LANDSCAPE)
    plain = rec.recommend([seed], k=8)
    diverse = rec.recommend([seed], k=8, mmr_lambda=0.3)
    assert diverse[0].id == plain[0].id  # nothing picked yet: the most relevant comes first
    assert _ids(diverse) != _ids(plain)

    def redundancy(res) -> float:
        v = _vectors(rec, _ids(res))
        s = v @ v.T
        return float(s[np.triu_indices(len(v), 1)].mean())

    assert redundancy(diverse) < redundancy(plain)
    assert _ids(rec.recommend([seed], k=8, mmr_lambda=1.0)) == _ids(plain)  # lambda 1 is pure relevance
    assert _ids(rec.recommend([seed], k=8, diversity=0.7)) == _ids(diverse)  # the dashboard's slider
    assert diverse[0].reason["mmr_lambda"] == pytest.approx(0.3)


def test_filters_equality_any_of_and_range(rec):
    seed = _id(rec, LANDSCAPE)
    portraits = rec.recommend([seed], k=20, filters={"genre": "Portrait"})
    assert len(portraits) == 6 and {r.payload["genre"] for r in portraits} == {"Portrait"}
    two = rec.recommend([seed], k=50, filters={"diagnosis": ["glioma", "pituitary"]})
    assert len(two) == 12 and {r.payload["diagnosis"] for r in two} == {"glioma", "pituitary"}
    slices = rec.recommend([seed], k=100, filters={"slice_index": {"gte": 10, "lt": 20}})
    assert sorted(r.payload["slice_index"] for r in slices) == list(range(10, 20))
    assert rec.recommend([seed], k=5, filters=parse_filters(["slice_index>=10", "slice_index<20"])) == slices[:5]
    with pytest.raises(ConfigError, match="slice_index"):
        rec.recommend([seed], filters={"slice_index": {"between": 3}})
    with pytest.raises(ConfigError, match="genre"):
        rec.recommend([seed], filters={"genre": 1.5})


def test_threshold_limit_and_offset(rec):
    seed = _id(rec, LANDSCAPE)
    full = rec.recommend([seed], k=12)
    assert rec.recommend([seed], k=4, offset=3) == full[3:7]
    cut = (full[4].score + full[5].score) / 2  # between two results: scores are shown rounded to 6 places
    above = rec.recommend([seed], k=12, score_threshold=cut)
    assert above == full[:5] and all(r.score > cut for r in above)
    with pytest.raises(ConfigError):
        rec.recommend([seed], k=0)
    with pytest.raises(ConfigError):
        rec.recommend([seed], mmr_lambda=1.5)


def test_duplicate_clusters_collapse_to_canonical(engines):
    exact, qdrant = engines
    seed = _id(exact, LANDSCAPE)
    plain = exact.recommend([seed], k=6, collapse_duplicates=False)
    r1, r2, r3 = plain[0].id, plain[1].id, plain[2].id
    store = exact.store
    try:
        store.mark_duplicates("cluster-a", [r1, r2], canonical=r2)  # r1's cluster is shown by its canonical r2
        store.mark_duplicates("cluster-q", [seed, r3], canonical=seed)  # r3 duplicates the query
        for rec in (exact, qdrant):  # the exact index notices the payload change and rebuilds
            got = rec.recommend([seed], k=4)
            ids = _ids(got)
            assert r3 not in ids and r1 not in ids and ids.count(r2) == 1
            assert got[0].id == r2 and got[0].reason["collapsed_from"] == r1
            assert got[0].score == plain[0].score  # the cluster ranks by its best member
            assert ids[1:] == [r.id for r in plain[3:6]]
        _same(exact.recommend([seed], k=4), qdrant.recommend([seed], k=4))
        assert _ids(exact.recommend([seed], k=6, collapse_duplicates=False)) == _ids(plain)
    finally:
        store.set_payload([seed, r1, r2, r3], {"cluster_id": None, "tier": None, "canonical": None})
    assert exact.recommend([seed], k=6) == plain


def test_mark_duplicates_refuses_a_canonical_outside_the_cluster(rec):
    with pytest.raises(NotFoundError, match="Canonical"):
        rec.store.mark_duplicates("c", ["a"], canonical="b")


def test_nothing_to_query_is_a_clear_error(rec):
    with pytest.raises(ConfigError, match="Nothing to query"):
        rec.recommend()
    with pytest.raises(ConfigError, match="at most one"):
        rec.recommend(vector=np.ones(1280, np.float32), text="x")
