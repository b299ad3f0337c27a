"""One writer per collection at a time: a file lock under the data home (`filelock`).

A second ingest (or dedupe, check --repair, reembed) waits up to `lock_timeout`
seconds, saying whom it waits for, then fails with a clear message; it never opens
the store while another run writes to it. The OS drops the lock when its process
dies, so a lock left by a killed run is simply taken by the next one. Beside the lock
a small JSON file names the holder (pid, host, start time, what it runs), for the
waiting message and for the run history (a run whose holder is gone was interrupted).
The lock belongs to the process, not to a thread: a flow may take it in one task
thread and release it in another. For runs on several machines against a Qdrant
server, put the flow behind a Prefect concurrency limit as well (docs/scaling.md).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from recommender.errors import RecommenderError

log = logging.getLogger(__name__)


class IngestLockedError(RecommenderError):
    """Another writer holds the collection."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class CollectionLock:
    """Exclusive lock for writing into one collection (other processes, and other instances here, wait)."""

    def __init__(self, home: Path, collection: str, purpose: str = "ingest"):
        self.path = Path(home) / "locks" / f"{collection}.lock"
        self.holder_path = self.path.with_suffix(".holder.json")
        self.collection = collection
        self.purpose = purpose
        self._lock = FileLock(self.path, thread_local=False)

    def acquire(self, timeout: float = 0.0) -> "CollectionLock":
        """Take the lock, waiting up to `timeout` seconds (and saying for whom); raise IngestLockedError."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            if timeout <= 0:
                raise self._locked_error() from None
            log.warning("waiting up to %.0f s for %s", timeout, describe(self.holder()))
            try:
                self._lock.acquire(timeout=timeout)
            except Timeout:
                raise self._locked_error() from None
        self._write_holder()
        return self

    def release(self) -> None:
        """Let the next writer in; releasing a lock that is not held does nothing."""
        if self._lock.is_locked:
            self.holder_path.unlink(missing_ok=True)
            self._lock.release()

    def holder(self) -> dict[str, Any] | None:
        """Who holds (or last held) the lock: pid, host, started, purpose; None if unknown."""
        try:
            return json.loads(self.holder_path.read_text())
        except (OSError, ValueError):
            return None

    def _write_holder(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "purpose": self.purpose}
        tmp = self.holder_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(self.holder_path)

    def _locked_error(self) -> IngestLockedError:
        return IngestLockedError(
            f"Collection '{self.collection}' is locked by {describe(self.holder())} (lock {self.path}). "
            "Wait for it to finish, or pass --wait SECONDS (RECOMMENDER_LOCK_TIMEOUT) to wait for it."
        )


def describe(holder: dict[str, Any] | None) -> str:
    """`ingest started 09:14 by pid 4242 on host` (local time), for messages."""
    if not holder:
        return "another process"
    started = time.strftime("%H:%M", time.localtime(holder.get("started", 0)))
    return f"{holder.get('purpose', 'a writer')} started {started} by pid {holder.get('pid')} on {holder.get('host')}"


def holder_alive(holder: dict[str, Any] | None) -> bool | None:
    """Whether the holding process still runs: True/False on this host, None when it can't be told."""
    if not holder or holder.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return None
    return True
