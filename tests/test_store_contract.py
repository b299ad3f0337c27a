"""The store contract: every backend answers the public `VectorStore` methods like numpy does.

Why: `open_store` picks the engine (edge in process, qdrant-client local mode, a Qdrant server)
and the rest of the code must not be able to tell them apart (docs/architecture.md, "a store
backend"). Each test runs on every backend against a ground truth computed here: exact cosine
top-k over 300 random 32-d vectors, filters evaluated on the payloads in Python. The server
backend joins when QDRANT_URL is set (issue 12); without it the list simply has no "server"
entry, so nothing is skipped. At 300 points the edge engine searches by full scan (below its
full-scan threshold), so every backend is held to exact equality of the ranked ids.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator
from uuid import uuid4

import numpy as np
import pytest

from recommender.errors import NotFoundError
from recommender.settings import Settings, get_settings
from recommender.store import VectorStore, open_store, point_id_for

BACKENDS = ["edge", "local"] + (["server"] if os.environ.get("QDRANT_URL") else [])
N, DIM, K = 300, 32, 10
MODEL, EXTRA_KEYWORDS = "m", ["room"]
SCORE_TOL = 1e-4  # float32 cosine computed by different code: ranks must match, scores nearly
FILTERS: list[dict[str, Any] | None] = [
    None,
    {"genre": "a"},                                   # keyword equality
    {"tags": "x"},                                    # equality against a list-valued field
    {"genre": ["a", "b"]},                            # any of a list of values
    {"year": {"gte": 1900, "lt": 2000}},              # numeric range
    {"room": "r3", "year": {"gt": 1850}},             # keyword and range together
]


@dataclass
class Data:
    """The points written to every store, and the exact answers derived from them."""

    ids: list[str]
    x: np.ndarray
    payloads: list[dict[str, Any]]

    @property
    def unit(self) -> np.ndarray:
        return self.x / np.linalg.norm(self.x, axis=1, keepdims=True)

    def cos(self, q: np.ndarray) -> np.ndarray:
        """Cosine of every point to the query vector."""
        return self.unit @ (q / np.linalg.norm(q))


def make_data(seed: int = 0) -> Data:
    """Random vectors with payloads covering keyword, list, integer and sparse fields."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    payloads = [{
        "path": f"/src/{i}.jpg", "relpath": f"{i}.jpg", "genre": "abc"[i % 3], "year": 1800 + i,
        "tags": ["x", "y"] if i % 2 else ["y"], "room": f"r{i % 7}",
        **({"artist": f"p{i % 3}"} if i % 4 == 0 else {}),
    } for i in range(N)]
    return Data([point_id_for(f"p{i}") for i in range(N)], x, payloads)


def matches(payload: dict[str, Any], spec: dict[str, Any] | None) -> bool:
    """A filter spec evaluated in Python, as `recommender.store.filters.query_filter` defines it."""
    for key, want in (spec or {}).items():
        value = payload.get(key)
        values = value if isinstance(value, list) else [value]
        if isinstance(want, dict):
            ops = {"gt": np.greater, "gte": np.greater_equal, "lt": np.less, "lte": np.less_equal}
            if value is None or not all(ops[op](value, bound) for op, bound in want.items()):
                return False
        elif not set(values) & set(want if isinstance(want, list) else [want]):
            return False
    return True


def ranked(data: Data, scores: np.ndarray, spec: dict[str, Any] | None = None,
           exclude: set[str] = frozenset()) -> list[tuple[str, float]]:
    """Every point passing the filter and not excluded, best score first."""
    order = np.argsort(-scores, kind="stable")
    return [(data.ids[i], float(scores[i])) for i in order
            if data.ids[i] not in exclude and matches(data.payloads[i], spec)]


