"""The embedded store on Qdrant's own engine, in process (`qdrant-edge-py`).

Why: qdrant-client's local mode loads every vector into Python at open and searches by
brute force; the edge engine is the Qdrant server's engine as a library: HNSW (m 16,
ef_construct 100), int8 scalar quantization, original vectors memory-mapped (read only to
score candidates), payload indexes, a write-ahead log.

Two named vectors per point (layout 2, every collection created since): the model's vector
(`image`, float32 on disk, no graph) and a 128-d PCA of it (`search`, HNSW + int8), see
`reduce.py`. A query walks the `search` graph for a pool of candidates and scores them by the
model's vectors (the engine's prefetch), so scores are the raw cosines. Until a collection has a
basis (fitted by `optimize` once it holds `reduce.MIN_FIT` points) queries scan the raw vectors.
Collections created before (no `layout` in meta.json) keep one HNSW vector as they were built.

`EdgeClient` implements the part of the `QdrantClient` API that `VectorStore` calls, so the
store class, its retries and its filter translation are shared with the server backend and
nothing outside this package can tell the engines apart. What the engine lacks is kept here
in small files: collections (one shard folder each, with a `meta.json` for the collection
metadata), aliases (`aliases.json`, replaced atomically) and grouped queries (a wider query
grouped in Python).

Layout under `home/qdrant/edge`: `aliases.json`, `collections/<name>/meta.json`,
`collections/<name>/shard/` (the engine's segments and WAL). A shard is locked by the
process that opened it, as local mode's folder is.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Sequence

import numpy as np
import qdrant_edge as E
from qdrant_client import models

from recommender import payload as P
from recommender.errors import NotFoundError, StoreLockedError
from recommender.store.reduce import FIT_SAMPLE, MIN_FIT, SEARCH_DIM, SearchBasis, fit_basis

HNSW_M, HNSW_EF_CONSTRUCT, FULL_SCAN_KB = 16, 100, 10_000
PAYLOAD_M: int | None = None  # links per point within each value of a filtered field (None: HNSW_M)
HNSW_EF, OVERSAMPLING = 64, 2.0  # ef 64 + int8 rescored from 2x candidates (store_scale.py)
FILTERED_EF_FACTOR = 8  # filtered walks need a wider beam: ef 512 (1M, 10 % filter: recall@10 0.913; store_scale.py)
FILTERED_OVERSAMPLING = OVERSAMPLING  # int8 candidates rescored per hit on a filtered walk
FILTERED_ACORN: float | None = None  # ACORN (neighbours of filtered-out neighbours) up to this filter selectivity; None = off
MAX_DROP_IN_PYTHON = 256
LAYOUT = 2  # meta.json "layout" of new collections: model vector + PCA search vector (absent: one vector)
SEARCH_VECTOR = "search"
PREFETCH_RESCORE = False  # the pool is scored by the raw vectors anyway: int8 order is enough to pick it
_SCHEMA = {
    "keyword": E.PayloadSchemaType.Keyword, "integer": E.PayloadSchemaType.Integer,
    "float": E.PayloadSchemaType.Float, "bool": E.PayloadSchemaType.Bool,
    "datetime": E.PayloadSchemaType.Datetime, "text": E.PayloadSchemaType.Text,
    "uuid": E.PayloadSchemaType.Uuid, "geo": E.PayloadSchemaType.Geo,
}


def _index_params(kind: str, field: str) -> Any:
    """A payload index kept on disk (memory-mapped) where the engine can, with per-value HNSW links
    only for the fields similarity queries are filtered by (`payload.searched_by_filter`).

    Why on disk: the engine reads every in-memory index whole when it opens a shard, and these
    (paths, hashes, run ids: one value per point) were most of what a one-off command paid at open;
    filtered queries run as fast once the pages are cached ("Embedded store at scale" in
    docs/benchmarks.md)."""
    graph = P.searched_by_filter(field)
    params = {"keyword": lambda: E.KeywordIndexParams(on_disk=True, enable_hnsw=graph),
              "integer": lambda: E.IntegerIndexParams(lookup=True, range=True, on_disk=True, enable_hnsw=graph),
              "float": lambda: E.FloatIndexParams(on_disk=True, enable_hnsw=graph),
              "datetime": lambda: E.DatetimeIndexParams(on_disk=True, enable_hnsw=graph),
              "uuid": lambda: E.UuidIndexParams(on_disk=True, enable_hnsw=graph),
              "bool": lambda: E.BoolIndexParams(on_disk=True, enable_hnsw=graph)}.get(kind)
    return params() if params else _SCHEMA[kind]


def edge_root(settings: Any) -> Path:
    """Folder of the embedded edge store: inside the embedded store's folder (`home/qdrant`), which
    local mode also uses; the two never share files (local mode keeps `collection/` and `meta.json`)."""
    return Path(settings.qdrant_path) / "edge"


def search_size(meta: dict[str, Any]) -> int:
    """Dimension of a layout-2 collection's search vector: `reduce.SEARCH_DIM` (or the model's, if
    smaller) until a fit chooses the full vector (`search_dim` in meta.json). The one place that
    default is written."""
    return int(meta.get("search_dim") or min(meta["dim"], SEARCH_DIM))


def edge_config(dim: int, vector: str, layout: int = 1, search_dim: int = 0) -> E.EdgeConfig:
    """The shard configuration. Layout 1: the model's vector with HNSW + int8 codes, float32
    originals on disk for rescoring. Layout 2: the model's vector on disk without a graph (read to
    score candidates) and the `search` vector (`search_dim`, see `search_size`) with HNSW + int8 codes.

    The int8 codes are memory-mapped and read on demand (`Memory.Cold`). Why: the engine drops a
    shard's files from the page cache when it closes the shard, so with the codes copied into the
    process (`Pinned`) or populated into the map (`Cached`) every fresh process (a CLI call, an API
    worker) read all of them from disk at open (64 MB at 50k points, 1.3 GB at 1M) before its first
    answer. Read on demand, a one-off query reads only the pages of the vectors it visits; a
    long-lived process (API, dashboard) asks the OS to read the rest in the background
    (`prefetch_index_files`)."""
    quant = E.ScalarQuantizationConfig(type=E.ScalarType.Int8, quantile=0.99, memory=E.Memory.Cold)
    hnsw = E.HnswIndexConfig(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=FULL_SCAN_KB,
                             payload_m=PAYLOAD_M)
    if layout == 1:
        vectors = {vector: E.EdgeVectorParams(size=dim, distance=E.Distance.Cosine, memory=E.Memory.Cold,
                                              quantization_config=quant)}
    else:
        no_graph = E.HnswIndexConfig(m=0, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=FULL_SCAN_KB)
        vectors = {vector: E.EdgeVectorParams(size=dim, distance=E.Distance.Cosine, memory=E.Memory.Cold,
                                              hnsw_config=no_graph),
                   SEARCH_VECTOR: E.EdgeVectorParams(size=search_dim, distance=E.Distance.Cosine,
                                                     memory=E.Memory.Cold, quantization_config=quant)}
    return E.EdgeConfig(vectors=vectors, hnsw_config=hnsw)


INDEX_FILES = ("collections/*/shard/segments/*/vector_storage-*/quantized.data",
               "collections/*/shard/segments/*/vector_index-*/*")
# What else a query reads: the id tracker, the stored payloads it returns and the payload indexes its filter uses.
QUERY_FILES = ("collections/*/shard/segments/*/id_tracker.*",
               "collections/*/shard/segments/*/payload_storage/*",
               "collections/*/shard/segments/*/payload_index/*/*")
ORIGINAL_FILES = ("collections/*/shard/segments/*/vector_storage-*/matrix.dat",)  # float32 originals, read to rescore
ORIGINALS_SHARE_OF_FREE_MEMORY = 0.5
_CHUNK = 8 << 20


def prefetch_index_files(root: Path, read: bool = False) -> int:
    """Bring the files a query reads into the page cache: the int8 codes, the HNSW graphs, the id
    tracker, the payloads and payload indexes, and the float32 originals that rescoring reads when
    they take at most half of the memory now available. Returns the bytes asked for.

    Why: the engine maps its files and reads on demand, so a fresh process's queries wait on the
    disk, and rescoring reads ~22 random originals per query ("Embedded store at scale" in
    docs/benchmarks.md: 1M served at p50 5.6 ms once these are cached). `read=False` only asks
    the OS (posix_fadvise WILLNEED, returns at once); `read=True` reads each file through (what the background thread of a long-lived process does,
    so that its page cache is warm when it returns). Any process may call it, owner or not; pages
    live in the shared page cache, not in this process. A file the engine lays out differently is
    simply not prefetched (queries stay correct, the first ones slower)."""
    paths = [p for pattern in (*INDEX_FILES, *QUERY_FILES) for p in Path(root).glob(pattern) if p.is_file()]
    originals = [p for pattern in ORIGINAL_FILES for p in Path(root).glob(pattern)]
    if sum(_size(p) for p in originals) <= ORIGINALS_SHARE_OF_FREE_MEMORY * _available_memory():
        paths += originals
    asked = 0
    buf = bytearray(_CHUNK) if read else None
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # replaced by an optimize in between
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            asked += os.fstat(fd).st_size
            while buf is not None and os.readv(fd, [buf]) > 0:
                pass
        except OSError:
            continue
        finally:
            os.close(fd)
    return asked


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _available_memory() -> int:
    """MemAvailable from /proc/meminfo (0 where there is none: then no originals are prefetched)."""
    try:
        for row in Path("/proc/meminfo").read_text().splitlines():
            if row.startswith("MemAvailable:"):
                return int(row.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _atomic_json(path: Path, data: Any) -> None:
    """Write JSON so a crash leaves either the old file or the new one, never half of one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _id(value: Any) -> str | int:
    return value if isinstance(value, int) else str(value)


