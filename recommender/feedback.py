"""Likes and dislikes: what an analyst marked in a feedback session, kept in the catalog, undoable.

A session's likes join its next queries as positive examples and its dislikes as negative ones
(`Recommender.recommend(session=...)`: Qdrant's recommend-style best-score query), from the dashboard
and the REST API alike. Why a log of marks rather than a set: undo must bring back what was there
before (a like turned into a dislike comes back as a like), and a log does that by dropping its last
line. A session is any name the caller chooses: a user name, or the dashboard's browser session.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from recommender.catalog import open_database
from recommender.errors import ConfigError

Mark = Literal["like", "dislike", "clear"]
MARKS = ("like", "dislike", "clear")
SESSION_PATTERN = r"^[A-Za-z0-9_.@-]{1,200}$"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    session TEXT NOT NULL,
    point_id TEXT NOT NULL,
    mark TEXT NOT NULL,              -- like | dislike | clear (takes an item's mark away)
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_by_session ON feedback (collection, session, seq);
"""


@dataclass(frozen=True)
class Examples:
    """A session's current marks: items liked and disliked, oldest first."""

    likes: list[str]
    dislikes: list[str]

    def as_dict(self) -> dict[str, list[str]]:
        return {"likes": self.likes, "dislikes": self.dislikes}


def check_session(session: str) -> str:
    """A session name as stored, or a ConfigError that says what a name may hold."""
    if not isinstance(session, str) or not re.match(SESSION_PATTERN, session):
        raise ConfigError(f"Feedback session '{str(session)[:60]}' is not a valid name: use 1-200 letters, "
                          "digits and . _ @ - (e.g. a user name).")
    return session


class Feedback:
    """The feedback log of one data home (a table in its catalog database)."""

    def __init__(self, path: Path):
        self.conn = open_database(path, _SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def mark(self, collection: str, session: str, point_id: str, mark: Mark) -> Examples:
        """Like, dislike or clear one item for a session (replacing its earlier mark); returns the marks."""
        if mark not in MARKS:
            raise ConfigError(f"Feedback mark '{mark}' is not one of {', '.join(MARKS)}.")
        with self.conn:
            self.conn.execute("INSERT INTO feedback (collection, session, point_id, mark, at) VALUES (?, ?, ?, ?, ?)",
                              (collection, check_session(session), str(point_id), mark, time.time()))
        return self.examples(collection, session)

    def undo(self, collection: str, session: str) -> tuple[str | None, Examples]:
        """Take back the session's last mark: the item gets the mark it had before. Returns the item
        (None when there was nothing to undo) and the marks after."""
        with self.conn:
            row = self.conn.execute("SELECT seq, point_id FROM feedback WHERE collection=? AND session=? "
                                    "ORDER BY seq DESC LIMIT 1", (collection, check_session(session))).fetchone()
            if row:
                self.conn.execute("DELETE FROM feedback WHERE seq=?", (row[0],))
        return (row[1] if row else None), self.examples(collection, session)

    def reset(self, collection: str, session: str) -> None:
        """Forget a session's marks (its whole log: nothing left to undo)."""
        with self.conn:
            self.conn.execute("DELETE FROM feedback WHERE collection=? AND session=?", (collection, check_session(session)))

    def examples(self, collection: str, session: str) -> Examples:
        """Each item's latest mark in the session, as likes and dislikes in the order first marked."""
        rows = self.conn.execute("SELECT point_id, mark FROM feedback WHERE collection=? AND session=? ORDER BY seq",
                                 (collection, check_session(session))).fetchall()
        latest: dict[str, str] = {}
        for pid, mark in rows:
            latest[pid] = mark
        return Examples([p for p, m in latest.items() if m == "like"], [p for p, m in latest.items() if m == "dislike"])
