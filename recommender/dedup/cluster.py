"""Clusters from pairs, and the canonical-member policy.

Review clusters (`build_members`) are connected components: tiers nest (exact-links
form the finest partition, exact+copy a coarser one, all links the final clusters),
and each member's tier is the strongest level at which it shares a group with its
cluster's canonical member. Same-picture clusters (`build_pictures`) are stars: every
member matches the canonical itself, because a path of look-alikes (A~B~C...) is not one
picture, and users delete files and hide recommendations by these clusters. In both,
the cluster's tier is the weakest of its members' tiers and the canonical row carries it.

`forbidden` pairs (item ids a curator marked not-a-duplicate of each other, see
`recommender.decisions.Decisions.separated_pairs`) are never an edge, and a same-picture
cluster never holds both ends of one, whatever the evidence says; nor two different slices of
one volume or series (`_apart`).
"""

from __future__ import annotations

from typing import AbstractSet, Callable, Sequence

import numpy as np
import pandas as pd
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from recommender import payload as P
from recommender.dedup.hashing import Fingerprint
from recommender.dedup.tiers import TIER_RANK, TIERS


Forbidden = AbstractSet[frozenset[str]]
"""Pairs of item ids that must not share a same-picture cluster (a curator's not-a-duplicate)."""

MEMBER_COLUMNS = ["index", "id", P.PATH, P.CLUSTER_ID, P.TIER, P.CANONICAL, "cluster_tier", "cluster_size",
                  P.WIDTH, P.HEIGHT, "seq"]