class EdgeClient:
    """The `QdrantClient` methods `VectorStore` uses, answered by edge shards under `root`."""

    is_edge = True

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "collections").mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, E.EdgeShard] = {}
        self._lock = threading.RLock()  # guards the open-shard table and the JSON files, not the engine
        self._aliases_path = self.root / "aliases.json"
        self._alias_cache: dict[str, str] | None = None
        self._bases: dict[str, SearchBasis | None] = {}  # physical collection -> its search basis (layout 2)
        self._layouts: dict[str, tuple[int, str]] = {}  # physical collection -> (layout, model vector name)
        self._write_lock = threading.RLock()  # upserts wait while a basis is fitted (every point gets a search vector)
        try:
            for name in self._names():  # lock every shard now: a second process fails at open, as in local mode
                self._shard(name)
        except BaseException:
            self.close()  # release the shards already locked
            raise

    # -- collections, metadata, aliases ---------------------------------------
    def _dir(self, name: str) -> Path:
        return self.root / "collections" / name

    def _names(self) -> list[str]:
        return sorted(p.name for p in (self.root / "collections").iterdir() if (p / "meta.json").exists())

    def _aliases(self) -> dict[str, str]:
        """Read once: the shard locks keep other processes out, so only this object changes the file."""
        if self._alias_cache is None:
            self._alias_cache = json.loads(self._aliases_path.read_text()) if self._aliases_path.exists() else {}
        return dict(self._alias_cache)

    def _write_aliases(self, aliases: dict[str, str]) -> None:
        _atomic_json(self._aliases_path, aliases)
        self._alias_cache = dict(aliases)

    def _resolve(self, name: str) -> str:
        return self._aliases().get(name, name)

    def _meta(self, name: str) -> dict[str, Any]:
        path = self._dir(self._resolve(name)) / "meta.json"
        if not path.exists():
            raise NotFoundError(f"Collection '{name}' does not exist.")
        return json.loads(path.read_text())

    def _layout(self, name: str) -> tuple[int, str]:
        """(layout, name of the model's vector), read from meta.json once per collection."""
        physical = self._resolve(name)
        if physical not in self._layouts:
            meta = self._meta(physical)
            self._layouts[physical] = (int(meta.get("layout", 1)), meta["vector"])
        return self._layouts[physical]

    def _shard(self, name: str) -> E.EdgeShard:
        with self._lock:  # resolve and open as one step: an alias switch can't drop the target in between
            physical = self._resolve(name)
            shard = self._shards.get(physical)
            if shard is None:
                try:
                    shard = self._load(physical)
                except Exception as exc:
                    if "WouldBlock" in str(exc):
                        raise StoreLockedError(
                            f"The embedded store at '{self.root}' is in use by another process (a running ingest, "
                            "dashboard or API). Stop it, or run a Qdrant server and set RECOMMENDER_QDRANT_URL."
                        ) from exc
                    raise
                self._shards[physical] = shard
            return shard

    def _load(self, physical: str) -> E.EdgeShard:
        """Open a shard with the configuration meta.json records. A layout-2 shard whose search vector
        was resized by a fit that stopped before recording it opens with the other size, and the
        record is corrected (the fit is redone: its basis file is written last)."""
        meta, folder = self._meta(physical), str(self._dir(physical) / "shard")
        layout = meta.get("layout", 1)
        try:
            return E.EdgeShard.load(folder, edge_config(meta["dim"], meta["vector"], layout, search_size(meta)))
        except Exception as exc:
            if layout < 2 or "ncompatible" not in str(exc):
                raise
            reduced = search_size({"dim": meta["dim"]})
            other = meta["dim"] if search_size(meta) == reduced else reduced
            shard = E.EdgeShard.load(folder, edge_config(meta["dim"], meta["vector"], layout, other))
            (self._dir(physical) / "search_basis.npz").unlink(missing_ok=True)
            _atomic_json(self._dir(physical) / "meta.json", {**meta, "search_dim": other})
            return shard

    def collection_exists(self, name: str) -> bool:
        return (self._dir(self._resolve(name)) / "meta.json").exists()

    def get_collection(self, name: str) -> Any:
        meta = self._meta(name)  # first: a missing collection raises NotFoundError without opening a shard
        return SimpleNamespace(config=SimpleNamespace(metadata=meta.get("metadata", {})),
                               payload_schema={k: str(getattr(v, "data_type", "")) for k, v in
                                               self._shard(name).info().payload_schema.items()})

    def create_collection(self, name: str, vectors_config: dict[str, models.VectorParams],
                          metadata: dict[str, Any] | None = None, **_: Any) -> bool:
        ((vector, params),) = vectors_config.items()
        folder = self._dir(name)
        with self._lock:
            if folder.exists():
                shutil.rmtree(folder)  # a half-created leftover (meta.json is written last)
            folder.mkdir(parents=True)
            self._shards[name] = E.EdgeShard.create(str(folder / "shard"), edge_config(params.size, vector, LAYOUT,
                                                                                    search_size({"dim": params.size})))
            self._bases.pop(name, None)
            self._layouts.pop(name, None)
            _atomic_json(folder / "meta.json", {"dim": params.size, "vector": vector, "layout": LAYOUT,
                                                "metadata": metadata or {}})
        return True

    def update_collection(self, name: str, metadata: dict[str, Any] | None = None, **_: Any) -> bool:
        with self._lock:
            meta = self._meta(name)
            meta["metadata"] = {**meta.get("metadata", {}), **(metadata or {})}
            _atomic_json(self._dir(self._resolve(name)) / "meta.json", meta)
        return True

    def delete_collection(self, name: str, **_: Any) -> bool:
        with self._lock:
            # Not closed here: a query that resolved the alias just before a switch may still be using
            # it; the engine closes it when the last reference goes (its files stay readable until then).
            self._shards.pop(name, None)
            self._bases.pop(name, None)
            self._layouts.pop(name, None)
            aliases = {a: c for a, c in self._aliases().items() if c != name}
            self._write_aliases(aliases)
            folder = self._dir(name)
            if (folder / "meta.json").exists():
                (folder / "meta.json").unlink()  # first, so an interrupted delete leaves no half collection
            shutil.rmtree(folder, ignore_errors=True)
        return True

    def get_aliases(self) -> Any:
        return SimpleNamespace(aliases=[SimpleNamespace(alias_name=a, collection_name=c) for a, c in self._aliases().items()])

    def update_collection_aliases(self, change_aliases_operations: Sequence[Any], **_: Any) -> bool:
        """All operations land in one atomic file replace: readers see the old alias or the new one."""
        with self._lock:
            aliases = self._aliases()
            for op in change_aliases_operations:
                if isinstance(op, models.DeleteAliasOperation):
                    aliases.pop(op.delete_alias.alias_name, None)
                elif isinstance(op, models.CreateAliasOperation):
                    aliases[op.create_alias.alias_name] = op.create_alias.collection_name
            self._write_aliases(aliases)
        return True

    def create_payload_index(self, collection_name: str, field_name: str, field_schema: Any = None, **_: Any) -> None:
        shard = self._shard(collection_name)
        if field_name not in shard.info().payload_schema:
            kind = getattr(field_schema, "value", field_schema)
            shard.update(E.UpdateOperation.create_field_index(field_name, _index_params(str(kind), field_name)))

    def optimize(self, name: str) -> bool:
        """Fit the search basis if the collection is due one, merge segments and build HNSW +
        quantization (blocking; call it off the query path), then flush, so the next open loads the
        built segments instead of replaying the write-ahead log."""
        fitted = self._fit_search(name)
        shard = self._shard(name)
        changed = shard.optimize()
        shard.flush()
        return changed or fitted

    # -- the search vector (layout 2) ------------------------------------------
    def _basis(self, name: str) -> SearchBasis | None:
        """The collection's search basis, or None (layout 1, or not fitted yet: queries scan)."""
        physical = self._resolve(name)
        if physical not in self._bases:
            self._bases[physical] = SearchBasis.load(self._dir(physical) / "search_basis.npz")
        return self._bases[physical]

    def _fit_search(self, name: str) -> bool:
        """Fit the basis once the collection holds `reduce.MIN_FIT` points and give every point its
        search vector. The basis file is written last, so a crash in between leaves a collection
        that scans (correct, slower) and is fitted again by the next optimize."""
        layout, vector = self._layout(name)
        if layout < 2 or self._basis(name) is not None:
            return False
        count = self.count(name).count
        if count < MIN_FIT:
            return False
        with self._write_lock:
            sample, _ = self._shard(name).scroll(E.ScrollRequest(limit=FIT_SAMPLE, with_payload=False,
                                                                 with_vector=[vector]))
            basis = fit_basis(np.array([r.vector[vector] for r in sample], dtype=np.float32), count)
            if basis.dim != search_size(self._meta(name)):
                self._resize_search(name, basis.dim)
            offset = None
            while True:
                recs, offset = self._shard(name).scroll(E.ScrollRequest(
                    offset=offset, limit=1024, with_payload=False, with_vector=[vector]))
                if recs:
                    y = basis.project(np.array([r.vector[vector] for r in recs], dtype=np.float32))
                    self._shard(name).update(E.UpdateOperation.update_vectors(
                        [E.PointVectors(r.id, {SEARCH_VECTOR: v}) for r, v in zip(recs, y)]))
                if offset is None:
                    break
            self._shard(name).flush()
            physical = self._resolve(name)
            basis.save(self._dir(physical) / "search_basis.npz")
            self._bases[physical] = basis
        return True

    def _resize_search(self, name: str, size: int) -> None:
        """Give the search vector another dimension (a full basis: the model's), then reopen the shard
        so the new vector gets its int8 codes. Called under the write lock, at the end of a run."""
        physical = self._resolve(name)
        shard = self._shard(name)
        shard.update(E.UpdateOperation.delete_vector_name(SEARCH_VECTOR))
        shard.update(E.UpdateOperation.create_dense_vector(SEARCH_VECTOR, size, E.Distance.Cosine))
        shard.flush()
        with self._lock:
            _atomic_json(self._dir(physical) / "meta.json", {**self._meta(physical), "search_dim": size})
            self._shards.pop(physical, None)
            shard.close()
        self._shard(name)

    def search_info(self, name: str) -> dict[str, Any]:
        """What a query walks: the layout, and for a fitted basis its dimension, pool and self-check."""
        layout = self._layout(name)[0]
        basis = self._basis(name) if layout >= 2 else None
        if basis is None:
            return {"layout": layout, "search": "hnsw" if layout == 1 else "scan"}
        return {"layout": layout, "search": "full" if basis.full else "pca", "dim": basis.dim, "pool": basis.pool,
                "fitted_on": basis.fitted_on, "sample_recall": round(basis.recall, 4)}

    def version_stamp(self, name: str) -> tuple:
        """Size and mtime of the shard's files. Only this process can write the
        shard (it holds the lock), and `VectorStore` counts its own writes, so this is a backstop."""
        folder = self._dir(self._resolve(name)) / "shard"
        stats = []
        for p in folder.rglob("*") if folder.exists() else ():
            try:
                stats.append(p.stat())
            except OSError:  # a temporary file the optimizer just removed
                continue
        return (sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0))

    def prefetch(self, read: bool = False) -> int:
        return prefetch_index_files(self.root, read)

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.flush()  # a flushed shard opens without replaying its write-ahead log
                shard.close()
            self._shards.clear()

    # -- writes --------------------------------------------------------------
    def upsert(self, collection_name: str, points: Sequence[models.PointStruct], **_: Any) -> None:
        """Points with their search vectors when the collection has a basis (projected here, in one batch)."""
        with self._write_lock:
            basis = self._basis(collection_name)
            if basis is None:
                edge_points = [E.Point(p.id, p.vector, p.payload or {}) for p in points]
            else:
                vector = self._layout(collection_name)[1]
                raw = np.asarray([p.vector[vector] for p in points], dtype=np.float32)
                edge_points = [E.Point(p.id, {vector: v, SEARCH_VECTOR: y}, p.payload or {})
                               for p, v, y in zip(points, raw, basis.project(raw))]
            self._shard(collection_name).update(E.UpdateOperation.upsert_points(edge_points))

    def delete(self, collection_name: str, points_selector: models.PointIdsList, **_: Any) -> None:
        with self._write_lock:  # not between a fit's scroll and its vector updates
            self._shard(collection_name).update(E.UpdateOperation.delete_points(list(points_selector.points)))

    def set_payload(self, collection_name: str, payload: dict[str, Any], points: Sequence[Any], **_: Any) -> None:
        self._shard(collection_name).update(E.UpdateOperation.set_payload(list(points), payload))

    def delete_payload(self, collection_name: str, keys: Sequence[str], points: Sequence[Any], **_: Any) -> None:
        self._shard(collection_name).update(E.UpdateOperation.delete_payload(list(points), list(keys)))

    # -- reads ---------------------------------------------------------------
    def _model_vector(self, name: str, with_vectors: Any) -> Any:
        """`with_vectors=True` asks for the model's vector only: the search vector is the store's own."""
        return [self._layout(name)[1]] if with_vectors is True else with_vectors

    def count(self, collection_name: str, count_filter: models.Filter | None = None, exact: bool = True) -> Any:
        return SimpleNamespace(count=self._shard(collection_name).count(
            E.CountRequest(exact=True, filter=to_edge_filter(count_filter))))

    def retrieve(self, collection_name: str, ids: Sequence[Any], with_payload: bool = True,
                 with_vectors: Any = False) -> list[Any]:
        recs = self._shard(collection_name).retrieve(list(ids), with_payload=with_payload,
                                                     with_vector=self._model_vector(collection_name, with_vectors))
        return [_record(r) for r in recs]

    def scroll(self, collection_name: str, scroll_filter: models.Filter | None = None, limit: int = 10,
               offset: Any = None, with_payload: bool = True, with_vectors: Any = False) -> tuple[list[Any], Any]:
        recs, nxt = self._shard(collection_name).scroll(E.ScrollRequest(
            offset=offset, limit=limit, filter=to_edge_filter(scroll_filter),
            with_payload=with_payload, with_vector=self._model_vector(collection_name, with_vectors)))
        return [_record(r) for r in recs], (None if nxt is None else _id(nxt))

    def facet(self, collection_name: str, key: str, facet_filter: models.Filter | None = None,
              limit: int = 10, exact: bool = True) -> Any:
        """Counts per value; a field without a payload index is counted from a payload scroll."""
        shard = self._shard(collection_name)
        if key in shard.info().payload_schema:
            res = shard.facet(E.FacetRequest(key=key, limit=limit, exact=True, filter=to_edge_filter(facet_filter)))
            return SimpleNamespace(hits=[SimpleNamespace(value=h.value, count=h.count) for h in res.hits])
        counts: dict[Any, int] = {}
        offset = None
        while True:
            recs, offset = self.scroll(collection_name, facet_filter, 1024, offset, with_payload=True)
            for r in recs:
                values = r.payload.get(key)
                for v in values if isinstance(values, list) else [values]:
                    if isinstance(v, (str, int, bool)):
                        counts[v] = counts.get(v, 0) + 1
            if offset is None:
                break
        top = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:limit]
        return SimpleNamespace(hits=[SimpleNamespace(value=v, count=c) for v, c in top])

    def query_points(self, collection_name: str, query: Any, using: str, limit: int = 10, offset: int = 0,
                     query_filter: models.Filter | None = None, score_threshold: float | None = None,
                     with_payload: bool = True, with_vectors: Any = False,
                     search_params: models.SearchParams | None = None, **_: Any) -> Any:
        """Excluded ids (the query item, examples, `exclude_ids`) are dropped from a slightly longer
        answer rather than sent as a has-id filter: the engine's filtered HNSW path costs ~1.5 ms
        more per query at 10k x 1280 than the plain one, and a few extra hits cost nothing."""
        request, keep, shard = self._request(collection_name, query, using, limit, offset, query_filter,
                                             score_threshold, with_payload, with_vectors, search_params)
        return keep(shard.query(request))

    def query_batch_points(self, collection_name: str, requests: Sequence[models.QueryRequest],
                           **_: Any) -> list[Any]:
        """qdrant-client's batch query: one answer per request, in order, as `query_points` gives it.

        Why: the engine plans a batch as one pass over the segments. An ingest checks each new item
        against the store before the collection has its index (built once, at the end of the run),
        so every query scans; 2,048 such queries on brain-mri (6,593 points, 1,280-d) took 3.4 s
        one by one and 1.3 s as batches, with the same answers (docs/benchmarks_dedup.md)."""
        with self._lock:  # every request of the batch on one generation of an alias
            built = [self._request(collection_name, r.query, r.using, r.limit or 10, r.offset or 0, r.filter,
                                   r.score_threshold, True if r.with_payload is None else r.with_payload,
                                   r.with_vector or False, r.params) for r in requests]
        if not built:
            return []
        answers = built[0][2].query_batch(E.QueryBatchRequest(queries=[q for q, _, _ in built]))
        return [keep(points) for (_, keep, _), points in zip(built, answers)]

    def _request(self, collection_name: str, query: Any, using: str, limit: int, offset: int,
                 query_filter: models.Filter | None, score_threshold: float | None, with_payload: bool,
                 with_vectors: Any, search_params: models.SearchParams | None) -> tuple[Any, Any, E.EdgeShard]:
        """The engine's request for one qdrant-client query, the function that turns the engine's points
        into `query_points`' answer (excluded ids dropped, the offset applied), and the shard to ask.

        The alias is resolved once: the examples' vectors, the layout, the search basis and the shard all
        come from one generation, so a re-embed switching the alias mid-query cannot send one model's
        vector to another model's collection (it did: "expected dim: 2048, got 1280")."""
        with self._lock:
            physical = self._resolve(collection_name)
            shard = self._shard(physical)
            layout = self._layout(physical)[0]
            basis = None if (search_params and search_params.exact) or layout < 2 else self._basis(physical)
            with_vector = self._model_vector(physical, with_vectors)
        pos, neg, mentioned = self._examples(shard, query, using)
        recommend = isinstance(query, models.RecommendQuery)
        query_filter, excluded = _split_excluded(query_filter)
        drop = {str(i) for i in [*mentioned, *excluded]}
        if len(drop) > MAX_DROP_IN_PYTHON:
            flt, drop = to_edge_filter(query_filter, extra_must_not=[E.HasIdCondition(drop)]), set()
        else:
            flt = to_edge_filter(query_filter)
        start, fetch = offset or 0, (offset or 0) + limit + len(drop)
        exact = bool(search_params and search_params.exact)
        prefetches = None
        if basis is not None:  # candidates from the search graph, scored by the model's vectors
            pool = max(basis.pool, 2 * fetch)
            prefetches = [E.Prefetch(limit=pool, filter=flt, params=_search_params(flt is not None, pool, PREFETCH_RESCORE),
                                     query=_edge_query(_project(basis, pos), _project(basis, neg), recommend, SEARCH_VECTOR))]
            params = None
        elif exact or layout >= 2:  # layout 2 without a basis: the model's vectors have no graph, scan them
            params = E.SearchParams(exact=True)
        else:
            params = _search_params(flt is not None, fetch)
        request = E.QueryRequest(
            limit=fetch, query=_edge_query(pos, neg, recommend, using), prefetches=prefetches, filter=flt,
            score_threshold=score_threshold, with_payload=with_payload,
            with_vector=with_vector, params=params)

        def keep(pts: Sequence[Any]) -> Any:
            kept = [p for p in pts if str(p.id) not in drop][start:start + limit]
            return SimpleNamespace(points=[
                SimpleNamespace(id=_id(p.id), score=p.score, payload=p.payload or {}, vector=p.vector) for p in kept])
        return request, keep, shard

    def query_points_groups(self, collection_name: str, group_by: str, query: Any, using: str, limit: int = 10,
                            group_size: int = 1, **kwargs: Any) -> Any:
        """Qdrant's grouped query: best groups first, at most group_size hits each, points without a
        value in no group, a list value in each of its groups. The engine has none: a wider query,
        widened until enough groups fill or the collection is exhausted, grouped here."""
        total = self.count(collection_name, kwargs.get("query_filter")).count
        fetch = max(64, 4 * limit * group_size)
        while True:
            pts = self.query_points(collection_name, query, using, limit=fetch, **kwargs).points
            groups: dict[Any, list[Any]] = {}
            for p in pts:
                value = p.payload.get(group_by)
                for v in value if isinstance(value, list) else [value]:
                    if isinstance(v, (str, int)):  # bool is an int
                        hits = groups.setdefault(v, [])
                        if len(hits) < group_size:
                            hits.append(p)
            full = sum(len(h) >= group_size for h in list(groups.values())[:limit])
            if len(pts) < fetch or fetch >= total or (len(groups) >= limit and full >= limit):
                break
            fetch *= 4
        chosen = list(groups.items())[:limit]  # dicts keep first-seen order: groups by their best hit
        return SimpleNamespace(groups=[SimpleNamespace(id=g, hits=h) for g, h in chosen])

    def _examples(self, shard: E.EdgeShard, query: Any, using: str) -> tuple[list[Any], list[Any], list[Any]]:
        """Positive and negative example vectors of a qdrant_client query input, and the point ids
        among them: ids become their vectors and are excluded from the results (the server's rule
        for examples given by id)."""
        if isinstance(query, models.RecommendQuery):
            pos, neg = list(query.recommend.positive or []), list(query.recommend.negative or [])
        else:
            pos, neg = [query], []
        mentioned = [q for q in pos + neg if isinstance(q, (str, int, uuid.UUID))]
        vectors: dict[str, Any] = {}
        if mentioned:
            for r in shard.retrieve(mentioned, with_payload=False, with_vector=[using]):
                vectors[str(r.id)] = r.vector[using]
            missing = [str(m) for m in mentioned if str(m) not in vectors]
            if missing:
                raise NotFoundError(f"No point with id '{missing[0]}'.")

        def vec(q: Any) -> list[float]:
            return vectors[str(q)] if isinstance(q, (str, int, uuid.UUID)) else list(q)

        return [vec(q) for q in pos], [vec(q) for q in neg], mentioned


