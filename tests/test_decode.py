"""Robust decoding: every odd-but-valid image converts correctly, every bad file is refused with its reason.

The images are made here (a few dozen pixels each) so each case is exact:
EXIF rotation, CMYK, palette (with and without transparency), 16-bit,
grey, transparent RGBA/LA; and the refusals: zero bytes, truncated, corrupt,
not an image, decompression bomb. The last test runs them all through the real
Prefect ingest flow and Qdrant local mode.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recommender.decode import DecodeError, DecodeOptions, decode_file, decode_image_bytes

ART = sorted((Path(__file__).resolve().parents[1] / "samples" / "art").rglob("*.jpg"))


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def _exif_rotated(path: Path) -> Path:
    """60x30 stored pixels, left half red / right half blue, EXIF orientation 6 (display rotated 90 deg CW)."""
    arr = np.zeros((30, 60, 3), np.uint8)
    arr[:, :30] = (255, 0, 0)
    arr[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(Image.fromarray(arr), path, quality=95, exif=exif.tobytes())


def _good_files(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    pal = Image.new("P", (20, 20), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)  # index 1 = green
    pal_t = pal.copy()
    pal_t.paste(0, (0, 0, 10, 20))  # left half index 0, declared transparent
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent black
    rgba[10:, :, 3] = 128  # bottom half: half-transparent black
    sixteen = np.tile(np.linspace(0, 65535, 32, dtype=np.uint16), (8, 1))
    twelve = np.tile(np.linspace(100, 4000, 32, dtype=np.uint16), (8, 1))
    return {
        "exif": _exif_rotated(d / "exif_rotated.jpg"),
        "cmyk": _save(Image.new("CMYK", (24, 24), (0, 255, 255, 0)), d / "cmyk.jpg", quality=95),
        "palette": _save(pal, d / "palette.png"),
        "palette_t": _save(pal_t, d / "palette_transparent.png", transparency=0),
        "sixteen": _save(Image.fromarray(sixteen), d / "sixteen.png"),
        "twelve": _save(Image.fromarray(twelve), d / "twelve_bit.png"),
        "grey": _save(Image.new("L", (16, 16), 77), d / "grey.png"),
        "rgba": _save(Image.fromarray(rgba, mode="RGBA"), d / "rgba.png"),
        "la": _save(Image.new("LA", (16, 16), (0, 0)), d / "la.png"),
    }


def _bad_files(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(png, format="PNG")
    raw = bytearray(png.getvalue())
    idat = raw.index(b"IDAT")
    raw[idat + 8 : idat + 16] = b"\x00" * 8  # damage compressed pixel data (and its CRC no longer matches)
    (d / "empty.jpg").write_bytes(b"")
    (d / "truncated.jpg").write_bytes(ART[5].read_bytes()[:2000])
    (d / "corrupt.png").write_bytes(bytes(raw))
    (d / "notes.pdf").write_bytes(b"%PDF-1.4 this is not an image at all\n" * 10)
    _save(Image.new("L", (1500, 1000), 0), d / "bomb.png")  # 1.5 M pixels > the 1 M limit the tests set
    return {p.stem: p for p in d.iterdir()}


REASONS = {
    "empty": "empty file (0 bytes)",
    "truncated": "truncated",
    "corrupt": "corrupt",
    "notes": "not a recognised image format",
    "bomb": "decompression bomb",
}


def _decode(path: Path, **kw) -> Image.Image:
    items = decode_file(path, options=DecodeOptions(max_pixels=1_000_000, **kw))
    assert len(items) == 1 and items[0].image.mode == "RGB" and items[0].key == str(path)
    return items[0].image


def test_each_valid_variant_converts_to_correct_rgb(tmp_path):
    f = _good_files(tmp_path)
    img = _decode(f["exif"])
    assert img.size == (30, 60)  # EXIF orientation applied: portrait now
    top, bottom = np.asarray(img)[5, 15], np.asarray(img)[55, 15]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # left (red) went to the top
    assert decode_file(f["exif"])[0].payload["width"] == 30  # payload records displayed size
    r, g, b = np.asarray(_decode(f["cmyk"]))[12, 12]
    assert r > 200 and g < 60 and b < 60  # CMYK (0,255,255,0) is red
    assert tuple(np.asarray(_decode(f["palette"]))[5, 5]) == (0, 255, 0)
    pt = np.asarray(_decode(f["palette_t"]))
    assert tuple(pt[5, 2]) == (255, 255, 255) and tuple(pt[5, 15]) == (0, 255, 0)  # transparent -> white
    s16 = np.asarray(_decode(f["sixteen"]))[..., 0]
    assert s16.min() == 0 and s16.max() == 255 and s16[0, 16] == pytest.approx(65535 * 16 / 31 / 257, abs=1)
    s12 = np.asarray(_decode(f["twelve"]))[..., 0]
    assert s12.min() == 0 and s12.max() == 255  # narrow range stretched, not left near-black
    assert tuple(np.asarray(_decode(f["grey"]))[3, 3]) == (77, 77, 77)
    rgba = np.asarray(_decode(f["rgba"]))
    assert tuple(rgba[2, 2]) == (255, 255, 255) and 120 <= rgba[15, 2, 0] <= 135  # onto white
    assert tuple(np.asarray(_decode(f["la"]))[3, 3]) == (255, 255, 255)


@pytest.mark.parametrize("kind", sorted(REASONS))
def test_each_bad_kind_is_refused_with_its_reason(tmp_path, kind):
    bad = _bad_files(tmp_path)
    with pytest.raises(DecodeError) as info:
        decode_file(bad[kind], options=DecodeOptions(max_pixels=1_000_000))
    assert REASONS[kind] in info.value.reason and info.value.path == str(bad[kind])


def test_big_jpeg_draft_decodes_smaller_but_covers_the_model_input(tmp_path):
    big = np.random.default_rng(0).integers(0, 255, (1600, 2400, 3), dtype=np.uint8)
    path = _save(Image.fromarray(big), tmp_path / "big.jpg", quality=90)
    full = decode_file(path)[0]
    draft = decode_file(path, options=DecodeOptions(draft_size=256))[0]
    assert full.image.size == (2400, 1600)
    assert min(draft.image.size) >= 256 and draft.image.size[0] < 2400  # reduced DCT scale (here 1/4: 600x400)
    assert draft.payload["width"] == 2400 and draft.payload["height"] == 1600 and draft.content_hash == full.content_hash
    small = decode_file(ART[0], options=DecodeOptions(draft_size=256))[0]
    assert small.image.size == Image.open(ART[0]).size  # small images are never drafted


def test_decode_image_bytes_refuses_empty_upload():
    with pytest.raises(DecodeError, match="empty file"):
        decode_image_bytes(b"", "upload", 1000)


def test_pipeline_decodes_to_uint8_tensors_and_reports_failures(tmp_path):
    from recommender.pipeline import IngestJob
    from recommender.settings import get_settings

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ART[0], src / "a.jpg")
    (src / "empty.jpg").write_bytes(b"")
    job = IngestJob(get_settings(home=tmp_path / "h", device="cpu", batch_size=4), src)
    try:
        decoded = job.decode(job.scan()).files
    finally:
        job.close()
    by_name = {Path(df.file.path).name: df for df in decoded}
    assert by_name["a.jpg"].tensors[0].dtype == torch.uint8 and tuple(by_name["a.jpg"].tensors[0].shape) == (3, 224, 224)
    assert "empty file" in by_name["empty.jpg"].error and not by_name["empty.jpg"].tensors


def test_ingest_flow_refuses_each_bad_file_and_embeds_the_good_ones(tmp_path):
    from flows.ingest import ingest_flow
    from recommender.settings import get_settings

    src = tmp_path / "src"
    good = _good_files(src / "good")
    bad = _bad_files(src / "bad")
    for p in ART[:2]:
        shutil.copy(p, src / "good" / p.name)
    cfg = get_settings(home=tmp_path / "h", device="cpu", max_image_pixels=1_000_000)
    report = ingest_flow(str(src), settings=cfg.model_dump(mode="json"))
    reasons = {Path(f["path"]).stem: f["reason"] for f in report["failures"]}
    assert set(reasons) == set(REASONS)
    for kind, expected in REASONS.items():
        assert expected in reasons[kind], (kind, reasons[kind])
    assert report["failed"] == len(bad) and report["new"] + report["duplicate"] == len(good) + 2
    assert report["points"] >= len(good)  # the solid-colour fakes may share a vector point only if bytes match


def test_process_keeps_file_order_across_workers_and_stops_near_max_items(tmp_path):
    """Workers race, but dedupe runs in file order: the first of two identical files is the new one."""
    from recommender.pipeline import IngestJob
    from recommender.settings import get_settings

    src = tmp_path / "src"
    src.mkdir()
    order = [ART[0], ART[1], ART[0], ART[2], ART[1], ART[3]]  # 3.jpg and 5.jpg repeat 1.jpg and 2.jpg
    for i, p in enumerate(order, start=1):
        shutil.copy(p, src / f"{i}.jpg")
    expected = ["new", "new", "duplicate", "new", "duplicate", "new"]
    for run in range(3):
        cfg = get_settings(home=tmp_path / f"h{run}", device="cpu", batch_size=1, decode_workers=3)
        job = IngestJob(cfg, src)
        try:
            files = job.plan(job.scan())
            batches, rest = job.process(files)
            assert rest == []
            statuses = [b.statuses[0] for b in batches]
            assert [Path(b.files[0].file.path).name for b in batches] == [f"{i}.jpg" for i in range(1, 7)]
            assert statuses == expected
            assert all(b.vectors is not None and b.vectors.shape == (1, 1280) for b, st in zip(batches, statuses) if st == "new")
            first, rest = job.process(files, max_items=2)
            assert 2 <= len(first) < len(files) and [b.files[0].file for b in first] + rest == files
        finally:
            job.close()


def test_process_raises_a_worker_failure_instead_of_hanging(tmp_path, monkeypatch):
    """A batch that fails outside the per-file error handling still passes its dedupe turn."""
    import threading

    from recommender.pipeline import IngestJob
    from recommender.settings import get_settings

    src = tmp_path / "src"
    src.mkdir()
    for i, p in enumerate(ART[:4]):
        shutil.copy(p, src / f"{i}.jpg")
    job = IngestJob(get_settings(home=tmp_path / "h", device="cpu", batch_size=1, decode_workers=2), src)
    real, calls = job.decode, []

    def flaky(files):
        calls.append(files)
        if len(calls) == 1:
            raise RuntimeError("decoder bug")
        return real(files)

    monkeypatch.setattr(job, "decode", flaky)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            job.process(job.plan(job.scan()))
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=120)
    try:
        assert not t.is_alive(), "process() hung after a worker failed"
        assert outcome and "decoder bug" in str(outcome[0])
    finally:
        job.close()
