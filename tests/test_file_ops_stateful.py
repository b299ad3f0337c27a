"""Issue 14: any sequence of file operations between ingests loses nothing.

A Hypothesis state machine adds, changes, deletes, renames, swaps, moves and replaces by
symbolic links the files of a small folder of real pictures, ingests it in this process, and
kills ingests run in another process at a random write. After every completed ingest the store,
the catalog and the folder must agree: one point per distinct file content (byte-identical files
share a point), each point naming files that hold its content now (its `path` and `copies`),
every file of the folder accounted for exactly once (a point's path or copy, or the run report's
`skipped` for a dangling link or a loop), and `recommender check` (`consistency.check`) clean.

The pictures are uncompressed 64x64 PNGs, all the same byte size (like DICOM series or raw scans),
and a write may keep a fixed modification time (as `cp -p`, `rsync -t` and `tar x` do): then size
and mtime alone cannot tell two pictures apart, which is where swaps used to go unseen.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import multiprocessing
import os
import shutil
import signal
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, event, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test
from PIL import Image

from recommender import payload as P
from recommender.catalog import Catalog
from recommender.consistency import check
from recommender.ingest import RunReport, run_ingest
from recommender.settings import Settings, get_settings
from recommender.store import open_store, point_id_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("", "sub", "sub/deep")
SLOTS = tuple(os.path.join(d, f"{n}.png") for d in FOLDERS for n in "abcde")
N_PICTURES = 8
ARCHIVE_TIME_NS = 1_600_000_000 * 10**9  # the mtime a `cp -p` / `tar x` / `rsync -t` write keeps
STORE_WRITES = ("ensure_collection", "upsert", "delete", "set_payload", "optimize")
CATALOG_WRITES = ("interrupt_runs", "start_run", "update_identity", "record_files", "remove_files", "mark_deleted",
                  "finish_run")
index = st.integers(0, 63)  # picks among what exists now (modulo its count): shrinks towards the first


@lru_cache(maxsize=1)
def pictures() -> tuple[bytes, ...]:
    """Eight distinct real pictures (sample paintings at 64x64), stored as uncompressed PNG so every
    one has the same byte size: a change of content never shows in the size."""
    out = []
    for path in sorted((REPO / "samples" / "art").rglob("*.jpg"))[:N_PICTURES]:
        buf = io.BytesIO()
        Image.open(path).convert("RGB").resize((64, 64)).save(buf, "PNG", compress_level=0)
        out.append(buf.getvalue())
    assert len(set(out)) == N_PICTURES and len({len(b) for b in out}) == 1
    return tuple(out)


def ingest_settings(home: Path, chunk_items: int) -> Settings:
    """Small, CPU-only settings (the default MobileNetV2 model and edge store) for one example's home."""
    return get_settings(home=home, device="cpu", chunk_items=chunk_items, decode_workers=1, lock_timeout=30)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- an ingest killed at a random write, in its own process --------------------------------------------------
def _trap(fn: Callable[..., Any], calls: itertools.count, kill_at: int) -> Callable[..., Any]:
    def write(*args: Any, **kwargs: Any) -> Any:
        if next(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)
    return write


def _ingest_until_write(home: str, src: str, chunk_items: int, kill_at: int) -> None:
    """Child process: a real ingest that SIGKILLs itself just before its `kill_at`-th write to the store
    or the catalog (so the kill lands at a chosen stage, reproducibly); finishes if it writes less."""
    from recommender.ingest import writer

    calls, opened = itertools.count(1), writer.IngestWriter.__init__

    def trapped(self: writer.IngestWriter, *args: Any, **kwargs: Any) -> None:
        opened(self, *args, **kwargs)
        for target, names in ((self.store, STORE_WRITES), (self.catalog, CATALOG_WRITES)):
            for name in names:
                setattr(target, name, _trap(getattr(target, name), calls, kill_at))

    writer.IngestWriter.__init__ = trapped
    run_ingest(ingest_settings(Path(home), chunk_items), Path(src))


