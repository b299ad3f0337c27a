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
from PIL import Image

from recommender.decode import DecodeError, DecodeOptions, decode_file, decode_image_bytes, load_image

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


def test_dedup_fingerprints_files_exactly_as_ingest_decodes_them(tmp_path):
    """The dedup engine's fingerprint of a file = the payload ingest stores for it (same decode, same hashes)."""
    from recommender.dedup import fingerprint_file, fingerprint_payload

    f = _good_files(tmp_path / "good")
    big = _save(Image.fromarray(np.random.default_rng(1).integers(0, 255, (1200, 1800, 3), dtype=np.uint8)),
                tmp_path / "big.jpg", quality=90)
    for options in (DecodeOptions(), DecodeOptions(draft_size=256)):
        for path in [*f.values(), big]:
            item = decode_file(path, options=options)[0]
            assert np.array_equal(np.asarray(load_image(path, options)), np.asarray(item.image)), path
            fp = fingerprint_file(path, options=options)[0]
            stored = fingerprint_payload(item.image, item.content_hash)
            assert (f"{fp.phash:016x}", f"{fp.phash_mirror:016x}", fp.pixel_hash) == (
                stored["phash"], stored["phash_mirror"], stored["pixel_hash"]), path
            assert fp.sha256 == item.content_hash and fp.error is None and fp.key == ""
            assert (fp.width, fp.height) == (item.payload["width"], item.payload["height"])  # displayed, undrafted size
    bad = _bad_files(tmp_path / "bad")
    fp = fingerprint_file(bad["truncated"])[0]
    assert fp.error and "truncated" in fp.error and fp.path == str(bad["truncated"])


def test_grey_decode_is_the_stored_jpeg_luma_with_exif_applied(tmp_path):
    """Verification decodes luminance through the same module: EXIF applied, a JPEG's Y channel as stored."""
    import cv2

    f = _good_files(tmp_path)
    grey = load_image(f["exif"], DecodeOptions(grey=True))
    assert grey.mode == "L" and grey.size == (30, 60)  # rotated like the RGB decode
    arr = np.asarray(grey)
    assert 60 <= arr[5, 15] <= 95 and 15 <= arr[55, 15] <= 45  # red luma ~76 on top, blue ~29 below
    art = ART[0]
    assert np.array_equal(np.asarray(load_image(art, DecodeOptions(grey=True))),
                          cv2.imdecode(np.frombuffer(art.read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE))
    pal = load_image(f["palette_t"], DecodeOptions(grey=True))
    assert pal.mode == "L" and np.asarray(pal)[5, 2] == 255  # non-JPEG: the RGB decode (transparency on white), as L


@pytest.mark.slow
def test_embed_stage_embeds_good_files_and_reports_failures(tmp_path):
    from recommender.ingest import EmbedSpec, embed_files, scan_source
    from recommender.settings import get_settings

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ART[0], src / "a.jpg")
    (src / "empty.jpg").write_bytes(b"")
    spec = EmbedSpec.from_settings(get_settings(home=tmp_path / "h", device="cpu", batch_size=4))
    chunk = embed_files(scan_source(src).files, spec)
    by_name = {Path(ef.file.path).name: ef for ef in chunk.files}
    good, empty = by_name["a.jpg"], by_name["empty.jpg"]
    assert good.vectors.dtype == np.float32 and good.vectors.shape == (1, 1280)
    assert abs(float(np.linalg.norm(good.vectors[0])) - 1) < 1e-5
    assert good.payloads[0]["width"] == Image.open(ART[0]).width and len(good.payloads[0]["phash"]) == 16
    assert "empty file" in empty.error and empty.vectors is None and not empty.keys


@pytest.mark.slow
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


@pytest.mark.slow
def test_duplicates_are_decided_in_file_order_whatever_the_worker_timing(tmp_path):
    """Workers race, but the writer classifies in file order: the first of two identical files is the new one."""
    from recommender.catalog import Catalog
    from recommender.ingest import run_ingest
    from recommender.settings import get_settings

    src = tmp_path / "src"
    src.mkdir()
    order = [ART[0], ART[1], ART[0], ART[2], ART[1], ART[3]]  # 3.jpg and 5.jpg repeat 1.jpg and 2.jpg
    for i, p in enumerate(order, start=1):
        shutil.copy(p, src / f"{i}.jpg")
    for run in range(3):
        cfg = get_settings(home=tmp_path / f"h{run}", device="cpu", batch_size=1, decode_workers=3, chunk_items=2,
                           chunks_ahead=2)
        report = run_ingest(cfg, src)
        assert (report.new, report.duplicate, report.points) == (4, 2, 4)
        catalog = Catalog(cfg.catalog_path)
        try:
            statuses = {Path(p).name: r.status for p, r in catalog.files(cfg.collection).items()}
        finally:
            catalog.close()
        assert statuses == {"1.jpg": "ok", "2.jpg": "ok", "3.jpg": "duplicate", "4.jpg": "ok", "5.jpg": "duplicate",
                            "6.jpg": "ok"}


@pytest.mark.slow
def test_a_failing_embed_call_fails_the_run_clearly_and_frees_the_collection(tmp_path, monkeypatch):
    """A batch that fails outside the per-file error handling fails the run (no hang) and releases the lock."""
    from recommender.catalog import Catalog
    from recommender.ingest import embed, run_ingest
    from recommender.settings import get_settings

    src = tmp_path / "src"
    src.mkdir()
    for i, p in enumerate(ART[:4]):
        shutil.copy(p, src / f"{i}.jpg")
    cfg = get_settings(home=tmp_path / "h", device="cpu", batch_size=1, decode_workers=2)
    real, calls = embed._embed_group, []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("model bug")
        return real(*args)

    monkeypatch.setattr(embed, "_embed_group", flaky)
    with pytest.raises(RuntimeError, match="model bug"):
        run_ingest(cfg, src)
    catalog = Catalog(cfg.catalog_path)
    try:
        run = catalog.runs(cfg.collection)[0]
    finally:
        catalog.close()
    assert run["status"] == "failed" and "model bug" in run["report"]["error"]
    monkeypatch.setattr(embed, "_embed_group", real)
    assert run_ingest(cfg, src).new == 4  # the lock was released and nothing half-written is in the way
