"""Walk a source folder and list candidate files with the stat data needed to skip unchanged ones.

Everything the walk passes over that is not a hidden file, an ignored suffix or the metadata
table is reported with the reason (unreadable, FIFO, socket, device, dangling link, link loop),
so the run report accounts for every path. Only `stat` is called on a path before it is known
to be a regular file: a FIFO is never opened, so it can't block a run.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from recommender.errors import ConfigError


@dataclass(frozen=True)
class SourceFile:
    """A file found under the source root (links followed: the stat is the target's)."""

    path: str  # absolute
    relpath: str  # relative to the source root, '/'-separated
    size: int
    mtime_ns: int
    ino: int | None = None  # with ctime_ns: a file moved into the path or rewritten in place shows here,
    ctime_ns: int | None = None  # even when it keeps the old size and mtime (`cp -p`, `rsync -t`, `tar x`)

    @classmethod
    def from_stat(cls, path: str, relpath: str, st: os.stat_result) -> "SourceFile":
        return cls(path, relpath, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


@dataclass
class ScanResult:
    """The walk's answer: candidate files in path order, and the paths passed over with why."""

    files: list[SourceFile]
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}


def scan_source(root: Path, ignore_suffixes: Iterable[str] = (), exclude: Iterable[Path] = ()) -> ScanResult:
    """All regular, non-hidden files under root, sorted by path (deterministic order)."""
    root = Path(root).expanduser().resolve()
    if not root.exists():
        raise ConfigError(f"Source '{root}' does not exist; pass a folder of images.")
    if root.is_file():
        st = root.stat()
        return ScanResult([SourceFile.from_stat(str(root), root.name, st)])
    ignore = {s.lower() for s in ignore_suffixes}
    skip = {str(Path(p).resolve()) for p in exclude}
    out = ScanResult([])
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: out.skipped.append(
            {"path": str(e.filename), "reason": f"folder not readable ({e.strerror})"})):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            full = os.path.join(dirpath, name)
            if name.startswith(".") or Path(name).suffix.lower() in ignore or full in skip:
                continue
            st, reason = _regular(full)
            if st is None:
                out.skipped.append({"path": full, "reason": reason})
                continue
            out.files.append(SourceFile.from_stat(full, os.path.relpath(full, root).replace(os.sep, "/"), st))
    out.files.sort(key=lambda f: f.relpath)
    out.skipped.sort(key=lambda s: s["path"])
    return out


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe), not a file"), (stat.S_ISSOCK, "a socket, not a file"),
          (stat.S_ISCHR, "a character device, not a file"), (stat.S_ISBLK, "a block device, not a file"),
          (stat.S_ISDIR, "a link to a folder (not followed)"))


def _regular(path: str) -> tuple[os.stat_result | None, str]:
    """The stat of a readable regular file (links followed), else None and why it is skipped."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "symbolic link loop"
        if os.path.islink(path):
            return None, "dangling symbolic link (its target is gone)"
        return None, f"cannot stat ({exc.strerror})"
    for test, reason in _KINDS:
        if test(st.st_mode):
            return None, reason
    if not os.access(path, os.R_OK):
        return None, "unreadable (permission denied)"
    return st, ""
