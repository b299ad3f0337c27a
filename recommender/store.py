"""The only module that talks to `qdrant_client`.

Embedded local mode (`QdrantClient(path=...)`) by default, a server or
cluster when `RECOMMENDER_QDRANT_URL` is set; the rest of the code sees the
same `VectorStore` either way.
"""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from qdrant_client import QdrantClient, models

from recommender.errors import ModelMismatchError, NotFoundError, StoreLockedError
from recommender.settings import Settings

VECTOR_NAME = "image"
_NAMESPACE = uuid.UUID("5b0f8a36-3c1e-4f51-9d8e-6a0c5e0b1f00")


def point_id_for(content_hash: str) -> str:
    """Deterministic point id from content, so re-ingesting never duplicates."""
    return str(uuid.uuid5(_NAMESPACE, content_hash))


@dataclass
class Hit:
    """A stored point returned by a query."""

    id: str
    score: float
    payload: dict[str, Any]


class VectorStore:
    """A Qdrant collection holding one model's image vectors plus payload."""

    def __init__(self, client: QdrantClient, collection: str):
        self.client = client
        self.collection = collection

    # -- lifecycle ---------------------------------------------------------
    def close(self) -> None:
        self.client.close()

    def exists(self) -> bool:
        return self.client.collection_exists(self.collection)

    def model_name(self) -> str | None:
        """The model the collection was built with (stored as collection metadata)."""
        if not self.exists():
            return None
        info = self.client.get_collection(self.collection)
        return (info.config.metadata or {}).get("model")

    def ensure_collection(self, model: str, dim: int, keyword_fields: Iterable[str] = ()) -> None:
        """Create the collection for a model, or refuse if it was built with another."""
        if self.exists():
            existing = self.model_name()
            if existing != model:
                raise ModelMismatchError(
                    f"Collection '{self.collection}' was built with model '{existing}', not '{model}'. "
                    f"Use --model {existing}, or ingest into another collection with --collection NAME "
                    "(a model upgrade re-embeds into a new collection)."
                )
        else:
            self.client.create_collection(
                self.collection,
                vectors_config={VECTOR_NAME: models.VectorParams(size=dim, distance=models.Distance.COSINE)},
                metadata={"model": model, "dim": dim},
            )
        with warnings.catch_warnings():  # local mode ignores indexes and says so; servers use them
            warnings.simplefilter("ignore", UserWarning)
            for field in ("path", "relpath", "sha256", *keyword_fields):
                self.client.create_payload_index(self.collection, field, models.PayloadSchemaType.KEYWORD)

    # -- writes --------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        """Write points (idempotent: the same id overwrites itself)."""
        if not ids:
            return
        points = [
            models.PointStruct(id=pid, vector={VECTOR_NAME: vec.tolist()}, payload=payload)
            for pid, vec, payload in zip(ids, vectors, payloads)
        ]
        self.client.upsert(self.collection, points=points, wait=True)

    # -- reads ---------------------------------------------------------------
    def count(self) -> int:
        return self.client.count(self.collection, exact=True).count if self.exists() else 0

    def existing(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Payloads of the ids that are already stored."""
        if not ids or not self.exists():
            return {}
        records = self.client.retrieve(self.collection, ids=list(ids), with_payload=True, with_vectors=False)
        return {str(r.id): r.payload or {} for r in records}

    def get(self, point_id: str, with_vector: bool = False) -> tuple[dict[str, Any], np.ndarray | None]:
        records = self.client.retrieve(self.collection, ids=[point_id], with_payload=True, with_vectors=with_vector)
        if not records:
            raise NotFoundError(f"No item with id '{point_id}' in collection '{self.collection}'.")
        rec = records[0]
        vector = np.asarray(rec.vector[VECTOR_NAME], dtype=np.float32) if with_vector else None
        return rec.payload or {}, vector

    def find_by_path(self, path: str) -> str:
        """Point id of an ingested file, by absolute or source-relative path."""
        for field in ("path", "relpath"):
            flt = models.Filter(must=[models.FieldCondition(key=field, match=models.MatchValue(value=path))])
            records, _ = self.client.scroll(self.collection, scroll_filter=flt, limit=1, with_payload=False)
            if records:
                return str(records[0].id)
        raise NotFoundError(
            f"'{path}' is not an ingested item of collection '{self.collection}'; "
            "pass a point id or the path of an ingested file (see `recommender ingest`)."
        )

    # -- filtered reads (browse, facets, duplicate clusters) ----------------------
    def count_where(self, must: dict[str, Any] | None = None, has: Sequence[str] = ()) -> int:
        """Points matching an equality filter (server-side; no payload travels)."""
        if not self.exists():
            return 0
        return self.client.count(self.collection, count_filter=payload_filter(must, has), exact=True).count

    def scroll_where(
        self,
        must: dict[str, Any] | None = None,
        has: Sequence[str] = (),
        limit: int = 24,
        offset: str | int | None = None,
        with_payload: bool = True,
        with_vectors: bool = False,
    ) -> tuple[list[tuple[str, dict[str, Any], np.ndarray | None]], str | int | None]:
        """One page of points matching a filter, and the offset of the next page (None at the end)."""
        records, nxt = self.client.scroll(
            self.collection, scroll_filter=payload_filter(must, has), limit=limit, offset=offset,
            with_payload=with_payload, with_vectors=with_vectors,
        )
        rows = [
            (str(r.id), r.payload or {},
             np.asarray(r.vector[VECTOR_NAME], dtype=np.float32) if with_vectors else None)
            for r in records
        ]
        return rows, (str(nxt) if isinstance(nxt, uuid.UUID) else nxt)

    def facet(self, key: str, must: dict[str, Any] | None = None, limit: int = 50) -> dict[Any, int]:
        """Count of points per value of a payload field, within a filter (most frequent first)."""
        res = self.client.facet(self.collection, key, facet_filter=payload_filter(must), limit=limit, exact=True)
        return {h.value: int(h.count) for h in res.hits}

    def get_many(self, ids: Sequence[str], with_vectors: bool = False) -> list[tuple[str, dict[str, Any], np.ndarray | None]]:
        """Several points by id, in the order given (missing ids are left out)."""
        if not ids:
            return []
        records = self.client.retrieve(self.collection, ids=list(ids), with_payload=True, with_vectors=with_vectors)
        by_id = {
            str(r.id): (str(r.id), r.payload or {},
                        np.asarray(r.vector[VECTOR_NAME], dtype=np.float32) if with_vectors else None)
            for r in records
        }
        return [by_id[i] for i in map(str, ids) if i in by_id]

    def scroll(self, batch: int = 256, with_vectors: bool = False) -> Iterator[tuple[str, dict[str, Any], np.ndarray | None]]:
        """Every point, page by page (memory bounded by batch)."""
        offset = None
        while True:
            records, offset = self.client.scroll(
                self.collection, limit=batch, offset=offset, with_payload=True, with_vectors=with_vectors
            )
            for r in records:
                vec = np.asarray(r.vector[VECTOR_NAME], dtype=np.float32) if with_vectors else None
                yield str(r.id), r.payload or {}, vec
            if offset is None:
                return

    def query(
        self,
        query: str | np.ndarray,
        limit: int = 10,
        exclude_ids: Sequence[str] = (),
        must: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """Nearest neighbours of a stored point id or a vector, with equality filters."""
        conditions: list[Any] = [
            models.FieldCondition(key=k, match=models.MatchValue(value=v)) for k, v in (must or {}).items()
        ]
        flt = models.Filter(
            must=conditions or None,
            must_not=[models.HasIdCondition(has_id=list(exclude_ids))] if exclude_ids else None,
        )
        q = query.tolist() if isinstance(query, np.ndarray) else query
        res = self.client.query_points(
            self.collection, query=q, using=VECTOR_NAME, limit=limit, query_filter=flt, with_payload=True
        )
        return [Hit(str(p.id), float(p.score), p.payload or {}) for p in res.points]


def payload_filter(must: dict[str, Any] | None = None, has: Sequence[str] = ()) -> models.Filter | None:
    """Equality filter (a list value means any of) plus fields that must be present and non-empty."""
    conditions: list[Any] = []
    for key, value in (must or {}).items():
        if isinstance(value, (list, tuple, set)):
            conditions.append(models.FieldCondition(key=key, match=models.MatchAny(any=list(value))))
        else:
            conditions.append(models.FieldCondition(key=key, match=models.MatchValue(value=value)))
    must_not = [models.IsEmptyCondition(is_empty=models.PayloadField(key=k)) for k in has]
    if not conditions and not must_not:
        return None
    return models.Filter(must=conditions or None, must_not=must_not or None)


def open_store(settings: Settings) -> VectorStore:
    """Connect to the configured Qdrant (server by URL, else embedded under the data home)."""
    if settings.qdrant_url:
        client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=30)
    else:
        settings.qdrant_path.mkdir(parents=True, exist_ok=True)
        try:
            client = QdrantClient(path=str(settings.qdrant_path))
        except RuntimeError as exc:
            raise StoreLockedError(
                f"The embedded Qdrant store at '{settings.qdrant_path}' is in use by another process "
                "(a running ingest, dashboard or API). Stop it, or run a Qdrant server and set RECOMMENDER_QDRANT_URL."
            ) from exc
    return VectorStore(client, settings.collection)
