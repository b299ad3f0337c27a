"""A 2-D map of a collection: one stored layout (UMAP, or PCA) that the Map page reads.

Computing a layout reads every vector once, so it runs as a pipeline stage (after an
ingest, after `recommender dedupe`, or `recommender map`) and is stored as Parquet under
`<home>/maps/<collection>.parquet`, with its provenance (method, point count, model)
in the file's own metadata and in a `.json` sidecar beside it. Readers never compute.

The layout is for display only: it never changes the vectors or any query. UMAP
(umap-learn, cosine, 15 neighbours, min_dist 0.1, 200 epochs, fixed seed) is the default; under
`MIN_UMAP_POINTS` points, or when UMAP cannot run, a PCA layout is stored instead and
`method` says so (the page shows it). Neighbours are computed exactly here with numpy
and handed to UMAP: that skips pynndescent, whose JIT compile costs ~40 s in every new process.

Memory and size: every vector is held once (points x dim x 4 bytes, 1.3 GB for 250k
x 1280). Up to `EXACT_KNN` points the neighbours are exact in the full space; above,
vectors are reduced to `REDUCED_DIMS` principal directions first, UMAP is fitted on a
`FIT_SAMPLE` sample, and every other point is placed at the distance-weighted mean of
its nearest sample points (UMAP's own `transform` starts from the same placement).
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recommender import payload as P
from recommender.browse import facet_candidates
from recommender.settings import Settings
from recommender.store import VectorStore

log = logging.getLogger(__name__)

Method = Literal["umap", "pca"]
MIN_UMAP_POINTS = 10  # below this UMAP's neighbour graph says nothing: PCA
N_NEIGHBORS = 15
MIN_DIST = 0.1
SEED = 42
EXACT_KNN = 10_000  # exact cosine neighbours in the full space up to here (7k x 1280: ~2 s on 2 cores)
FIT_SAMPLE = 20_000  # UMAP is fitted on at most this many points; the rest are placed by their neighbours
REDUCED_DIMS = 128  # dimensions kept for neighbour search above EXACT_KNN
EPOCHS = 200
"""UMAP's optimisation epochs. Its own default is 500 under 10,000 points and 200 above; the layout is
for display, and on brain-mri (6,593 points, a fresh process) 200 epochs took the fit from 9.7 to 6.6 s,
the rest being numba's compile (docs/benchmarks_dedup.md, ingest against the plain script)."""
BASE_COLUMNS = ("id", "x", "y", P.PATH, P.RELPATH, P.ITEM_KEY)
_META_KEY = b"recommender.map"


def layout_path(settings: Settings) -> Path:
    """Where a collection's layout is stored (under the data home, beside the other caches)."""
    return settings.home / "maps" / f"{settings.collection}.parquet"


def layout_info(df: pd.DataFrame) -> dict[str, Any]:
    """Provenance of a layout frame: method used, method asked for, count, model, note, seconds."""
    return dict(df.attrs.get("map", {}))


def load_layout(store: VectorStore, settings: Settings) -> pd.DataFrame | None:
    """The stored layout when it still describes the collection (same point count and model), else None.

    Payload changes (a dedupe's labels) do not invalidate it: the coordinates stay right, and the
    stages that change labels (`compute_layout`) refresh them."""
    df = _read(layout_path(settings))
    if df is None:
        return None
    meta = layout_info(df)
    if meta.get("count") != store.count() or meta.get("model") != store.model_name():
        return None
    return df


def compute_layout(store: VectorStore, settings: Settings, method: Method | None = None,
                   refresh: bool = False) -> pd.DataFrame:
    """Compute, store and return the layout (columns id, x, y, path, relpath, item_key, facet fields).

    `method` defaults to `settings.map_layout`. A stored layout of the same points, model and method is
    reused (only its labels are refreshed, a payload-only scroll), unless `refresh`."""
    method = _method(method or settings.map_layout)
    fields = facet_candidates(store)
    stored = None if refresh else load_layout(store, settings)
    if stored is not None and layout_info(stored).get("requested") == method:
        relabelled = _relabel(store, stored, fields, layout_path(settings))
        if relabelled is not None:
            return relabelled
    start = time.perf_counter()
    ids, vectors, labels = _points(store, fields)
    xy, used, note = layout_xy(vectors, method)
    df = _frame(ids, xy, labels, fields)
    df.attrs["map"] = {"method": used, "requested": method, "count": len(ids), "model": store.model_name(),
                       "note": note, "seconds": round(time.perf_counter() - start, 3), "computed_at": time.time()}
    _write(df, layout_path(settings))
    return df


