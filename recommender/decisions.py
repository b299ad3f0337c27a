"""Curators' decisions on duplicate clusters: keep, discard or not-a-duplicate, per member file.

A decision names a file (its path) and the point that stands for it, so it survives re-ingest and
reembed (point ids derive from content) and tells byte-identical copies apart (they share a point).
Recommendations hide a point once every file behind it is discarded; the delete list is the
discarded files. The product never deletes a file itself: the curator's own tooling does, from the
exported list. Decisions are a log (the latest per file counts), like the feedback log.

A not-a-duplicate decision also records the point ids of the cluster's other members at the time,
so the next dedupe (ingest-time or the full sweep) can keep that file apart from them
(`separated_pairs`): a curator's "these differ" outlives the thresholds that joined them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable, Literal

import pandas as pd

from recommender.catalog import open_database
from recommender.errors import ConfigError

Decision = Literal["keep", "discard", "not_duplicate", "undecided"]
DECISIONS = ("keep", "discard", "not_duplicate", "undecided")
COLUMNS = ["cluster_id", "point_id", "path", "decision", "decided_at"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    cluster_id TEXT NOT NULL,
    point_id TEXT NOT NULL,
    path TEXT NOT NULL,
    decision TEXT NOT NULL,          -- keep | discard | not_duplicate | undecided (takes a decision back)
    at REAL NOT NULL,
    members TEXT                     -- JSON list: the cluster's other point ids when decided (not_duplicate)
);
CREATE INDEX IF NOT EXISTS decisions_by_collection ON decisions (collection, seq);
CREATE INDEX IF NOT EXISTS decisions_by_kind ON decisions (collection, decision);
"""


class Decisions:
    """The decision log of one data home (a table in its catalog database)."""

    def __init__(self, path: Path):
        self.conn = open_database(path, _SCHEMA)
        self._add_columns()

    def _add_columns(self) -> None:
        """Bring a log written before `members` existed up to date (a column added, nothing rewritten)."""
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(decisions)")}
        if "members" not in have:
            with self.conn:
                self.conn.execute("ALTER TABLE decisions ADD COLUMN members TEXT")

    def close(self) -> None:
        self.conn.close()

    def decide(self, collection: str, cluster_id: str, point_id: str, path: str, decision: Decision,
               members: Iterable[str] | None = None) -> None:
        """Record one member file's decision (replacing its earlier one). `members`: the point ids of the
        cluster's other members as the curator saw them, so a not-a-duplicate keeps the file apart from
        exactly those (without it, from the cluster's canonical and its current members)."""
        if decision not in DECISIONS:
            raise ConfigError(f"Decision '{decision}' is not one of {', '.join(DECISIONS)}.")
        others = None if members is None else json.dumps(sorted({str(m) for m in members} - {str(point_id)}))
        with self.conn:
            self.conn.execute("INSERT INTO decisions (collection, cluster_id, point_id, path, decision, at, members) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?)", (collection, str(cluster_id), str(point_id), str(path),
                                                               decision, time.time(), others))

    def _latest(self, collection: str) -> list[tuple[Any, ...]]:
        """(cluster_id, point_id, path, decision, at) of each file's latest decision, 'undecided' left out."""
        rows = self.conn.execute("SELECT cluster_id, point_id, path, decision, at FROM decisions WHERE collection=? "
                                 "ORDER BY seq", (collection,)).fetchall()
        latest: dict[str, tuple[Any, ...]] = {}
        for row in rows:
            latest[row[2]] = row
        return [r for r in latest.values() if r[3] != "undecided"]

    def frame(self, collection: str, cluster_id: str | None = None) -> pd.DataFrame:
        """The current decision of every decided file (latest wins), by cluster: what the export holds."""
        out = pd.DataFrame(self._latest(collection), columns=COLUMNS)
        if cluster_id is not None:
            out = out[out["cluster_id"] == str(cluster_id)]
        out["decided_at"] = pd.to_datetime(out["decided_at"], unit="s", utc=True)
        return out.sort_values(["cluster_id", "path"]).reset_index(drop=True)

    def delete_list(self, collection: str) -> list[str]:
        """The files a curator discarded, one path each, sorted: what to remove by hand."""
        return sorted(r[2] for r in self._latest(collection) if r[3] == "discard")

    def hidden_points(self, collection: str, store: Any) -> set[str]:
        """Points whose every file is discarded: recommendations leave them out. Asked on every query,
        so a collection nobody discarded from costs one indexed SQLite look-up."""
        if self.conn.execute("SELECT 1 FROM decisions WHERE collection=? AND decision='discard' LIMIT 1",
                             (collection,)).fetchone() is None:
            return set()
        gone = [r for r in self._latest(collection) if r[3] == "discard"]
        discarded = {r[2] for r in gone}
        files = files_of_points(store, sorted({r[1] for r in gone}))
        return {pid for pid, paths in files.items() if paths and set(paths) <= discarded}

    def separated_pairs(self, collection: str, store: Any = None) -> set[frozenset[str]]:
        """Point-id pairs a dedupe must not put in one same-picture cluster again: each file marked
        not-a-duplicate with every other member of its cluster (those recorded with the decision, the
        cluster's canonical, whose id is the cluster id, and, given a store, the points that carry that
        cluster id now). Ids derive from content, so the pairs hold across re-ingest and reembed. A
        byte-identical copy shares its point and cannot be separated from it (no pair with itself)."""
        if self.conn.execute("SELECT 1 FROM decisions WHERE collection=? AND decision='not_duplicate' LIMIT 1",
                             (collection,)).fetchone() is None:
            return set()
        rows = self.conn.execute("SELECT path, cluster_id, point_id, decision, members FROM decisions "
                                 "WHERE collection=? ORDER BY seq", (collection,)).fetchall()
        apart = [(cid, pid, json.loads(members) if members else [])
                 for _, cid, pid, decision, members in {r[0]: r for r in rows}.values() if decision == "not_duplicate"]
        now = _carrying(store, sorted({cid for cid, _, _ in apart})) if store is not None and apart else {}
        pairs: set[frozenset[str]] = set()
        for cluster_id, point_id, members in apart:
            others = {cluster_id, *members, *now.get(cluster_id, ())}
            pairs |= {frozenset((point_id, o)) for o in others if o != point_id}
        return pairs


def files_of(payload: dict[str, Any]) -> list[str]:
    """A stored point's files: its own path and those of its byte-identical copies."""
    from recommender import payload as P

    files = [payload.get(P.PATH)] + [c.get(P.PATH) for c in payload.get(P.COPIES) or [] if isinstance(c, dict)]
    return [f for f in files if f]


def _carrying(store: Any, cluster_ids: list[str]) -> dict[str, set[str]]:
    """The points that carry each same-picture cluster id now, in one filtered scroll."""
    from recommender import payload as P

    found: dict[str, set[str]] = {}
    offset: str | int | None = None
    while True:
        rows, offset = store.scroll_where(must={P.CLUSTER_ID: cluster_ids}, limit=1024, offset=offset)
        for pid, payload, _ in rows:
            found.setdefault(str(payload.get(P.CLUSTER_ID)), set()).add(str(pid))
        if offset is None:
            return found


def files_of_points(store: Any, point_ids: Iterable[str]) -> dict[str, list[str]]:
    """Each stored point's files (`files_of`), in one read of their payloads."""
    return {pid: files_of(payload) for pid, payload, _ in store.get_many(list(point_ids))}
