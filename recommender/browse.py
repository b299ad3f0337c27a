"""Read-side views of a collection for analysts: filtered pages, facet counts and value ranges,
duplicate clusters, split leakage and a volume's slice order (the map lives in `recommender.maps`).

Everything goes through `VectorStore` with server-side filters and pages, so the dashboard (and
any other client) stays responsive at tens of thousands of items: nothing here loads images or
reads vectors beyond the clusters being scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from recommender import payload as P
from recommender.settings import Settings
from recommender.store import VectorStore

TIER_ORDER: dict[str, int] = {t.value: n for n, t in enumerate(P.Tier)}
_ORIGIN_ORDER = {"metadata": 0, "dedup": 1, "pipeline": 2, "decode": 3}


def facet_candidates(store: VectorStore) -> list[str]:
    """Fields offered as filters and facets: the metadata table's columns first (recorded with the
    collection at ingest), then the payload schema's facet fields, so the dashboard offers what the
    schema and the user's own table define, and nothing else."""
    declared = sorted(P.FACET_FIELDS, key=lambda f: _ORIGIN_ORDER[P.FIELDS[f].origin])
    return list(dict.fromkeys([*store.metadata_fields(), *declared]))


@dataclass
class Item:
    """A stored point as the browser shows it."""

    id: str
    payload: dict[str, Any]

    @property
    def path(self) -> str:
        return str(self.payload.get(P.PATH, ""))

    @property
    def item_key(self) -> str:
        return str(self.payload.get(P.ITEM_KEY, self.path))

    @property
    def title(self) -> str:
        key = self.item_key
        name = Path(self.path).name or self.id
        return name + (key[key.rfind("#"):] if "#" in key else "")


@dataclass
class Page:
    """One page of a filtered browse, with the total that matches the filter."""

    items: list[Item]
    total: int
    next_offset: str | int | None


@dataclass
class Member(Item):
    """One file of a duplicate cluster; `score` is its cosine to the canonical item.

    A byte-identical copy has no point of its own (ingest stores it in its point's
    `copies`): it is a member with its point's `id` and vector, its own path and
    labels, and `byte_copy` set.
    """

    tier: str | None
    canonical: bool
    score: float | None = None
    byte_copy: bool = False

    @property
    def name(self) -> str:
        """File name, plus '#<index>' for a slice or frame."""
        return self.title


@dataclass
class Cluster:
    """A duplicate cluster: canonical item first, then the others by tier and score.

    Tiers exact and copy are same-picture clusters (payload `cluster_id`); a near
    cluster (payload `near_cluster_id`, written by the dedupe sweep) also follows
    near links, and is shown only where it holds more than one same-picture cluster.
    """

    cluster_id: str
    tier: str | None
    members: list[Member] = field(default_factory=list)

    @property
    def canonical(self) -> Member | None:
        return next((m for m in self.members if m.canonical), None)

    @property
    def numbered_like_slices(self) -> bool:
        """A `copy` cluster whose file names number a stack of slices (`dedup.stacks`): a curator
        should check before deleting, since slices without volume metadata look like copies."""
        from recommender.dedup.stacks import flagged_as_stack  # the dedup package is heavy to import

        return flagged_as_stack(self.tier, (m.path for m in self.members))


def _clean_filters(filters: dict[str, Any] | None) -> dict[str, Any]:
    """Drop empty selections so 'no choice' means 'no filter'."""
    return {k: v for k, v in (filters or {}).items() if v not in (None, "", [], ())}


def filter_fields(store: VectorStore, candidates: Sequence[str] | None = None) -> list[str]:
    """The candidate fields that at least one point carries (so empty filters are not offered)."""
    return [f for f in (facet_candidates(store) if candidates is None else candidates) if store.facet(f, limit=1)]


def facet_counts(store: VectorStore, fields: Sequence[str], filters: dict[str, Any] | None = None,
                 limit: int = 50) -> dict[str, dict[Any, int]]:
    """Counts per value of each field under the other fields' filters (the usual faceted-search rule)."""
    flt = _clean_filters(filters)
    out: dict[str, dict[Any, int]] = {}
    for f in fields:
        others = {k: v for k, v in flt.items() if k != f}
        out[f] = store.facet(f, must=others, limit=limit)
    return out


