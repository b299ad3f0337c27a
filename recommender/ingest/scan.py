"""Walk a source folder and list candidate files with the stat data needed to skip unchanged ones."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from recommender.errors import ConfigError


@dataclass(frozen=True)
class SourceFile:
    """A file found under the source root."""

    path: str  # absolute
    relpath: str  # relative to the source root, '/'-separated
    size: int
    mtime_ns: int


def scan_source(root: Path, ignore_suffixes: Iterable[str] = (), exclude: Iterable[Path] = ()) -> list[SourceFile]:
    """All regular, non-hidden files under root, sorted by path (deterministic order)."""
    root = Path(root).expanduser().resolve()
    if not root.exists():
        raise ConfigError(f"Source '{root}' does not exist; pass a folder of images.")
    if root.is_file():
        st = root.stat()
        return [SourceFile(str(root), root.name, st.st_size, st.st_mtime_ns)]
    ignore = {s.lower() for s in ignore_suffixes}
    skip = {str(Path(p).resolve()) for p in exclude}
    found: list[SourceFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            full = os.path.join(dirpath, name)
            if name.startswith(".") or Path(name).suffix.lower() in ignore or full in skip:
                continue
            try:
                st = os.stat(full)
            except OSError:
                continue
            if not os.path.isfile(full):
                continue
            found.append(SourceFile(full, os.path.relpath(full, root).replace(os.sep, "/"), st.st_size, st.st_mtime_ns))
    found.sort(key=lambda f: f.relpath)
    return found