def connected_labels(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Component label per element of the undirected graph on 0..n-1 with edges (i[k], j[k])."""
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    graph = coo_array((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def allowed(items: Sequence[Fingerprint], i: np.ndarray, j: np.ndarray, forbidden: Forbidden = ()) -> np.ndarray:
    """Mask of the pairs (i[k], j[k]) that are not forbidden: dropped before tiers, verification and
    clustering, so a separated pair costs nothing and joins nothing."""
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    if not forbidden or not len(i):
        return np.ones(len(i), bool)
    return np.array([frozenset((items[a].id, items[b].id)) not in forbidden for a, b in zip(i.tolist(), j.tolist())],
                    bool)


OTHER_CANONICALS = 2
"""Further canonicals tried, best-linked first, when the hub would split members off a large group."""

EVERY_CANONICAL_UP_TO = 16
"""In a group of at most this many members every member is tried as the canonical when the hub would
split members off; larger groups try the hub and OTHER_CANONICALS more. Why: the member that keeps
the picture together is often one that few others link to (the original among its edits: a bordered
copy is larger, a text copy better linked). On the tuning families (groups of 15: an original and its
14 edits; benchmarks/ingest_dedup_eval.py, art-louvre) the star clusters' copy recall was 0.9726 with
2 or 5 more canonicals, 0.9773 with 10 and 0.9809 with every member. Each option costs the direct
checks of the members it has no link with, so trying all is quadratic in the group's size: on a
brain-mri ingest every member of every group asked 8,409 checks against 2,185, 6,658 of them in
groups of 17 or more; the bound keeps that quadratic cost to small groups."""


CANONICAL_POLICY = ("largest width x height, then least compressed (most file bits per pixel), "
                    "then earliest ingested, then path, among the members linked to the most others; "
                    "another member when that keeps more of the cluster (any member in a group of up to "
                    f"{EVERY_CANONICAL_UP_TO}, else the next {OTHER_CANONICALS} best-linked; every member "
                    "must match the canonical)")


def canonical_key(item: Fingerprint) -> tuple:
    """Sort key of the canonical policy (`CANONICAL_POLICY`): the member a user keeps should be the
    best copy, so resolution first, then compression (a quality-95 JPEG or a PNG over a quality-30
    re-encode of the same size), and only then the order of arrival."""
    return (-item.area, -round(item.bits_per_pixel, 3), item.seq, item.path)


def choose_canonical(members: Sequence[int], items: Sequence[Fingerprint]) -> int:
    """The member index that the policy keeps."""
    return min(members, key=lambda k: canonical_key(items[k]))


def build_members(items: Sequence[Fingerprint], i: np.ndarray, j: np.ndarray, tiers: Sequence[str],
                  include_singletons: bool = False, forbidden: Forbidden = ()) -> pd.DataFrame:
    """One row per clustered item: cluster_id (the canonical's id), tier, canonical, sizes.

    `tiers[k]` labels edge (i[k], j[k]); `forbidden` pairs are no edge (a chain of other links
    may still join their ends: these are review clusters). Deterministic: the output does not
    depend on the order of the pairs, only on the set of edges and the items.
    """
    n = len(items)
    keep = allowed(items, i, j, forbidden)
    i, j = np.asarray(i, np.int64)[keep], np.asarray(j, np.int64)[keep]
    tiers = [t for t, k in zip(tiers, keep.tolist()) if k]
    rank = np.array([TIER_RANK[t] for t in tiers], dtype=np.int64) if len(tiers) else np.zeros(0, np.int64)
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
        rows += _rows(items, c, member_tier)
    return _frame(rows)


DirectFn = Callable[[list[tuple[int, int]]], Sequence[str]]
"""Tier of each (member, canonical) pair from that pair's own evidence ("" = not the same picture)."""


def build_pictures(items: Sequence[Fingerprint], i: np.ndarray, j: np.ndarray, tiers: Sequence[str],
                   direct: DirectFn | None = None, forbidden: Forbidden = ()) -> pd.DataFrame:
    """Same-picture clusters without chaining: one row per member, as `build_members`.

    Edges (i[k], j[k], tiers[k]) at same-picture tiers are grouped into components; in each,
    the canonical is chosen by the policy and a member stays only if it matches the canonical:
    by an edge between the two, or else by `direct` (the pair's own evidence, for pairs the
    candidate search did not produce). Members that do not are split off and clustered the
    same way among themselves. A `forbidden` pair is no edge and is never asked of `direct`;
    of the members kept, one apart from a better member (`_apart`: forbidden, or another slice of
    its volume; the stronger tier first, then canonical policy order) is split off too, so no cluster
    holds such a pair. Deterministic in the set of edges and the items.
    """
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    same = np.isin(np.asarray(tiers, dtype=object), [t.value for t in P.SAME_PICTURE_TIERS])
    same &= allowed(items, i, j, forbidden)
    edge: dict[tuple[int, int], str] = {}
    for a, b, t in zip(i[same].tolist(), j[same].tolist(), np.asarray(tiers, dtype=object)[same].tolist()):
        key = (min(a, b), max(a, b))
        if key not in edge or TIER_RANK[t] < TIER_RANK[edge[key]]:
            edge[key] = t
    adj: dict[int, set[int]] = {}
    for a, b in edge:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    rows: list[dict] = []
    pending = [sorted(g) for g in _components(adj, list(adj)) if len(g) > 1]
    while pending:
        group = pending.pop()
        c, tier = None, {}
        for option in _canonical_options(group, adj, items):
            star = _star(group, option, edge, items, direct, forbidden)
            lost = sum(not t and not _apart(items, m, option, forbidden) for m, t in star.items())
            if c is None or lost < best:
                c, tier, best = option, star, lost
            if best == 0:
                break
        kept = _without_apart(items, c, {m: t for m, t in tier.items() if t}, forbidden)
        rest = [m for m in tier if m not in kept]
        pending += [sorted(g) for g in _components(adj, rest) if len(g) > 1]
        if kept:
            rows += _rows(items, c, kept)
    return _frame(rows)


def _hub_canonical(group: Sequence[int], links: dict[int, int], items: Sequence[Fingerprint]) -> int:
    """The canonical of a star cluster: the policy's choice among the group's best-linked members
    (at most one same-picture link fewer than the most-linked one).

    Why: every member must match the canonical, so a canonical few members match splits the picture
    into several clusters. The policy alone picks the largest file, and the largest copy is often an
    edited one (a border, or a rotation on a larger canvas), which crops and thumbnails of the
    original do not match: on the tuning families this took the star clusters' copy recall from
    0.746 to 0.954 (art-louvre) and 0.758 to 0.984 (brain-mri), and dedupe on ingest from 0.765 to
    0.887 and 0.785 to 0.921, precision 1.000 (benchmarks/ingest_dedup_eval.py). One link of slack
    keeps the policy's choice where links barely differ, so cluster ids (the canonical's) stay put
    when a decision removes one link of a small cluster."""
    most = max(links.values())
    return choose_canonical([m for m in group if links[m] >= most - 1], items)


def _canonical_options(group: Sequence[int], adj: dict[int, set[int]], items: Sequence[Fingerprint]) -> list[int]:
    """The hub canonical (`_hub_canonical`), then the other members (up to OTHER_CANONICALS of them in
    a group larger than EVERY_CANONICAL_UP_TO), most links first (policy order among equals). Why: in
    an ingest the stored canonical keeps the most links (every stored member is linked to it), and when
    it is an edited copy (a bordered one) the original that arrives later, and the thumbnails that match
    only the original, are split off; the star is kept around the candidate that loses the fewest
    members, the hub on a tie."""
    inside = set(group)
    links = {m: len(adj.get(m, set()) & inside) for m in group}  # same-picture links within the group
    hub = _hub_canonical(group, links, items)
    rest = sorted((m for m in group if m != hub), key=lambda m: (-links[m], canonical_key(items[m])))
    return [hub] + (rest if len(group) <= EVERY_CANONICAL_UP_TO else rest[:OTHER_CANONICALS])


def _star(group: Sequence[int], c: int, edge: dict[tuple[int, int], str], items: Sequence[Fingerprint],
          direct: DirectFn | None, forbidden: Forbidden) -> dict[int, str]:
    """Each other member's same-picture tier with canonical `c` ("" when it does not match): the
    edge between them, else the pair's own evidence (`direct`)."""
    tier = {m: edge.get((min(m, c), max(m, c)), "") for m in group if m != c}
    missing = [m for m, t in tier.items() if not t and not _apart(items, m, c, forbidden)]
    if missing and direct is not None:
        for m, t in zip(missing, direct([(m, c) for m in missing])):
            tier[m] = t if t in TIER_RANK and TIERS[TIER_RANK[t]] in P.SAME_PICTURE_TIERS else ""
    return tier


def _apart(items: Sequence[Fingerprint], a: int, b: int, forbidden: Forbidden) -> bool:
    """Whether items a and b may never share a same-picture cluster: a curator separated them, or they are
    different slices of one volume or series. Why the slices: each may be a copy of one image elsewhere, and a
    star cluster joins its members through the canonical. A collection holding NIfTI volumes and PNG exports of
    their slices (mri-slices) made 113 of its 157 clusters a PNG slice with 4-7 neighbouring slices of the
    volume, each matching it at 1 mm (session 48): the PNG's volume (its metadata) is not the NIfTI file's."""
    x, y = items[a], items[b]
    if x.volume and x.volume == y.volume and x.slice_index != y.slice_index:
        return True
    return bool(forbidden) and frozenset((x.id, y.id)) in forbidden


def _without_apart(items: Sequence[Fingerprint], c: int, kept: dict[int, str],
                   forbidden: Forbidden) -> dict[int, str]:
    """The kept members minus each one apart (`_apart`) from the canonical or from a better kept member: the
    stronger tier first (an exact export of the canonical's slice before its neighbours), then policy order."""
    if not forbidden and not any(items[m].volume for m in kept):
        return kept
    accepted = [c]
    for m in sorted(kept, key=lambda k: (TIER_RANK[kept[k]], canonical_key(items[k]))):
        if not any(_apart(items, m, a, forbidden) for a in accepted):
            accepted.append(m)
    return {m: kept[m] for m in accepted[1:]}


def _components(adj: dict[int, set[int]], nodes: Sequence[int]) -> list[list[int]]:
    """Connected components of the graph `adj` restricted to `nodes` (breadth first)."""
    inside, seen, out = set(nodes), set(), []
    for start in sorted(inside):
        if start in seen:
            continue
        seen.add(start)
        group, frontier = [start], [start]
        while frontier:
            nxt = []
            for a in frontier:
                for b in adj.get(a, ()):
                    if b in inside and b not in seen:
                        seen.add(b)
                        nxt.append(b)
            group += nxt
            frontier = nxt
        out.append(group)
    return out


def _rows(items: Sequence[Fingerprint], c: int, tier: dict[int, str]) -> list[dict]:
    """Member rows of one cluster (canonical `c`, `tier` of every other member): the canonical
    first, carrying the weakest member tier (None for a singleton)."""
    cluster_tier = max(tier.values(), key=lambda t: TIER_RANK[t]) if tier else None
    out = []
    for m in sorted([c, *tier], key=lambda k: (k != c, canonical_key(items[k]))):
        it = items[m]
        out.append({
            "index": m, "id": it.id, P.PATH: it.path, P.CLUSTER_ID: items[c].id,
            P.TIER: cluster_tier if m == c else tier[m], P.CANONICAL: m == c,
            "cluster_tier": cluster_tier, "cluster_size": len(tier) + 1,
            P.WIDTH: it.width, P.HEIGHT: it.height, "seq": it.seq,
        })
    return out


def _frame(rows: list[dict]) -> pd.DataFrame:
    """The members table, ordered by cluster, canonical first, then path."""
    df = pd.DataFrame(rows, columns=MEMBER_COLUMNS)
    return df.sort_values([P.CLUSTER_ID, P.CANONICAL, P.PATH], ascending=[True, False, True], ignore_index=True)