def browse_page(store: VectorStore, filters: dict[str, Any] | None = None, limit: int = 24,
                offset: str | int | None = None, with_total: bool = True) -> Page:
    """One page of items matching the filters; pass `next_offset` back to get the following page."""
    flt = _clean_filters(filters)
    rows, nxt = store.scroll_where(must=flt, limit=limit, offset=offset)
    total = store.count_where(must=flt) if with_total else -1
    return Page([Item(pid, payload) for pid, payload, _ in rows], total, nxt)


def page_offsets(store: VectorStore, filters: dict[str, Any] | None, limit: int, upto: int) -> list[str | int | None]:
    """Start offsets of pages 0..upto (ids only travel), so a page number can be jumped to."""
    flt = _clean_filters(filters)
    offsets: list[str | int | None] = [None]
    while len(offsets) <= upto:
        _, nxt = store.scroll_where(must=flt, limit=limit, offset=offsets[-1], with_payload=False)
        if nxt is None:
            break
        offsets.append(nxt)
    return offsets


def get_item(store: VectorStore, point_id: str) -> Item:
    """One item by id (raises NotFoundError with the id when it is not stored)."""
    payload, _ = store.get(point_id)
    return Item(point_id, payload)


def _slice_order(payload: dict[str, Any]) -> tuple:
    """Where a slice sits in its volume: NIfTI/frame index, else DICOM InstanceNumber, else SliceLocation."""
    keys = (P.SLICE_INDEX, P.INSTANCE_NUMBER, P.SLICE_LOCATION)
    return tuple(float(payload[k]) if isinstance(payload.get(k), (int, float)) else float("inf") for k in keys)


def volume_neighbours(store: VectorStore, item: Item, limit: int = 5000
                      ) -> tuple[str | None, int, int, str | None] | None:
    """(previous id, position, slice count, next id) of a slice within its volume: a DICOM series
    (SeriesInstanceUID) or a NIfTI / multi-frame file; None for an item that is not a slice."""
    p = item.payload
    key = P.SERIES if p.get(P.FORMAT) == "dicom" and p.get(P.SERIES) else P.VOLUME
    if p.get(key) is None or all(p.get(k) is None for k in (P.SLICE_INDEX, P.INSTANCE_NUMBER, P.SLICE_LOCATION)):
        return None
    rows, _ = store.scroll_where(must={key: p[key]}, limit=limit)
    order = sorted(((_slice_order(q), pid) for pid, q, _ in rows), key=lambda t: t)
    ids = [pid for _, pid in order]
    if item.id not in ids or len(ids) < 2:
        return None
    at = ids.index(item.id)
    return (ids[at - 1] if at > 0 else None), at, len(ids), (ids[at + 1] if at + 1 < len(ids) else None)


def _cosines(reference: np.ndarray | None, vectors: Sequence[np.ndarray | None]) -> list[float | None]:
    if reference is None:
        return [None] * len(vectors)
    ref = reference / (np.linalg.norm(reference) or 1.0)
    out: list[float | None] = []
    for v in vectors:
        out.append(None if v is None else round(float(np.dot(ref, v / (np.linalg.norm(v) or 1.0))), 4))
    return out


def _members_sorted(members: list[Member]) -> list[Member]:
    return sorted(members, key=lambda m: (not m.canonical, TIER_ORDER.get(str(m.tier), 9),
                                          -(m.score if m.score is not None else -1), m.path))


def _files(pid: str, payload: dict[str, Any], tier: str | None, canonical: bool) -> list[Member]:
    """A point as cluster members: the point itself, then each byte-identical copy it stands for.

    A copy is the same picture as its point: exact to it, so exact to the canonical when the
    point is the canonical, and otherwise as close to the canonical as the point is."""
    out = [Member(pid, payload, tier, canonical)]
    key = str(payload.get(P.ITEM_KEY, payload.get(P.PATH, "")))
    slice_suffix = key[key.rfind("#"):] if "#" in key else ""
    for copy in payload.get(P.COPIES) or []:
        labels = {**payload, **copy, P.ITEM_KEY: f"{copy[P.PATH]}{slice_suffix}", P.COPIES: []}
        out.append(Member(pid, labels, P.Tier.EXACT.value if canonical else tier, False, byte_copy=True))
    return out


