"""One writer per collection at a time: a file lock under the data home (`filelock`).

A second ingest (or dedupe, check --repair, reembed) waits up to `lock_timeout`
seconds, then fails with a clear message; it never opens the store while another
run writes to it. The lock belongs to the process, not to a thread: a flow may take
it in one task thread and release it in another. For runs on several machines
against a Qdrant server, put the flow behind a Prefect concurrency limit as well
(docs/scaling.md).
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout

from recommender.errors import RecommenderError


class IngestLockedError(RecommenderError):
    """Another ingest holds the collection."""


class CollectionLock:
    """Exclusive lock for writing into one collection (other processes, and other instances here, wait)."""

    def __init__(self, home: Path, collection: str):
        self.path = Path(home) / "locks" / f"{collection}.lock"
        self.collection = collection
        self._lock = FileLock(self.path, thread_local=False)

    def acquire(self, timeout: float = 0.0) -> "CollectionLock":
        """Take the lock, waiting up to `timeout` seconds; raise IngestLockedError saying what to do."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=timeout)
        except Timeout:
            raise IngestLockedError(
                f"Another ingest into collection '{self.collection}' is running (lock {self.path}). "
                "Wait for it to finish, or set RECOMMENDER_LOCK_TIMEOUT=<seconds> to wait for it."
            ) from None
        return self

    def release(self) -> None:
        """Let the next writer in; releasing a lock that is not held does nothing."""
        if self._lock.is_locked:
            self._lock.release()