@lru_cache(maxsize=1)
def _children() -> multiprocessing.context.BaseContext:
    """Fresh processes forked from a server that has imported torch once (seconds saved per kill)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["recommender.ingest.embed", "recommender.ingest.runner", "recommender.store"])
    return ctx


def ingest_killed_at(home: Path, src: Path, chunk_items: int, kill_at: int) -> bool:
    """Run the child; True if it was killed (False: it finished before its `kill_at`-th write)."""
    child = _children().Process(target=_ingest_until_write, args=(str(home), str(src), chunk_items, kill_at))
    child.start()
    child.join(180)
    assert child.exitcode in (0, -signal.SIGKILL), f"the ingest child ended with {child.exitcode}"
    return child.exitcode == -signal.SIGKILL


# -- the folder and the oracle ------------------------------------------------------------------------------
class Folder:
    """The source tree: its entries (files and links) and what each one holds now."""

    def __init__(self, root: Path):
        self.root = root
        for d in FOLDERS:
            (root / d).mkdir(parents=True, exist_ok=True)

    def entries(self) -> list[str]:
        return [s for s in SLOTS if os.path.lexists(self.root / s)]

    def free(self) -> list[str]:
        return [s for s in SLOTS if not os.path.lexists(self.root / s)]

    def content(self) -> dict[str, str]:
        """Absolute path -> sha256 of every entry that reads as a file (links followed)."""
        out = {}
        for s in self.entries():
            try:
                out[str(self.root / s)] = sha((self.root / s).read_bytes())
            except OSError:  # a dangling link or a loop: not a picture
                pass
        return out

    def write(self, slot: str, data: bytes, archive_time: bool) -> None:
        """Write in place (through a link, like an editor), or replace a broken link by a file."""
        path = self.root / slot
        if os.path.islink(path) and not path.exists():
            path.unlink()
        path.write_bytes(data)
        if archive_time:
            os.utime(path, ns=(ARCHIVE_TIME_NS, ARCHIVE_TIME_NS))


def stored_points(cfg: Settings) -> dict[str, dict[str, Any]]:
    store = open_store(cfg)
    try:
        return {pid: payload for pid, payload, _ in store.scroll()} if store.exists() else {}
    finally:
        store.close()


def catalog_files(cfg: Settings) -> dict[str, tuple[str | None, str, list[str]]]:
    catalog = Catalog(cfg.catalog_path)
    try:
        assert not [r for r in catalog.runs(cfg.collection) if r["status"] == "running"], "a run left 'running'"
        return {p: (r.sha256, r.status, r.point_ids) for p, r in catalog.files(cfg.collection).items()}
    finally:
        catalog.close()


def assert_agree(folder: Folder, cfg: Settings, report: RunReport) -> None:
    """Store, catalog and folder agree after a completed ingest (the issue-14 invariant)."""
    live = folder.content()
    assert report.status == "completed" and report.failed == 0, report.failures
    assert {s["path"] for s in report.skipped} == {str(folder.root / s) for s in folder.entries()} - set(live)
    points = stored_points(cfg)
    assert sorted(points) == sorted({point_id_for(h) for h in live.values()}), "one point per distinct content"
    named: list[str] = []
    for pid, payload in points.items():
        for entry in [payload] + payload.get(P.COPIES, []):
            path = entry[P.PATH]
            assert live.get(path) == payload[P.SHA256], f"point {pid} names {path}, which does not hold its content"
            assert entry[P.RELPATH] == os.path.relpath(path, folder.root)
            named.append(path)
        assert payload[P.ITEM_KEY] == payload[P.PATH]
    assert sorted(named) == sorted(live), "every file named exactly once by the points"
    expected = {p: (h, [point_id_for(h)]) for p, h in live.items()}
    got = catalog_files(cfg)
    assert {p: (h, ids) for p, (h, _, ids) in got.items()} == expected, "the catalog holds what the folder holds"
    assert {status for _, status, _ in got.values()} <= {"ok", "duplicate"}
    report_check = check(cfg)
    assert report_check.consistent, report_check.to_dict()


# -- the state machine ---------------------------------------------------------------------------------------
class FileOps(RuleBasedStateMachine):
    """Random file operations between ingests (some killed); the invariant is checked after each completed one."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="fileops-")).resolve()
        self.folder = Folder(self.tmp / "src")
        self.chunk_items = 64
        self.archive = False  # every write of the example keeps one fixed mtime, as an archive's files do
        self.kills = 0

    @property
    def cfg(self) -> Settings:
        return ingest_settings(self.tmp / "home", self.chunk_items)

    @initialize(pics=st.lists(st.integers(0, N_PICTURES - 1), min_size=1, max_size=5),
                chunk_items=st.sampled_from([64, 2, 1]), archive=st.booleans())
    def populate_and_ingest(self, pics: list[int], chunk_items: int, archive: bool) -> None:
        self.chunk_items, self.archive = chunk_items, archive
        for slot, pic in zip(SLOTS[::3], pics):
            self.folder.write(slot, pictures()[pic], archive_time=archive)
        self.ingest()

    def _pick(self, options: list[str], i: int) -> str:
        return options[i % len(options)]

    def _entry(self, i: int) -> Path:
        return self.folder.root / self._pick(self.folder.entries(), i)

    def _free(self, i: int) -> Path:
        return self.folder.root / self._pick(self.folder.free(), i)

    @precondition(lambda self: self.folder.free())
    @rule(i=index, pic=st.integers(0, N_PICTURES - 1), archive_time=st.booleans())
    def add(self, i: int, pic: int, archive_time: bool) -> None:
        self.folder.write(str(self._free(i).relative_to(self.folder.root)), pictures()[pic], archive_time or self.archive)

    @precondition(lambda self: self.folder.free() and self.folder.content())
    @rule(i=index, j=index, keep_time=st.booleans())
    def copy(self, i: int, j: int, keep_time: bool) -> None:
        """A byte-identical duplicate of a file in the tree (`cp`, or `cp -p` keeping its mtime)."""
        source = Path(self._pick(sorted(self.folder.content()), i))
        (shutil.copy2 if keep_time or self.archive else shutil.copyfile)(source, self._free(j))

    @precondition(lambda self: self.folder.entries())
    @rule(i=index, pic=st.integers(0, N_PICTURES - 1), archive_time=st.booleans())
    def change(self, i: int, pic: int, archive_time: bool) -> None:
        self.folder.write(str(self._entry(i).relative_to(self.folder.root)), pictures()[pic], archive_time or self.archive)

    @precondition(lambda self: self.folder.entries())
    @rule(i=index)
    def delete(self, i: int) -> None:
        self._entry(i).unlink()

    @precondition(lambda self: self.folder.entries() and self.folder.free())
    @rule(i=index, j=index)
    def rename(self, i: int, j: int) -> None:
        """To a free name anywhere in the tree (same folder or another)."""
        self._entry(i).rename(self._free(j))

    @precondition(lambda self: self.folder.entries())
    @rule(i=index, folder=st.sampled_from(FOLDERS))
    def move(self, i: int, folder: str) -> None:
        """To another folder under the same name (when that name is free there)."""
        source = self._entry(i)
        target = self.folder.root / folder / source.name
        if not os.path.lexists(target):
            source.rename(target)

    @precondition(lambda self: len(self.folder.entries()) >= 2)
    @rule(i=index, j=index)
    def swap(self, i: int, j: int) -> None:
        entries = self.folder.entries()
        a, b = self.folder.root / self._pick(entries, i), self.folder.root / self._pick(entries, i + 1 + j % (len(entries) - 1))
        a.rename(self.tmp / "swapping")
        b.rename(a)
        (self.tmp / "swapping").rename(b)

    @precondition(lambda self: len(self.folder.entries()) >= 2)
    @rule(i=index, j=index, relative=st.booleans())
    def symlink(self, i: int, j: int, relative: bool) -> None:
        """Replace a file by a link to another entry of the tree (which may be a link itself, or become a loop)."""
        entries = self.folder.entries()
        path, target = self.folder.root / self._pick(entries, i), self.folder.root / self._pick(entries, i + 1 + j % (len(entries) - 1))
        path.unlink()
        path.symlink_to(os.path.relpath(target, path.parent) if relative else target)

    @rule()
    def ingest(self) -> None:
        report = run_ingest(self.cfg, self.folder.root)
        assert len(report.resumes) == self.kills, "every killed run is picked up by the next one"
        self.kills = 0
        assert_agree(self.folder, self.cfg, report)

    @precondition(lambda self: self.kills == 0)  # one killed process per run between completed ones: they cost seconds
    @rule(kill_at=st.integers(1, 12))
    def ingest_killed(self, kill_at: int) -> None:
        killed = ingest_killed_at(self.tmp / "home", self.folder.root, self.chunk_items, kill_at)
        event(f"ingest killed before write {kill_at}" if killed else "ingest finished before its kill")
        self.kills += killed and kill_at > 3  # writes 1-3 are ensure_collection, interrupt_runs, start_run

    def teardown(self) -> None:
        try:
            self.ingest()  # every example ends with a completed run, checked
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def test_any_file_operations_between_runs_lose_nothing() -> None:
    """About 15 random sequences of up to 10 operations and ingests (issue 14, first point)."""
    run_state_machine_as_test(FileOps, settings=settings(
        max_examples=15, stateful_step_count=10, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))


