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

from recommender.catalog import Catalog
from recommender.decode import DecodeError, decode_file
from recommender.errors import RecommenderError
from recommender.locks import CollectionLock
from recommender.models import create_embedder
from recommender.settings import Settings
from recommender.store import VectorStore, open_store


def reembed(settings: Settings, model: str, allow_missing: bool = False, keep_old: bool = False,
            on_batch: Callable[[int], None] | None = None, store: VectorStore | None = None) -> dict[str, Any]:
    """Re-embed every point of the collection with `model` and switch the alias to the new generation."""
    started = time.perf_counter()
    lock = CollectionLock(settings.home, settings.collection).acquire(settings.lock_timeout)
    own_store = store is None
    store = store or open_store(settings)
    catalog = Catalog(settings.catalog_path)
    try:
        if not store.exists():
            raise RecommenderError(f"Collection '{settings.collection}' does not exist; ingest it first.")
        old_model, old_phys = store.model_name(), store.physical_name()
        embedder = create_embedder(model, settings.device).configure(settings.batch_size, streams=1)  # one caller
        target = store.create_generation(embedder.name, embedder.dim)
        dest = VectorStore(store.client, target, store.attempts, store.backoff)
        by_path: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        for pid, payload, _ in store.scroll(batch=1024):
            by_path[payload.get("path", "")].append((pid, payload))
        missing: list[str] = []
        buffer: tuple[list, list, list] = ([], [], [])
        for path, points in by_path.items():
            for part, values in zip(buffer, _decode_again(path, points, embedder.name, settings, missing)):
                part.extend(values)
            if len(buffer[0]) >= embedder.max_batch:
                _flush(buffer, embedder, dest, on_batch)
        _flush(buffer, embedder, dest, on_batch)
        if missing and not allow_missing:
            store.client.delete_collection(target)
            raise RecommenderError(
                f"{len(missing)} item(s) can't be re-embedded because their files are gone or changed "
                f"(first: {missing[0]}). Re-ingest the source first, or pass --allow-missing to drop them."
            )
        dest.create_indexes(_keyword_fields(by_path))
        if dest.count() != store.count() - len(missing):
            raise RecommenderError(f"Re-embedded collection '{target}' is incomplete; the alias was not switched.")
        store.switch_alias(target, drop_old=not keep_old)
        catalog.set_model(settings.collection, embedder.name)
        return {
            "collection": settings.collection, "from_model": old_model, "to_model": embedder.name,
            "from_collection": old_phys, "to_collection": target, "points": dest.count(),
            "dropped": missing, "seconds": round(time.perf_counter() - started, 3),
        }
    finally:
        if own_store:
            store.close()
        catalog.close()
        lock.release()


def _decode_again(path: str, points: list[tuple[str, dict[str, Any]]], model: str, settings: Settings,
                  missing: list[str]) -> tuple[list, list, list]:
    """Decode one file again; its items keep their ids and payload (with the new model's name)."""
    try:
        items = {it.content_hash: it for it in decode_file(Path(path), settings.max_image_pixels)}
    except (DecodeError, OSError):
        items = {}
    ids, images, payloads = [], [], []
    for pid, payload in points:
        item = items.get(payload.get("sha256", ""))
        if item is None:
            missing.append(str(payload.get("item_key", path)))
            continue
        ids.append(pid)
        images.append(item.image)
        payloads.append({**payload, "model": model})
    return ids, images, payloads


def _flush(buffer: tuple[list, list, list], embedder, dest: VectorStore, on_batch) -> None:
    ids, images, payloads = buffer
    if ids:
        dest.upsert(ids, embedder.embed_images(images), payloads)
        if on_batch:
            on_batch(len(ids))
    for part in buffer:
        part.clear()


def _keyword_fields(by_path: dict[str, list[tuple[str, dict[str, Any]]]]) -> list[str]:
    first = next((pts[0][1] for pts in by_path.values() if pts), {})
    return sorted(k for k, v in first.items() if isinstance(v, str) and k not in ("path", "relpath", "sha256"))
