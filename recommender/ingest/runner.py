"""Run the ingest stages in order and time each one: scan -> plan -> embed (per chunk) -> dedupe -> cluster -> upsert -> map -> projection -> report.

`drive` is the one composition of the stages. It takes a `submit` function that
starts the embed stage on a chunk of files and returns a future, so the same
composition runs on a local thread pool (`run_ingest`, the library's entry point)
or as Prefect tasks on any task runner, Dask included (`flows/ingest.py`). Embed
chunks run ahead of the writer (`settings.chunks_ahead`), so the model never waits
for the store; everything that writes runs here, in one process.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

import recommender.ingest.stages as stages
from recommender.catalog import FileRecord
from recommender.ingest.records import EmbeddedChunk, EmbeddedFile, EmbedSpec, RunReport
from recommender.ingest.scan import SourceFile
from recommender.ingest.writer import IngestWriter
from recommender.maps import map_stage
from recommender.projection import projection_stage
from recommender.metadata import MetadataTable, keyword_fields, load_metadata
from recommender.progress import progress_bar
from recommender.settings import Settings
from recommender.store import point_id_for


class StageTimer:
    """Accumulates wall seconds per named stage (the clip-retrieval runner habit)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add({name: time.perf_counter() - start})

    def add(self, seconds: dict[str, float]) -> None:
        """Add seconds measured elsewhere (an embed call's worker threads add up, so a stage can exceed the run)."""
        with self._lock:
            for name, s in seconds.items():
                self.seconds[name] = self.seconds.get(name, 0.0) + s


class IngestRun:
    """One run as seen from the driver process: its settings, report, timer and the single writer."""

    def __init__(self, settings: Settings, source: Path, metadata: Path | None = None, run_id: str | None = None):
        self.settings = settings
        self.source = Path(source).expanduser().resolve()
        self.metadata_path = Path(metadata).expanduser().resolve() if metadata else None
        self.run_id = run_id or uuid.uuid4().hex
        self.started = time.perf_counter()
        self.timer = StageTimer()
        self.report = RunReport(self.run_id, settings.collection, settings.model, str(self.source))
        self.metadata = load_metadata(self.metadata_path, self.source) if self.metadata_path else MetadataTable()
        self.report.metadata_issues = self.metadata.issues
        self.writer = IngestWriter(settings, keyword_fields(self.metadata))
        try:
            self.report.resumes = self.writer.start(self.run_id, str(self.source))
        except BaseException:
            self.writer.close()  # never keep the embedded store locked after a refused start
            raise
        self._known: dict[str, FileRecord] = {}
        self._seen: set[str] = set()

    def scan(self) -> list[SourceFile]:
        with self.timer.stage("scan"):
            found = stages.scan(self.source, self.settings, self.metadata_path)
        self.report.scanned = len(found.files)
        self.report.skipped = found.skipped
        return found.files

    def plan(self, files: Sequence[SourceFile]) -> list[SourceFile]:
        """Files to embed; files gone from the source are released here, before anything new is written."""
        with self.timer.stage("plan"):
            self._known = self.writer.known()
            plan = stages.plan(files, self._known, self.source)
            same, changed = stages.same_content(plan.verify, self._known)
            self.writer.release_gone(plan.gone, self.run_id)
            self.writer.restat(plan.restat + same)
        self.report.unchanged += plan.unchanged + len(same)
        self.report.deleted += len(plan.gone)
        todo = {f.path for f in plan.todo + changed}
        return [f for f in files if f.path in todo]  # file order: which copy is the duplicate never varies

    def write(self, chunk: EmbeddedChunk) -> None:
        """Dedupe (exact), cluster (copy/near) and upsert one embedded chunk, then record its files."""
        self.timer.add(chunk.seconds)
        files = chunk.files
        with self.timer.stage("dedupe"):
            self.writer.ensure_collection(chunk.model, chunk.dim)
            stored = self.writer.stored([point_id_for(h) for ef in files for h in ef.hashes])
            statuses, todo = stages.classify(files, stored, self._known, self._seen)
        with self.timer.stage("cluster"):
            ids = [point_id_for(files[fi].hashes[ii]) for fi, ii in todo]
            payloads = [stages.point_payload(files[fi], ii, self.source, chunk.model, self.run_id,
                                             self.metadata.get(files[fi].file.path)) for fi, ii in todo]
            vectors = (np.stack([files[fi].vectors[ii] for fi, ii in todo]) if todo
                       else np.zeros((0, chunk.dim), np.float32))
            for tier, n in self.writer.cluster(ids, payloads, vectors).items():
                self.report.duplicates_by_tier[tier] = self.report.duplicates_by_tier.get(tier, 0) + n
            self.report.templates = self.writer.templates()
            self.report.cut_outs = self.writer.cut_outs()
        with self.timer.stage("upsert"):
            self.writer.upsert(ids, vectors, payloads)
            self.writer.record(files, statuses, self._known, self.metadata.rows, chunk.model, self.run_id)
        self._count(files, statuses)

    def _count(self, files: Sequence[EmbeddedFile], statuses: Sequence[str]) -> None:
        r = self.report
        for ef, status in zip(files, statuses):
            setattr(r, status, getattr(r, status) + 1)
            if status == "failed":
                r.failures.append({"path": ef.file.path, "reason": ef.error or "unknown"})
            elif status in ("new", "changed"):
                r.items += len(ef.keys)

    def finish(self, status: str = "completed", error: str | None = None) -> RunReport:
        """Fill in totals and throughput, store the report in the catalog."""
        r = self.report
        r.status, r.error = status, error
        if status == "completed":
            with self.timer.stage("index"):  # the approximate index, built once per run, off the query path
                self.writer.store.optimize()
            with self.timer.stage("map"):  # the stored 2-D layout; never fails the run (recommender.maps)
                r.map = map_stage(self.writer.store, self.settings)
            if self.settings.projection_label:  # refit from the labels; never fails the run (recommender.projection)
                with self.timer.stage("projection"):
                    r.projection = projection_stage(self.writer.store, self.settings, bool(r.new + r.changed + r.deleted))
        r.seconds = round(time.perf_counter() - self.started, 3)
        processed = r.new + r.changed + r.unchanged + r.duplicate + r.failed
        r.images_per_second = round(processed / r.seconds, 2) if r.seconds else 0.0
        try:
            r.points = self.writer.store.count()
        except Exception:  # the store may be what failed; the report must still be written
            r.points = -1
        r.stage_seconds = {k: round(v, 3) for k, v in self.timer.seconds.items()}
        self.writer.finish_run(self.run_id, status, r.to_dict())
        return r

    def close(self) -> None:
        self.writer.close()


