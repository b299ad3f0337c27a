"""The edge backend against the real engine: same answers as local mode, other processes served by the owner,
an index built by optimize(), aliases that survive a reopen, and a lossless migration."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from recommender.settings import get_settings
from recommender.store import embedded_backend, open_store, point_id_for
from recommender.store.migrate import migrate_local_to_edge

N, DIM = 300, 32


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    ids = [point_id_for(f"p{i}") for i in range(N)]
    payloads = [{"path": f"/src/{i}.jpg", "genre": ["a", "b", "c"][i % 3], "year": 1800 + i,
                 "tags": ["x", "y"] if i % 2 else ["y"], "room": f"r{i % 7}"} for i in range(N)]
    return ids, x, payloads


def _fill(cfg, seed: int = 0):
    ids, x, payloads = _data(seed)
    store = open_store(cfg)
    store.ensure_collection("m", DIM, ["genre", "room"])
    store.upsert(ids, x, payloads)
    return store, ids, x, payloads


def test_edge_answers_like_local_mode_before_and_after_the_index(tmp_path):
    local, ids, x, _ = _fill(get_settings(home=tmp_path / "l", store_backend="local"))
    edge, _, _, _ = _fill(get_settings(home=tmp_path / "e", store_backend="edge"))
    try:
        assert edge.is_edge() and edge.is_embedded() and not local.is_edge()
        for built in (False, True):
            if built:
                edge.optimize()
            for q in ids[:10]:
                for must in (None, {"genre": "a"}, {"year": {"gte": 1900}}, {"genre": ["a", "b"]}):
                    want = [h.id for h in local.query(q, 10, must=must, exact=True)]
                    got = [h.id for h in edge.query(q, 10, must=must)]
                    assert got == want
            assert [h.id for h in edge.query([ids[0], ids[1]], 5, negative=[ids[2]])] == \
                   [h.id for h in local.query([ids[0], ids[1]], 5, negative=[ids[2]])]
            assert edge.count_where({"genre": "b"}) == local.count_where({"genre": "b"}) == N // 3
            assert edge.facet("genre") == local.facet("genre")
            assert edge.facet("tags") == local.facet("tags")
            lg = [(h.group, h.id) for h in local.query_groups(ids[3], "genre", group_size=2, groups=3)]
            eg = [(h.group, h.id) for h in edge.query_groups(ids[3], "genre", group_size=2, groups=3)]
            assert eg == lg
        payload, vec = edge.get(ids[5], with_vector=True)
        assert payload["year"] == 1805 and np.allclose(vec, x[5] / np.linalg.norm(x[5]), atol=1e-6)
        assert edge.find_by_path("/src/7.jpg") == ids[7]
        edge.set_payload(ids[:4], {"cluster_id": "c1"})
        edge.delete_payload_keys(ids[:1], ["cluster_id"])
        assert edge.count_where(has=["cluster_id"]) == 3
        edge.delete(ids[:10])
        assert edge.count() == N - 10 and len(list(edge.scroll(batch=37))) == N - 10
    finally:
        local.close()
        edge.close()


def _use_in_child(home, queue):
    """Another process on the same home: it reaches the store through its owner (this test's process)."""
    store = open_store(get_settings(home=home, store_backend="edge"))
    try:
        seen = store.count()
        store.upsert([point_id_for("child")], np.ones((1, DIM), np.float32), [{"path": "/child.jpg", "genre": "z"}])
        probe = np.ones((3, DIM), np.float32) * np.arange(1, 4, dtype=np.float32)[:, None]
        batched = [[h.id for h in hits] for hits in store.query_many(probe, 5)]  # one call through the owner
        one_by_one = [[h.id for h in store.query(v, 5)] for v in probe]
        assert batched == one_by_one and batched[0][0] == point_id_for("child")
        queue.put((store.client.owns, seen, store.count(), store.facet("genre").get("z")))
    finally:
        store.close()


def test_a_second_process_goes_through_the_owner_and_aliases_survive_reopen(tmp_path):
    cfg = get_settings(home=tmp_path / "e", store_backend="edge")
    store, ids, _, _ = _fill(cfg)
    try:
        assert store.client.owns
        queue = mp.get_context("spawn").Queue()
        p = mp.get_context("spawn").Process(target=_use_in_child, args=(cfg.home, queue))
        p.start()
        assert queue.get(timeout=120) == (False, N, N + 1, 1)   # a client, seeing and writing the owner's data
        p.join(60)
        assert store.count() == N + 1 and store.find_by_path("/child.jpg") == point_id_for("child")
        new = store.create_generation("m2", DIM)
        store.switch_alias(new)
    finally:
        store.close()
    again = open_store(cfg)
    try:
        assert again.client.owns   # the owner closed: the next process owns the store
        assert again.model_name() == "m2" and again.physical_name() == new and again.count() == 0
    finally:
        again.close()


def test_migration_from_local_mode_keeps_every_id_vector_and_payload(tmp_path):
    home = tmp_path / "h"
    local_cfg = get_settings(home=home, store_backend="local")
    store, ids, x, payloads = _fill(local_cfg)
    store.close()
    auto = get_settings(home=home, store_backend="auto")
    assert embedded_backend(auto) == "local"           # an old home stays on local mode until migrated
    (home / "qdrant" / "edge.migrating").mkdir()                  # the leftover of an interrupted migration
    assert embedded_backend(auto) == "local"
    old = open_store(local_cfg)
    assert old.count() == N                            # ... leaves the old home usable
    old.close()
    result = migrate_local_to_edge(auto)
    assert result["collections"] == {"images__m": N} and result["aliases"] == {"images": "images__m"}
    assert embedded_backend(auto) == "edge"
    edge = open_store(auto)
    try:
        assert edge.is_edge() and edge.model_name() == "m" and edge.metadata_fields() == ["room"]
        got = {pid: (p, v) for pid, p, v in edge.scroll(with_vectors=True)}
        assert set(got) == set(ids)
        for pid, vec, payload in zip(ids, x, payloads):
            assert got[pid][0] == payload
            assert np.allclose(got[pid][1], vec / np.linalg.norm(vec), atol=1e-6)
        assert [h.id for h in edge.query(ids[0], 5)][0] != ids[0]
        assert edge.payload_indexes() == {"path", "genre", "year", "room"}   # the indexed fields the points carry
    finally:
        edge.close()
    with pytest.raises(Exception, match="already has an edge store"):
        migrate_local_to_edge(auto)


def test_index_files_are_read_on_demand_and_prefetchable(tmp_path):
    """The int8 codes are mapped, not copied in at open (a fresh process reads only what it visits),
    and a long-lived process can ask the OS to warm them: `prefetch` must find the engine's files
    (if the engine lays them out differently, this fails instead of the warm-up silently vanishing)."""
    from recommender.store.edge import INDEX_FILES, ORIGINAL_FILES, edge_root, prefetch_index_files
    from recommender.store.reduce import SEARCH_DIM

    def engine_files(patterns):
        return [p for pat in patterns for p in edge_root(cfg).glob(pat) if p.is_file()]

    cfg = get_settings(home=tmp_path / "h", store_backend="edge")
    n, dim = 3000, 1024                      # enough bytes for the engine to build HNSW + int8 codes
    x = np.random.default_rng(3).standard_normal((n, dim)).astype(np.float32)
    ids = [point_id_for(f"q{i}") for i in range(n)]
    store = open_store(cfg)
    store.ensure_collection("m", dim)
    store.upsert(ids, x, [{"path": f"/src/{i}.jpg"} for i in range(n)])
    assert not engine_files(INDEX_FILES)                 # nothing indexed yet
    store.optimize()
    store.close()
    codes = sum(p.stat().st_size for p in engine_files(INDEX_FILES))
    originals = sum(p.stat().st_size for p in engine_files(ORIGINAL_FILES))
    assert codes >= n * SEARCH_DIM and originals >= n * dim * 4  # int8 codes + graph of the search vector; float32 originals
    again = open_store(cfg)
    try:
        assert prefetch_index_files(edge_root(cfg)) >= codes + originals  # they fit in memory: all asked for
        assert again.prefetch(wait=True) >= codes + originals              # and read through, as a served store does
        again.prefetch()                                                   # the background form the API and dashboard use
        for i in range(0, n, 500):
            assert again.query(x[i], 1)[0].id == ids[i]        # rescored from the originals: exact on itself
    finally:
        again.close()


def _embedding_like(n: int, dim: int, seed: int, decay: float = 1.0, per: int = 40, noise: float = 0.6) -> np.ndarray:
    """Clusters of about `per` vectors whose variance decays over the dimensions, as image embeddings'
    does (a PCA of MobileNetV2 vectors keeps 81-85 % of it in 128 of 1,280 dimensions); decay 0 is
    isotropic."""
    rng = np.random.default_rng(seed)
    scale = (1.0 + np.arange(dim)) ** (-decay)
    centres = rng.standard_normal((n // per, dim)) * scale
    x = centres[rng.integers(0, len(centres), n)] + noise * rng.standard_normal((n, dim)) * scale
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _exact_top(x: np.ndarray, q: int, k: int = 10, keep: np.ndarray | None = None) -> list[int]:
    s = x @ x[q]
    s[q] = -np.inf
    if keep is not None:
        s[~keep] = -np.inf
    return list(np.argsort(-s)[:k])


def _search_store(tmp_path, x: np.ndarray):
    from recommender.store.reduce import MIN_FIT

    assert len(x) >= MIN_FIT
    cfg = get_settings(home=tmp_path / "h", store_backend="edge")
    ids = [point_id_for(f"s{i}") for i in range(len(x))]
    store = open_store(cfg)
    store.ensure_collection("m", x.shape[1], ["room"])
    for s in range(0, len(x), 256):
        store.upsert(ids[s:s + 256], x[s:s + 256], [{"path": f"/src/{i}.jpg", "room": f"r{i % 10}"}
                                                     for i in range(s, min(s + 256, len(x)))])
    return cfg, store, ids


def _check_answers(store, ids: list[str], x: np.ndarray, queries: range) -> float:
    """Recall@10 against exact cosine, unfiltered and with a 10 % filter; every score is the exact
    cosine of the model's vectors (candidates are only picked by the search vector)."""
    row = {pid: i for i, pid in enumerate(ids)}
    rooms = np.array([i % 10 for i in range(len(x))])
    found = total = 0
    for q in queries:
        for must, keep in ((None, None), ({"room": "r3"}, rooms == 3)):
            hits = store.query(ids[q], 10, must=must)
            got = [row[h.id] for h in hits]
            for h, i in zip(hits, got):
                assert h.score == pytest.approx(float(x[i] @ x[q]), abs=2e-5)
                assert keep is None or keep[i]
            found += len(set(got) & set(_exact_top(x, q, keep=keep)))
            total += 10
    return found / total


def test_queries_walk_a_pca_search_vector_and_score_with_the_models_vectors(tmp_path):
    """At MIN_FIT points optimize() fits the basis; answers keep exact scores and (nearly) exact top 10s,
    points written later get their search vector, a reopened store answers the same, and a
    recommendation with a negative example matches the exact scan's."""
    x = _embedding_like(2_400, 256, 0)
    cfg, store, ids = _search_store(tmp_path, x[:2_000])
    try:
        assert store.search_info()["search"] == "scan"          # before the fit: an exact scan
        before = _check_answers(store, ids, x[:2_000], range(0, 2_000, 100))
        assert before == 1.0
        store.optimize()
        info = store.search_info()
        assert info["search"] == "pca" and info["dim"] == 128 and info["fitted_on"] == 2_000
        assert _check_answers(store, ids, x[:2_000], range(0, 2_000, 50)) >= 0.97
        late = [point_id_for(f"s{i}") for i in range(2_000, 2_400)]
        store.upsert(late, x[2_000:], [{"path": f"/src/{i}.jpg", "room": f"r{i % 10}"} for i in range(2_000, 2_400)])
        ids += late
        assert _check_answers(store, ids, x, range(2_000, 2_400, 20)) >= 0.97  # found through the graph too
        store.optimize()                                         # built into the graph; no refit
        assert store.search_info()["fitted_on"] == 2_000
        rec = [h.id for h in store.query([ids[5], ids[7]], 10, negative=[ids[9]])]
        assert rec == [h.id for h in store.query([ids[5], ids[7]], 10, negative=[ids[9]], exact=True)]
    finally:
        store.close()
    again = open_store(cfg)
    try:
        assert again.search_info()["search"] == "pca"
        assert _check_answers(again, ids, x, range(1, 2_400, 120)) >= 0.97
        _, vec = again.get(ids[3], with_vector=True)
        assert vec.shape == (256,) and np.allclose(vec, x[3], atol=1e-6)   # callers read the model's vector
    finally:
        again.close()


def test_vectors_without_a_dominant_subspace_search_their_full_vector(tmp_path):
    """Isotropic vectors fail the fit's self-check at every pool: the search vector becomes the model's
    vector (resized, reopened with int8 codes), answers stay right; a store whose record of that
    resize was lost (a crash between the two) reopens with the shard's size and is fitted again."""
    import json

    from recommender.store.edge import edge_root

    x = _embedding_like(1_500, 512, 1, decay=0.0, per=5, noise=1.0)  # small, loose clusters, no subspace
    cfg, store, ids = _search_store(tmp_path, x)
    try:
        store.optimize()
        info = store.search_info()
        assert info["search"] == "full" and info["dim"] == 512 and info["sample_recall"] < 0.99
        assert _check_answers(store, ids, x, range(0, 1_500, 75)) >= 0.97
    finally:
        store.close()
    (meta_path,) = edge_root(cfg).glob("collections/*/meta.json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "search_dim"}))  # the lost record
    again = open_store(cfg)
    try:
        assert again.search_info()["search"] == "scan"      # basis dropped: exact until fitted again
        assert _check_answers(again, ids, x, range(3, 1_500, 150)) == 1.0
        again.optimize()
        assert again.search_info()["search"] == "full"
        assert json.loads(meta_path.read_text())["search_dim"] == 512
    finally:
        again.close()


def test_a_query_by_id_stays_on_one_generation_when_the_alias_switches_mid_query(tmp_path, monkeypatch):
    """A re-embed switches the alias while queries run. A query by point id reads the example's vector,
    then searches: if the switch lands in between, the old model's vector met the new model's collection
    ("expected dim: 2048, got 1280", seen in CI). The whole query now reads one generation: here the
    switch (to a collection of another dimension, the old one dropped) happens right after the example's
    vector is read, and the query still answers from the generation it started on."""
    cfg = get_settings(home=tmp_path / "e", store_backend="edge")
    store, ids, x, _ = _fill(cfg)
    from recommender.store.edge import EdgeClient

    real = EdgeClient._examples
    switched = []

    def examples_then_switch(self, shard, query, using):
        found = real(self, shard, query, using)
        if not switched:
            switched.append(store.create_generation("m2", DIM * 2))
            store.switch_alias(switched[0])  # drops the old generation too
        return found

    try:
        want = [h.id for h in store.query(ids[0], 5, exact=True)]
        monkeypatch.setattr(EdgeClient, "_examples", examples_then_switch)
        got = [h.id for h in store.query(ids[0], 5, exact=True)]
        monkeypatch.undo()
        assert switched and got == want
        assert store.model_name() == "m2" and store.count() == 0  # later queries see the new generation
    finally:
        store.close()
