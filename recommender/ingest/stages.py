"""The ingest stages that decide without writing: scan, plan, chunk, classify, and the new points' payloads.

Each takes and returns plain data (paths, catalog rows, records), so the runner,
the Prefect flow and a test can call them alike; the embed stage is in `embed.py`,
the writes in `writer.py`.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from recommender import payload as P
from recommender.catalog import FileRecord
from recommender.ingest.records import EmbeddedFile, Plan
from recommender.ingest.scan import ScanResult, SourceFile, scan_source
from recommender.medical import slice_hash
from recommender.settings import Settings
from recommender.store import point_id_for

LIVE = ("ok", "duplicate")  # catalog statuses of files whose points are in the collection


def scan(source: Path, settings: Settings, metadata: Path | None = None) -> ScanResult:
    """Candidate files under `source`, in path order (the metadata table and ignored suffixes left out),
    and the paths passed over with the reason."""
    return scan_source(source, settings.ignore_suffixes, [metadata] if metadata else [])


def plan(files: Sequence[SourceFile], known: Mapping[str, FileRecord], source: Path) -> Plan:
    """Files to decode: those not in the catalog with the same size and mtime (an unchanged file costs one stat),
    those to verify (same size and mtime, another inode or ctime: a swap of look-alike files), and the
    catalog rows under `source` whose files are gone from it."""
    out = Plan([], 0, [])
    for f in files:
        rec = known.get(f.path)
        if not (rec and rec.status in LIVE and rec.size == f.size and rec.mtime_ns == f.mtime_ns):
            out.todo.append(f)
        elif rec.ino is None:  # a row from before inodes were kept: trusted as before, and completed now
            out.unchanged += 1
            out.restat.append(f)
        elif (rec.ino, rec.ctime_ns) == (f.ino, f.ctime_ns):
            out.unchanged += 1
        else:
            out.verify.append(f)
    present = {f.path for f in files}
    source = Path(source)
    root = str(source) + ("" if source.is_file() else os.sep)
    out.gone = [r for p, r in known.items() if r.status != "deleted" and p not in present
                and (p == str(source) or p.startswith(root))]
    return out


def same_content(files: Sequence[SourceFile], known: Mapping[str, FileRecord]) -> tuple[list[SourceFile], list[SourceFile]]:
    """Split files to verify into those whose bytes still hash to the catalog's content and the others.

    Reading a file costs far less than decoding and embedding it, so a folder restored from a backup
    (new inodes, same bytes) is hashed, not re-embedded. A volume's catalog hash is its first slice's
    (`medical.slice_hash`), so both forms are compared.
    """
    same, changed = [], []
    for f in files:
        try:
            digest = _file_digest(f.path)
        except OSError:  # gone or unreadable since the scan: the embed stage reports it
            changed.append(f)
            continue
        ok = known[f.path].sha256 in (digest.hexdigest(), slice_hash(digest, 0))
        (same if ok else changed).append(f)
    return same, changed


def _file_digest(path: str) -> "hashlib._Hash":
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h


def chunks(files: Sequence[SourceFile], size: int) -> list[list[SourceFile]]:
    """Consecutive runs of `size` files: one embed task each (a volume counts as one file)."""
    return [list(files[i : i + size]) for i in range(0, len(files), size)]


def classify(files: Sequence[EmbeddedFile], stored: Mapping[str, Mapping[str, Any]],
             known: Mapping[str, FileRecord], seen: set[str]) -> tuple[list[str], list[tuple[int, int]]]:
    """Each file's status in file order, and the (file, item) pairs that become new points.

    failed; unchanged (its points are stored under its own path); duplicate (every item is
    stored, or new earlier in this run: byte-identical to another file); changed (the
    catalog had other content at this path); new. `stored` maps the chunk's point ids to
    their stored payloads; `seen` holds the ids this run has added so far and is extended here.
    """
    statuses, todo = [], []
    for fi, ef in enumerate(files):
        if ef.error:
            statuses.append("failed")
            continue
        pids = [point_id_for(h) for h in ef.hashes]
        before = known.get(ef.file.path)
        if pids and all(stored.get(p, {}).get(P.PATH) == ef.file.path for p in pids):
            statuses.append("unchanged")
        elif pids and all(p in stored or p in seen for p in pids):
            statuses.append("duplicate")
        else:
            changed = before is not None and before.status in LIVE and before.sha256 != ef.hashes[0]
            statuses.append("changed" if changed else "new")
            for ii, p in enumerate(pids):
                if p not in stored and p not in seen:
                    todo.append((fi, ii))
                    seen.add(p)
    return statuses, todo


def point_payload(ef: EmbeddedFile, ii: int, source: Path, model: str, run_id: str,
                  metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A new point's payload: identity and provenance, what decoding and fingerprinting found, the file's metadata row."""
    return {
        P.PATH: ef.file.path,
        P.RELPATH: ef.file.relpath,
        P.ITEM_KEY: ef.keys[ii],
        P.SHA256: ef.hashes[ii],
        P.SOURCE: str(source),
        P.MODEL: model,
        P.RUN_ID: run_id,
        P.INGESTED_AT: time.time(),
        **ef.payloads[ii],
        **metadata,
    }