class _Future(Protocol):
    def result(self) -> EmbeddedChunk: ...


Submit = Callable[[list[SourceFile], EmbedSpec], _Future]


def drive(run: IngestRun, submit: Submit) -> RunReport:
    """Run every stage of `run` in order, the embed stage through `submit`; closes the run.

    Up to `chunks_ahead` chunks embed while the writer dedupes and writes the oldest one, and
    chunks are written in file order, so which of two identical files counts as the duplicate
    never depends on timing.
    """
    cfg = run.settings
    pending: deque[_Future] = deque()
    try:
        todo = run.plan(run.scan())
        spec = EmbedSpec.from_settings(cfg)
        waiting = deque(stages.chunks(todo, cfg.chunk_items))
        with progress_bar(len(todo), enabled=cfg.progress) as advance:
            while waiting or pending:
                while waiting and len(pending) < cfg.chunks_ahead:
                    pending.append(submit(waiting.popleft(), spec))
                with run.timer.stage("wait"):
                    chunk = pending.popleft().result()
                if waiting:  # keep the embedders busy while this chunk is written
                    pending.append(submit(waiting.popleft(), spec))
                run.write(chunk)
                advance(len(chunk.files))
        return run.finish("completed")
    except BaseException as exc:
        for fut in pending:
            getattr(fut, "cancel", lambda: None)()
        run.finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        run.close()


def run_ingest(settings: Settings, source: Path, metadata: Path | None = None, run_id: str | None = None) -> RunReport:
    """Ingest a folder tree (optionally with a metadata table) in this process, without Prefect."""
    run = IngestRun(settings, source, metadata, run_id)
    with ThreadPoolExecutor(max_workers=settings.chunks_ahead, thread_name_prefix="ingest-chunk") as pool:
        return drive(run, lambda files, spec: pool.submit(_embed_files, files, spec))


def _embed_files(files: Sequence[SourceFile], spec: EmbedSpec) -> EmbeddedChunk:
    """The embed stage, imported on first use: torch loads only when some file needs embedding."""
    from recommender.ingest.embed import embed_files

    return embed_files(files, spec)
