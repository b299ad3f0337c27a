"""Ingest stages: scan -> plan -> decode -> dedupe (exact) -> embed -> cluster (copy/near) -> upsert -> report.

Each stage is a method of `IngestJob`, timed by a `StageTimer`, with no
Prefect in it: `flows/ingest.py` composes the stages into tasks, so the same
pipeline runs under a Prefect worker, from the CLI, or in a benchmark.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from recommender.catalog import Catalog, FileRecord
from recommender.locks import CollectionLock
from recommender.duplicates import IngestDeduper, fingerprint_payload
from recommender.decode import DecodeError, DecodeOptions, decode_file
from recommender.metadata import keyword_fields, load_metadata
from recommender.models import Embedder, create_embedder
from recommender.models.device import usable_cores
from recommender.medical import DICOM_SUFFIXES, NIFTI_SUFFIXES
from recommender.scan import SourceFile, scan_source
from recommender.settings import Settings
from recommender.store import VectorStore, open_store, point_id_for


class StageTimer:
    """Accumulates wall seconds per named stage (the clip-retrieval runner habit)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the block's wall time to `name`; worker threads add up, so a stage can exceed the run's time."""
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


@dataclass
class DecodedFile:
    """A source file after decoding: its items' metadata and uint8 model-ready tensors, or why it failed.

    A DICOM/NIfTI file has one entry per frame/slice (keys `<path>#<index>`); a plain image has one.
    """

    file: SourceFile
    keys: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    payloads: list[dict[str, Any]] = field(default_factory=list)
    tensors: list[torch.Tensor] = field(default_factory=list)
    error: str | None = None


@dataclass
class Batch:
    """Decoded files whose items travel together through embed, dedupe and upsert."""

    files: list[DecodedFile]
    vectors: np.ndarray | None = None  # one row per item of `todo`
    todo: list[tuple[int, int]] = field(default_factory=list)  # (file index, item index) that need embedding
    statuses: dict[int, str] = field(default_factory=dict)  # file index -> new | unchanged | duplicate | failed
    ids: list[str] = field(default_factory=list)  # point ids of `todo`, once clustered
    payloads: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunReport:
    """What one ingestion run did; printed by `ingest --json` and stored in the catalog."""

    run_id: str
    collection: str
    model: str
    source: str
    scanned: int = 0
    new: int = 0
    unchanged: int = 0
    duplicate: int = 0
    changed: int = 0
    deleted: int = 0
    failed: int = 0
    items: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    duplicates_by_tier: dict[str, int] = field(default_factory=dict)  # new items that joined a cluster
    points: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    status: str = "running"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class IngestJob:
    """Holds the resources of one run (store, catalog, model) and exposes its stages."""

    def __init__(self, settings: Settings, source: Path, metadata: Path | None = None, run_id: str | None = None):
        self.settings = settings
        self.source = Path(source).expanduser().resolve()
        self.metadata_path = Path(metadata).expanduser().resolve() if metadata else None
        self.run_id = run_id or uuid.uuid4().hex
        self.timer = StageTimer()
        self.started = time.perf_counter()
        self.report = RunReport(self.run_id, settings.collection, settings.model, str(self.source))
        self.metadata = load_metadata(self.metadata_path, self.source) if self.metadata_path else {}
        self._lock = CollectionLock(settings.home, settings.collection).acquire(settings.lock_timeout)
        try:
            self.store: VectorStore = open_store(settings)
        except BaseException:
            self._lock.release()
            raise
        self.catalog = Catalog(settings.catalog_path)
        self._seen: set[str] = set()
        self._known: dict[str, FileRecord] = {}
        try:
            self._prepare()
        except BaseException:
            self.close()  # never keep the embedded store locked after a refused start
            raise

    def _prepare(self) -> None:
        """Check the collection's model before loading ours, then create the collection and the run."""
        cfg = self.settings
        existing = self.store.model_name()
        if existing and existing != cfg.model:
            self.store.ensure_collection(cfg.model, 0)  # raises ModelMismatchError before loading a model
        with self.timer.stage("load_model"):
            self._torch_threads = torch.get_num_threads()  # configure() may lower it; close() puts it back
            self.embedder: Embedder = create_embedder(cfg.model, cfg.device).configure(cfg.batch_size, cfg.model_streams)
        self.store.ensure_collection(self.embedder.name, self.embedder.dim, keyword_fields(self.metadata))
        self.catalog.start_run(self.run_id, cfg.collection, str(self.source), self.embedder.name)
        self._deduper = IngestDeduper(self.store, cfg) if cfg.dedup_on_ingest else None
        self._decode_opts = self._decode_options()

    def close(self) -> None:
        if hasattr(self, "_torch_threads"):
            torch.set_num_threads(self._torch_threads)
        self.store.close()
        self.catalog.close()
        self._lock.release()

    # -- scan and plan ---------------------------------------------------------
    def scan(self) -> list[SourceFile]:
        """List candidate files (metadata table and ignored suffixes left out)."""
        with self.timer.stage("scan"):
            exclude = [self.metadata_path] if self.metadata_path else []
            files = scan_source(self.source, self.settings.ignore_suffixes, exclude)
        self.report.scanned = len(files)
        return files

    def plan(self, files: Sequence[SourceFile]) -> list[SourceFile]:
        """Files to decode: not in the catalog with the same size and mtime (an unchanged file costs one stat).

        Files the catalog holds under this source that are gone from it are released here.
        """
        with self.timer.stage("plan"):
            self._known = self.catalog.files(self.settings.collection)
            todo = []
            for f in files:
                rec = self._known.get(f.path)
                if rec and rec.status in ("ok", "duplicate") and rec.size == f.size and rec.mtime_ns == f.mtime_ns:
                    self.report.unchanged += 1
                else:
                    todo.append(f)
            present = {f.path for f in files}
            root = str(self.source) + ("" if self.source.is_file() else os.sep)
            gone = [r for p, r in self._known.items() if r.status != "deleted" and p not in present
                    and (p == str(self.source) or p.startswith(root))]
            self._remove_gone(gone)
        return todo

    def _remove_gone(self, gone: Sequence[FileRecord]) -> None:
        """Deleted source files: release their points (or mark them), then forget or flag the rows."""
        mark = self.settings.on_delete == "mark"
        for rec in gone:
            self._release(rec.path, rec.point_ids, keep=(), mark=mark)
        paths = [r.path for r in gone]
        if mark:
            self.catalog.mark_deleted(self.settings.collection, paths, self.run_id)
        else:
            self.catalog.remove_files(self.settings.collection, paths)
        self.report.deleted += len(gone)

    def _release(self, path: str, old_ids: Sequence[str], keep: Sequence[str], mark: bool = False) -> None:
        """Stop `path` referencing old_ids: points no other file references are deleted (or marked).

        Idempotent, so a run killed half-way repeats it safely: the catalog row still lists the ids.
        """
        gone_ids, reassigned = [], []
        for pid in set(old_ids) - set(keep):
            others = self.catalog.other_paths(self.settings.collection, pid, path)
            if others:
                reassigned.append((pid, others[0]))
            else:
                gone_ids.append(pid)
        stored = self.store.existing([pid for pid, _ in reassigned])
        for pid, other in reassigned:
            if pid in stored:
                self.store.set_payload([pid], _drop_copy(stored[pid], path, other))
        if mark:
            self.store.set_payload(gone_ids, {"deleted": True})
        else:
            self.store.delete(gone_ids)

    # -- decode ------------------------------------------------------------------
    def _decode_options(self) -> DecodeOptions:
        """Decode settings for this run; JPEG draft size comes from the model's resize size."""
        s = self.settings
        return DecodeOptions(
            max_pixels=s.max_image_pixels,
            draft_size=self.embedder.decode_size if s.jpeg_draft else None,
            volume_axis=s.volume_axis,
            volume_min_foreground=s.volume_min_foreground,
        )

    def _decode_one(self, f: SourceFile) -> DecodedFile:
        """Decode one file into uint8 model-ready tensors (or a per-file refusal); runs in decode threads."""
        out = DecodedFile(f)
        opts = self._decode_opts
        try:
            for item in decode_file(Path(f.path), options=opts):
                out.keys.append(item.key)
                out.hashes.append(item.content_hash)
                out.payloads.append({**item.payload, **fingerprint_payload(item.image, item.content_hash)})
                out.tensors.append(self.embedder.prepare(item.image))  # uint8: 4x smaller while queued
        except DecodeError as exc:
            out = DecodedFile(f, error=exc.reason)
        except Exception as exc:  # a decoder bug must not stop the run; report it per file
            out = DecodedFile(f, error=f"unexpected decoding error: {type(exc).__name__}: {exc}")
        return out

    def decode(self, files: Sequence[SourceFile]) -> Batch:
        """Decode a few files into one batch; each file's refusal stays in the batch with its reason."""
        with self.timer.stage("decode"):
            return Batch([self._decode_one(f) for f in files])

    def process(self, files: Sequence[SourceFile], max_items: int | None = None,
                embed: bool = True) -> tuple[list[Batch], list[SourceFile]]:
        """Decode -> dedupe -> embed `files` batch by batch on worker threads, until about `max_items` items.

        Returns the batches in file order (vectors ready) and the files not started yet.

        Each worker decodes a batch and then runs the model on it itself: no hand-off queue
        between a decode pool and a model thread, and one knob (workers) instead of two.
        On the 2-core box a decode pool feeding separate model streams was no faster
        (docs/benchmarks_embed.md). On a GPU the embedder lets one forward run at a time
        while the other workers decode.
        Dedupe runs in batch order (a turnstile), so which of two identical files counts as
        the duplicate does not depend on thread timing. At most two batches per worker are
        in flight, so memory stays bounded however large the corpus is.
        """
        workers = self.settings.decode_workers if self.settings.decode_workers is not None else min(usable_cores(), 16)
        workers = max(1, workers)
        per_batch = self.embedder.max_batch  # files per worker batch: one forward pass
        groups = _groups(files, per_batch)
        self._turn = _Turnstile()
        done: list[Batch] = []
        started = n_items = 0
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
            pending: deque[tuple[int, Future[Batch]]] = deque()
            while True:
                while len(pending) < 2 * workers and (max_items is None or n_items + len(pending) * per_batch < max_items):
                    group = next(groups, None)
                    if group is None:
                        break
                    pending.append((len(group), pool.submit(self._work, len(done) + len(pending), group, embed)))
                if not pending:
                    break
                size, fut = pending.popleft()
                with self.timer.stage("wait"):
                    batch = fut.result()
                started += size
                n_items += sum(len(df.keys) for df in batch.files)
                done.append(batch)
        return done, list(files[started:])

    def _work(self, seq: int, files: list[SourceFile], embed: bool) -> Batch:
        """One worker's batch: decode, dedupe in batch order, embed (without `embed`: free the tensors)."""
        batch = None
        try:
            batch = self.decode(files)
        finally:  # take the turn even if decoding failed, or every later batch would wait for ever
            with self._turn.wait_for(seq):
                if batch is not None:
                    self.dedupe(batch)
        if embed:
            return self.embed(batch)
        for df in batch.files:
            df.tensors = []
        return batch

    # -- dedupe (exact content), embed, upsert ---------------------------------
    def dedupe(self, batch: Batch) -> Batch:
        """Classify each file: failed, unchanged (same content at same path), duplicate of another path, or new."""
        with self.timer.stage("dedupe"):
            ids = [point_id_for(h) for df in batch.files for h in df.hashes]
            stored = self.store.existing(ids)
            for fi, df in enumerate(batch.files):
                if df.error:
                    batch.statuses[fi] = "failed"
                    continue
                pids = [point_id_for(h) for h in df.hashes]
                before = self._known.get(df.file.path)
                if pids and all(stored.get(p, {}).get("path") == df.file.path for p in pids):
                    batch.statuses[fi] = "unchanged"
                elif pids and all(p in stored or p in self._seen for p in pids):
                    batch.statuses[fi] = "duplicate"
                else:
                    changed = before is not None and before.status in ("ok", "duplicate") and before.sha256 != df.hashes[0]
                    batch.statuses[fi] = "changed" if changed else "new"
                    for ii, p in enumerate(pids):
                        if p not in stored and p not in self._seen:
                            batch.todo.append((fi, ii))
                            self._seen.add(p)
        return batch

    def embed(self, batch: Batch) -> Batch:
        """Run the model on the items that are not stored yet (and CLIP zero-shot labels when configured)."""
        with self.timer.stage("embed"):
            if batch.todo:
                tensors = torch.stack([batch.files[fi].tensors[ii] for fi, ii in batch.todo])
                batch.vectors = self.embedder.embed_batch(tensors)
                if self.settings.zero_shot_labels and self.embedder.supports_text:  # CLIP zero-shot tags
                    from recommender.zeroshot import zero_shot_labels

                    zs = zero_shot_labels(self.embedder, batch.vectors, self.settings.zero_shot_labels,
                                          self.settings.zero_shot_template)
                    for (fi, ii), (label, prob) in zip(batch.todo, zs):
                        batch.files[fi].payloads[ii].update(zs_label=label, zs_prob=prob)
            for df in batch.files:
                df.tensors = []  # free memory as soon as the model has seen them
        return batch

    def cluster(self, batches: Sequence[Batch]) -> list[Batch]:
        """Build the new points' payloads and assign duplicate clusters (exact pixels, copy) against
        each other and the collection, so a later chunk or a re-run never adds a second canonical.

        All batches of a chunk are clustered together, before any of them is written: the
        collection holds everything ingested before this chunk, the chunk itself is compared here.
        """
        with self.timer.stage("cluster"):
            for b in batches:
                b.ids = [point_id_for(b.files[fi].hashes[ii]) for fi, ii in b.todo]
                b.payloads = [self._payload(b.files[fi], ii) for fi, ii in b.todo]
            todo = [b for b in batches if b.ids]
            if self._deduper is not None and todo:
                ids = [pid for b in todo for pid in b.ids]
                payloads = [p for b in todo for p in b.payloads]  # the same dicts: filled in place
                vectors = np.concatenate([b.vectors for b in todo])
                for tier, n in self._deduper.assign(ids, payloads, vectors).items():
                    self.report.duplicates_by_tier[tier] = self.report.duplicates_by_tier.get(tier, 0) + n
        return list(batches)

    def upsert(self, batch: Batch) -> Batch:
        """Write new points, then record every file of the batch in the catalog."""
        with self.timer.stage("upsert"):
            step = self.settings.upsert_batch
            for s in range(0, len(batch.ids), step):
                self.store.upsert(batch.ids[s : s + step], batch.vectors[s : s + step], batch.payloads[s : s + step])
            self._record(batch)
        return batch

    def _payload(self, df: DecodedFile, ii: int) -> dict[str, Any]:
        payload = {
            "path": df.file.path,
            "relpath": df.file.relpath,
            "item_key": df.keys[ii],
            "sha256": df.hashes[ii],
            "source": str(self.source),
            "model": self.embedder.name,
            "run_id": self.run_id,
            "ingested_at": time.time(),
        }
        payload.update(df.payloads[ii])
        payload.update(self.metadata.get(df.file.path, {}))
        return payload

    def _record(self, batch: Batch) -> None:
        """Release points a changed file no longer has, then write the catalog rows (after the points)."""
        records = []
        for fi, df in enumerate(batch.files):
            status = batch.statuses[fi]
            setattr(self.report, status, getattr(self.report, status) + 1)
            if status == "failed":
                self.report.failures.append({"path": df.file.path, "reason": df.error or "unknown"})
            else:
                self.report.items += len(df.keys) if status in ("new", "changed") else 0
            pids = [point_id_for(h) for h in df.hashes]
            old = self._known.get(df.file.path)  # the catalog row as the plan read it: this run writes it only here
            if old and old.point_ids:
                self._release(df.file.path, old.point_ids, keep=pids if status != "failed" else [])
            records.append(
                FileRecord(
                    df.file.path, df.file.size, df.file.mtime_ns, df.hashes[0] if df.hashes else None,
                    "failed" if status == "failed" else ("duplicate" if status == "duplicate" else "ok"),
                    df.error, pids,
                )
            )
        self._record_copies(batch)
        self.catalog.record_files(self.settings.collection, self.embedder.name, self.run_id, records)

    def _record_copies(self, batch: Batch) -> None:
        """Byte-identical files share one point; keep each extra path (and its metadata, e.g. its split)
        in the point's `copies`, so nothing is lost and leakage reports see every file."""
        extra: dict[str, list[dict[str, Any]]] = {}
        for fi, df in enumerate(batch.files):
            if batch.statuses[fi] == "duplicate":
                entry = {"path": df.file.path, "relpath": df.file.relpath, **self.metadata.get(df.file.path, {})}
                for h in df.hashes:
                    extra.setdefault(point_id_for(h), []).append(entry)
        stored = self.store.existing(list(extra))
        for pid, entries in extra.items():
            payload = stored.get(pid, {})
            copies = [c for c in payload.get("copies", []) if c["path"] != payload.get("path")]
            known = {c["path"] for c in copies} | {payload.get("path")}
            new = [e for e in entries if e["path"] not in known]
            if new:
                self.store.set_payload([pid], {"copies": copies + new})

    # -- report ----------------------------------------------------------------
    def finish(self, status: str = "completed", error: str | None = None) -> RunReport:
        """Fill in totals and throughput, store the report in the catalog."""
        r = self.report
        r.status, r.error = status, error
        r.seconds = round(time.perf_counter() - self.started, 3)
        processed = r.new + r.changed + r.unchanged + r.duplicate + r.failed
        r.images_per_second = round(processed / r.seconds, 2) if r.seconds else 0.0
        try:
            r.points = self.store.count()
        except Exception:  # the store may be what failed; the report must still be written
            r.points = -1
        r.stage_seconds = {k: round(v, 3) for k, v in self.timer.seconds.items()}
        self.catalog.finish_run(self.run_id, status, r.to_dict())
        return r


