"""The single writer of an ingest run: the collection lock, the store and the catalog, in the driver process.

Crash safety comes from the order of writes: points before the catalog rows that
reference them, a changed or deleted file's old points released idempotently (the
catalog row still lists them until it is rewritten), so a run killed at any point
and re-run ends in the state of an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from recommender import payload as P
from recommender.catalog import Catalog, FileRecord
from recommender.duplicates import IngestDeduper
from recommender.ingest.records import EmbeddedFile
from recommender.ingest.scan import SourceFile
from recommender.locks import CollectionLock
from recommender.settings import Settings
from recommender.store import VectorStore, open_store, point_id_for


class IngestWriter:
    """Holds what must stay in one process (lock, Qdrant client, SQLite connection) and does every write."""

    def __init__(self, settings: Settings, keyword_fields: Iterable[str] = ()):
        self.settings = settings
        self.keyword_fields = list(keyword_fields)
        self._lock = CollectionLock(settings.home, settings.collection, "ingest").acquire(settings.lock_timeout)
        try:
            self.store: VectorStore = open_store(settings)
        except BaseException:
            self._lock.release()
            raise
        self.catalog = Catalog(settings.catalog_path)
        self._deduper: IngestDeduper | None = None
        self._ready = False

    def start(self, run_id: str, source: str) -> list[dict[str, Any]]:
        """Refuse a collection built with another model (before any model loads), then record the run.

        Returns the runs that were still 'running' (killed: we hold the lock, so none is live), now
        marked 'interrupted'; this run resumes their work (their recorded files count as unchanged).
        """
        if self.store.exists():
            self.ensure_collection(self.settings.model, 0)  # raises ModelMismatchError; creates metadata indexes
        if self.settings.dedup_on_ingest:
            self._deduper = IngestDeduper(self.store, self.settings, embed=_cut_out_embedder(self.settings))
        resumed = self.catalog.interrupt_runs(self.settings.collection)
        if resumed and self.store.exists():
            self._drop_unrecorded([r["run_id"] for r in resumed])
        self.catalog.start_run(run_id, self.settings.collection, source, self.settings.model)
        return resumed

    def _drop_unrecorded(self, run_ids: Sequence[str]) -> None:
        """Delete the points a killed run wrote but never recorded in the catalog.

        A run upserts a chunk before it records the chunk's files; killed in between, it leaves points no
        file references. Re-ingesting the same bytes would overwrite them (same id), but a file changed or
        deleted before the next run would leave them as orphans naming a path that holds something else.
        """
        referenced = self.catalog.point_ids(self.settings.collection)
        for rid in run_ids:
            offset: str | int | None = None
            while True:
                rows, offset = self.store.scroll_where({P.RUN_ID: rid}, limit=256, offset=offset, with_payload=False)
                orphans = [pid for pid, _, _ in rows if pid not in referenced]
                if orphans:
                    self.store.delete(orphans)
                if offset is None:
                    break

    def ensure_collection(self, model: str, dim: int) -> None:
        """Create the collection for the model's vectors on first use (a model mismatch raises)."""
        if not self._ready:
            self.store.ensure_collection(model, dim, self.keyword_fields)
            self._ready = True

    def close(self) -> None:
        self.store.close()
        self.catalog.close()
        self._lock.release()

    # -- reads the stages need -------------------------------------------------
    def known(self) -> dict[str, FileRecord]:
        return self.catalog.files(self.settings.collection)

    def stored(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self.store.existing(ids)

    # -- writes --------------------------------------------------------------------
    def release_gone(self, gone: Sequence[FileRecord], run_id: str) -> None:
        """Deleted source files: release their points (or mark them), then forget or flag the rows.

        A point is handed over only to a file that is still there: when every file of a point leaves
        at once (moved to another folder, say), none of them may inherit it, or the point would name a
        path that no longer exists (issue 14). The files' new names bring their content back as new.
        """
        mark = self.settings.on_delete == "mark"
        paths = [r.path for r in gone]
        leaving = set(paths)
        for rec in gone:
            self._release(rec.path, rec.point_ids, keep=(), mark=mark, rewritten=leaving)
        if mark:
            self.catalog.mark_deleted(self.settings.collection, paths, run_id)
        else:
            self.catalog.remove_files(self.settings.collection, paths)

    def restat(self, files: Sequence[SourceFile]) -> None:
        """Files found unchanged: keep their current inode and ctime, which the next plan compares."""
        if files:
            self.catalog.update_identity(self.settings.collection, [(f.path, f.ino, f.ctime_ns) for f in files])

    def cluster(self, ids: Sequence[str], payloads: list[dict[str, Any]], vectors: np.ndarray) -> dict[str, int]:
        """Assign duplicate clusters to the new points (payloads filled in place) against each other and the
        collection, before any of them is written; returns new items per tier."""
        if self._deduper is None or not len(ids):
            return {}
        return self._deduper.assign(ids, payloads, vectors)

    def templates(self) -> dict[str, float]:
        """The templates the deduper's verifier has learned so far ("WxH" -> share of keypoints recurring)."""
        return self._deduper.templates() if self._deduper is not None else {}

    def cut_outs(self) -> int:
        """New items so far whose picture the deduper cut out of its frame (a template, a flat background) and searched."""
        return self._deduper.cut_count if self._deduper is not None else 0

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        step = self.settings.upsert_batch
        for s in range(0, len(ids), step):
            self.store.upsert(ids[s : s + step], vectors[s : s + step], payloads[s : s + step])

    def record(self, files: Sequence[EmbeddedFile], statuses: Sequence[str], known: Mapping[str, FileRecord],
               metadata: Mapping[str, dict[str, Any]], model: str, run_id: str) -> None:
        """After the points: keep byte-identical paths, release what a changed file no longer has, write the rows.

        Releases look at the chunk's new state, not only the catalog's old one: when files swap or
        rotate names, a point one file lets go of is the new content of another file of the chunk,
        and it is handed over (payload promoted) instead of deleted.
        """
        now_refs: dict[str, list[str]] = {}  # point id -> this chunk's paths that reference it now
        for ef, status in zip(files, statuses):
            if status != "failed":
                for h in ef.hashes:
                    now_refs.setdefault(point_id_for(h), []).append(ef.file.path)
        rewritten = {ef.file.path for ef in files}  # their catalog rows are replaced below
        self._record_copies(files, statuses, metadata)
        records = []
        for ef, status in zip(files, statuses):
            pids = [point_id_for(h) for h in ef.hashes]
            old = known.get(ef.file.path)  # the row as the plan read it: this run writes it only here
            if old and old.point_ids:
                self._release(ef.file.path, old.point_ids, keep=pids if status != "failed" else [],
                              now_refs=now_refs, rewritten=rewritten)
            records.append(FileRecord(
                ef.file.path, ef.file.size, ef.file.mtime_ns, ef.hashes[0] if ef.hashes else None,
                status if status in ("failed", "duplicate") else "ok", ef.error, pids, ef.file.ino, ef.file.ctime_ns,
            ))
        self.catalog.record_files(self.settings.collection, model, run_id, records)

    def finish_run(self, run_id: str, status: str, report: dict[str, Any]) -> None:
        self.catalog.finish_run(run_id, status, report)

    def _release(self, path: str, old_ids: Sequence[str], keep: Sequence[str], mark: bool = False,
                 now_refs: Mapping[str, Sequence[str]] | None = None, rewritten: set[str] | None = None) -> None:
        """Stop `path` referencing old_ids: a point another file still references (in the catalog, or
        newly in this chunk) is handed over to it; the others are deleted (or marked).

        Idempotent, so a run killed half-way repeats it safely: the catalog row still lists the ids.
        """
        gone_ids, reassigned = [], []
        for pid in set(old_ids) - set(keep):
            others = [p for p in self.catalog.other_paths(self.settings.collection, pid, path)
                      if p not in (rewritten or ())]
            others += [p for p in (now_refs or {}).get(pid, ()) if p != path and p not in others]
            if others:
                reassigned.append((pid, others[0]))
            else:
                gone_ids.append(pid)
        stored = self.store.existing([pid for pid, _ in reassigned])
        for pid, other in reassigned:
            if pid in stored:
                self.store.set_payload([pid], _drop_copy(stored[pid], path, other))
        if mark:
            self.store.set_payload(gone_ids, {P.DELETED: True})
        else:
            self.store.delete(gone_ids)

    def _record_copies(self, files: Sequence[EmbeddedFile], statuses: Sequence[str],
                       metadata: Mapping[str, dict[str, Any]]) -> None:
        """Byte-identical files share one point; keep each extra path (and its metadata, e.g. its split)
        in the point's `copies`, so nothing is lost and leakage reports see every file."""
        extra: dict[str, list[dict[str, Any]]] = {}
        for ef, status in zip(files, statuses):
            if status == "duplicate":
                entry = {P.PATH: ef.file.path, P.RELPATH: ef.file.relpath, **metadata.get(ef.file.path, {})}
                for h in ef.hashes:
                    extra.setdefault(point_id_for(h), []).append(entry)
        stored = self.store.existing(list(extra))
        for pid, entries in extra.items():
            payload = stored.get(pid, {})
            copies = [c for c in payload.get(P.COPIES, []) if c[P.PATH] != payload.get(P.PATH)]
            have = {c[P.PATH] for c in copies} | {payload.get(P.PATH)}
            new = [e for e in entries if e[P.PATH] not in have]
            if new:
                self.store.set_payload([pid], {P.COPIES: copies + new})


def _drop_copy(payload: dict[str, Any], path: str, other: str) -> dict[str, Any]:
    """Payload update when `path` stops referencing a shared point: drop it from `copies`, and if it
    was the point's main path, promote `other` (with its own metadata and item key) in its place."""
    copies = [c for c in payload.get(P.COPIES, []) if c[P.PATH] != path]
    if payload.get(P.PATH) != path:
        return {P.COPIES: copies}
    promoted = next((c for c in copies if c[P.PATH] == other), {P.PATH: other})
    key = str(payload.get(P.ITEM_KEY, path))
    return {**promoted, P.ITEM_KEY: other + key.removeprefix(path), P.COPIES: [c for c in copies if c[P.PATH] != other]}


def _cut_out_embedder(settings: Settings) -> Callable[[Sequence[Any]], np.ndarray]:
    """The ingest model's embed function for the pictures dedupe cuts out of framed items (slides, pages).
    The model is this process's ingest embedder, loaded on the first cut-out: a collection without a
    template never loads it here, and a run whose embed stage works in this process shares it."""
    def embed(images: Sequence[Any]) -> np.ndarray:
        from recommender.ingest.embed import embedder_for
        from recommender.ingest.records import EmbedSpec

        return np.asarray(embedder_for(EmbedSpec.from_settings(settings)).embed_images(list(images)), np.float32)
    return embed

