"""One process owns an embedded edge store; every other process reaches it through that one.

Why: the edge engine admits one process per shard (it locks the shard's write-ahead log), yet
users run the dashboard, the API, a scheduled ingest and one-off CLI calls side by side. So the
first process that opens a home's store becomes its *owner*: it holds `owner.lock` (an OS file
lock, dropped by the kernel when the process dies, however it dies), opens the shards, and
answers the same `EdgeClient` calls for the others over a local socket (a Linux abstract Unix
socket, authenticated with a random key kept in the home, mode 0600). Any later process is a
*client*: its calls are sent to the owner, so a reader sees a writer's points as soon as the
owner has applied them, and nobody copies or reloads a shard.

When the owner goes away (stopped, or killed mid-call), a client's next call finds the socket
closed; it then takes `owner.lock` itself, or attaches to whichever process took it first,
and repeats the call. Every call `VectorStore` makes is idempotent (upserts and deletes by id,
payload sets, reads), so repeating one whose answer was lost is safe.

What a client does not get: calls run one at a time per connection (one connection per thread),
and while the owner builds the index (`optimize`, at the end of an ingest) the engine makes its
queries wait for the build (measured in docs/benchmarks.md). Local mode and a Qdrant server need
none of this (local mode is one process at a time; a server is shared by design).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import sys
import tempfile
import threading
import time
from multiprocessing.connection import AuthenticationError, Client, Connection, Listener
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from recommender.errors import RecommenderError, StoreLockedError
from recommender.store.edge import EdgeClient, prefetch_index_files

log = logging.getLogger(__name__)

ATTACH_WAIT_S = 60.0  # how long a process waits for a new owner to open the shards (1M opens in a few s)
_CALLS = frozenset({  # the EdgeClient calls a client may make (never close: that is the owner's)
    "collection_exists", "get_collection", "create_collection", "update_collection", "delete_collection",
    "get_aliases", "update_collection_aliases", "create_payload_index", "optimize", "version_stamp",
    "upsert", "delete", "set_payload", "delete_payload", "count", "retrieve", "scroll", "facet",
    "query_points", "query_batch_points", "query_points_groups", "search_info",
})
_GONE = (EOFError, ConnectionError, BrokenPipeError, OSError)


class OwnerGoneError(ConnectionError):
    """The owning process closed its socket: attach again (own the store, or reach the new owner)."""


def _address(root: Path) -> str:
    """A socket name for this store: abstract on Linux (no file to leave behind, no path limit)."""
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:24]
    if sys.platform.startswith("linux"):
        return f"\0recommender-store-{digest}"
    return os.path.join(tempfile.gettempdir(), f"recommender-store-{digest}.sock")


def _key(root: Path, create: bool) -> bytes | None:
    """The shared secret: written once by an owner (atomically, 0600), read by clients."""
    path = root / "owner.key"
    if not path.exists() and create:
        tmp = root / f"owner.key.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        if not path.exists():
            os.replace(tmp, path)
        else:
            tmp.unlink()
    return path.read_bytes() if path.exists() else None


def _portable(exc: BaseException) -> BaseException:
    """An exception the client can unpickle: ours travel as they are, the engine's as RuntimeError."""
    if isinstance(exc, RecommenderError):
        return exc
    return RuntimeError(f"{type(exc).__name__}: {exc}")


