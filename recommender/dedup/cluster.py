"""Clusters from pairs (connected components), and the canonical-member policy.

Tiers nest: exact-links form the finest partition, exact+copy a coarser one,
and all links the final clusters. Each member's tier is the strongest level at
which it shares a group with its cluster's canonical member; the cluster's
tier is the weakest of its members' tiers (a cluster is only as certain as its
weakest link), and the canonical row carries the cluster tier.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from recommender import payload as P
from recommender.dedup.hashing import Fingerprint
from recommender.dedup.tiers import TIER_RANK, TIERS


MEMBER_COLUMNS = ["index", "id", P.PATH, P.CLUSTER_ID, P.TIER, P.CANONICAL, "cluster_tier", "cluster_size",
                  P.WIDTH, P.HEIGHT, "seq"]


def connected_labels(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Component label per element of the undirected graph on 0..n-1 with edges (i[k], j[k])."""
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    graph = coo_array((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def canonical_key(item: Fingerprint) -> tuple:
    """Sort key of the canonical policy: largest w*h, then earliest ingested, then path."""
    return (-item.area, item.seq, item.path)


def choose_canonical(members: Sequence[int], items: Sequence[Fingerprint]) -> int:
    """The member index that the policy keeps."""
    return min(members, key=lambda k: canonical_key(items[k]))


def build_members(items: Sequence[Fingerprint], i: np.ndarray, j: np.ndarray, tiers: Sequence[str],
                  include_singletons: bool = False) -> pd.DataFrame:
    """One row per clustered item: cluster_id (the canonical's id), tier, canonical, sizes.

    `tiers[k]` labels edge (i[k], j[k]). Deterministic: the output does not depend
    on the order of the pairs, only on the set of edges and the items.
    """
    n = len(items)
    rank = np.array([TIER_RANK[t] for t in tiers], dtype=np.int64) if len(tiers) else np.zeros(0, np.int64)
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    level_labels = [connected_labels(n, i[rank <= r], j[rank <= r]) for r in range(len(TIERS))]
    final = level_labels[-1]
    groups: dict[int, list[int]] = {}
    for k, lab in enumerate(final.tolist()):
        groups.setdefault(lab, []).append(k)
    rows = []
    for members in groups.values():
        if len(members) < 2 and not include_singletons:
            continue
        c = choose_canonical(members, items)
        member_tier = {}
        for m in members:
            if m == c:
                continue
            member_tier[m] = next(TIERS[r].value for r in range(len(TIERS))
                                  if level_labels[r][m] == level_labels[r][c])
        cluster_tier = max(member_tier.values(), key=lambda t: TIER_RANK[t]) if member_tier else None
        for m in sorted(members, key=lambda k: (k != c, canonical_key(items[k]))):
            it = items[m]
            rows.append({
                "index": m, "id": it.id, P.PATH: it.path, P.CLUSTER_ID: items[c].id,
                P.TIER: cluster_tier if m == c else member_tier[m], P.CANONICAL: m == c,
                "cluster_tier": cluster_tier, "cluster_size": len(members),
                P.WIDTH: it.width, P.HEIGHT: it.height, "seq": it.seq,
            })
    df = pd.DataFrame(rows, columns=MEMBER_COLUMNS)
    return df.sort_values([P.CLUSTER_ID, P.CANONICAL, P.PATH], ascending=[True, False, True], ignore_index=True)