def _edge_query(pos: list[Any], neg: list[Any], recommend: bool, using: str) -> Any:
    """Nearest to the one example, or the engine's best-score recommendation from several."""
    if recommend:
        return E.Query.RecommendBestScore(E.RecommendQuery(positives=pos, negatives=neg), using=using)
    return E.Query.Nearest(pos[0], using=using)


def _project(basis: SearchBasis, vectors: list[Any]) -> list[list[float]]:
    return basis.project(np.asarray(vectors, dtype=np.float32)).tolist() if vectors else []


def _search_params(filtered: bool, fetch: int, rescore: bool = True) -> E.SearchParams:
    """HNSW beam, int8 rescoring and ACORN for one query: a filtered walk gets its own (wider) beam,
    oversampling and, when set, ACORN, chosen with `benchmarks/store_scale.py --filtered-variants`."""
    ef = max(HNSW_EF * (FILTERED_EF_FACTOR if filtered else 1), fetch)
    quant = E.QuantizationSearchParams(rescore=rescore, oversampling=FILTERED_OVERSAMPLING if filtered else OVERSAMPLING)
    acorn = E.AcornSearchParams(enable=True, max_selectivity=FILTERED_ACORN) if filtered and FILTERED_ACORN else None
    return E.SearchParams(hnsw_ef=ef, quantization=quant, acorn=acorn)


