"""Ingest as stages over plain data: every stage's input and output pickles, each stage is timed, and the
in-process runner and the Prefect flow build the same collection from the same stages."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from corpus import VOLUME_RELPATH, Corpus, plant_corpus
from flows.ingest import ingest_flow
from recommender.catalog import FileRecord
from recommender.ingest import EmbedSpec, RunReport, embed_files, run_ingest, stages
from recommender.settings import Settings, get_settings
from recommender.store import open_store

ART = sorted((Path(__file__).resolve().parents[1] / "samples" / "art").rglob("*.jpg"))
STAGES = {"scan", "plan", "load_model", "decode", "embed", "wait", "dedupe", "cluster", "upsert"}
VOLATILE = ("run_id", "ingested_at")  # differ between two runs by design


def planted_corpus(root: Path) -> Corpus:
    """The shared planted corpus (exact, copy and near duplicates, a volume) plus one broken file."""
    corpus = plant_corpus(root)
    (root / "broken.jpg").write_bytes(ART[4].read_bytes()[:1500])
    return corpus


def collection_snapshot(cfg: Settings) -> dict[str, tuple[dict, np.ndarray]]:
    """Point id -> (payload without the run's id and time, vector)."""
    store = open_store(cfg)
    try:
        return {pid: ({k: v for k, v in p.items() if k not in VOLATILE}, v)
                for pid, p, v in store.scroll(with_vectors=True)}
    finally:
        store.close()


def assert_same_collection(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for pid in a:
        assert a[pid][0] == b[pid][0], pid
        np.testing.assert_allclose(a[pid][1], b[pid][1], atol=1e-6)


def counts(report: dict) -> dict:
    keep = ("scanned", "new", "unchanged", "duplicate", "changed", "deleted", "failed", "items", "points",
            "duplicates_by_tier", "failures", "status")
    return {k: report[k] for k in keep}


def _roundtrip(obj):
    return pickle.loads(pickle.dumps(obj))


@pytest.mark.slow
def test_every_stage_input_and_output_pickles(tmp_path):
    corpus = planted_corpus(tmp_path / "src")
    cfg = get_settings(home=tmp_path / "h", device="cpu")
    found = stages.scan(corpus.root, cfg, corpus.metadata)
    assert _roundtrip(found) == found
    scanned = found.files
    files = [f for f in scanned if f.relpath in ("broken.jpg", VOLUME_RELPATH)] + scanned[:2]
    plan = stages.plan(files, {}, corpus.root)
    assert _roundtrip(plan) == plan and plan.todo == files
    spec = EmbedSpec.from_settings(cfg)
    assert _roundtrip(spec) == spec
    chunk = embed_files(plan.todo, spec)
    back = _roundtrip(chunk)
    assert [ef.file for ef in back.files] == files and (back.model, back.dim) == ("mobilenet_v2", 1280)
    assert back.files[0].error and len(back.files[1].keys) > 1  # the broken file's reason; the volume's slices
    for ef, eb in zip(chunk.files, back.files):
        assert (eb.keys, eb.hashes, eb.payloads, eb.error) == (ef.keys, ef.hashes, ef.payloads, ef.error)
        assert (ef.vectors is None and eb.vectors is None) or np.array_equal(ef.vectors, eb.vectors)
    statuses, todo = stages.classify(chunk.files, {}, {}, set())
    assert statuses == ["failed", "new", "new", "new"] and _roundtrip((statuses, todo)) == (statuses, todo)
    payload = stages.point_payload(chunk.files[1], 0, corpus.root, chunk.model, "run", {"split": "train"})
    assert _roundtrip(payload) == payload and payload["split"] == "train" and payload["phash"]
    report = RunReport("run", cfg.collection, cfg.model, str(corpus.root), stage_seconds={"scan": 0.1})
    assert _roundtrip(report) == report


def test_plan_skips_unchanged_files_by_stat_and_finds_gone_ones(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    for p in ART[:3]:
        (root / p.name).write_bytes(p.read_bytes())
    files = stages.scan(root, get_settings()).files
    same, touched = files[0], files[1]
    known = {
        same.path: FileRecord(same.path, same.size, same.mtime_ns, "h0", "ok", None, ["p0"]),
        touched.path: FileRecord(touched.path, touched.size, touched.mtime_ns - 1, "h1", "ok", None, ["p1"]),
        str(root / "gone.jpg"): FileRecord(str(root / "gone.jpg"), 1, 1, "h2", "ok", None, ["p2"]),
        "/elsewhere/other.jpg": FileRecord("/elsewhere/other.jpg", 1, 1, "h3", "ok", None, ["p3"]),
    }
    plan = stages.plan(files, known, root)
    assert plan.unchanged == 1 and plan.todo == files[1:]
    assert [r.path for r in plan.gone] == [str(root / "gone.jpg")]  # another source's files are not touched


def test_chunks_keep_file_order():
    files = list(range(7))
    assert stages.chunks(files, 3) == [[0, 1, 2], [3, 4, 5], [6]]


@pytest.mark.slow
def test_runner_and_flow_build_the_same_collection_with_timed_stages(tmp_path):
    corpus = planted_corpus(tmp_path / "src")
    by_runner = get_settings(home=tmp_path / "runner", device="cpu", chunk_items=16)
    by_flow = get_settings(home=tmp_path / "flow", device="cpu", chunk_items=16)
    ran = run_ingest(by_runner, corpus.root, corpus.metadata).to_dict()
    flowed = ingest_flow(str(corpus.root), str(corpus.metadata), settings=by_flow.model_dump(mode="json"))
    assert counts(ran) == counts(flowed)
    assert ran["failed"] == 1 and ran["duplicate"] >= 1  # the broken file; a byte-identical copy shares a point
    assert ran["duplicates_by_tier"].get("copy", 0) >= 3  # resized, cropped and mirrored copies
    assert STAGES <= ran["stage_seconds"].keys() and STAGES <= flowed["stage_seconds"].keys()
    assert all(v >= 0 for v in ran["stage_seconds"].values())
    assert_same_collection(collection_snapshot(by_runner), collection_snapshot(by_flow))
    os.utime(corpus.root / "planted" / "naturmort_small.jpg")  # touched: read again, found unchanged, not re-added
    again = run_ingest(by_runner, corpus.root, corpus.metadata).to_dict()
    assert (again["new"], again["unchanged"], again["points"]) == (0, ran["new"] + ran["duplicate"], ran["points"])


def test_scan_reports_every_path_it_passes_over_and_never_opens_a_fifo(tmp_path):
    """FIFOs, sockets, dangling links, link loops and unreadable files are listed with the reason;
    the FIFO is only stat'ed (opening it would block the run)."""
    import os
    import socket

    root = tmp_path / "src"
    root.mkdir()
    (root / "a.jpg").write_bytes(ART[0].read_bytes())
    os.mkfifo(root / "pipe.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.jpg"))
    (root / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    (root / "loop1.jpg").symlink_to(root / "loop2.jpg")
    (root / "loop2.jpg").symlink_to(root / "loop1.jpg")
    (root / "linked.jpg").symlink_to(root / "a.jpg")   # a link to a file is ingested like the file
    try:
        found = stages.scan(root, get_settings())
    finally:
        sock.close()
    assert [f.relpath for f in found.files] == ["a.jpg", "linked.jpg"]
    reasons = {os.path.basename(s["path"]): s["reason"] for s in found.skipped}
    assert reasons == {
        "pipe.jpg": "a FIFO (named pipe), not a file", "sock.jpg": "a socket, not a file",
        "dangling.jpg": "dangling symbolic link (its target is gone)",
        "loop1.jpg": "symbolic link loop", "loop2.jpg": "symbolic link loop",
    }


def test_metadata_table_problems_are_reported_with_line_numbers_under_the_policy(tmp_path):
    from recommender.errors import MetadataError
    from recommender.metadata import load_metadata

    root = tmp_path / "src"
    root.mkdir()
    (root / "a.jpg").write_bytes(ART[0].read_bytes())
    (root / "b.jpg").write_bytes(ART[1].read_bytes())
    table = tmp_path / "labels.csv"
    table.write_text("path,genre,mood\na.jpg,Landscape,calm\nb.jpg,Portrait,\na.jpg,Still life,odd\n"
                     "missing.jpg,Landscape,\n../outside.jpg,Landscape,\n")
    meta = load_metadata(table, root)
    assert meta.get(str((root / "a.jpg").resolve()))["genre"] == "Landscape"          # the first row is kept
    assert str((root / "missing.jpg").resolve()) in meta.rows                         # kept for when it appears
    assert not any("outside" in p for p in meta.rows)
    by_line = {i["line"]: i["issue"] for i in meta.issues}
    assert "mood" in by_line[1]                                                        # undeclared column, once
    assert by_line[4].startswith("second row for this file (first on line 2)")
    assert by_line[5].startswith("no such file") and by_line[6].startswith("path is outside")
    assert set(by_line) == {1, 4, 5, 6}
    latin = tmp_path / "latin.csv"
    latin.write_bytes("path,artist\na.jpg,Dürer\n".encode("latin-1"))
    with pytest.raises(MetadataError, match="is not UTF-8.*save it as UTF-8"):
        load_metadata(latin, root)
