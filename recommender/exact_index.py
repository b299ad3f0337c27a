"""Exact cosine search in process: the fast path for the embedded (local-mode) store.

qdrant-client's local mode answers a top-10 query over 50k points in ~40 ms,
mostly Python overhead around one matrix-vector product. `ExactIndex` keeps the
collection's unit vectors as one float32 matrix in RAM (cached under the data
home as `.npy` + JSON so a restart skips the scroll) plus payload columns for
filters, and answers the
same queries with the same semantics as Qdrant's exact search:

- one positive: cosine score (dot product of unit vectors);
- several positives / negatives: Qdrant's best-score recommend formula;
- filters: equality (scalars or arrays containing the value), any-of, numeric
  ranges; points without the field never match;
- groups: Qdrant local mode's algorithm (first `groups` groups by best hit,
  at most `group_size` hits each, points without a groupable value skipped);
- a score threshold keeps scores strictly above it (as local mode does).

Consistency: the index is built from a scroll of the collection and remembers
the store's `version_stamp()`; `IndexCache.get()` rebuilds it when the stamp
changes (any write commits to the local SQLite file, changing its mtime/size).
Only the embedded store is mirrored: a Qdrant server does its own search.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from recommender.errors import NotFoundError
from recommender.postprocess import unit
from recommender.store import Hit, VectorStore, validate_filter_spec

_GROUP_TYPES = (int, str)


def _scaled_sigmoid(x: np.ndarray) -> np.ndarray:
    """Qdrant's `scaled_fast_sigmoid`: maps a similarity into (0, 1) keeping order."""
    x = x.astype(np.float32, copy=False)
    with np.errstate(invalid="ignore"):  # -inf (no negatives) is never the chosen branch
        return (np.float32(0.5) * (x / (np.float32(1.0) + np.abs(x)) + np.float32(1.0))).astype(np.float32)