# -- the minimal sequences of the bugs the machine found -----------------------------------------------------
def _ingested_folder(tmp_path: Path, files: dict[str, int], archive_time: bool = False) -> tuple[Folder, Settings]:
    folder, cfg = Folder(tmp_path / "src"), ingest_settings(tmp_path / "home", 64)
    for slot, pic in files.items():
        folder.write(slot, pictures()[pic], archive_time)
    assert_agree(folder, cfg, run_ingest(cfg, folder.root))
    return folder, cfg


def test_all_copies_of_a_picture_moved_away_leave_no_point_on_a_gone_path(tmp_path: Path) -> None:
    """Bug: each gone file handed the shared point to the other gone one, so the point kept naming a
    file that no longer exists (and, with both deleted, outlived every file as an orphan)."""
    folder, cfg = _ingested_folder(tmp_path, {"a.png": 0, "b.png": 0})
    for name in ("a.png", "b.png"):
        (folder.root / name).rename(folder.root / "sub" / name)
    assert_agree(folder, cfg, run_ingest(cfg, folder.root))
    for name in ("a.png", "b.png"):
        (folder.root / "sub" / name).unlink()
    assert_agree(folder, cfg, run_ingest(cfg, folder.root))


def test_swapping_look_alike_files_with_kept_mtimes_is_seen(tmp_path: Path) -> None:
    """Bug: two pictures of the same byte size and mtime (copied with `cp -p`, out of an archive) swapped
    names, and the plan, comparing size and mtime only, kept each point on the other file's path."""
    folder, cfg = _ingested_folder(tmp_path, {"a.png": 0, "b.png": 1}, archive_time=True)
    (folder.root / "a.png").rename(folder.root / "x.png")
    (folder.root / "b.png").rename(folder.root / "a.png")
    (folder.root / "x.png").rename(folder.root / "b.png")
    report = run_ingest(cfg, folder.root)
    assert report.changed + report.duplicate == 2 and report.unchanged == 0
    assert_agree(folder, cfg, report)