def _split_excluded(flt: models.Filter | None) -> tuple[models.Filter | None, list[Any]]:
    """The filter without its top-level must_not has-id conditions, and the ids they exclude."""
    if flt is None or not flt.must_not:
        return flt, []
    must_not = _as_list(flt.must_not)
    ids = [i for c in must_not if isinstance(c, models.HasIdCondition) for i in c.has_id]
    rest = [c for c in must_not if not isinstance(c, models.HasIdCondition)]
    if not ids:
        return flt, []
    if not rest and not flt.must and not flt.should:
        return None, ids
    return models.Filter(must=flt.must, should=flt.should, must_not=rest or None), ids


def _record(r: Any) -> Any:
    return SimpleNamespace(id=_id(r.id), payload=r.payload or {}, vector=r.vector)


def to_edge_filter(flt: models.Filter | None, extra_must_not: Iterable[Any] = ()) -> E.Filter | None:
    """The engine's filter from a qdrant_client `models.Filter` (the conditions `filters.py` builds)."""
    extra = list(extra_must_not)
    if flt is None:
        return E.Filter(must_not=extra) if extra else None
    must = [_condition(c) for c in _as_list(flt.must)]
    should = [_condition(c) for c in _as_list(flt.should)]
    must_not = [_condition(c) for c in _as_list(flt.must_not)] + extra
    return E.Filter(must=must or None, should=should or None, must_not=must_not or None)