def _drop_copy(payload: dict[str, Any], path: str, other: str) -> dict[str, Any]:
    """Payload update when `path` stops referencing a shared point: drop it from `copies`, and if it
    was the point's main path, promote `other` (with its own metadata) in its place."""
    copies = [c for c in payload.get("copies", []) if c["path"] != path]
    if payload.get("path") != path:
        return {"copies": copies}
    promoted = next((c for c in copies if c["path"] == other), {"path": other})
    return {**promoted, "copies": [c for c in copies if c["path"] != other]}


class _Turnstile:
    """Lets numbered steps run one at a time in number order, whichever thread reaches them first."""

    def __init__(self) -> None:
        self._next = 0
        self._cond = threading.Condition()

    @contextmanager
    def wait_for(self, seq: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._next == seq)
        try:
            yield
        finally:
            with self._cond:
                self._next += 1
                self._cond.notify_all()




def _groups(files: Sequence[SourceFile], size: int) -> Iterator[list[SourceFile]]:
    """Consecutive files in groups of `size`; a volume or DICOM file (possibly many slices) goes alone."""
    group: list[SourceFile] = []
    for f in files:
        if f.path.lower().endswith(DICOM_SUFFIXES + NIFTI_SUFFIXES):
            if group:
                yield group
                group = []
            yield [f]
            continue
        group.append(f)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group
