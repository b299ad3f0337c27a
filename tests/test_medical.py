"""DICOM files and NIfTI volumes become slice items with stable keys, hashes and medical payloads.

Uses pydicom's bundled test files (a CT slice, a 15-frame RT dose, a 2-frame RLE
RGB) and real T1 volumes (samples/ and the shared mri-slices corpus), and
ingests them through the real Prefect flow into Qdrant local mode.
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from recommender.decode import DecodeError, DecodeOptions, decode_file, load_image

REPO = Path(__file__).resolve().parents[1]
SAMPLE_VOLUME = REPO / "samples" / "volumes" / "itk_kmeans_t1.nii.gz"
CORPUS_VOLUMES = REPO.parent / "shared" / "corpora" / "mri-slices" / "volumes"


def _testdata(name: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name)
    assert path, f"pydicom test file {name} missing"
    return Path(path)


def test_ct_dicom_single_slice_with_modality_lut_and_stable_hash():
    path = _testdata("CT_small.dcm")
    items = decode_file(path)
    assert len(items) == 1
    item = items[0]
    assert item.key == f"{path}#0"
    assert item.content_hash == hashlib.sha256(path.read_bytes() + b":0").hexdigest()
    assert item.payload["modality"] == "CT" and item.payload["slice_index"] == 0 and item.payload["format"] == "dicom"
    assert item.payload["series"].startswith("1.3.6.1") and item.payload["volume"] == "CT_small.dcm"
    arr = np.asarray(item.image)
    assert item.image.mode == "RGB" and arr.shape == (128, 128, 3) and arr.min() == 0 and arr.max() == 255


def test_multiframe_dicom_becomes_one_item_per_frame():
    path = _testdata("rtdose.dcm")
    items = decode_file(path)
    assert [it.key for it in items] == [f"{path}#{i}" for i in range(15)]
    assert len({it.content_hash for it in items}) == 15
    assert all(it.payload["modality"] == "RTDOSE" and it.payload["n_slices"] == 15 for it in items)
    colour = decode_file(_testdata("SC_rgb_rle_2frame.dcm"))
    assert len(colour) == 2 and np.asarray(colour[0].image).std() > 0  # RLE RGB decoded, not blank


def test_nifti_volume_slices_skip_empty_and_follow_the_axis(tmp_path):
    items = decode_file(SAMPLE_VOLUME)
    assert 10 < len(items) <= 62  # 128x128x62 axial slices, background-only ones skipped
    first = items[0]
    assert first.key == f"{SAMPLE_VOLUME}#{first.payload['slice_index']}"
    assert first.payload["format"] == "nifti" and first.payload["axis"] == 2 and first.payload["n_slices"] == 62
    assert first.payload["volume"] == "itk_kmeans_t1" and first.payload["modality"] == "MR-T1"
    again = decode_file(SAMPLE_VOLUME)
    assert [i.content_hash for i in again] == [i.content_hash for i in items]  # deterministic point ids
    sagittal = decode_file(SAMPLE_VOLUME, options=DecodeOptions(volume_axis=0))
    assert sagittal[0].payload["axis"] == 0 and sagittal[0].image.size == (128, 62)  # y across, z up
    # a synthetic volume with empty slices at both ends: only the 3 non-empty middle slices survive
    vol = np.zeros((32, 32, 7), np.int16)
    vol[8:24, 8:24, 2:5] = 500
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "synthetic.nii")
    kept = decode_file(tmp_path / "synthetic.nii")
    assert [it.payload["slice_index"] for it in kept] == [2, 3, 4]
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.int16), np.eye(4)), tmp_path / "blank.nii.gz")
    with pytest.raises(DecodeError, match="empty"):
        decode_file(tmp_path / "blank.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(SAMPLE_VOLUME.read_bytes()[:5000])
    with pytest.raises(DecodeError, match="NIfTI"):
        decode_file(tmp_path / "broken.nii.gz")
    (tmp_path / "broken.dcm").write_bytes(b"DICM" * 10)
    with pytest.raises(DecodeError, match="DICOM"):
        decode_file(tmp_path / "broken.dcm")


def test_slices_load_by_key_and_dedup_fingerprints_every_slice():
    """load_image picks a slice by its item key; the dedup engine fingerprints volumes slice by slice."""
    from recommender.dedup import fingerprint_files

    items = decode_file(SAMPLE_VOLUME)
    mid = items[len(items) // 2]
    assert np.array_equal(np.asarray(load_image(SAMPLE_VOLUME, key=mid.key)), np.asarray(mid.image))
    assert np.array_equal(np.asarray(load_image(SAMPLE_VOLUME)), np.asarray(items[0].image))
    with pytest.raises(DecodeError, match="has no item") as info:
        load_image(SAMPLE_VOLUME, key=f"{SAMPLE_VOLUME}#9999")
    assert info.value.path == str(SAMPLE_VOLUME)
    frames = decode_file(_testdata("rtdose.dcm"))
    assert np.array_equal(np.asarray(load_image(_testdata("rtdose.dcm"), DecodeOptions(grey=True), frames[3].key)),
                          np.asarray(frames[3].image.convert("L")))
    fps = fingerprint_files([SAMPLE_VOLUME], ids=["vol"], workers=0)
    assert [fp.key for fp in fps] == [it.key for it in items]
    assert [fp.id for fp in fps] == [f"vol#{it.payload['slice_index']}" for it in items]
    assert all(fp.path == str(SAMPLE_VOLUME) and fp.sha256 == it.content_hash and fp.error is None
               and fp.payload["volume"] == it.payload["volume"] for fp, it in zip(fps, items))


def test_a_volumes_slices_load_from_one_decode_until_the_file_changes(tmp_path, monkeypatch):
    """The verifier and the dashboard load a volume's slices one at a time: the volume is decoded once
    (`decode._items`), each slice is the one `decode_file` gives (grey and RGB), a caller changing the image
    it got changes nothing kept, and a file rewritten since is decoded again."""
    import recommender.decode as decode

    vol = tmp_path / "t1.nii.gz"
    shutil.copy(SAMPLE_VOLUME, vol)
    calls = []
    real = decode.medical.decode_nifti
    monkeypatch.setattr(decode.medical, "decode_nifti", lambda *a: calls.append(1) or real(*a))
    grey = DecodeOptions(grey=True)
    items, grey_items = decode_file(vol), decode_file(vol, options=grey)
    assert len(calls) == 2 and all(it.image.mode == "L" for it in grey_items)
    for it, g in zip(items, grey_items):
        assert np.array_equal(np.asarray(load_image(vol, grey, it.key)), np.asarray(it.image.convert("L")))
        assert np.array_equal(np.asarray(load_image(vol, grey, it.key)), np.asarray(g.image))
        shown = load_image(vol, key=it.key)
        assert np.array_equal(np.asarray(shown), np.asarray(it.image))
        shown.paste((255, 0, 0), (0, 0, 8, 8))  # a caller drawing on its copy
    assert len(calls) == 4  # once per decode options, not once per slice
    assert np.array_equal(np.asarray(load_image(vol, key=items[0].key)), np.asarray(items[0].image))
    nib.save(nib.Nifti1Image(np.asarray(nib.load(vol).dataobj)[:, :, ::-1].copy(), np.eye(4)), vol)  # rewritten
    changed = decode_file(vol)
    assert np.array_equal(np.asarray(load_image(vol, key=changed[0].key)), np.asarray(changed[0].image))
    assert len(calls) == 6


@pytest.mark.slow
def test_dicom_and_nifti_ingest_as_slices_through_the_flow(tmp_path):
    from flows.ingest import ingest_flow
    from recommender.settings import get_settings
    from recommender.store import open_store

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(_testdata("CT_small.dcm"), src / "ct.dcm")
    shutil.copy(_testdata("rtdose.dcm"), src / "dose.dcm")
    shutil.copy(CORPUS_VOLUMES / "itk_kmeans_t1.nii.gz", src / "t1.nii.gz")
    n_slices = 1 + 15 + len(decode_file(src / "t1.nii.gz"))
    cfg = get_settings(home=tmp_path / "h", device="cpu")
    first = ingest_flow(str(src), settings=cfg.model_dump(mode="json"))
    assert (first["new"], first["failed"]) == (3, 0), first["failures"]
    assert first["points"] == n_slices and first["items"] == n_slices
    store = open_store(cfg)
    try:
        payloads = {p["item_key"]: p for _, p, _ in store.scroll()}
    finally:
        store.close()
    ct = payloads[f"{src / 'ct.dcm'}#0"]
    assert ct["modality"] == "CT" and ct["slice_index"] == 0 and ct["path"] == str(src / "ct.dcm")
    dose = [p for k, p in payloads.items() if k.startswith(str(src / "dose.dcm"))]
    assert sorted(p["slice_index"] for p in dose) == list(range(15))
    t1 = [p for p in payloads.values() if p.get("volume") == "t1"]
    assert len(t1) == n_slices - 16 and all(p["format"] == "nifti" and p["axis"] == 2 for p in t1)
    second = ingest_flow(str(src), settings=cfg.model_dump(mode="json"))
    assert second["new"] == 0 and second["unchanged"] == 3 and second["points"] == n_slices


def test_dicom_identity_fields_and_pseudonymised_patient():
    """PatientID, StudyInstanceUID and SliceLocation reach the payload; with a key the patient id is a
    stable HMAC pseudonym, never the raw id, and differs under another key."""
    import pydicom

    path = _testdata("CT_small.dcm")
    ds = pydicom.dcmread(path)
    plain = decode_file(path)[0].payload
    assert plain["patient_id"] == ds.PatientID and plain["study"] == ds.StudyInstanceUID
    assert plain["slice_location"] == pytest.approx(float(ds.SliceLocation))
    hidden = decode_file(path, options=DecodeOptions(pseudonymize_key="secret-key-1"))[0].payload
    again = decode_file(path, options=DecodeOptions(pseudonymize_key="secret-key-1"))[0].payload
    other = decode_file(path, options=DecodeOptions(pseudonymize_key="secret-key-2"))[0].payload
    assert hidden["patient_id"].startswith("anon-") and ds.PatientID not in hidden["patient_id"]
    assert hidden["patient_id"] == again["patient_id"] != other["patient_id"]
    assert hidden["series"] == plain["series"]  # only the patient is pseudonymised


@pytest.mark.slow
def test_dicom_patient_and_series_are_filterable_after_ingest(tmp_path):
    """A folder of DICOM files from two patients, ingested by the real pipeline: patient and series
    are payload filters with counts, and a similar-items query filtered by patient stays inside it."""
    from recommender.ingest import run_ingest
    from recommender.recommend import Recommender
    from recommender.settings import get_settings
    from recommender.store import open_store

    src = tmp_path / "dicom"
    src.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "rtdose.dcm"):
        shutil.copy(_testdata(name), src / name)
    cfg = get_settings(home=tmp_path / "home", pseudonymize_key="pseudo-key-123")
    assert run_ingest(cfg, src).failed == 0
    store = open_store(cfg)
    try:
        patients = store.facet("patient_id")
        series = store.facet("series")
        assert len(patients) >= 2 and all(p.startswith("anon-") for p in patients)
        ct = next(p for p in patients if store.count_where(must={"patient_id": p, "modality": "CT"}))
        assert store.count_where(must={"patient_id": ct}) == patients[ct] >= 1
        mr_series = next(s for s in series if store.count_where(must={"series": s, "modality": "MR"}))
        assert store.count_where(must={"series": mr_series}) == series[mr_series]
        item = store.scroll_where(must={"modality": "RTDOSE"}, limit=1)[0][0][0]
    finally:
        store.close()
    rec = Recommender(cfg)
    try:
        hits = rec.similar_to_item(item, k=5, filters={"patient_id": ct})
        assert hits and all(h.payload["patient_id"] == ct for h in hits)
    finally:
        rec.close()


MRI_SLICES = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "mri-slices" / "axial"
NEIGHBOURS = (150, 151, 152)  # colin27 at 0.5 mm: one picture to every pixel signal


@pytest.fixture(scope="module")
def loose_slices(tmp_path_factory) -> dict:
    """Three neighbouring real slices exported as PNGs, ingested by the real pipeline without and with
    a metadata table giving their volume and slice index."""
    from recommender.ingest import run_ingest
    from recommender.settings import get_settings

    if not MRI_SLICES.is_dir():
        pytest.skip("shared corpora not mounted")
    base = tmp_path_factory.mktemp("loose_slices")
    src = base / "slices"
    src.mkdir()
    for z in NEIGHBOURS:
        shutil.copy(MRI_SLICES / "colin27_ch2better" / f"colin27_ch2better_z{z:03d}.png", src)
    table = base / "slices.csv"
    table.write_text("path,volume,slice_index\n" + "".join(
        f"colin27_ch2better_z{z:03d}.png,colin27_ch2better,{z}\n" for z in NEIGHBOURS))
    out = {"src": src}
    for name, metadata in (("bare", None), ("with_metadata", table)):
        cfg = get_settings(home=base / name, map_layout="off")
        assert run_ingest(cfg, src, metadata=metadata).failed == 0
        out[name] = cfg
    return out


def _copy_members(cfg) -> int:
    from recommender import payload as P
    from recommender.store import open_store

    store = open_store(cfg)
    try:
        return sum(p.get(P.TIER) == "copy" for _, p, _ in store.scroll(batch=64))
    finally:
        store.close()


def test_loose_png_slices_are_copies_to_pixels_and_apart_with_their_volume_metadata(loose_slices):
    """Neighbouring thin slices exported as PNGs look like one picture to every pixel signal; the
    metadata table's volume and slice_index columns are what keeps them out of one `copy` cluster
    (docs/dedup.md, "Limits")."""
    assert _copy_members(loose_slices["bare"]) >= 2
    assert _copy_members(loose_slices["with_metadata"]) == 0


def test_a_copy_cluster_of_numbered_slices_is_flagged_for_the_curator(loose_slices, tmp_path, monkeypatch):
    """The cluster the bare ingest made is flagged where curators act on it: the Duplicates page and
    the HTML report of `recommender dedupe` (the tiers do not change)."""
    from streamlit.testing.v1 import AppTest

    from recommender.browse import duplicate_clusters
    from recommender.dedup import DedupConfig, DedupEngine, write_reports
    from recommender.dedup.embed import model_embedder
    from recommender.store import open_store

    cfg = loose_slices["bare"]
    store = open_store(cfg)
    try:
        clusters = duplicate_clusters(store)
    finally:
        store.close()
    assert [c.numbered_like_slices for c in clusters if c.tier == "copy"] == [True]

    monkeypatch.setenv("RECOMMENDER_HOME", str(cfg.home))
    monkeypatch.setenv("RECOMMENDER_COLLECTION", cfg.collection)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=120)
    at.run()
    at.radio(key="page").set_value("Duplicates").run()
    assert not at.exception, at.exception
    assert any("number a stack of slices" in w.value for w in at.warning)

    engine = DedupEngine(DedupConfig(workers=0), model_embedder("mobilenet_v2")[0])
    result = engine.run(sorted(str(p) for p in loose_slices["src"].iterdir()))
    write_reports(result, tmp_path / "report")
    assert "number a stack of slices" in (tmp_path / "report" / "report.html").read_text()