def best_score(data: Data, pos: list[int], neg: list[int]) -> np.ndarray:
    """Qdrant's best-score recommendation: the sigmoid of the best positive cosine when it beats the
    best negative one, else minus the sigmoid of the best negative (scores in (-1, 1))."""
    sims = data.unit @ data.unit.T
    p, n = sims[pos].max(axis=0), sims[neg].max(axis=0) if neg else np.full(N, -2.0)  # -2: below any cosine
    squash = lambda s: 0.5 * (s / (1 + np.abs(s)) + 1)  # noqa: E731
    return np.where(p > n, squash(p), -squash(n))


def assert_hits(hits: list[Any], want: list[tuple[str, float]]) -> None:
    """Same ids in the same order; scores equal within float32 error."""
    assert [h.id for h in hits] == [i for i, _ in want]
    assert np.allclose([h.score for h in hits], [s for _, s in want], atol=SCORE_TOL)


# -- fixtures -------------------------------------------------------------------------------
def drop_server_collections(cfg: Settings) -> None:
    """Remove the aliases and generations a server test created (all named after its collection)."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(url=cfg.qdrant_url, api_key=cfg.qdrant_api_key, timeout=30)
    try:
        drops = [models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=a.alias_name))
                 for a in client.get_aliases().aliases if a.alias_name.startswith(cfg.collection)]
        if drops:
            client.update_collection_aliases(change_aliases_operations=drops)
        for coll in client.get_collections().collections:
            if coll.name.startswith(cfg.collection):
                client.delete_collection(coll.name)
    finally:
        client.close()


@pytest.fixture(params=BACKENDS)
def cfg(request: pytest.FixtureRequest, tmp_path, monkeypatch) -> Iterator[Settings]:
    """Settings for one backend; a server test gets its own collection name and drops it after."""
    if request.param != "server":
        monkeypatch.delenv("RECOMMENDER_QDRANT_URL", raising=False)  # else get_settings would pick the server
        yield get_settings(home=tmp_path / "home", store_backend=request.param)
        return
    settings = get_settings(home=tmp_path / "home", qdrant_url=os.environ["QDRANT_URL"],
                            collection=f"contract-{uuid4().hex[:8]}")
    try:
        yield settings
    finally:
        drop_server_collections(settings)


def fill(cfg: Settings, data: Data) -> VectorStore:
    """Open the store, create the collection and write every point."""
    store = open_store(cfg)
    store.ensure_collection(MODEL, DIM, EXTRA_KEYWORDS)
    store.upsert(data.ids, data.x, data.payloads)
    return store


@pytest.fixture
def data() -> Data:
    return make_data()


@pytest.fixture
def store(cfg: Settings, data: Data) -> Iterator[VectorStore]:
    s = fill(cfg, data)
    try:
        yield s
    finally:
        s.close()


# -- queries --------------------------------------------------------------------------------
def check_queries_by_id(store: VectorStore, data: Data) -> None:
    """Query by id: the query point itself is left out; filters select what numpy selects."""
    for q in range(0, N, 37):
        for spec in FILTERS:
            want = ranked(data, data.cos(data.x[q]), spec, exclude={data.ids[q]})
            assert_hits(store.query(data.ids[q], K, must=spec), want[:K])
    want = ranked(data, data.cos(data.x[5]), exclude={data.ids[5]})
    assert_hits(store.query(data.ids[5], K, offset=4), want[4:4 + K])
    skip = {i for i, _ in want[:3]}
    assert_hits(store.query(data.ids[5], K, exclude_ids=list(skip)), [w for w in want if w[0] not in skip][:K])


def test_query_by_id_matches_exact_cosine_top_k_before_and_after_optimize(store: VectorStore, data: Data) -> None:
    check_queries_by_id(store, data)
    store.optimize()  # the edge engine builds HNSW + int8 here; a no-op elsewhere
    check_queries_by_id(store, data)


def test_query_by_vector_keeps_the_point_itself_and_honours_threshold(store: VectorStore, data: Data) -> None:
    want = ranked(data, data.cos(data.x[11]), {"genre": ["a", "c"]})
    hits = store.query(data.x[11], K, must={"genre": ["a", "c"]}, with_vectors=True)
    assert_hits(hits, want[:K])
    assert hits[0].id == data.ids[11] and np.allclose(hits[0].vector, data.unit[11], atol=1e-6)
    threshold = (want[4][1] + want[5][1]) / 2   # midway between the 5th and 6th score
    assert_hits(store.query(data.x[11], 50, must={"genre": ["a", "c"]}, score_threshold=threshold), want[:5])


def test_query_many_answers_each_row_as_one_query_would(store: VectorStore, data: Data) -> None:
    """The ingest's batched check against the store: batches of any size, a threshold, before and
    after the index is built, each row answered exactly as numpy ranks it."""
    rows = list(range(0, N, 7))
    for _ in ("before", "after"):
        for batch in (1, 16, 256):
            got = store.query_many(data.x[rows], K, score_threshold=0.2, batch=batch)
            assert len(got) == len(rows)
            for hits, q in zip(got, rows):
                assert_hits(hits, [w for w in ranked(data, data.cos(data.x[q])) if w[1] >= 0.2][:K])
        store.optimize()
    assert store.query_many(data.x[:0], K) == []


def test_positive_and_negative_examples_follow_best_score(store: VectorStore, data: Data) -> None:
    for pos, neg in (([0, 1], [2]), ([3], [4, 5]), ([6, 7, 8], [])):
        want = ranked(data, best_score(data, pos, neg), exclude={data.ids[i] for i in pos + neg})
        got = store.query([data.ids[i] for i in pos], K, negative=[data.ids[i] for i in neg])
        assert_hits(got, want[:K])
    want = ranked(data, best_score(data, [0, 1], [2]), {"genre": "b"}, exclude={data.ids[i] for i in (0, 1, 2)})
    assert_hits(store.query([data.ids[0], data.ids[1]], K, negative=[data.ids[2]], must={"genre": "b"}), want[:K])


def grouped(data: Data, want: list[tuple[str, float]], field: str, size: int, groups: int) -> list[tuple[Any, str]]:
    """Qdrant's grouping of a ranked list: groups ordered by their best hit, `size` hits each."""
    by_id = dict(zip(data.ids, data.payloads))
    out: dict[Any, list[str]] = {}
    for pid, _ in want:
        members = out.setdefault(by_id[pid][field], [])
        if len(members) < size:
            members.append(pid)
    return [(g, pid) for g, members in list(out.items())[:groups] for pid in members]


