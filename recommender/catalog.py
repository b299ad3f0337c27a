"""SQLite catalog of files, items and runs.

Qdrant holds vectors and payload; the catalog remembers what each run saw
(size, mtime, hash, status, failure reason) so unchanged files cost only a
stat, failures stay visible, and the dashboard can show run history.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

_FILE_COLUMNS = ("collection", "path", "size", "mtime_ns", "sha256", "status", "reason", "point_ids", "model", "run_id",
                 "updated_at", "ino", "ctime_ns")
_ADDED_COLUMNS = {"ino": "INTEGER", "ctime_ns": "INTEGER"}  # catalogs written before them get them on open

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    collection TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    sha256 TEXT,
    status TEXT NOT NULL,            -- ok | duplicate | failed
    reason TEXT,
    point_ids TEXT,                  -- JSON list: one per item (slices give several)
    model TEXT,
    run_id TEXT,
    updated_at REAL,
    ino INTEGER,                     -- with ctime_ns: which file object held the path when it was read
    ctime_ns INTEGER,
    PRIMARY KEY (collection, path)
);
CREATE TABLE IF NOT EXISTS file_points (   -- which files reference which point (exact duplicates share one)
    collection TEXT NOT NULL,
    path TEXT NOT NULL,
    point_id TEXT NOT NULL,
    PRIMARY KEY (collection, path, point_id)
);
CREATE INDEX IF NOT EXISTS file_points_by_point ON file_points (collection, point_id);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    collection TEXT NOT NULL,
    source TEXT,
    model TEXT,
    started_at REAL,
    finished_at REAL,
    status TEXT,
    report TEXT                      -- JSON run report
);
"""


