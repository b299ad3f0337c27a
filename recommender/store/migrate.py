"""Move a home's embedded store from qdrant-client local mode to the edge engine, losing nothing.

Every collection (each generation behind an alias), its points with their vectors and
payloads, its metadata and the aliases are copied into `home/edge.migrating`, checked point
count by point count, then that folder is renamed to `home/edge` in one step. Until the rename
the home is the old one: `store_backend=auto` keeps choosing local mode for a home with a
local-mode store and no `edge` folder, so an interrupted migration leaves it usable and a
re-run starts over. The local-mode folder is left in place (delete it once satisfied).
"""

from __future__ import annotations

import shutil
from typing import Any, Callable

from qdrant_client import QdrantClient, models

from recommender.errors import RecommenderError, StoreLockedError
from recommender.settings import Settings
from recommender.store import VectorStore
from recommender.store.edge import EdgeClient, edge_root


def has_local_store(settings: Settings) -> bool:
    """True when the home holds a local-mode store with at least one collection."""
    folder = settings.qdrant_path / "collection"
    return folder.is_dir() and any(folder.iterdir())


def migrate_local_to_edge(settings: Settings, batch: int = 512,
                          on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Copy the local-mode store under `settings.home` into an edge store; returns what was copied."""
    target = edge_root(settings)
    if target.exists():
        raise RecommenderError(f"'{target}' already exists: this home already has an edge store.")
    if not has_local_store(settings):
        raise RecommenderError(f"No local-mode store under '{settings.qdrant_path}' to migrate.")
    work = target.with_name(target.name + ".migrating")
    shutil.rmtree(work, ignore_errors=True)  # the leftover of an interrupted run
    try:
        local = QdrantClient(path=str(settings.qdrant_path))
    except RuntimeError as exc:
        raise StoreLockedError(f"The store at '{settings.qdrant_path}' is in use by another process; stop it first.") from exc
    edge = EdgeClient(work)
    copied: dict[str, int] = {}
    fields: dict[str, set[str]] = {}  # payload keys each collection's points carry: what gets an index
    try:
        for c in local.get_collections().collections:
            info = local.get_collection(c.name)
            vectors = info.config.params.vectors
            edge.create_collection(c.name, vectors_config=dict(vectors), metadata=info.config.metadata or {})
            offset, n = None, 0
            seen = fields.setdefault(c.name, set())
            while True:
                records, offset = local.scroll(c.name, limit=batch, offset=offset, with_payload=True, with_vectors=True)
                edge.upsert(c.name, points=[
                    models.PointStruct.model_construct(id=r.id, vector=r.vector, payload=r.payload or {}) for r in records])
                n += len(records)
                seen.update(*(r.payload or {} for r in records))
                if on_batch and records:
                    on_batch(len(records))
                if offset is None:
                    break
            have = edge.count(c.name).count
            if have != local.count(c.name, exact=True).count:
                raise RecommenderError(f"Migration of '{c.name}' copied {have} of {n} points; the old store is unchanged.")
            copied[c.name] = have
        aliases = [(a.alias_name, a.collection_name) for a in local.get_aliases().aliases]
        edge.update_collection_aliases(change_aliases_operations=[
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=col, alias_name=al))
            for al, col in aliases])
        physical = {al: col for al, col in aliases}
        for name in set(physical) | (set(copied) - set(physical.values())):
            store = VectorStore(edge, name)
            store.create_indexes(store.metadata_fields(), present=fields.get(physical.get(name, name), ()))
            store.optimize()
    finally:
        edge.close()
        local.close()
    work.rename(target)  # the one step that switches the home over
    return {"home": str(settings.home), "collections": copied, "aliases": dict(aliases), "edge": str(target)}