def test_query_groups_match_grouped_ground_truth(store: VectorStore, data: Data) -> None:
    for q, spec in ((3, None), (40, {"genre": ["a", "b"]}), (77, {"year": {"lt": 1950}})):
        want = ranked(data, data.cos(data.x[q]), spec, exclude={data.ids[q]})
        hits = store.query_groups(data.ids[q], "room", group_size=3, groups=4, must=spec)
        assert [(h.group, h.id) for h in hits] == grouped(data, want, "room", 3, 4)
        scores = dict(want)
        assert np.allclose([h.score for h in hits], [scores[h.id] for h in hits], atol=SCORE_TOL)


def test_unknown_id_raises_not_found(store: VectorStore, data: Data) -> None:
    unknown = point_id_for("never written")
    with pytest.raises(NotFoundError):
        store.get(unknown)
    with pytest.raises(NotFoundError):
        store.find_by_path("/src/missing.jpg")
    with pytest.raises(NotFoundError):
        store.query(unknown, K)
    with pytest.raises(NotFoundError):
        store.query_groups(unknown, "room")


# -- counts, facets, reads ------------------------------------------------------------------
def test_count_where_and_facet_match_payload_counts(store: VectorStore, data: Data) -> None:
    assert store.count() == N
    for spec in FILTERS:
        assert store.count_where(spec) == sum(matches(p, spec) for p in data.payloads)
    assert store.count_where(has=["artist"]) == sum("artist" in p for p in data.payloads)
    assert store.count_where({"genre": "a"}, has=["artist"]) == \
        sum("artist" in p and p["genre"] == "a" for p in data.payloads)
    assert store.facet("genre") == dict(Counter(p["genre"] for p in data.payloads))
    assert store.facet("room", must={"genre": "a"}) == \
        dict(Counter(p["room"] for p in data.payloads if p["genre"] == "a"))
    top = store.facet("room", limit=2)
    assert list(top.values()) == sorted(Counter(p["room"] for p in data.payloads).values(), reverse=True)[:2]