class _Owner:
    """Answers other processes' calls on this process's EdgeClient, one thread per connection."""

    def __init__(self, client: EdgeClient, address: str, key: bytes):
        self.client = client
        self.address = address
        self.listener = Listener(address, family="AF_UNIX", authkey=key)
        self._conns: set[Connection] = set()
        self._busy = 0
        self._idle = threading.Condition()
        self._closing = False
        threading.Thread(target=self._accept, name="store-owner", daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn = self.listener.accept()
            except AuthenticationError:
                continue
            except OSError:
                return
            if self._closing:
                conn.close()
                return
            self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="store-owner-conn", daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        try:
            while True:
                name, args, kwargs = conn.recv()
                with self._idle:
                    if self._closing:
                        return
                    self._busy += 1
                try:
                    reply = ("ok", self._call(name, args, kwargs))
                finally:
                    with self._idle:
                        self._busy -= 1
                        self._idle.notify_all()
                try:
                    conn.send(reply)
                except Exception as exc:  # an answer that does not pickle: say so, keep serving
                    if isinstance(exc, _GONE):
                        raise
                    conn.send(("err", RuntimeError(f"store answer could not be sent: {exc}")))
        except _GONE:
            pass
        finally:
            self._conns.discard(conn)
            conn.close()

    def _call(self, name: str, args: tuple, kwargs: dict) -> Any:
        if name not in _CALLS:
            return _Failure(RuntimeError(f"store call '{name}' is not allowed"))
        try:
            return getattr(self.client, name)(*args, **kwargs)
        except Exception as exc:
            return _Failure(_portable(exc))

    def close(self) -> None:
        """Stop answering: refuse new calls, wait for the ones running, drop every connection."""
        with self._idle:
            self._closing = True
            self._idle.wait_for(lambda: self._busy == 0, timeout=600)
        try:  # wake the accept() call so its thread ends
            Client(self.address, family="AF_UNIX", authkey=b"-").close()
        except Exception:
            pass
        self.listener.close()
        for conn in list(self._conns):
            conn.close()


class _Failure:
    """An exception raised by the owner's call, carried back to be raised in the caller."""

    def __init__(self, exc: BaseException):
        self.exc = exc


class _Remote:
    """Calls on the owner's EdgeClient, over one connection per calling thread."""

    def __init__(self, address: str, key: bytes):
        self.address = address
        self.key = key
        self._local = threading.local()
        self._all: list[Connection] = []
        self._conn()  # connect now: a refused connection means there is no owner to reach

    def _conn(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = Client(self.address, family="AF_UNIX", authkey=self.key)
            self._local.conn = conn
            self._all.append(conn)
        return conn

    def invoke(self, name: str, args: tuple, kwargs: dict) -> Any:
        try:
            conn = self._conn()
            conn.send((name, args, kwargs))
            status, value = conn.recv()
        except _GONE as exc:
            raise OwnerGoneError(str(exc)) from exc
        if status == "err":
            raise value
        if isinstance(value, _Failure):
            raise value.exc
        return value

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()


class _Own:
    """This process owns the store: calls go straight to the engine."""

    def __init__(self, client: EdgeClient, owner: _Owner, lock: FileLock):
        self.client, self.owner, self.lock = client, owner, lock

    def invoke(self, name: str, args: tuple, kwargs: dict) -> Any:
        return getattr(self.client, name)(*args, **kwargs)

    def close(self) -> None:
        self.owner.close()
        try:
            self.client.close()
        finally:
            self.lock.release()


class SharedEdge:
    """The EdgeClient API for any number of processes on one home (see the module docstring)."""

    is_edge = True

    def __init__(self, root: Path, wait: float = ATTACH_WAIT_S):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.wait = wait
        self._attach_lock = threading.Lock()
        self._closed = False
        self._target: _Own | _Remote = self._attach()

    @property
    def owns(self) -> bool:
        """True when this process holds the shards (others reach the store through it)."""
        return isinstance(self._target, _Own)

    def _attach(self) -> _Own | _Remote:
        """Own the store if nobody does, else reach its owner; wait while an owner is starting."""
        address, deadline = _address(self.root), time.monotonic() + self.wait
        while True:
            lock = FileLock(self.root / "owner.lock", thread_local=False)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                pass
            else:
                return self._own(lock, address)
            key = _key(self.root, create=False)
            if key is not None:
                try:
                    return _Remote(address, key)
                except (OSError, EOFError, AuthenticationError):
                    pass  # the owner is still opening its shards, or has just gone
            if time.monotonic() > deadline:
                raise StoreLockedError(
                    f"The embedded store at '{self.root}' is held by a process that does not answer "
                    f"(waited {self.wait:.0f} s). Stop it, or run a Qdrant server and set RECOMMENDER_QDRANT_URL.")
            time.sleep(0.05)

    def _own(self, lock: FileLock, address: str) -> _Own:
        try:
            client = EdgeClient(self.root)
            try:
                owner = _Owner(client, address, _key(self.root, create=True))
            except BaseException:
                client.close()
                raise
        except BaseException:
            lock.release()
            raise
        log.debug("owning the embedded store at %s", self.root)
        return _Own(client, owner, lock)

    def _call(self, name: str, args: tuple, kwargs: dict) -> Any:
        for _ in range(5):
            target = self._target
            try:
                return target.invoke(name, args, kwargs)
            except OwnerGoneError:
                with self._attach_lock:
                    if self._target is target and not self._closed:
                        target.close()
                        self._target = self._attach()
        raise StoreLockedError(f"The embedded store at '{self.root}' keeps changing owner; try again.")

    def prefetch(self, read: bool = False) -> int:
        """Warm the page cache with the index files (file access only: no call to the owner)."""
        return prefetch_index_files(self.root, read)

    def __getattr__(self, name: str) -> Any:
        if name not in _CALLS:
            raise AttributeError(name)
        return lambda *args, **kwargs: self._call(name, args, kwargs)

    def close(self) -> None:
        """Release the store: an owner stops answering and closes the shards; clients take over."""
        with self._attach_lock:
            if not self._closed:
                self._closed = True
                self._target.close()