def _as_list(x: Any) -> list[Any]:
    return [] if x is None else list(x) if isinstance(x, list) else [x]


def _condition(c: Any) -> Any:
    if isinstance(c, models.Filter):
        return to_edge_filter(c)
    if isinstance(c, models.HasIdCondition):
        return E.HasIdCondition(set(c.has_id))
    if isinstance(c, models.IsEmptyCondition):
        return E.IsEmptyCondition(c.is_empty.key)
    if isinstance(c, models.IsNullCondition):
        return E.IsNullCondition(c.is_null.key)
    if isinstance(c, models.FieldCondition):
        if c.range is not None:
            r = c.range
            return E.FieldCondition(key=c.key, range=E.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt))
        m = c.match
        if isinstance(m, models.MatchValue):
            return E.FieldCondition(key=c.key, match=E.MatchValue(m.value))
        if isinstance(m, models.MatchAny):
            return E.FieldCondition(key=c.key, match=E.MatchAny(list(m.any)))
        if isinstance(m, models.MatchExcept):
            return E.FieldCondition(key=c.key, match=E.MatchExcept(list(getattr(m, "except_"))))
        if isinstance(m, models.MatchText):
            return E.FieldCondition(key=c.key, match=E.MatchText(m.text))
    raise NotImplementedError(f"Filter condition {type(c).__name__} has no edge translation.")