class ExactIndex:
    """A read-only snapshot of one collection: ids, unit vectors, payloads."""

    def __init__(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]], stamp: Any = None):
        self.ids = list(ids)
        self.matrix = vectors if vectors.dtype == np.float32 else vectors.astype(np.float32)
        self.payloads = list(payloads)
        self.stamp = stamp
        self.row = {pid: i for i, pid in enumerate(self.ids)}
        self._masks: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.ids)

    # -- building ----------------------------------------------------------------
    @classmethod
    def from_store(cls, store: VectorStore, batch: int = 2048) -> "ExactIndex":
        """Snapshot a collection through the public scroll API."""
        stamp = store.version_stamp()
        ids, vecs, payloads = [], [], []
        for pid, payload, vec in store.scroll(batch=batch, with_vectors=True):
            ids.append(pid)
            vecs.append(vec)
            payloads.append(payload)
        dim = len(vecs[0]) if vecs else 0
        matrix = unit(np.vstack(vecs)) if vecs else np.zeros((0, dim), np.float32)
        return cls(ids, matrix, payloads, stamp)

    def save(self, folder: Path) -> None:
        """Write the snapshot (vectors as .npy for memory-mapping, the rest as JSON)."""
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "vectors.tmp.npy"
        np.save(tmp, self.matrix)
        tmp.replace(folder / "vectors.npy")
        meta = {"stamp": _jsonable(self.stamp), "ids": self.ids, "payloads": self.payloads}
        (folder / "meta.tmp.json").write_text(json.dumps(meta))
        (folder / "meta.tmp.json").replace(folder / "meta.json")

    @classmethod
    def load(cls, folder: Path, stamp: Any) -> "ExactIndex | None":
        """The cached snapshot if it was taken at `stamp`, else None."""
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta["stamp"] != _jsonable(stamp):
                return None
            # read into RAM: BLAS on a memory map is an order of magnitude slower here
            matrix = np.load(folder / "vectors.npy").copy()  # own, freshly aligned buffer: ~4x faster matmul
        except (OSError, ValueError, KeyError):
            return None
        if matrix.shape[0] != len(meta["ids"]):
            return None
        return cls(meta["ids"], matrix, meta["payloads"], stamp)

    # -- lookups -------------------------------------------------------------------
    def vector(self, pid: str) -> np.ndarray:
        try:
            return np.asarray(self.matrix[self.row[pid]])
        except KeyError:
            raise NotFoundError(f"No item with id '{pid}' in the collection.") from None

    def get_many(self, ids: Sequence[str], with_vectors: bool = False) -> list[tuple[str, dict[str, Any], np.ndarray | None]]:
        """Same shape as `VectorStore.get_many`."""
        return [(p, self.payloads[self.row[p]], self.vector(p) if with_vectors else None) for p in ids if p in self.row]

    # -- scoring -------------------------------------------------------------------
    def _as_vector(self, q: str | np.ndarray) -> np.ndarray:
        if isinstance(q, str):
            return self.vector(q)
        return unit(np.asarray(q, dtype=np.float32).reshape(-1))

    def scores(self, positive: Sequence[str | np.ndarray], negative: Sequence[str | np.ndarray] = ()) -> np.ndarray:
        """Qdrant's scores for every point: cosine for one positive, best-score for examples."""
        pos = [self._as_vector(p) for p in positive]
        if len(pos) == 1 and not negative:
            return self.matrix @ pos[0]
        best_pos = (self.matrix @ np.stack(pos, axis=1)).max(axis=1)
        if negative:
            best_neg = (self.matrix @ np.stack([self._as_vector(n) for n in negative], axis=1)).max(axis=1)
        else:
            best_neg = np.full(len(self), -np.inf, np.float32)
        return np.where(best_pos > best_neg, _scaled_sigmoid(best_pos), -_scaled_sigmoid(best_neg)).astype(np.float32)

    # -- filtering -----------------------------------------------------------------
    def mask(self, must: dict[str, Any] | None, exclude_ids: Sequence[str] = ()) -> np.ndarray | None:
        """Boolean row mask for a filter spec (None when nothing is filtered)."""
        spec = validate_filter_spec(must)
        out: np.ndarray | None = None
        for key, value in spec.items():
            m = self._condition(key, value)
            out = m.copy() if out is None else out & m
        rows = [self.row[p] for p in exclude_ids if p in self.row]
        if rows:
            out = np.ones(len(self), bool) if out is None else out
            out[rows] = False
        return out

    def _condition(self, key: str, value: Any) -> np.ndarray:
        cache_key = json.dumps([key, value], sort_keys=True, default=str)
        cached = self._masks.get(cache_key)
        if cached is not None:
            return cached
        if isinstance(value, dict):
            test = _range_test(value)
        elif isinstance(value, list):
            wanted = {(type(v), v) for v in value}
            test = lambda x: (type(x), x) in wanted  # noqa: E731
        else:
            test = lambda x: type(x) is type(value) and x == value  # noqa: E731

        def matches(payload: dict[str, Any]) -> bool:
            x = payload.get(key)
            if x is None:
                return False
            if isinstance(x, list):
                return any(test(v) for v in x if v is not None)
            return test(x)

        result = np.fromiter((matches(p) for p in self.payloads), bool, len(self.payloads))
        if len(self._masks) > 256:
            self._masks.clear()
        self._masks[cache_key] = result
        return result

    # -- queries (same signatures as VectorStore.query / query_groups) -------------------
    def _ranked(self, query, negative, exclude_ids, must, score_threshold) -> tuple[np.ndarray, np.ndarray]:
        positives = list(query) if isinstance(query, (list, tuple)) else [query]
        scores = self.scores(positives, negative)
        mask = self.mask(must, exclude_ids)
        if score_threshold is not None:
            above = scores > score_threshold
            mask = above if mask is None else mask & above
        return scores, mask

    def _order(self, scores: np.ndarray, mask: np.ndarray | None, n: int | None) -> np.ndarray:
        """Rows by descending score (ties: higher row first, like local mode's reversed argsort)."""
        rows = np.flatnonzero(mask) if mask is not None else np.arange(len(scores))
        sub = scores[rows]
        if n is not None and n < len(rows):
            part = np.argpartition(-sub, n - 1)[:n]
            rows, sub = rows[part], sub[part]
        order = np.lexsort((-rows, -sub))
        return rows[order]

    def query(self, query: Any, limit: int = 10, exclude_ids: Sequence[str] = (), must: dict[str, Any] | None = None,
              *, negative: Sequence[Any] = (), offset: int = 0, score_threshold: float | None = None,
              with_vectors: bool = False, exact: bool = True) -> list[Hit]:
        """Top `limit` after `offset`, exactly as `VectorStore.query` returns them."""
        if not len(self):
            return []
        scores, mask = self._ranked(query, negative, exclude_ids, must, score_threshold)
        rows = self._order(scores, mask, offset + limit)[offset:offset + limit]
        return [self._hit(r, scores, with_vectors) for r in rows]

    def query_groups(self, query: Any, group_by: str, group_size: int = 1, groups: int = 10,
                     exclude_ids: Sequence[str] = (), must: dict[str, Any] | None = None, *,
                     negative: Sequence[Any] = (), score_threshold: float | None = None,
                     with_vectors: bool = False, exact: bool = True) -> list[Hit]:
        """Same result as `VectorStore.query_groups` (Qdrant local mode's grouping)."""
        if not len(self):
            return []
        scores, mask = self._ranked(query, negative, exclude_ids, must, score_threshold)
        found: dict[Any, list[int]] = {}
        full = 0
        for r in self._order(scores, mask, None):
            raw = self.payloads[r].get(group_by)
            values = raw if isinstance(raw, list) else ([] if raw is None else [raw])
            if not values or any(type(v) not in _GROUP_TYPES for v in values):
                continue
            for v in dict.fromkeys(values):
                members = found.setdefault(v, [])
                if len(members) < group_size:
                    members.append(int(r))
                    full += len(members) == group_size and list(found).index(v) < groups
            if len(found) >= groups and full >= groups:
                break  # the first `groups` groups are full; later points change nothing
        out: list[Hit] = []
        for value in list(found)[:groups]:
            for r in found[value]:
                hit = self._hit(r, scores, with_vectors)
                hit.group = value
                out.append(hit)
        return out

    def _hit(self, r: int, scores: np.ndarray, with_vectors: bool) -> Hit:
        return Hit(self.ids[r], float(scores[r]), self.payloads[r], np.asarray(self.matrix[r]) if with_vectors else None)


