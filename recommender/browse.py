"""Read-side views of a collection for analysts: filtered pages, facet counts,
duplicate clusters, split leakage and a cached 2-D map of the embeddings.

Everything goes through `VectorStore` with server-side filters and pages, so
the dashboard (and any other client) stays responsive at tens of thousands of
items: nothing here loads images, and only the map reads every vector — once,
cached under the data home.
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


def clusters_frame(clusters: Sequence[Cluster], fields: Sequence[str] = (P.SPLIT,)) -> pd.DataFrame:
    """One row per member (the CSV export of the Duplicates view)."""
    rows = []
    for c in clusters:
        for m in c.members:
            row = {P.CLUSTER_ID: c.cluster_id, "cluster_tier": c.tier, "cluster_size": len(c.members),
                   "id": m.id, P.PATH: m.path, P.TIER: m.tier, P.CANONICAL: m.canonical, "score": m.score,
                   "byte_copy": m.byte_copy}
            row.update({f: m.payload.get(f) for f in fields})
            rows.append(row)
    cols = [P.CLUSTER_ID, "cluster_tier", "cluster_size", "id", P.PATH, P.TIER, P.CANONICAL, "score", "byte_copy",
            *fields]
    return pd.DataFrame(rows, columns=cols)


def split_leakage(clusters: Sequence[Cluster], split_field: str = P.SPLIT) -> pd.DataFrame:
    """Clusters whose members fall in more than one split: train/test leakage to fix before training."""
    rows = []
    for c in clusters:
        splits = sorted({str(m.payload[split_field]) for m in c.members if m.payload.get(split_field) is not None})
        if len(splits) > 1:
            rows.append({
                P.CLUSTER_ID: c.cluster_id, P.TIER: c.tier, "splits": ", ".join(splits), "size": len(c.members),
                "paths": " | ".join(m.path for m in c.members),
            })
    return pd.DataFrame(rows, columns=[P.CLUSTER_ID, P.TIER, "splits", "size", "paths"])


# -- in-process label table (embedded stores) ---------------------------------------
def collection_stamp(store: VectorStore) -> list:
    """JSON-able value that changes whenever the collection does: the key of every cached view."""
    return json.loads(json.dumps(store.version_stamp(), default=str))


class LabelTable:
    """Id plus the facet fields (`facet_candidates`) of every point, filtered with pandas.

    Qdrant's local mode evaluates every filter, count and facet in Python over all
    payloads (about 0.5 s each at 50k points), so for an embedded store one scroll
    of the labels (cached as Parquet under the data home, rebuilt when the store's
    version stamp changes) answers them all in milliseconds; a Qdrant server keeps
    using its own indexed filters (see `Browser`).
    """

    def __init__(self, df: pd.DataFrame):
        self.df = df.reset_index(drop=True)

    @classmethod
    def load(cls, store: VectorStore, settings: Settings) -> "LabelTable":
        cache = settings.home / "labels" / f"{settings.collection}.parquet"
        meta = cache.with_suffix(".json")
        stamp = collection_stamp(store)
        if cache.exists() and meta.exists() and json.loads(meta.read_text()).get("stamp") == stamp:
            return cls(pd.read_parquet(cache))
        columns = facet_candidates(store)
        rows = []
        for pid, payload, _ in store.scroll(batch=2048):
            row = {"id": pid}
            row.update({f: payload.get(f) for f in columns})
            rows.append(row)
        df = pd.DataFrame(rows, columns=["id", *columns])
        for col in columns:  # one type per column (Parquet); labels compare as text
            df[col] = df[col].map(lambda v: None if v is None else (v if isinstance(v, bool) else str(v)))
        cache.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(cache, index=False)
        meta.write_text(json.dumps({"stamp": stamp, "count": len(df)}))
        return cls(df)

    def _mask(self, filters: dict[str, Any] | None) -> np.ndarray:
        mask = np.ones(len(self.df), dtype=bool)
        for key, value in _clean_filters(filters).items():
            if key not in self.df.columns:
                return np.zeros(len(self.df), dtype=bool)
            values = [str(v) for v in value] if isinstance(value, (list, tuple, set)) else [str(value)]
            mask &= self.df[key].isin(values).to_numpy()
        return mask

    def fields(self) -> list[str]:
        """Label columns that at least one point fills."""
        return [f for f in self.df.columns if f != "id" and self.df[f].notna().any()]

    def facets(self, fields: Sequence[str], filters: dict[str, Any] | None = None, limit: int = 50) -> dict[str, dict[Any, int]]:
        flt = _clean_filters(filters)
        out: dict[str, dict[Any, int]] = {}
        for f in fields:
            sub = self.df.loc[self._mask({k: v for k, v in flt.items() if k != f}), f].dropna()
            out[f] = {k: int(v) for k, v in sub.value_counts().head(limit).items()}
        return out

    def ids(self, filters: dict[str, Any] | None = None) -> list[str]:
        return self.df.loc[self._mask(filters), "id"].tolist()


class Browser:
    """Filtered pages and facet counts: in-process labels for an embedded store, server-side otherwise."""

    def __init__(self, store: VectorStore, settings: Settings):
        self.store = store
        embedded = getattr(store, "is_embedded", lambda: False)()
        self.table = LabelTable.load(store, settings) if embedded else None

    def fields(self) -> list[str]:
        return self.table.fields() if self.table is not None else filter_fields(self.store)

    def facets(self, fields: Sequence[str], filters: dict[str, Any] | None = None) -> dict[str, dict[Any, int]]:
        if self.table is not None:
            return self.table.facets(fields, filters)
        return facet_counts(self.store, fields, filters)

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


# -- 2-D map ----------------------------------------------------------------------
def _pca_2d(x: np.ndarray) -> np.ndarray:
    """Top-2 principal components via SVD of the centred matrix (deterministic sign)."""
    x = x - x.mean(axis=0, keepdims=True)
    # economical: eigen-decompose the d x d covariance rather than SVD of n x d
    cov = (x.T @ x) / max(len(x) - 1, 1)
    vals, vecs = np.linalg.eigh(cov.astype(np.float64))
    comps = vecs[:, np.argsort(vals)[::-1][:2]]
    comps *= np.sign(comps[np.argmax(np.abs(comps), axis=0), range(comps.shape[1])])
    return (x @ comps.astype(np.float32)).astype(np.float32)


def projection_path(settings: Settings) -> Path:
    """Where the map of a collection is cached (under the data home)."""
    return settings.home / "projections" / f"{settings.collection}.parquet"


def projection(store: VectorStore, settings: Settings, label_fields: Sequence[str] | None = None,
               refresh: bool = False) -> pd.DataFrame:
    """2-D PCA of every vector with id, path and label columns (the facet fields unless given);
    recomputed only when the point count changes."""
    cache = projection_path(settings)
    meta_path = cache.with_suffix(".json")
    n = store.count()
    label_fields = facet_candidates(store) if label_fields is None else label_fields
    if cache.exists() and meta_path.exists() and not refresh:
        meta = json.loads(meta_path.read_text())
        if meta.get("count") == n and meta.get("model") == store.model_name():
            return pd.read_parquet(cache)
    ids, vecs, rows = [], [], []
    for pid, payload, vec in store.scroll(batch=1024, with_vectors=True):
        ids.append(pid)
        vecs.append(vec)
        row = {"path": payload.get(P.PATH, ""), "item_key": payload.get(P.ITEM_KEY, payload.get(P.PATH, ""))}
        row.update({f: (None if payload.get(f) is None else str(payload.get(f))) for f in label_fields})
        rows.append(row)
    df = pd.DataFrame(rows)
    if ids:
        xy = _pca_2d(np.stack(vecs))
        df.insert(0, "y", xy[:, 1])
        df.insert(0, "x", xy[:, 0])
    else:
        df = pd.DataFrame(columns=["x", "y", "path", "item_key", *label_fields])
    df.insert(0, "id", ids)
    df = df.dropna(axis=1, how="all") if len(df) else df
    cache.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(cache, index=False)
    meta_path.write_text(json.dumps({"count": n, "model": store.model_name(), "method": "pca"}))
    return df
