"""The Similar page's query: seed item plus liked/disliked examples, filters,
one-per-group and diversity, answered by the `Recommender`.

When the Recommender offers the rich query (`recommend(...)` with positives,
negatives, group_by and diversity) it is used as is; otherwise the same
semantics are composed here from `similar_to_vector` and the store
(Rocchio query vector, over-fetch then one-per-group, greedy MMR), so the
page works against either version of the library.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

import numpy as np

from recommender.recommend import Recommender, Result

OVERFETCH = 5


def _rich_api(rec: Recommender):
    fn = getattr(rec, "recommend", None)
    if fn is None:
        return None
    params = inspect.signature(fn).parameters
    needed = {"positive", "negative"}
    return fn if needed <= set(params) else None


def similar(rec: Recommender, item: str, k: int = 12, filters: Mapping[str, Any] | None = None,
            positives: Sequence[str] = (), negatives: Sequence[str] = (), group_by: str | None = None,
            diversity: float = 0.0) -> list[Result]:
    """k results for the seed item refined by the examples; scores are cosine to the query."""
    filters = {k_: v for k_, v in (filters or {}).items() if v not in (None, "")}
    rich = _rich_api(rec)
    if rich is not None:
        params = inspect.signature(rich).parameters
        kwargs: dict[str, Any] = {"positive": [item, *positives], "negative": list(negatives), "k": k,
                                  "filters": filters}
        if "group_by" in params:
            kwargs["group_by"] = group_by or None
        if "diversity" in params:
            kwargs["diversity"] = diversity
        return rich(**{a: b for a, b in kwargs.items() if a in params})
    if not positives and not negatives and not group_by and diversity <= 0:
        return rec.similar_to_item(item, k, filters)
    return _composed(rec, item, k, filters, positives, negatives, group_by, diversity)


def _composed(rec: Recommender, item: str, k: int, filters: dict[str, Any], positives: Sequence[str],
              negatives: Sequence[str], group_by: str | None, diversity: float) -> list[Result]:
    store = rec.store
    seed = rec.resolve(item)
    pos_ids = [seed, *[rec.resolve(p) for p in positives]]
    neg_ids = [rec.resolve(n) for n in negatives]
    vecs = {pid: v for pid, _, v in store.get_many(pos_ids + neg_ids, with_vectors=True)}
    q = np.mean([vecs[p] for p in pos_ids if p in vecs], axis=0)
    if neg_ids:
        q = q - 0.5 * np.mean([vecs[n] for n in neg_ids if n in vecs], axis=0)
    q = (q / (np.linalg.norm(q) or 1.0)).astype(np.float32)
    fetch = k * OVERFETCH if (group_by or diversity > 0) else k
    hits = store.query(q, limit=fetch, exclude_ids=pos_ids + neg_ids, must=filters)
    if diversity > 0 and hits:
        cand = {pid: v for pid, _, v in store.get_many([h.id for h in hits], with_vectors=True)}
        hits = _mmr(hits, cand, diversity, fetch)
    if group_by:
        seen: set[Any] = set()
        kept = []
        for h in hits:
            g = h.payload.get(group_by)
            if g in seen:
                continue
            seen.add(g)
            kept.append(h)
        hits = kept
    reason = {"query": "examples" if (positives or negatives) else "item", "model": rec.model_name,
              "positives": str(len(pos_ids)), "negatives": str(len(neg_ids))}
    return [Result(h.id, str(h.payload.get("path", "")), round(h.score, 6), h.payload, dict(reason)) for h in hits[:k]]


def _mmr(hits: list, vecs: dict[str, np.ndarray], diversity: float, n: int) -> list:
    """Greedy maximal marginal relevance: trade relevance for dissimilarity to what is already picked."""
    lam = 1.0 - float(diversity)
    remaining = [h for h in hits if h.id in vecs]
    unit = {h.id: vecs[h.id] / (np.linalg.norm(vecs[h.id]) or 1.0) for h in remaining}
    picked: list = []
    while remaining and len(picked) < n:
        def gain(h) -> float:
            red = max((float(unit[h.id] @ unit[p.id]) for p in picked), default=0.0)
            return lam * h.score - (1 - lam) * red
        best = max(remaining, key=gain)
        picked.append(best)
        remaining.remove(best)
    return picked