def _range_test(bounds: dict[str, float]):
    gt, gte, lt, lte = (bounds.get(k) for k in ("gt", "gte", "lt", "lte"))

    def test(x: Any) -> bool:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            return False
        return not ((gt is not None and not x > gt) or (gte is not None and not x >= gte)
                    or (lt is not None and not x < lt) or (lte is not None and not x <= lte))

    return test


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class IndexCache:
    """One `ExactIndex` per store, rebuilt when the collection changes, cached under the data home."""

    def __init__(self, store: VectorStore, folder: Path | None):
        self.store = store
        self.folder = folder
        self._index: ExactIndex | None = None
        self._lock = threading.Lock()

    def get(self) -> ExactIndex:
        """The current index (cheap when nothing changed: one stat of the store's SQLite file)."""
        stamp = _jsonable(self.store.version_stamp())
        with self._lock:
            if self._index is not None and self._index.stamp == stamp:
                return self._index
            index = ExactIndex.load(self.folder, stamp) if self.folder else None
            if index is None or len(index) != self.store.count():
                index = ExactIndex.from_store(self.store)
                index.stamp = stamp
                if self.folder:
                    try:
                        index.save(self.folder)
                    except OSError:
                        pass  # a read-only data home only costs the rebuild next time
            self._index = index
            return index