def _same_picture(cluster_id: str, rows: Sequence[tuple[str, dict[str, Any]]]) -> Cluster:
    """A same-picture cluster from its points; a point with byte copies but no cluster is its own canonical."""
    members: list[Member] = []
    for pid, p in rows:
        clustered = p.get(P.CLUSTER_ID) is not None
        members += _files(pid, p, p.get(P.TIER) if clustered else P.Tier.EXACT.value,
                          bool(p.get(P.CANONICAL)) if clustered else True)
    return Cluster(cluster_id, _cluster_tier(members), _members_sorted(members))


def _near(near_id: str, rows: Sequence[tuple[str, dict[str, Any]]]) -> Cluster:
    """A near cluster: its canonical is the point whose id it carries (the engine's canonical policy,
    so also the canonical of its own same-picture cluster); members of that cluster keep their tier."""
    picture = next((p.get(P.CLUSTER_ID) for pid, p in rows if pid == near_id), None)
    members: list[Member] = []
    for pid, p in rows:
        same = picture is not None and p.get(P.CLUSTER_ID) == picture and pid != near_id
        members += _files(pid, p, p.get(P.TIER) if same else P.Tier.NEAR.value, pid == near_id)
    return Cluster(near_id, P.Tier.NEAR.value, _members_sorted(members))


def _cluster_tier(members: Sequence[Member]) -> str | None:
    """The canonical point carries the cluster tier (the weakest link); otherwise the weakest member tier."""
    canon = next((m for m in members if m.canonical), None)
    if canon is not None and canon.tier:
        return str(canon.tier)
    tiers = [str(m.tier) for m in members if m.tier]
    return max(tiers, key=lambda t: TIER_ORDER.get(t, 9)) if tiers else None


def _points_having(store: VectorStore, key: str, batch: int) -> dict[str, dict[str, Any]]:
    points: dict[str, dict[str, Any]] = {}
    offset: str | int | None = None
    while True:
        rows, offset = store.scroll_where(has=[key], limit=batch, offset=offset)
        points.update((pid, p) for pid, p, _ in rows)
        if offset is None:
            return points


def _group(points: dict[str, dict[str, Any]], key: str) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for pid, p in points.items():
        if p.get(key) is not None:
            groups.setdefault(str(p[key]), []).append((pid, p))
    return groups


def _pictures_in(rows: Sequence[tuple[str, dict[str, Any]]]) -> int:
    """How many same-picture clusters a near cluster spans (a point in none counts as its own)."""
    return len({p.get(P.CLUSTER_ID) or pid for pid, p in rows})


def duplicate_clusters(store: VectorStore, tier: str | None = None, batch: int = 1024) -> list[Cluster]:
    """All duplicate clusters (payload only, no vectors), largest first; `tier` keeps clusters of that tier.

    Same-picture clusters come from `cluster_id` (and from points that stand for byte-identical
    files in `copies`), near clusters from `near_cluster_id`; a near cluster that is just one
    same-picture cluster again is not repeated."""
    points: dict[str, dict[str, Any]] = {}
    for key in (P.CLUSTER_ID, P.COPIES, P.NEAR_CLUSTER_ID):
        points.update(_points_having(store, key, batch))
    pictures = _group(points, P.CLUSTER_ID)
    for pid, p in points.items():
        if p.get(P.CLUSTER_ID) is None and p.get(P.COPIES):
            pictures[pid] = [(pid, p)]
    clusters = [_same_picture(cid, rows) for cid, rows in pictures.items()]
    for nid, rows in _group(points, P.NEAR_CLUSTER_ID).items():
        if _pictures_in(rows) > 1:
            clusters.append(_near(nid, rows))
    clusters = [c for c in clusters if len(c.members) > 1 and (not tier or c.tier == tier)]
    clusters.sort(key=lambda c: (-len(c.members), TIER_ORDER.get(str(c.tier), 9), c.cluster_id))
    return clusters