def map_stage(store: VectorStore, settings: Settings) -> dict[str, Any]:
    """The pipeline's map stage: compute and store the layout as `settings.map_layout` asks.

    Never raises: the map is a view, so a failure is logged as a warning and returned as `error`
    (the ingest records it in its report and still completes)."""
    if settings.map_layout == "off":
        return {"method": "off"}
    try:
        if not store.exists() or store.count() == 0:
            return {"method": settings.map_layout, "count": 0}
        info = layout_info(compute_layout(store, settings))
    except Exception as exc:  # noqa: BLE001 - a broken map must never fail the run that called it
        log.warning("map stage failed, the stored map is unchanged: %s: %s", type(exc).__name__, exc)
        return {"method": settings.map_layout, "error": f"{type(exc).__name__}: {exc}"}
    return {k: info.get(k) for k in ("method", "requested", "count", "note", "seconds")}


# -- layout computation --------------------------------------------------------------------------
def layout_xy(vectors: np.ndarray, method: Method = "umap") -> tuple[np.ndarray, str, str | None]:
    """2-D coordinates of the rows of `vectors`, the method actually used, and why it differs (if it does)."""
    if len(vectors) == 0:
        return np.zeros((0, 2), np.float32), method, None
    if method == "pca":
        return pca(vectors, 2), "pca", None
    if len(vectors) < MIN_UMAP_POINTS:
        return pca(vectors, 2), "pca", f"{len(vectors)} points: too few for UMAP (< {MIN_UMAP_POINTS})"
    try:
        xy = _umap(vectors)
    except Exception as exc:  # noqa: BLE001 - umap-learn missing or failing: PCA still draws the map
        log.warning("UMAP failed, using PCA for the map: %s: %s", type(exc).__name__, exc)
        return pca(vectors, 2), "pca", f"UMAP failed ({type(exc).__name__}: {exc})"
    if not np.isfinite(xy).all():
        return pca(vectors, 2), "pca", "UMAP gave non-finite coordinates"
    return xy, "umap", None


def pca(x: np.ndarray, k: int, centre: bool = True) -> np.ndarray:
    """Projection on the top-k principal directions (eigenvectors of the d x d moment matrix, so memory
    stays d x d whatever the count; signs fixed so the same data always gives the same picture).
    `centre=False` keeps dot products (what cosine neighbours need after unit-normalising)."""
    x = np.asarray(x, np.float32)
    if centre:
        x = x - x.mean(axis=0, keepdims=True)
    moment = (x.T @ x).astype(np.float64) / max(len(x) - 1, 1)
    vals, vecs = np.linalg.eigh(moment)
    comps = vecs[:, np.argsort(vals)[::-1][:k]]
    comps *= np.sign(comps[np.argmax(np.abs(comps), axis=0), range(comps.shape[1])])
    out = (x @ comps.astype(np.float32)).astype(np.float32)
    return np.pad(out, ((0, 0), (0, k - out.shape[1]))) if out.shape[1] < k else out


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def cosine_knn(queries: np.ndarray, base: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of `base` for each unit-length query row, as (indices, cosine distances),
    nearest first; blocks of `block` queries bound memory to block x len(base) floats."""
    k = min(k, len(base))
    idx = np.empty((len(queries), k), np.int64)
    dist = np.empty((len(queries), k), np.float32)
    for s in range(0, len(queries), block):
        sim = queries[s:s + block] @ base.T
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        psim = np.take_along_axis(sim, part, 1)
        order = np.argsort(-psim, axis=1, kind="stable")
        idx[s:s + block] = np.take_along_axis(part, order, 1)
        dist[s:s + block] = np.maximum(1.0 - np.take_along_axis(psim, order, 1), 0.0)
    return idx, dist


def _umap(vectors: np.ndarray) -> np.ndarray:
    """UMAP on cosine neighbours computed here; above `FIT_SAMPLE` fitted on a sample, the rest placed."""
    unit = _unit(vectors)
    if len(unit) > EXACT_KNN and unit.shape[1] > REDUCED_DIMS:
        unit = _unit(pca(unit, REDUCED_DIMS, centre=False))
    if len(unit) <= FIT_SAMPLE:
        return _umap_fit(unit)
    fit = np.sort(np.random.default_rng(SEED).choice(len(unit), FIT_SAMPLE, replace=False))
    xy = np.empty((len(unit), 2), np.float32)
    xy[fit] = _umap_fit(unit[fit])
    rest = np.setdiff1d(np.arange(len(unit)), fit)
    idx, dist = cosine_knn(unit[rest], unit[fit], N_NEIGHBORS)
    weights = 1.0 / (dist + 1e-3)
    xy[rest] = (xy[fit][idx] * weights[..., None]).sum(axis=1) / weights.sum(axis=1, keepdims=True)
    return xy


def _umap_fit(unit: np.ndarray) -> np.ndarray:
    umap = _umap_module()
    k = min(N_NEIGHBORS, len(unit) - 1)
    idx, dist = cosine_knn(unit, unit, k)
    model = umap.UMAP(n_neighbors=k, min_dist=MIN_DIST, metric="cosine", random_state=SEED, low_memory=True,
                      n_jobs=1, precomputed_knn=(idx, dist, None), n_epochs=EPOCHS)
    with warnings.catch_warnings():  # seed forces one thread; tiny graphs warn about spectral init
        warnings.simplefilter("ignore")
        return np.asarray(model.fit_transform(unit), np.float32)


@functools.cache
def _umap_module() -> Any:
    """umap-learn (~2 s import: numba), imported on first use, with its compiled code kept on disk.

    Why: umap-learn compiles ~100 numba functions in every new process and caches none, which cost
    3.5 s of each ingest's map stage (a 3,000-point fit: 4.8 s in a fresh process, 1.2-1.3 s once the
    compiled code is read back). `enable_caching` is numba's own per-function switch (what
    `cache=True` sets); numba keys each entry by the source file and its own version, and writes it
    beside the module or, where that is read-only, in the user's cache folder (`NUMBA_CACHE_DIR`
    overrides). The compiled code is the same, so the layout is too."""
    import umap
    from numba.core.registry import CPUDispatcher

    for name in ("umap.umap_", "umap.layouts", "umap.utils", "umap.sparse", "umap.distances", "umap.spectral"):
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, CPUDispatcher):
                value.enable_caching()
    return umap


def _method(method: str) -> Method:
    if method not in ("umap", "pca"):
        raise ValueError(f"map layout method must be umap or pca, got {method!r}")
    return method  # type: ignore[return-value]


# -- points and labels ---------------------------------------------------------------------------
def _labels(payload: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """The non-coordinate columns of one point: where its file is, and its facet values as text."""
    path = str(payload.get(P.PATH, ""))
    row: dict[str, Any] = {P.PATH: path, P.RELPATH: str(payload.get(P.RELPATH) or Path(path).name),
                           P.ITEM_KEY: str(payload.get(P.ITEM_KEY, path))}
    row.update({f: None if payload.get(f) is None else str(payload[f]) for f in fields if f not in row})
    return row


def _points(store: VectorStore, fields: Sequence[str]) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """Every point's id, vector and labels in one scroll; vectors go into one preallocated array."""
    ids: list[str] = []
    labels: list[dict[str, Any]] = []
    vectors: np.ndarray | None = None
    for pid, payload, vec in store.scroll(batch=1024, with_vectors=True):
        if vec is None:
            continue
        if vectors is None:
            vectors = np.empty((max(store.count(), 1), len(vec)), np.float32)
        elif len(ids) == len(vectors):  # points added while reading: grow
            vectors = np.concatenate([vectors, np.empty_like(vectors)])
        vectors[len(ids)] = vec
        ids.append(pid)
        labels.append(_labels(payload, fields))
    return ids, (vectors[:len(ids)] if vectors is not None else np.zeros((0, 0), np.float32)), labels