def test_a_restored_folder_is_hashed_not_re_embedded(tmp_path: Path) -> None:
    """New inodes with the same bytes, size and mtime (a backup restore, `cp -a`) cost a read each, not an embed."""
    folder, cfg = _ingested_folder(tmp_path, {"a.png": 0, "b.png": 1}, archive_time=True)
    restored = tmp_path / "restored"
    shutil.copytree(folder.root, restored)
    shutil.rmtree(folder.root)
    restored.rename(folder.root)
    report = run_ingest(cfg, folder.root)
    assert (report.unchanged, report.new, report.changed, report.items) == (2, 0, 0, 0)
    assert "embed" not in report.stage_seconds
    assert_agree(folder, cfg, report)


def test_a_point_written_by_a_killed_run_and_never_recorded_is_dropped_by_the_next(tmp_path: Path) -> None:
    """Bug: a run killed between a chunk's upsert and its catalog record left a point no file referenced;
    when that file changed before the next run, the point outlived it as an orphan naming its path."""
    folder, cfg = _ingested_folder(tmp_path, {"a.png": 0, "sub/b.png": 0})
    (folder.root / "sub" / "b.png").rename(folder.root / "b.png")
    (folder.root / "a.png").unlink()
    # writes: ensure_collection, interrupt_runs, start_run, a delete per gone file, remove_files, upsert, record_files
    assert ingest_killed_at(tmp_path / "home", folder.root, 64, 8)
    assert stored_points(cfg), "the killed run wrote the moved file's point before it died"
    folder.write("b.png", pictures()[1], archive_time=False)
    report = run_ingest(cfg, folder.root)
    assert len(report.resumes) == 1
    assert_agree(folder, cfg, report)
