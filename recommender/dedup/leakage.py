"""Split leakage: duplicate clusters whose members sit in different splits (or patients).

A duplicate across train and test inflates test scores; across patients it
usually means a mislabelled or re-exported scan. Both reports are computed
from the clusters the engine found plus each item's payload (`split`,
`patient`), and returned as DataFrames for the CLI, Parquet and the dashboard.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Mapping

import pandas as pd

from recommender import payload as P

CLUSTER_COLUMNS = [P.CLUSTER_ID, "cluster_tier", "size", "values", "counts", "paths"]
PAIR_COLUMNS = ["value_a", "value_b", "clusters", "item_pairs"]


def _payload_lookup(members: pd.DataFrame, payloads: Mapping[str, Mapping[str, Any]] | None,
                    items: Any = None) -> dict[str, Mapping[str, Any]]:
    if payloads is not None:
        return dict(payloads)
    if items is not None:
        return {it.id: it.payload for it in items}
    return {}


def field_leakage(members: pd.DataFrame, payloads: Mapping[str, Mapping[str, Any]], key: str
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(clusters spanning more than one value of `key`, counts per unordered value pair).

    Items without the key are ignored: unknown is not evidence of leakage.
    """
    rows, pair_clusters, pair_items = [], {}, {}
    for cid, g in members.groupby(P.CLUSTER_ID, sort=True):
        vals = {}
        for r in g.itertuples():
            v = (payloads.get(r.id) or {}).get(key)
            if v is None or (isinstance(v, float) and v != v):
                continue
            vals.setdefault(str(v), []).append(r.path)
        if len(vals) < 2:
            continue
        counts = {v: len(p) for v, p in sorted(vals.items())}
        rows.append({P.CLUSTER_ID: cid, "cluster_tier": g["cluster_tier"].iloc[0], "size": len(g),
                     "values": ",".join(counts), "counts": counts,
                     "paths": {v: sorted(p) for v, p in sorted(vals.items())}})
        for a, b in combinations(sorted(vals), 2):
            pair_clusters[(a, b)] = pair_clusters.get((a, b), 0) + 1
            pair_items[(a, b)] = pair_items.get((a, b), 0) + counts[a] * counts[b]
    clusters = pd.DataFrame(rows, columns=CLUSTER_COLUMNS)
    pairs = pd.DataFrame([{"value_a": a, "value_b": b, "clusters": pair_clusters[(a, b)],
                           "item_pairs": pair_items[(a, b)]} for a, b in sorted(pair_clusters)], columns=PAIR_COLUMNS)
    return clusters, pairs


def leakage_report(members: pd.DataFrame, payloads: Mapping[str, Mapping[str, Any]] | None = None,
                   items: Any = None, keys: tuple[str, ...] = (P.SPLIT, P.PATIENT)) -> dict[str, pd.DataFrame]:
    """DataFrames `<key>_clusters` and `<key>_pairs` for each key present in any payload.

    `payloads` maps item id -> payload; or pass `items` (fingerprints) to use their payloads.
    """
    look = _payload_lookup(members, payloads, items)
    out: dict[str, pd.DataFrame] = {}
    for key in keys:
        if not any(key in (p or {}) for p in look.values()):
            continue
        clusters, pairs = field_leakage(members, look, key)
        out[f"{key}_clusters"] = clusters
        out[f"{key}_pairs"] = pairs
    return out
