"""Stored points' fingerprints brought up to date from their files, without re-embedding.

Why: the fingerprint has grown fields since the first ingests (the turned pHashes, a picture's frame and
its tilt), and a frame was once stored at a JPEG draft's scale. Ingest leaves unchanged files alone, and
`reembed` keeps each payload as it was, so a point stored before a field existed would never gain it:
a copy saved upside down, or the print of an askew scan, would not be found against it. This recomputes
the fields exactly as ingest computes them (the same decode options, the model's JPEG draft,
`hashing.fingerprint_payload`) and writes them with `set_payload`. Vectors, clusters and every other field
stay as they are; `recommender dedupe` then clusters the collection with the new fields.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from recommender import payload as P
from recommender.decode import DecodeError, decode_file
from recommender.dedup.hashing import fingerprint_payload, stored_size
from recommender.errors import RecommenderError
from recommender.ingest import EmbedSpec, embedder_for
from recommender.locks import CollectionLock
from recommender.progress import progress_bar
from recommender.settings import Settings
from recommender.store import VectorStore, open_store

FIELDS: tuple[str, ...] = (*P.FINGERPRINT_FIELDS, P.FRAME, P.FRAME_TILT)
"""Every payload field `fingerprint_payload` writes; a frame and a tilt are absent when there is none."""


def refingerprint(settings: Settings, everything: bool = False, store: VectorStore | None = None) -> dict[str, Any]:
    """Recompute the fingerprint fields of the points that lack one (`everything`: of every point) from
    their files; a point whose file is gone or changed is left as it is and named in `unreadable`."""
    started = time.perf_counter()
    lock = CollectionLock(settings.home, settings.collection, "refingerprint").acquire(settings.lock_timeout)
    own_store = store is None
    store = store or open_store(settings)
    try:
        if not store.exists():
            raise RecommenderError(f"Collection '{settings.collection}' does not exist; ingest it first.")
        todo: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        points = 0
        for pid, payload, _ in store.scroll(batch=1024):
            points += 1
            if everything or any(f not in payload for f in P.FINGERPRINT_FIELDS):
                todo[str(payload.get(P.PATH, ""))].append((pid, payload))
        spec = EmbedSpec.from_settings(settings.with_overrides(model=store.model_name() or settings.model))
        draft = embedder_for(spec).decode_size if spec.jpeg_draft and todo else None  # ingest's decode, draft included
        options = dataclasses.replace(spec.decode, draft_size=draft)
        updated, unreadable = 0, []
        with progress_bar(len(todo), enabled=settings.progress, label="refingerprint") as advance:
            for path in sorted(todo):
                updated += _refresh(store, path, todo[path], options, unreadable)
                advance(1)
        return {"collection": settings.collection, "points": points,
                "checked": sum(len(v) for v in todo.values()), "updated": updated, "unreadable": unreadable,
                "seconds": round(time.perf_counter() - started, 3)}
    finally:
        if own_store:
            store.close()
        lock.release()


def _refresh(store: VectorStore, path: str, stored: list[tuple[str, dict[str, Any]]], options: Any,
             unreadable: list[dict[str, str]]) -> int:
    """Write the new fingerprint of each stored point of one file (matched by content hash); the number
    of points whose fields changed."""
    try:
        items = {item.content_hash: item for item in decode_file(Path(path), options=options)}
    except DecodeError as exc:
        unreadable.extend({P.PATH: path, "id": pid, "reason": exc.reason} for pid, _ in stored)
        return 0
    changed = 0
    for pid, payload in stored:
        item = items.get(str(payload.get(P.SHA256, "")))
        if item is None:
            unreadable.append({P.PATH: path, "id": pid, "reason": "the file changed since it was ingested "
                               "(run ingest to store its new content)"})
            continue
        new = fingerprint_payload(item.image, item.content_hash, stored_size(item.payload))
        gone = [f for f in FIELDS if f in payload and f not in new]
        if gone:
            store.delete_payload_keys([pid], gone)
        if gone or any(payload.get(k) != v for k, v in new.items()):
            store.set_payload([pid], new)
            changed += 1
    return changed
