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

from recommender.settings import Settings
from recommender.store import VectorStore

FILTER_FIELDS: tuple[str, ...] = ("collection", "artist", "genre", "style", "diagnosis", "modality", "split")
"""Payload fields offered as filters when the collection has them (art and medical metadata)."""

DUP_FIELDS: tuple[str, ...] = ("cluster_id", "tier", "canonical")
"""Payload fields the dedup engine writes on clustered items."""

TIER_ORDER: dict[str, int] = {"exact": 0, "copy": 1, "near": 2}


@dataclass
class Item:
    """A stored point as the browser shows it."""

    id: str
    payload: dict[str, Any]

    @property
    def path(self) -> str:
        return str(self.payload.get("path", ""))

    @property
    def item_key(self) -> str:
        return str(self.payload.get("item_key", self.path))

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
class Member:
    """One item of a duplicate cluster; `score` is its cosine to the canonical item."""

    id: str
    payload: dict[str, Any]
    tier: str | None
    canonical: bool
    score: float | None = None

    @property
    def path(self) -> str:
        return str(self.payload.get("path", ""))


@dataclass
class Cluster:
    """A duplicate cluster: canonical item first, then the others by tier and score."""

    cluster_id: str
    tier: str | None
    members: list[Member] = field(default_factory=list)

    @property
    def canonical(self) -> Member | None:
        return next((m for m in self.members if m.canonical), None)


def _clean_filters(filters: dict[str, Any] | None) -> dict[str, Any]:
    """Drop empty selections so 'no choice' means 'no filter'."""
    return {k: v for k, v in (filters or {}).items() if v not in (None, "", [], ())}


def filter_fields(store: VectorStore, candidates: Sequence[str] = FILTER_FIELDS) -> list[str]:
    """The candidate fields that at least one point carries (so empty filters are not offered)."""
    return [f for f in candidates if store.facet(f, limit=1)]


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


def cluster_of(store: VectorStore, cluster_id: str, with_scores: bool = True, limit: int = 500) -> Cluster:
    """Every member of one duplicate cluster, scored by cosine to its canonical item."""
    rows, _ = store.scroll_where(must={"cluster_id": cluster_id}, limit=limit, with_vectors=with_scores)
    members = [Member(pid, p, p.get("tier"), bool(p.get("canonical")), None) for pid, p, _ in rows]
    vecs = [v for _, _, v in rows]
    canon = next((i for i, m in enumerate(members) if m.canonical), None)
    if with_scores and canon is not None:
        for m, s in zip(members, _cosines(vecs[canon], vecs)):
            m.score = s
    tier = _cluster_tier(members)
    return Cluster(cluster_id, tier, _members_sorted(members))


def _cluster_tier(members: Sequence[Member]) -> str | None:
    """The canonical row carries the cluster tier; otherwise the weakest member tier."""
    canon = next((m for m in members if m.canonical), None)
    if canon is not None and canon.payload.get("cluster_tier", canon.tier):
        return canon.payload.get("cluster_tier", canon.tier)
    tiers = [str(m.tier) for m in members if m.tier]
    return max(tiers, key=lambda t: TIER_ORDER.get(t, 9)) if tiers else None


def duplicate_clusters(store: VectorStore, tier: str | None = None, batch: int = 1024) -> list[Cluster]:
    """All duplicate clusters (payload only, no vectors), largest first; `tier` keeps clusters of that tier."""
    groups: dict[str, list[Member]] = {}
    offset: str | int | None = None
    while True:
        rows, offset = store.scroll_where(has=["cluster_id"], limit=batch, offset=offset)
        for pid, p, _ in rows:
            groups.setdefault(str(p["cluster_id"]), []).append(Member(pid, p, p.get("tier"), bool(p.get("canonical"))))
        if offset is None:
            break
    clusters = [Cluster(cid, _cluster_tier(ms), _members_sorted(ms)) for cid, ms in groups.items() if len(ms) > 1]
    if tier:
        clusters = [c for c in clusters if c.tier == tier]
    clusters.sort(key=lambda c: (-len(c.members), TIER_ORDER.get(str(c.tier), 9), c.cluster_id))
    return clusters