def item_cluster(store: VectorStore, item: Item, limit: int = 500) -> Cluster | None:
    """The duplicate cluster an item is in, scored: its same-picture cluster (byte copies included),
    else its near cluster, else None."""
    p = item.payload
    if p.get(P.CLUSTER_ID) is not None:
        rows, _ = store.scroll_where(must={P.CLUSTER_ID: p[P.CLUSTER_ID]}, limit=limit)
        cluster = _same_picture(str(p[P.CLUSTER_ID]), [(pid, q) for pid, q, _ in rows])
    elif p.get(P.COPIES):
        cluster = _same_picture(item.id, [(item.id, p)])
    elif p.get(P.NEAR_CLUSTER_ID) is not None:
        rows, _ = store.scroll_where(must={P.NEAR_CLUSTER_ID: p[P.NEAR_CLUSTER_ID]}, limit=limit)
        cluster = _near(str(p[P.NEAR_CLUSTER_ID]), [(pid, q) for pid, q, _ in rows])
    else:
        return None
    if len(cluster.members) < 2:
        return None
    score_clusters(store, [cluster])
    cluster.members = _members_sorted(cluster.members)
    return cluster


def score_clusters(store: VectorStore, clusters: Sequence[Cluster]) -> None:
    """Fill each member's cosine to its canonical (vectors fetched only for these clusters)."""
    ids = list(dict.fromkeys(m.id for c in clusters for m in c.members))
    vecs = {pid: v for pid, _, v in store.get_many(ids, with_vectors=True)}
    for c in clusters:
        canon = c.canonical
        ref = vecs.get(canon.id) if canon else None
        for m, s in zip(c.members, _cosines(ref, [vecs.get(m.id) for m in c.members])):
            m.score = s


def cluster_score(cluster: Cluster) -> float | None:
    """A cluster's weakest link: the lowest cosine of a member to its canonical (None until scored).
    The lowest score is the member most likely not the same picture, so it orders the review."""
    scores = [m.score for m in cluster.members if not m.canonical and m.score is not None]
    return min(scores) if scores else None


CLUSTER_SORTS: dict[str, str] = {
    "size": "size (largest first)",
    "tier": "tier (exact, copy, near)",
    "score": "lowest score first (most doubtful)",
    "id": "cluster id",
}


def sort_clusters(clusters: Sequence[Cluster], by: str = "size") -> list[Cluster]:
    """Clusters in a review order (`CLUSTER_SORTS`); ties fall back to size, then cluster id, so the
    order is stable from one page load to the next. "score" needs `score_clusters` first (unscored last)."""
    size = {id(c): -len(c.members) for c in clusters}
    keys = {
        "size": lambda c: (size[id(c)], TIER_ORDER.get(str(c.tier), 9), c.cluster_id),
        "tier": lambda c: (TIER_ORDER.get(str(c.tier), 9), size[id(c)], c.cluster_id),
        "score": lambda c: (cluster_score(c) is None, cluster_score(c) or 0.0, size[id(c)], c.cluster_id),
        "id": lambda c: (c.cluster_id, TIER_ORDER.get(str(c.tier), 9)),
    }
    if by not in keys:
        raise ValueError(f"sort by one of {', '.join(keys)}, not {by!r}")
    return sorted(clusters, key=keys[by])


def clusters_frame(clusters: Sequence[Cluster], fields: Sequence[str] = (P.SPLIT,)) -> pd.DataFrame:
    """One row per member (the CSV and Parquet export of the Duplicates view), in the view's order."""
    rows = []
    for c in clusters:
        weakest = cluster_score(c)
        for m in c.members:
            row = {P.CLUSTER_ID: c.cluster_id, "cluster_tier": c.tier, "cluster_size": len(c.members),
                   "cluster_score": weakest, "id": m.id, P.PATH: m.path, P.TIER: m.tier, P.CANONICAL: m.canonical,
                   "score": m.score, "byte_copy": m.byte_copy}
            row.update({f: m.payload.get(f) for f in fields})
            rows.append(row)
    cols = [P.CLUSTER_ID, "cluster_tier", "cluster_size", "cluster_score", "id", P.PATH, P.TIER, P.CANONICAL, "score",
            "byte_copy", *fields]
    return pd.DataFrame(rows, columns=cols)