def test_get_get_many_and_find_by_path(store: VectorStore, data: Data) -> None:
    payload, vec = store.get(data.ids[5], with_vector=True)
    assert payload == data.payloads[5] and np.allclose(vec, data.unit[5], atol=1e-6)
    assert store.get(data.ids[6]) == (data.payloads[6], None)
    wanted = [data.ids[9], point_id_for("missing"), data.ids[2], data.ids[250]]
    rows = store.get_many(wanted, with_vectors=True)
    assert [r[0] for r in rows] == [data.ids[9], data.ids[2], data.ids[250]]   # order kept, missing left out
    for (pid, payload, vec), i in zip(rows, (9, 2, 250)):
        assert payload == data.payloads[i] and np.allclose(vec, data.unit[i], atol=1e-6)
    assert store.get_many([data.ids[1]])[0][2] is None
    assert store.find_by_path("/src/7.jpg") == data.ids[7]
    assert store.find_by_path("8.jpg") == data.ids[8]   # source-relative path


def test_scroll_covers_every_id_exactly_once(store: VectorStore, data: Data) -> None:
    seen = [pid for pid, _, _ in store.scroll(batch=37)]
    assert len(seen) == N and set(seen) == set(data.ids)
    pages, offset = [], None
    while True:
        rows, offset = store.scroll_where({"genre": "b"}, limit=17, offset=offset)
        pages += [pid for pid, _, _ in rows]
        if offset is None:
            break
    want = {pid for pid, p in zip(data.ids, data.payloads) if p["genre"] == "b"}
    assert len(pages) == len(want) and set(pages) == want


# -- writes ---------------------------------------------------------------------------------
def mutate(store: VectorStore, data: Data) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
    """Payload merge and removal, an overwrite of one id, a delete; returns the expected state."""
    expect = {pid: (dict(p), data.unit[i]) for i, (pid, p) in enumerate(zip(data.ids, data.payloads))}
    store.set_payload(data.ids[:4], {"cluster_id": "c1", "tier": "copy"})
    store.delete_payload_keys(data.ids[:1], ["cluster_id", "year"])
    for pid in data.ids[:4]:
        expect[pid][0].update(cluster_id="c1", tier="copy")
    for key in ("cluster_id", "year"):
        expect[data.ids[0]][0].pop(key)
    fresh = np.random.default_rng(1).standard_normal((1, DIM)).astype(np.float32)
    store.upsert([data.ids[20]], data.x[20:21], [{"path": "/old.jpg"}])
    store.upsert([data.ids[20]], fresh, [{"path": "/new.jpg", "genre": "z"}])   # replaces, does not merge
    expect[data.ids[20]] = ({"path": "/new.jpg", "genre": "z"}, fresh[0] / np.linalg.norm(fresh[0]))
    store.delete(data.ids[290:])
    for pid in data.ids[290:]:
        del expect[pid]
    return expect


def assert_state(store: VectorStore, expect: dict[str, tuple[dict[str, Any], np.ndarray]]) -> None:
    """Every expected point, with its payload and vector, and nothing else."""
    got = {pid: (p, v) for pid, p, v in store.scroll(batch=64, with_vectors=True)}
    assert store.count() == len(expect) and set(got) == set(expect)
    for pid, (payload, vec) in expect.items():
        assert got[pid][0] == payload, pid
        assert np.allclose(got[pid][1], vec, atol=1e-6), pid


