"""One ingest per collection at a time: an advisory file lock under the data home.

A second ingest waits up to `lock_timeout` seconds, then fails with a clear
message; it never opens the store while another run writes to it. For runs on
several machines against a Qdrant server, put the flow behind a Prefect
concurrency limit as well (docs/scaling.md).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from recommender.errors import RecommenderError


class IngestLockedError(RecommenderError):
    """Another ingest holds the collection."""


class CollectionLock:
    """Exclusive, process-wide lock for writing into one collection."""

    def __init__(self, home: Path, collection: str):
        self.path = Path(home) / "locks" / f"{collection}.lock"
        self._fd: int | None = None

    def acquire(self, timeout: float = 0.0) -> "CollectionLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise IngestLockedError(
                        f"Another ingest into collection '{self.path.stem}' is running (pid {holder}, lock {self.path}). "
                        "Wait for it to finish, or set RECOMMENDER_LOCK_TIMEOUT=<seconds> to wait for it."
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