@dataclass(frozen=True)
class FileRecord:
    """What the catalog knows of one source file.

    `ino` and `ctime_ns` (None in rows written before they were kept) tell a file that moved into the
    path, or was rewritten in place, from the one that was read, even when size and mtime are the same
    (a swap of two same-size files copied with `cp -p`, `rsync -t` or out of an archive).
    """

    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    status: str
    reason: str | None
    point_ids: list[str]
    ino: int | None = None
    ctime_ns: int | None = None


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """The data home's SQLite database with `schema` applied: write-ahead log, so readers (API,
    dashboard) never wait on a writer; a 30 s busy timeout; usable from the API's worker threads."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(schema)
    return conn


class Catalog:
    """Thin, transactional access to the catalog database."""

    def __init__(self, path: Path):
        self.conn = open_database(path, _SCHEMA)
        self._add_columns()

    def _add_columns(self) -> None:
        """Bring a catalog written by an older version up to the current files table (columns only added)."""
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(files)")}
        with self.conn:
            for name, kind in _ADDED_COLUMNS.items():
                if name not in have:
                    self.conn.execute(f"ALTER TABLE files ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self.conn.close()

    def files(self, collection: str) -> dict[str, FileRecord]:
        """All file records of a collection, by absolute path."""
        rows = self.conn.execute(
            "SELECT path, size, mtime_ns, sha256, status, reason, point_ids, ino, ctime_ns FROM files WHERE collection=?",
            (collection,),
        )
        return {r[0]: FileRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6] or "[]"), r[7], r[8]) for r in rows}

    def record_files(self, collection: str, model: str, run_id: str, records: Iterable[FileRecord]) -> None:
        """Upsert file records in one transaction (after their points are written)."""
        now = time.time()
        records = list(records)
        with self.conn:
            self.conn.executemany(
                f"INSERT OR REPLACE INTO files ({', '.join(_FILE_COLUMNS)}) VALUES ({', '.join('?' * len(_FILE_COLUMNS))})",
                [
                    (collection, r.path, r.size, r.mtime_ns, r.sha256, r.status, r.reason,
                     json.dumps(r.point_ids), model, run_id, now, r.ino, r.ctime_ns)
                    for r in records
                ],
            )
            self.conn.executemany(
                "DELETE FROM file_points WHERE collection=? AND path=?", [(collection, r.path) for r in records]
            )
            self.conn.executemany(
                "INSERT OR IGNORE INTO file_points VALUES (?,?,?)",
                [(collection, r.path, pid) for r in records if r.status in ("ok", "duplicate") for pid in r.point_ids],
            )

    def update_identity(self, collection: str, rows: Iterable[tuple[str, int | None, int | None]]) -> None:
        """Record (path, ino, ctime_ns) for files found unchanged, so the next run compares against them."""
        with self.conn:
            self.conn.executemany("UPDATE files SET ino=?, ctime_ns=? WHERE collection=? AND path=?",
                                  [(ino, ctime, collection, path) for path, ino, ctime in rows])

    def remove_files(self, collection: str, paths: Iterable[str]) -> None:
        """Forget files (after their points were released)."""
        rows = [(collection, p) for p in paths]
        with self.conn:
            self.conn.executemany("DELETE FROM files WHERE collection=? AND path=?", rows)
            self.conn.executemany("DELETE FROM file_points WHERE collection=? AND path=?", rows)

    def mark_deleted(self, collection: str, paths: Iterable[str], run_id: str) -> None:
        """Keep deleted files' rows, flagged, when the settings ask to mark rather than remove."""
        rows = [(run_id, time.time(), collection, p) for p in paths]
        with self.conn:
            self.conn.executemany(
                "UPDATE files SET status='deleted', run_id=?, updated_at=? WHERE collection=? AND path=?", rows
            )
            self.conn.executemany("DELETE FROM file_points WHERE collection=? AND path=?", [r[2:] for r in rows])

    def other_paths(self, collection: str, point_id: str, path: str) -> list[str]:
        """Other live files that reference the same point (exact duplicates)."""
        rows = self.conn.execute(
            "SELECT path FROM file_points WHERE collection=? AND point_id=? AND path<>? ORDER BY path",
            (collection, point_id, path),
        )
        return [r[0] for r in rows]

    def point_ids(self, collection: str) -> set[str]:
        """Every point id that a live file references: what the collection must hold."""
        rows = self.conn.execute("SELECT DISTINCT point_id FROM file_points WHERE collection=?", (collection,))
        return {r[0] for r in rows}

    def set_model(self, collection: str, model: str) -> None:
        """After a re-embed, every file of the collection is served by the new model."""
        with self.conn:
            self.conn.execute("UPDATE files SET model=? WHERE collection=?", (model, collection))

    def start_run(self, run_id: str, collection: str, source: str, model: str) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?)",
                (run_id, collection, source, model, time.time(), None, "running", None),
            )

    def interrupt_runs(self, collection: str) -> list[dict[str, Any]]:
        """Mark the collection's runs still 'running' as 'interrupted' (call while holding its lock, when
        no run can be live) and return them with the number of files each had recorded."""
        with self.conn:
            rows = self.conn.execute(
                "SELECT run_id, source, started_at, (SELECT count(*) FROM files f WHERE f.run_id = r.run_id) "
                "FROM runs r WHERE collection=? AND status='running'", (collection,)).fetchall()
            self.conn.execute("UPDATE runs SET status='interrupted', finished_at=? WHERE collection=? AND status='running'",
                              (time.time(), collection))
        return [{"run_id": r[0], "source": r[1], "started_at": r[2], "files_recorded": r[3]} for r in rows]

    def finish_run(self, run_id: str, status: str, report: dict[str, Any]) -> None:
        with self.conn:
            self.conn.execute(
                "UPDATE runs SET finished_at=?, status=?, report=? WHERE run_id=?",
                (time.time(), status, json.dumps(report), run_id),
            )

    def collections(self) -> list[str]:
        """Collections this data home has ingested, by name."""
        return [r[0] for r in self.conn.execute("SELECT DISTINCT collection FROM runs ORDER BY collection")]

    def sources(self, collection: str) -> list[str]:
        """The folders this collection was ingested from (the roots API responses make paths relative to)."""
        rows = self.conn.execute("SELECT DISTINCT source FROM runs WHERE collection=? AND source IS NOT NULL",
                                 (collection,))
        return [r[0] for r in rows]

    def runs(self, collection: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Most recent runs first, with their reports decoded."""
        sql = "SELECT run_id, collection, source, model, started_at, finished_at, status, report FROM runs"
        args: tuple = ()
        if collection:
            sql += " WHERE collection=?"
            args = (collection,)
        sql += " ORDER BY started_at DESC LIMIT ?"
        rows = self.conn.execute(sql, (*args, limit)).fetchall()
        keys = ("run_id", "collection", "source", "model", "started_at", "finished_at", "status", "report")
        return [dict(zip(keys, r[:-1] + (json.loads(r[-1]) if r[-1] else None,))) for r in rows]