def test_writes_merge_remove_overwrite_and_delete(store: VectorStore, data: Data) -> None:
    expect = mutate(store, data)
    assert_state(store, expect)
    assert store.count_where(has=["cluster_id"]) == 3 and store.count_where({"tier": "copy"}) == 4
    assert store.count_where({"genre": "z"}) == 1 and store.find_by_path("/new.jpg") == data.ids[20]
    with pytest.raises(NotFoundError):
        store.find_by_path("/old.jpg")
    with pytest.raises(NotFoundError):
        store.get(data.ids[295])
    gone = set(data.ids[290:])
    assert not gone & {h.id for h in store.query(data.x[295], 30)}
    store.delete(data.ids[290:])   # deleting again is a no-op
    assert store.count() == len(expect)


def test_close_and_reopen_keeps_everything(cfg: Settings, data: Data) -> None:
    store = fill(cfg, data)
    try:
        expect = mutate(store, data)
    finally:
        store.close()
    again = open_store(cfg)
    try:
        assert again.model_name() == MODEL and again.metadata_fields() == EXTRA_KEYWORDS
        assert_state(again, expect)
        unit = {pid: v for pid, (_, v) in expect.items()}
        ids = list(unit)
        scores = np.stack([unit[i] for i in ids]) @ unit[ids[50]]
        want = [(ids[i], float(scores[i])) for i in np.argsort(-scores) if ids[i] != ids[50]]
        assert_hits(again.query(ids[50], K), want[:K])
    finally:
        again.close()


# -- generations and aliases ----------------------------------------------------------------
def test_generation_switch_is_seen_after_reopen(cfg: Settings, data: Data) -> None:
    store = fill(cfg, data)
    try:
        first = store.physical_name()
        assert store.model_name() == MODEL and first and first != cfg.collection
        assert store.generation_name(MODEL) != first   # re-embedding with the same model alternates names
        new = store.create_generation("m2", DIM)
        assert store.model_name() == MODEL and store.count() == N   # queries still served by the old one
        store.switch_alias(new)
        assert store.physical_name() == new and store.model_name() == "m2" and store.count() == 0
        assert not VectorStore(store.client, first).exists()   # the old generation was dropped
        store.upsert(data.ids[:3], data.x[:3], data.payloads[:3])
    finally:
        store.close()
    again = open_store(cfg)
    try:
        assert again.physical_name() == new and again.model_name() == "m2" and again.count() == 3
        assert {pid for pid, _, _ in again.scroll()} == set(data.ids[:3])
    finally:
        again.close()


# -- payload indexes ------------------------------------------------------------------------
def test_payload_indexes_cover_the_fields_points_carry_and_nothing_else(cfg: Settings, data: Data) -> None:
    """An engine loads every payload index at open: a field no point carries gets none (opening stays
    cheap), a field gets one as soon as a write brings it, and filters and facets on a declared field
    nobody wrote answer empty. Local mode keeps no indexes at all and answers the same."""
    keeps = cfg.store_backend != "local"
    store = fill(cfg, data)
    try:
        carried = {"path", "relpath", "genre", "year", "artist", "room"}   # declared or metadata, and written
        assert store.payload_indexes() == (carried if keeps else set())
        assert store.facet("diagnosis") == {} and store.count_where({"diagnosis": "glioma"}) == 0
        assert store.query(data.ids[0], K, must={"diagnosis": "glioma"}) == []
        store.set_payload(data.ids[:4], {"cluster_id": "c1", "tier": "copy"})
        assert store.payload_indexes() == (carried | {"cluster_id", "tier"} if keeps else set())
        assert store.facet("tier") == {"copy": 4}
        store.optimize()
        assert {h.id for h in store.query(data.ids[0], K, must={"cluster_id": "c1"})} == set(data.ids[1:4])
    finally:
        store.close()
    again = open_store(cfg)   # a new process' store object: writes still build what is missing
    try:
        again.upsert(data.ids[:1], data.x[:1], [{**data.payloads[0], "diagnosis": "glioma"}])
        assert ("diagnosis" in again.payload_indexes()) == keeps
        assert again.facet("diagnosis") == {"glioma": 1}
    finally:
        again.close()
