"""Retrieval post-processing (issue 16): the arithmetic on real vectors, and alpha query expansion
through the Recommender on a collection built by the real ingest flow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recommender import postprocess as pp
from recommender.recommend import Recommender
from recommender.settings import get_settings
from test_retrieval_eval import home  # noqa: F401  (the sample corpus ingested by the real flow, per module)


def test_gem_with_p_1_is_average_pooling_and_grows_towards_max():
    fm = np.random.default_rng(0).random((3, 8, 5, 5)).astype(np.float32)
    assert np.allclose(pp.gem(fm, p=1.0), fm.mean(axis=(2, 3)), atol=1e-6)
    g3, g30 = pp.gem(fm, 3.0), pp.gem(fm, 30.0)
    assert np.all(g3 >= fm.mean(axis=(2, 3)) - 1e-6) and np.all(g30 <= fm.max(axis=(2, 3)) + 1e-6)
    assert np.all(g30 > g3)


def test_pca_without_shrinkage_keeps_the_ranking_of_centred_vectors():
    x = pp.unit(np.random.default_rng(1).standard_normal((300, 16)))
    pca = pp.fit_pca(x, power=0.0)
    y = pca.apply(x)
    centred = pp.unit(x - x.mean(axis=0))
    assert np.allclose(y @ y.T, centred @ centred.T, atol=1e-4)  # a rotation: same cosines
    assert pp.fit_pca(x, dim=4).apply(x).shape == (300, 4)
    white = pp.fit_pca(x, power=-0.5).apply(x)                    # full whitening: unit variance per axis
    raw = (x - pca.mean) @ pca.components * pca.eigenvalues ** -0.5
    assert np.allclose(raw.var(axis=0, ddof=1), 1.0, atol=1e-3) and np.allclose(np.linalg.norm(white, axis=1), 1)


def test_dba_and_query_expansion_pull_members_of_a_group_together():
    rng = np.random.default_rng(2)
    centres = pp.unit(rng.standard_normal((4, 32)))
    x = pp.unit(np.repeat(centres, 10, axis=0) + 0.25 * rng.standard_normal((40, 32)))
    group = np.repeat(np.arange(4), 10)

    def spread(v):  # mean cosine of each item to the other members of its group
        s = v @ v.T
        return np.mean([s[i, (group == group[i]) & (np.arange(40) != i)].mean() for i in range(40)])

    assert spread(pp.dba(x, 5)) > spread(x) + 0.05
    idx, sim = pp.neighbours(x, 4)
    assert (idx[:, 0] == np.arange(40)).all() and np.allclose(sim[:, 0], 1, atol=1e-5)
    q = pp.alpha_qe(x[0], x[idx[0, 1:]], sim[0, 1:], alpha=3.0)
    expected = pp.unit(x[0] + ((np.clip(sim[0, 1:], 0, None) ** 3)[:, None] * x[idx[0, 1:]]).sum(0))
    assert np.allclose(q, expected, atol=1e-6) and q @ centres[0] > x[0] @ centres[0]


@pytest.mark.slow
def test_query_expansion_ranks_by_the_expanded_query_for_items_images_and_filters(home):
    rec = Recommender(get_settings(home=home, query_expansion=2, query_expansion_alpha=3.0))
    plain = Recommender(get_settings(home=home), store=rec.store)
    try:
        ids, vecs, payloads = [], [], []
        for pid, payload, vec in rec.store.scroll(batch=256, with_vectors=True):
            ids.append(pid), vecs.append(vec), payloads.append(payload)
        x = pp.unit(np.stack(vecs))
        item = next(i for i, p in enumerate(payloads) if p.get("genre") == "Landscape" and p.get("cluster_id") is None)
        # by hand: the first two plain answers, the expanded query, then every other point by cosine to it
        first = plain.similar_to_item(ids[item], k=2)
        expected_q = pp.alpha_qe(x[item], x[[ids.index(r.id) for r in first]], np.array([r.score for r in first]), 3.0)
        got = rec.similar_to_item(ids[item], k=5)
        want = plain.similar_to_vector(expected_q, k=6, exclude=[ids[item]])
        assert [r.id for r in got] == [r.id for r in want][:5]
        assert got[0].reason["query_expansion"] == {"n": 2, "alpha": 3.0}
        # an uploaded image goes through the same expansion as its vector
        image = Path(payloads[item]["path"]).read_bytes()
        by_image = rec.similar_to_image(image, k=5)
        by_vector = rec.similar_to_vector(rec.embed_image(image), k=5)
        assert [r.id for r in by_image] == [r.id for r in by_vector]
        assert by_image[0].reason["query_expansion"]["n"] == 2
        # the expansion answers obey the filter: every answer and the expanded query stay inside it
        hits = rec.similar_to_item(ids[item], k=5, filters={"genre": "Portrait"})
        assert hits and all(h.payload["genre"] == "Portrait" for h in hits)
        q = rec.expand_query(ids[item], [ids[item]], {"genre": "Portrait"})
        first = plain.similar_to_item(ids[item], k=2, filters={"genre": "Portrait"})
        assert np.allclose(q, pp.alpha_qe(x[item], x[[ids.index(r.id) for r in first]], np.array([r.score for r in first]),
                                          3.0), atol=1e-4)
        portraits = [i for i, p in enumerate(payloads) if p.get("genre") == "Portrait"]
        # several examples or a negative: no expansion (the recommend-style query is left as it is)
        both = rec.recommend([ids[item], ids[portraits[0]]], k=3)
        assert "query_expansion" not in both[0].reason
    finally:
        rec.close()