def split_leakage(clusters: Sequence[Cluster], split_field: str = P.SPLIT) -> pd.DataFrame:
    """Clusters whose members fall in more than one split: train/test leakage to fix before training."""
    rows = []
    for c in clusters:
        splits = sorted({str(m.payload[split_field]) for m in c.members if m.payload.get(split_field) is not None})
        if len(splits) > 1:
            rows.append({
                P.CLUSTER_ID: c.cluster_id, P.TIER: c.tier, "splits": ", ".join(splits), "size": len(c.members),
                "files": " | ".join(m.name for m in c.members), "paths": " | ".join(m.path for m in c.members),
            })
    return pd.DataFrame(rows, columns=[P.CLUSTER_ID, P.TIER, "splits", "size", "files", "paths"])


# -- in-process label table (embedded stores) ---------------------------------------
def collection_stamp(store: VectorStore) -> list:
    """JSON-able value that changes whenever the collection does: the key of every cached view."""
    return json.loads(json.dumps(store.version_stamp(), default=str))


_PANDAS_OP = {"gt": "gt", "gte": "ge", "lt": "lt", "lte": "le"}  # NaN compares False: unset values drop out


def _is_range(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= {"gt", "gte", "lt", "lte"}


class LabelTable:
    """Id, the facet fields (`facet_candidates`) and the range fields (`P.RANGE_FIELDS`) of every
    point, filtered with pandas.

    An embedded store answers a filter, count or facet with a pass over its payloads, so one scroll
    of the labels (cached as Parquet under the data home, rebuilt when the store's version stamp
    changes) answers them all in milliseconds; a Qdrant server keeps using its own indexed filters
    (see `Browser`). Facet columns hold text, range columns numbers.
    """

    def __init__(self, df: pd.DataFrame, ranges: Sequence[str] = ()):
        self.df = df.reset_index(drop=True)
        self.range_columns = [r for r in ranges if r in self.df.columns]

    @classmethod
    def load(cls, store: VectorStore, settings: Settings) -> "LabelTable":
        cache = settings.home / "labels" / f"{settings.collection}.parquet"
        meta = cache.with_suffix(".json")
        stamp = collection_stamp(store)
        ranges = [r for r in P.RANGE_FIELDS if r not in facet_candidates(store)]
        columns = [P.RELPATH, *facet_candidates(store), *ranges]
        if cache.exists() and meta.exists():
            known = json.loads(meta.read_text())
            if known.get("stamp") == stamp and known.get("columns") == columns:
                return cls(pd.read_parquet(cache), ranges)
        rows = []
        for pid, payload, _ in store.scroll(batch=2048):
            row = {"id": pid}
            row.update({f: payload.get(f) for f in columns})
            rows.append(row)
        df = pd.DataFrame(rows, columns=["id", *columns])
        for col in columns:  # one type per column (Parquet): labels compare as text, ranges as numbers
            df[col] = (pd.to_numeric(df[col], errors="coerce") if col in ranges else
                       df[col].map(lambda v: None if v is None else (v if isinstance(v, bool) else str(v))))
        cache.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(cache, index=False)
        meta.write_text(json.dumps({"stamp": stamp, "count": len(df), "columns": columns}))
        return cls(df, ranges)

    def _mask(self, filters: dict[str, Any] | None) -> np.ndarray:
        mask = np.ones(len(self.df), dtype=bool)
        for key, value in _clean_filters(filters).items():
            if key not in self.df.columns:
                return np.zeros(len(self.df), dtype=bool)
            if _is_range(value):
                col = pd.to_numeric(self.df[key], errors="coerce")
                for op, bound in value.items():
                    mask &= getattr(col, _PANDAS_OP[op])(float(bound)).to_numpy(dtype=bool)
                continue
            values = [str(v) for v in value] if isinstance(value, (list, tuple, set)) else [str(value)]
            mask &= self.df[key].isin(values).to_numpy()
        return mask

    def fields(self) -> list[str]:
        """Label columns that at least one point fills."""
        return [f for f in self.df.columns if f not in ("id", P.RELPATH, *self.range_columns) and self.df[f].notna().any()]

    def ranges(self) -> dict[str, tuple[float, float]]:
        """(min, max) of each range column that has at least two different values."""
        out = {}
        for f in self.range_columns:
            col = self.df[f].dropna()
            if len(col) and col.min() < col.max():
                out[f] = (float(col.min()), float(col.max()))
        return out

    def facets(self, fields: Sequence[str], filters: dict[str, Any] | None = None, limit: int = 50) -> dict[str, dict[Any, int]]:
        flt = _clean_filters(filters)
        out: dict[str, dict[Any, int]] = {}
        for f in fields:
            sub = self.df.loc[self._mask({k: v for k, v in flt.items() if k != f}), f].dropna()
            out[f] = {k: int(v) for k, v in sub.value_counts().head(limit).items()}
        return out

    def ids(self, filters: dict[str, Any] | None = None) -> list[str]:
        return self.df.loc[self._mask(filters), "id"].tolist()

    def frame(self, filters: dict[str, Any] | None = None) -> pd.DataFrame:
        """The matching rows: id, path relative to the corpus root, and every label and range column."""
        return self.df.loc[self._mask(filters)].reset_index(drop=True)


class Browser:
    """Filtered pages, facet counts and value ranges: in-process labels for an embedded store,
    server-side otherwise."""

    def __init__(self, store: VectorStore, settings: Settings):
        self.store = store
        embedded = getattr(store, "is_embedded", lambda: False)()
        self.table = LabelTable.load(store, settings) if embedded else None

    def fields(self) -> list[str]:
        return self.table.fields() if self.table is not None else filter_fields(self.store)

    def ranges(self) -> dict[str, tuple[float, float]]:
        """Numeric and time fields to narrow by range, with their (min, max) over the collection."""
        if self.table is not None:
            return self.table.ranges()
        out = {}
        for f in P.RANGE_FIELDS:
            bounds = self.store.value_range(f)
            if bounds is not None and bounds[0] < bounds[1]:
                out[f] = bounds
        return out

    def facets(self, fields: Sequence[str], filters: dict[str, Any] | None = None) -> dict[str, dict[Any, int]]:
        if self.table is not None:
            return self.table.facets(fields, filters)
        return facet_counts(self.store, fields, filters)

    def frame(self, filters: dict[str, Any] | None = None, limit: int = 1_000_000) -> pd.DataFrame:
        """Every matching item as a table (id, relative path, labels): what an analyst exports."""
        if self.table is not None:
            return self.table.frame(filters)
        rows, offset = [], None
        columns = [P.RELPATH, *self.fields(), *P.RANGE_FIELDS]
        while len(rows) < limit:
            page, offset = self.store.scroll_where(must=_clean_filters(filters), limit=1024, offset=offset)
            rows += [{"id": pid, **{c: p.get(c) for c in columns}} for pid, p, _ in page]
            if offset is None:
                break
        return pd.DataFrame(rows, columns=["id", *columns])

    def page(self, filters: dict[str, Any] | None, page_no: int, size: int) -> Page:
        """Page `page_no` (0-based) of the items matching `filters`; next_offset is None on the last page."""
        if self.table is not None:
            ids = self.table.ids(filters)
            chunk = ids[page_no * size:(page_no + 1) * size]
            items = [Item(pid, p) for pid, p, _ in self.store.get_many(chunk)]
            more = (page_no + 1) * size < len(ids)
            return Page(items, len(ids), (page_no + 1) * size if more else None)
        offsets = page_offsets(self.store, filters, size, page_no)
        return browse_page(self.store, filters, limit=size, offset=offsets[min(page_no, len(offsets) - 1)])