def score_clusters(store: VectorStore, clusters: Sequence[Cluster]) -> None:
    """Fill each member's cosine to its canonical (vectors fetched only for these clusters)."""
    ids = [m.id for c in clusters for m in c.members]
    vecs = {pid: v for pid, _, v in store.get_many(ids, with_vectors=True)}
    for c in clusters:
        canon = c.canonical
        ref = vecs.get(canon.id) if canon else None
        for m, s in zip(c.members, _cosines(ref, [vecs.get(m.id) for m in c.members])):
            m.score = s


def clusters_frame(clusters: Sequence[Cluster], fields: Sequence[str] = ("split",)) -> pd.DataFrame:
    """One row per member (the CSV export of the Duplicates view)."""
    rows = []
    for c in clusters:
        for m in c.members:
            row = {"cluster_id": c.cluster_id, "cluster_tier": c.tier, "cluster_size": len(c.members),
                   "id": m.id, "path": m.path, "tier": m.tier, "canonical": m.canonical, "score": m.score}
            row.update({f: m.payload.get(f) for f in fields})
            rows.append(row)
    cols = ["cluster_id", "cluster_tier", "cluster_size", "id", "path", "tier", "canonical", "score", *fields]
    return pd.DataFrame(rows, columns=cols)


def split_leakage(clusters: Sequence[Cluster], split_field: str = "split") -> pd.DataFrame:
    """Clusters whose members fall in more than one split: train/test leakage to fix before training."""
    rows = []
    for c in clusters:
        splits = sorted({str(m.payload[split_field]) for m in c.members if m.payload.get(split_field) is not None})
        if len(splits) > 1:
            rows.append({
                "cluster_id": c.cluster_id, "tier": c.tier, "splits": ", ".join(splits), "size": len(c.members),
                "paths": " | ".join(m.path for m in c.members),
            })
    return pd.DataFrame(rows, columns=["cluster_id", "tier", "splits", "size", "paths"])


# -- in-process label table (embedded stores) ---------------------------------------
LABEL_COLUMNS: tuple[str, ...] = (*FILTER_FIELDS, "cluster_id", "tier", "canonical", "cluster_tier")


def _stamp(store: VectorStore) -> list:
    stamp = getattr(store, "version_stamp", None)
    return json.loads(json.dumps(stamp() if stamp else [store.count()], default=str))


class LabelTable:
    """Id plus label columns of every point, filtered with pandas.

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
        stamp = _stamp(store)
        if cache.exists() and meta.exists() and json.loads(meta.read_text()).get("stamp") == stamp:
            return cls(pd.read_parquet(cache))
        rows = []
        for pid, payload, _ in store.scroll(batch=2048):
            row = {"id": pid}
            row.update({f: payload.get(f) for f in LABEL_COLUMNS})
            rows.append(row)
        df = pd.DataFrame(rows, columns=["id", *LABEL_COLUMNS])
        for col in LABEL_COLUMNS:  # one type per column (Parquet); labels compare as text
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

    def fields(self, candidates: Sequence[str] = FILTER_FIELDS) -> list[str]:
        return [f for f in candidates if f in self.df.columns and self.df[f].notna().any()]

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


def projection(store: VectorStore, settings: Settings, label_fields: Sequence[str] = FILTER_FIELDS,
               refresh: bool = False) -> pd.DataFrame:
    """2-D PCA of every vector with id, path and label columns; recomputed only when the point count changes."""
    cache = projection_path(settings)
    meta_path = cache.with_suffix(".json")
    n = store.count()
    if cache.exists() and meta_path.exists() and not refresh:
        meta = json.loads(meta_path.read_text())
        if meta.get("count") == n and meta.get("model") == store.model_name():
            return pd.read_parquet(cache)
    ids, vecs, rows = [], [], []
    for pid, payload, vec in store.scroll(batch=1024, with_vectors=True):
        ids.append(pid)
        vecs.append(vec)
        row = {"path": payload.get("path", ""), "item_key": payload.get("item_key", payload.get("path", ""))}
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
