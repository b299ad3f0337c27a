"""Deduplication inside the collection: on ingest across runs, the full sweep, reports, and queries."""

from __future__ import annotations

import pytest

import json
import shutil
from pathlib import Path

import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from flows.ingest import ingest_flow
from recommender.recommend import Recommender
from recommender.settings import get_settings
from recommender.store import open_store

REPO = Path(__file__).resolve().parents[1]
ART = sorted((REPO / "samples" / "art").rglob("*.jpg"))

pytestmark = pytest.mark.slow  # Prefect flows


def _copies(original: Path, folder: Path) -> list[Path]:
    """Two smaller copies of one real painting: half size, and 3/4 size re-encoded at JPEG quality 30."""
    folder.mkdir(parents=True, exist_ok=True)
    img = Image.open(original).convert("RGB")
    half = folder / "half.jpg"
    img.resize((img.width // 2, img.height // 2)).save(half, quality=90)
    q30 = folder / "q30.jpg"
    img.resize((img.width * 3 // 4, img.height * 3 // 4)).save(q30, quality=30)
    return [half, q30]


def _clusters(cfg) -> dict[str, dict]:
    store = open_store(cfg)
    try:
        return {p["path"]: p for _, p, _ in store.scroll()}
    finally:
        store.close()


def test_later_batch_joins_existing_cluster_and_canonical_policy_holds(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    original = first / "original.jpg"
    shutil.copy(ART[0], original)
    for p in ART[6:10]:
        shutil.copy(p, first / p.name)
    copies = _copies(ART[0], second)
    cfg = get_settings(home=tmp_path / "h")
    # the copies come first: the later, larger original must take over as canonical (largest resolution wins)
    r1 = ingest_flow(str(second), settings=cfg.model_dump(mode="json"))
    assert r1["duplicates_by_tier"].get("copy") == 1
    r2 = ingest_flow(str(first), settings=cfg.model_dump(mode="json"))
    assert r2["new"] == 5
    payloads = _clusters(cfg)
    members = [payloads[str(p.resolve())] for p in [original, *copies]]
    assert len({m["cluster_id"] for m in members}) == 1
    assert [m["canonical"] for m in members] == [True, False, False]
    assert {m["tier"] for m in members[1:]} == {"copy"}
    assert sum(1 for p in payloads.values() if p.get("canonical")) == 1
    # re-runs change nothing and never create a second canonical
    again = ingest_flow(str(first), settings=cfg.model_dump(mode="json"))
    assert again["new"] == 0 and _clusters(cfg) == payloads


def test_sweep_agrees_with_ingest_and_writes_reports(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ART[1], src / "original.jpg")
    _copies(ART[1], src / "copies")
    # look-alikes that are not the same picture: neighbouring slices of one volume are `near`, never `copy`
    shutil.copy(REPO / "samples" / "volumes" / "itk_kmeans_t1.nii.gz", src / "volume.nii.gz")
    for p in ART[10:14]:
        shutil.copy(p, src / p.name)
    cfg = get_settings(home=tmp_path / "h")
    ingest_flow(str(src), settings=cfg.model_dump(mode="json"))
    before = {p: (v.get("cluster_id"), v.get("canonical")) for p, v in _clusters(cfg).items()}
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["dedupe", "--home", str(cfg.home), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    clusters = [c for c in summary["clusters_list"] if str((src / "original.jpg").resolve()) in
                {m["path"] for m in c["members"]}]
    assert len(clusters) == 1 and clusters[0]["size"] == 3
    assert clusters[0]["canonical"] == str((src / "original.jpg").resolve())
    after = {p: (v.get("cluster_id"), v.get("canonical")) for p, v in _clusters(cfg).items()}
    assert after == before
    for name in ("clusters.parquet", "clusters.csv", "pairs.parquet", "pairs.csv", "report.html"):
        assert (out / name).is_file(), name
    assert "data:image/jpeg;base64" in (out / "report.html").read_text()
    # the report lists what the store holds (the same-picture clusters users delete by), and counts
    # only their non-canonical members as redundant; the look-alike is in its group, not in a cluster
    stored = {(p, v["cluster_id"], v["canonical"]) for p, v in _clusters(cfg).items() if v.get("cluster_id")}
    reported = pd.read_csv(out / "clusters.csv")
    assert set(zip(reported["path"], reported["cluster_id"], reported["canonical"])) == stored
    assert summary["redundant_items"] == sum(1 for _, _, canonical in stored if not canonical) == 2
    volume = str((src / "volume.nii.gz").resolve())
    assert volume not in set(reported["path"])
    groups = pd.read_csv(out / "look_alike_groups.csv")
    assert (groups["path"] == volume).sum() >= 2 and set(groups.loc[groups["path"] == volume, "tier"]) <= {"near"}
    assert summary["look_alike_items"] >= 5 and summary["look_alike_groups"] >= 2


def test_recommendations_collapse_duplicates(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ART[2], src / "original.jpg")
    copies = _copies(ART[2], src / "copies")
    for p in ART[14:20]:
        shutil.copy(p, src / p.name)
    cfg = get_settings(home=tmp_path / "h")
    ingest_flow(str(src), settings=cfg.model_dump(mode="json"))
    rec = Recommender(cfg)
    try:
        results = rec.similar_to_item(str(src / "original.jpg"), k=8)
        from_copy = rec.similar_to_item(str(copies[0]), k=8)
    finally:
        rec.close()
    paths = {r.path for r in results}
    assert not paths & {str(p.resolve()) for p in copies}, "a duplicate of the query was recommended"
    clusters = [r.payload.get("cluster_id") for r in results if r.payload.get("cluster_id")]
    assert len(clusters) == len(set(clusters))
    assert str((src / "original.jpg").resolve()) not in {r.path for r in from_copy}


def test_identical_files_across_splits_are_kept_and_reported_as_leakage(tmp_path, sample_copy):
    cfg = get_settings(home=tmp_path / "h")
    ingest_flow(str(sample_copy), str(sample_copy / "metadata.csv"), settings=cfg.model_dump(mode="json"))
    train = str((sample_copy / "medical/train/meningioma/Tr-me_0071.jpg").resolve())
    test = str((sample_copy / "medical/test/meningioma/Te-me_0135.jpg").resolve())
    point = _clusters(cfg)[test]                          # one point for the two identical files...
    assert point["split"] == "test"
    assert [(c["path"], c["split"]) for c in point["copies"]] == [(train, "train")]   # ...the other kept as a copy
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["dedupe", "--home", str(cfg.home), "--out", str(out), "--json"])
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["leakage"]["split_pairs"] == [{"value_a": "test", "value_b": "train", "clusters": 1, "item_pairs": 1}]
    assert summary["canonical_policy"].startswith("largest width x height, then least compressed")
    assert "least compressed" in (out / "report.html").read_text()   # the policy is shown where curators act
    # deleting the file the point is named after promotes the copy, with its own metadata
    Path(test).unlink()
    ingest_flow(str(sample_copy), str(sample_copy / "metadata.csv"), settings=cfg.model_dump(mode="json"))
    promoted = _clusters(cfg)[train]
    assert promoted["split"] == "train" and promoted["copies"] == []


def test_a_grainy_copy_in_a_later_run_joins_its_slice_by_phash(tmp_path):
    """Grain pulls a slice's cosine to its copy under the lowest cosine any rule looks at (0.80), so the
    store's nearest neighbours never return the pair, while the pHash stays within `phash_strict` bits:
    the batch sweep finds such a pair by pHash, and an ingest in a later run must too (the stored pHashes)."""
    import random

    import numpy as np

    from recommender.dedup import DedupConfig
    from recommender.dedup.embed import model_embedder
    from recommender.dedup.hashing import fingerprint_image
    from recommender.dedup.transforms import _with_noise
    from recommender.ingest import run_ingest

    medical = REPO / "samples" / "medical"
    slices = [medical / "test/pituitary/Te-piTr_0000.jpg", medical / "train/notumor/Tr-noTr_0002.jpg",
              medical / "train/pituitary/Tr-piTr_0001.jpg", medical / "test/meningioma/Te-meTr_0001.jpg"]
    first, second = tmp_path / "slices", tmp_path / "grainy"
    first.mkdir(), second.mkdir()
    for p in slices + sorted((medical / "train" / "glioma").glob("*.jpg")):  # and a few other slices
        shutil.copy(p, first / p.name)
    embed, c = model_embedder("mobilenet_v2")[0], DedupConfig()
    for p in slices:
        img = Image.open(p).convert("RGB")
        grainy = _with_noise(np.asarray(img, np.float32), 30, random.Random(0))
        grainy.save(second / f"grainy_{p.name}", quality=95)
        e = np.asarray(embed([img, Image.open(second / f"grainy_{p.name}").convert("RGB")]), np.float32)
        a, b = fingerprint_image(img, "a"), fingerprint_image(Image.open(second / f"grainy_{p.name}"), "b")
        assert float(e[0] @ e[1]) / float(np.linalg.norm(e[0]) * np.linalg.norm(e[1])) < c.verify_cosine
        assert min((a.phash ^ b.phash).bit_count(), (a.phash ^ b.phash_mirror).bit_count()) <= c.phash_strict
    cfg = get_settings(home=tmp_path / "home", map_layout="off")
    run_ingest(cfg, first)
    run_ingest(cfg, second)
    payloads = {Path(p["path"]).name: p for p in _clusters(cfg).values()}
    for p in slices:
        grainy, original = payloads[f"grainy_{p.name}"], payloads[p.name]
        assert grainy.get("tier") == "copy" and grainy.get("cluster_id") == original.get("cluster_id") is not None
    assert all(payloads[p.name].get("cluster_id") is None for p in sorted((medical / "train" / "glioma").glob("*.jpg")))


def test_copies_saved_turned_join_their_paintings_in_one_run_and_across_runs(tmp_path):
    """A copy saved turned by a quarter, or transposed, is often another picture for the model (cosine
    under every rule's floor) and its pHash is unrelated; its turned pHash (`hashing.phash_turns`) is within
    `phash_strict` bits of its original's, which makes the pair a candidate, and ORB verifies it. In one run
    (the batch sweep) and in a later run (the stored pHashes), and no other painting joins."""
    import numpy as np

    from recommender.dedup import DedupConfig
    from recommender.dedup.embed import model_embedder
    from recommender.dedup.hashing import fingerprint_image
    from recommender.ingest import run_ingest

    turns = [Image.Transpose.ROTATE_90, Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270,
             Image.Transpose.ROTATE_90]
    art = REPO / "samples" / "art"
    paintings = [art / "portrait/cl010059543.jpg", art / "portrait/cl010059548.jpg",
                 art / "naturmort/cl010052713.jpg", art / "landscape/cl010052700.jpg"]
    others = [p for p in ART if p not in paintings][:6]
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    embed, c = model_embedder("mobilenet_v2")[0], DedupConfig()
    unseen = 0  # pairs the model would not make candidates
    for p, turn in zip(paintings, turns):
        shutil.copy(p, first / p.name)
        img = Image.open(p).convert("RGB")
        img.transpose(turn).save(second / f"turned_{p.stem}.jpg", quality=90)
        img.transpose(turn).save(first / f"turned_{p.stem}.jpg", quality=90)
        turned = Image.open(second / f"turned_{p.stem}.jpg").convert("RGB")
        e = np.asarray(embed([img, turned]), np.float32)
        unseen += float(e[0] @ e[1]) / float(np.linalg.norm(e[0]) * np.linalg.norm(e[1])) < c.verify_cosine
        a, b = fingerprint_image(img, "a"), fingerprint_image(turned, "b")
        assert min((a.phash ^ b.phash).bit_count(), (a.phash ^ b.phash_mirror).bit_count()) > c.phash_strict
        assert min((t ^ h).bit_count() for t in b.phash_turns for h in (a.phash, a.phash_mirror)) <= c.phash_strict
    assert unseen >= 3
    for p in others:
        shutil.copy(p, first / p.name)
    one_run = get_settings(home=tmp_path / "one", map_layout="off")
    run_ingest(one_run, first)
    later = get_settings(home=tmp_path / "later", map_layout="off")
    (tmp_path / "base").mkdir()
    for p in [*paintings, *others]:
        shutil.copy(p, tmp_path / "base" / p.name)
    run_ingest(later, tmp_path / "base")
    run_ingest(later, second)
    for cfg in (one_run, later):
        payloads = {Path(p["path"]).name: p for p in _clusters(cfg).values()}
        for p in paintings:
            turned, original = payloads[f"turned_{p.stem}.jpg"], payloads[p.name]
            assert turned.get("tier") == "copy" and turned.get("cluster_id") == original.get("cluster_id") is not None, p
        assert all(payloads[p.name].get("cluster_id") is None for p in others)


def test_png_exports_beside_their_volume_never_put_two_slices_of_it_in_one_cluster(tmp_path):
    """A NIfTI volume and PNG exports of seven of its slices, the PNGs' volume and slice index given in a
    metadata table under another name than the file's: each PNG is the same picture as its own slice, and
    neighbouring slices pass as its copies too, but no cluster may hold two slices of one volume (issue 15)."""
    from recommender import payload as P
    from recommender.decode import decode_file
    from recommender.ingest import run_ingest

    folder = tmp_path / "scans"
    folder.mkdir()
    volume = REPO / "samples" / "volumes" / "itk_kmeans_t1.nii.gz"
    shutil.copy(volume, folder / volume.name)
    items = decode_file(volume)
    mid = len(items) // 2
    rows = []
    for it in items[mid - 3: mid + 4]:
        index = int(it.payload[P.SLICE_INDEX])
        it.image.save(folder / f"export_z{index:03d}.png")
        rows.append({"path": f"export_z{index:03d}.png", "volume": "itk_kmeans_t1", "slice_index": index})
    pd.DataFrame(rows).to_csv(folder / "slices.csv", index=False)  # the scanner passes tables over
    cfg = get_settings(home=tmp_path / "home", map_layout="off")
    run_ingest(cfg, folder, metadata=folder / "slices.csv")
    store = open_store(cfg)
    try:
        points = [p for _, p, _ in store.scroll()]
    finally:
        store.close()
    clusters: dict[str, list[dict]] = {}
    for p in points:
        if p.get(P.CLUSTER_ID):
            clusters.setdefault(p[P.CLUSTER_ID], []).append(p)
    exports = [c for c in clusters.values() if any(p["path"].endswith(".png") for p in c)]
    assert len(exports) >= 5  # most exports found their slice in the volume
    for members in clusters.values():
        slices: dict[str, set[int]] = {}
        for p in members:
            slices.setdefault(str(p.get(P.SERIES) or p.get(P.VOLUME)), set()).add(int(p[P.SLICE_INDEX]))
        assert all(len(s) == 1 for s in slices.values()), members
