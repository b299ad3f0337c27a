"""The `Recommender`: one query API for the CLI, the REST API and the dashboard."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from recommender.decode import decode_image_bytes
from recommender.errors import NotFoundError, RecommenderError
from recommender.models import Embedder, cached_embedder
from recommender.settings import Settings
from recommender.store import VECTOR_NAME, VectorStore, open_store


@dataclass
class Result:
    """One recommended item with its score and why it was returned."""

    id: str
    path: str
    score: float
    payload: dict[str, Any]
    reason: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_filters(pairs: list[str] | None) -> dict[str, Any]:
    """Turn CLI `KEY=VALUE` pairs into an equality filter; numbers stay numbers."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RecommenderError(f"Filter '{pair}' is not KEY=VALUE (e.g. --filter genre=Landscape).")
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


class Recommender:
    """Similar-item queries over one collection, with the collection's own model for uploads."""

    def __init__(self, settings: Settings, store: VectorStore | None = None):
        self.settings = settings
        self.store = store or open_store(settings)
        if not self.store.exists():
            raise NotFoundError(
                f"Collection '{settings.collection}' does not exist yet; run `recommender ingest SOURCE` first."
            )
        self.model_name = self.store.model_name() or settings.model

    def close(self) -> None:
        self.store.close()

    def embedder(self) -> Embedder:
        """The model the collection was built with (cached per process)."""
        return cached_embedder(self.model_name, self.settings.device)

    def resolve(self, item: str) -> str:
        """A point id, or the id of an ingested file given by path."""
        if _looks_like_id(item):
            self.store.get(item)
            return item
        path = str(Path(item).expanduser().resolve()) if Path(item).expanduser().exists() else item
        return self.store.find_by_path(path)

    def similar_to_item(self, item: str, k: int = 10, filters: Mapping[str, Any] | None = None) -> list[Result]:
        """The k nearest stored items to a stored item, excluding the item itself."""
        pid = self.resolve(item)
        hits = self.store.query(pid, limit=k, exclude_ids=[pid], must=dict(filters or {}))
        return self._results(hits, "item")

    def similar_to_image(self, image: Image.Image | Path | bytes, k: int = 10,
                         filters: Mapping[str, Any] | None = None) -> list[Result]:
        """The k nearest stored items to an image that is not stored (embedded on the fly)."""
        if isinstance(image, (str, Path)):
            image = Path(image).read_bytes()
        if isinstance(image, bytes):
            image = decode_image_bytes(image, "upload", self.settings.max_image_pixels)
        vector = self.embedder().embed_images([image])[0]
        return self.similar_to_vector(vector, k, filters, kind="image")

    def similar_to_vector(self, vector: np.ndarray, k: int = 10, filters: Mapping[str, Any] | None = None,
                          kind: str = "vector") -> list[Result]:
        hits = self.store.query(vector, limit=k, must=dict(filters or {}))
        return self._results(hits, kind)

    def _results(self, hits, kind: str) -> list[Result]:
        reason = {"query": kind, "model": self.model_name, "vector": VECTOR_NAME}
        return [Result(h.id, str(h.payload.get("path", "")), round(h.score, 6), h.payload, dict(reason)) for h in hits]


def _looks_like_id(item: str) -> bool:
    import uuid

    try:
        uuid.UUID(item)
        return True
    except ValueError:
        return item.isdigit()
