"""Model upgrade without downtime: re-embed into a new collection, then switch the alias.

Queries go to the alias the whole time: they see the old generation until
the new one is complete and verified, then the new one, never a gap. An
interrupted upgrade leaves the old generation serving; re-running replaces
the partial new one.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from recommender import payload as P
from recommender.catalog import Catalog
from recommender.errors import RecommenderError
from recommender.ingest import EmbeddedChunk, EmbedSpec, SourceFile, embed_files, embedder_for
from recommender.ingest.stages import chunks
from recommender.locks import CollectionLock
from recommender.projection import projection_stage
from recommender.settings import Settings
from recommender.store import VectorStore, open_store


def reembed(settings: Settings, model: str, allow_missing: bool = False, keep_old: bool = False,
            on_batch: Callable[[int], None] | None = None, store: VectorStore | None = None) -> dict[str, Any]:
    """Re-embed every point of the collection with `model` and switch the alias to the new generation."""
    started = time.perf_counter()
    lock = CollectionLock(settings.home, settings.collection, "reembed").acquire(settings.lock_timeout)
    own_store = store is None
    store = store or open_store(settings)
    catalog = Catalog(settings.catalog_path)
    try:
        if not store.exists():
            raise RecommenderError(f"Collection '{settings.collection}' does not exist; ingest it first.")
        old_model, old_phys = store.model_name(), store.physical_name()
        spec = EmbedSpec.from_settings(settings.with_overrides(model=model, model_streams=1))  # queries go on
        embedder = embedder_for(spec)
        target = store.create_generation(embedder.name, embedder.dim)
        dest = VectorStore(store.client, target, store.attempts, store.backoff)
        dest.create_indexes(store.metadata_fields())  # declared before the writes, which build them
        by_path: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        for pid, payload, _ in store.scroll(batch=1024):
            by_path[payload.get(P.PATH, "")].append((pid, payload))
        missing: list[str] = []
        for paths in chunks(sorted(by_path), settings.chunk_items):
            chunk = embed_files([SourceFile(p, Path(p).name, 0, 0) for p in paths], spec)
            ids, vectors, payloads = _matched(chunk, by_path, missing)
            dest.upsert(ids, vectors, payloads)
            if on_batch and ids:
                on_batch(len(ids))
        if missing and not allow_missing:
            store.client.delete_collection(target)
            raise RecommenderError(
                f"{len(missing)} item(s) can't be re-embedded because their files are gone or changed "
                f"(first: {missing[0]}). Re-ingest the source first, or pass --allow-missing to drop them."
            )
        dest.optimize()  # build the new generation's index before it serves queries
        if dest.count() != store.count() - len(missing):
            raise RecommenderError(f"Re-embedded collection '{target}' is incomplete; the alias was not switched.")
        store.switch_alias(target, drop_old=not keep_old)
        catalog.set_model(settings.collection, embedder.name)
        fitted = projection_stage(store, settings)  # the old model's fit no longer applies: learn it again
        return {
            "collection": settings.collection, "from_model": old_model, "to_model": embedder.name,
            "from_collection": old_phys, "to_collection": target, "points": dest.count(),
            "dropped": missing, "seconds": round(time.perf_counter() - started, 3),
            **({"projection": fitted} if fitted else {}),
        }
    finally:
        if own_store:
            store.close()
        catalog.close()
        lock.release()



def _matched(chunk: EmbeddedChunk, by_path: dict[str, list[tuple[str, dict[str, Any]]]],
             missing: list[str]) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """Each stored point gets the new vector of the item with its content hash; points whose file is
    gone or changed go to `missing`. Ids and payloads stay (the payload names the new model)."""
    ids, rows, payloads = [], [], []
    for ef in chunk.files:
        row_of = {h: k for k, h in enumerate(ef.hashes)}
        for pid, payload in by_path[ef.file.path]:
            k = row_of.get(payload.get(P.SHA256, ""))
            if k is None or ef.vectors is None:
                missing.append(str(payload.get(P.ITEM_KEY, ef.file.path)))
                continue
            ids.append(pid)
            rows.append(ef.vectors[k])
            payloads.append({**payload, P.MODEL: chunk.model})
    return ids, (np.stack(rows) if rows else np.zeros((0, chunk.dim), np.float32)), payloads
