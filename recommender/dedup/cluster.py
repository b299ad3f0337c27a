"""Union-find clustering of pairs, and the canonical-member policy.

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

from recommender.dedup.config import TIER_RANK, TIERS
from recommender.dedup.hashing import Fingerprint


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, a: int) -> int:
        p = self.parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = int(p[a])
        return a

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return ra

    def labels(self) -> np.ndarray:
        """Root of every element (a canonical label per set)."""
        return np.array([self.find(a) for a in range(len(self.parent))], dtype=np.int64)


def connected_labels(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Set label per element for the graph with edges (i[k], j[k])."""
    uf = UnionFind(n)
    for a, b in zip(np.asarray(i).tolist(), np.asarray(j).tolist()):
        uf.union(a, b)
    return uf.labels()


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
            member_tier[m] = next(TIERS[r] for r in range(len(TIERS)) if level_labels[r][m] == level_labels[r][c])
        cluster_tier = max(member_tier.values(), key=lambda t: TIER_RANK[t]) if member_tier else None
        for m in sorted(members, key=lambda k: (k != c, canonical_key(items[k]))):
            it = items[m]
            rows.append({
                "index": m, "id": it.id, "path": it.path, "cluster_id": items[c].id,
                "tier": cluster_tier if m == c else member_tier[m], "canonical": m == c,
                "cluster_tier": cluster_tier, "cluster_size": len(members),
                "width": it.width, "height": it.height, "seq": it.seq,
            })
    cols = ["index", "id", "path", "cluster_id", "tier", "canonical", "cluster_tier", "cluster_size",
            "width", "height", "seq"]
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["cluster_id", "canonical", "path"], ascending=[True, False, True], ignore_index=True)