def _frame(ids: Sequence[str], xy: np.ndarray, labels: Sequence[dict[str, Any]], fields: Sequence[str]) -> pd.DataFrame:
    columns = [*BASE_COLUMNS, *[f for f in fields if f not in BASE_COLUMNS]]
    df = pd.DataFrame(list(labels), columns=columns[3:])
    df.insert(0, "y", xy[:, 1].astype(np.float32) if len(xy) else pd.Series(dtype=np.float32))
    df.insert(0, "x", xy[:, 0].astype(np.float32) if len(xy) else pd.Series(dtype=np.float32))
    df.insert(0, "id", list(ids))
    return df


def _relabel(store: VectorStore, stored: pd.DataFrame, fields: Sequence[str], path: Path) -> pd.DataFrame | None:
    """The stored layout with today's labels (rewritten only if they changed); None when the points
    are not the same ones (then the layout is recomputed)."""
    rows = {pid: _labels(payload, fields) for pid, payload, _ in store.scroll(batch=1024)}
    if set(rows) != set(stored["id"]):
        return None
    ids = stored["id"].tolist()
    fresh = _frame(ids, stored[["x", "y"]].to_numpy(np.float32), [rows[i] for i in ids], fields)
    fresh.attrs["map"] = layout_info(stored)
    if fresh.drop(columns=["x", "y"]).equals(stored.drop(columns=["x", "y"])):
        return stored
    _write(fresh, path)
    return fresh


# -- storage -------------------------------------------------------------------------------------
def _write(df: pd.DataFrame, path: Path) -> None:
    """Parquet with the provenance in its own metadata, then the JSON sidecar; each replaced atomically,
    so a reader sees the old layout or the new one, never half of one."""
    meta = layout_info(df)
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(path, lambda tmp: pq.write_table(table, tmp))
    _atomic(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))


def _atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> pd.DataFrame | None:
    """The stored layout with its provenance in `attrs['map']`; None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        log.warning("ignoring unreadable map layout %s: %s", path, exc)
        return None
    df = table.to_pandas()
    df.attrs["map"] = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
    return df
