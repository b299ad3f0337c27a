"""A small corpus on disk with planted duplicates of every tier, built from the real files in samples/.

Tests that check what the product shows about duplicates must read a collection
that the real pipeline built: hand-written payloads drift from what ingest and
the dedupe sweep write (that is how the Duplicates page came to be empty on real
data while its tests were green). `plant_corpus` copies the sample paintings and
MRI slices, cuts a few adjacent slices out of the sample NIfTI volume, and adds
transformed copies whose tier is known:

- exact: a byte-identical copy (ingest folds it into the original's point, in `copies`)
  and a pixel-identical PNG re-encode (its own point, same `pixel_hash`);
- copy: the same painting resized and re-encoded as JPEG, cropped, and mirrored;
- near: nearby slices of one NIfTI volume.

`metadata.csv` labels every file, planted ones with their original's labels, and
puts some copies in the other split so the leakage table has rows to show.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from PIL import Image, ImageOps

from recommender import payload as P

if TYPE_CHECKING:
    from recommender.settings import Settings

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
VOLUME = SAMPLES / "volumes" / "itk_kmeans_t1.nii.gz"
# Four axial slices through the brain, every other one (6 mm apart): near, not copies. Adjacent 3 mm
# slices pass the copy thresholds (pHash and cosine both say "unchanged"), so they would test the copy tier.
VOLUME_SLICES = (24, 26, 28, 30)

EXACT_BYTES = "art/landscape/cl010052648.jpg"
EXACT_PIXELS = "art/portrait/cl010054342.jpg"
COPIED = "art/naturmort/cl010052620.jpg"
SEED = "art/landscape/cl010052607.jpg"  # an untouched painting, a good query item
# samples/NOTICE.md: two byte-identical MRI slices, one in each split (real train/test leakage)
NATURAL_EXACT = ("medical/train/meningioma/Tr-me_0071.jpg", "medical/test/meningioma/Te-me_0135.jpg")


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def byte_copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)


def png_reencode(src: Path, dst: Path) -> None:
    _rgb(src).save(dst, format="PNG")


def resized_jpeg(src: Path, dst: Path) -> None:
    img = _rgb(src)
    img.resize((img.width * 3 // 5, img.height * 3 // 5), Image.Resampling.LANCZOS).save(dst, "JPEG", quality=80)


def cropped(src: Path, dst: Path) -> None:
    img = _rgb(src)
    dx, dy = img.width // 12, img.height // 12
    img.crop((dx, dy, img.width - dx, img.height - dy)).save(dst, "JPEG", quality=90)


def mirrored(src: Path, dst: Path) -> None:
    ImageOps.mirror(_rgb(src)).save(dst, "JPEG", quality=90)


def slide_deck(paths: list[Path], size: tuple[int, int] = (1024, 768)) -> list[Image.Image]:
    """Slides of one deck: each painting at two thirds of the height on the left, the same title, bullet
    text and footer on every slide (a layout unlike the tuning set's catalogue pages)."""
    from PIL import ImageDraw, ImageFont

    slides = []
    for path in paths:
        img = Image.open(path).convert("RGB")
        pic = img.resize((round(img.width * size[1] * 0.62 / img.height), round(size[1] * 0.62)))
        slide = Image.new("RGB", size, (248, 248, 252))
        slide.paste(pic, (40, 150))
        draw = ImageDraw.Draw(slide)
        draw.text((40, 40), "Quarterly acquisitions review", fill=(10, 30, 80), font=ImageFont.load_default(size=44))
        for i in range(6):
            draw.text((size[0] // 2 + 60, 170 + 56 * i), f"* item {i + 1}: provenance checked",
                      fill=(20, 20, 20), font=ImageFont.load_default(size=22))
        draw.text((40, size[1] - 50), "internal - do not circulate", fill=(120, 120, 120),
                  font=ImageFont.load_default(size=20))
        slides.append(slide)
    return slides


@dataclass(frozen=True)
class Plant:
    """A planted file: where it lies, what it was made from and how, the tier the engine must give
    the pair, and its split in metadata.csv."""

    relpath: str
    original: str
    make: Callable[[Path, Path], None]
    tier: P.Tier
    split: str


PLANTS: tuple[Plant, ...] = (
    Plant("planted/landscape_bytes_copy.jpg", EXACT_BYTES, byte_copy, P.Tier.EXACT, "test"),
    Plant("planted/portrait_reencoded.png", EXACT_PIXELS, png_reencode, P.Tier.EXACT, "train"),
    Plant("planted/naturmort_small.jpg", COPIED, resized_jpeg, P.Tier.COPY, "test"),
    Plant("planted/naturmort_crop.jpg", COPIED, cropped, P.Tier.COPY, "train"),
    Plant("planted/naturmort_mirror.jpg", COPIED, mirrored, P.Tier.COPY, "train"),
)
VOLUME_RELPATH = "volumes/t1_cut.nii.gz"


@dataclass(frozen=True)
class Corpus:
    """The planted corpus: its folder, its metadata table, and what was planted."""

    root: Path
    metadata: Path
    plants: tuple[Plant, ...] = PLANTS

    def path(self, relpath: str) -> str:
        """Absolute path of a corpus file, as the payload's `path` holds it."""
        return str(self.root / relpath)

    @property
    def volume(self) -> Path:
        return self.root / VOLUME_RELPATH

    def pairs(self) -> list[tuple[P.Tier, str, str]]:
        """(tier, original's file name, duplicate's file name) of every planted duplicate and the natural one."""
        natural = (P.Tier.EXACT, *(Path(p).name for p in NATURAL_EXACT))
        return [(p.tier, Path(p.original).name, Path(p.relpath).name) for p in self.plants] + [natural]

    @property
    def slices(self) -> list[str]:
        """Names of the cut volume's slices as pages show them (`<file>#<index>`): near one another."""
        return [f"{Path(VOLUME_RELPATH).name}#{i}" for i in range(len(VOLUME_SLICES))]


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _cut_volume(dst: Path) -> None:
    """A real NIfTI file holding a few slices of the sample volume (same voxels, same affine)."""
    import nibabel as nib
    import numpy as np

    vol = nib.load(VOLUME)
    data = np.asarray(vol.dataobj)[:, :, list(VOLUME_SLICES)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, vol.affine, vol.header), dst)


def plant_corpus(root: Path) -> Corpus:
    """Write the corpus under `root` (sample paintings and MRI slices, a cut volume, planted copies, metadata.csv)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(SAMPLES / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        _copy(SAMPLES / row["path"], root / row["path"])
    by_path = {row["path"]: row for row in rows}
    for plant in PLANTS:
        (root / plant.relpath).parent.mkdir(parents=True, exist_ok=True)
        plant.make(root / plant.original, root / plant.relpath)
        rows.append({**by_path[plant.original], "path": plant.relpath, P.SPLIT: plant.split})
    _cut_volume(root / VOLUME_RELPATH)
    meta = root / "metadata.csv"
    with open(meta, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return Corpus(root, meta)


@dataclass(frozen=True)
class Built:
    """A collection the real pipeline built from the planted corpus (see conftest's `pipeline_built`).

    `home` is pristine and shared by the session: embedded Qdrant allows one client per
    folder, so a test opens its own copy (`copy_home`), never `home` itself.
    """

    corpus: Corpus
    home: Path
    collection: str
    report: dict[str, Any]  # the ingest run report
    dedup: dict[str, Any]  # the dedupe sweep's summary
    dedup_dir: Path  # the sweep's reports: report.html, clusters and pairs tables, leakage

    def copy_home(self, dst: Path) -> "Settings":
        """Settings for a private copy of the data home at `dst` (writable, openable)."""
        from recommender.settings import get_settings

        shutil.copytree(self.home, dst)
        return get_settings(home=dst, collection=self.collection)


def build_collection(corpus: Corpus, home: Path, collection: str) -> Built:
    """Ingest the corpus with the Prefect flow (dedupe on ingest on), then sweep the whole collection
    as `recommender dedupe` does. Call under a Prefect API (the session's test harness)."""
    from flows.ingest import ingest_flow
    from recommender.duplicates import sweep
    from recommender.settings import get_settings
    from recommender.store import open_store

    cfg = get_settings(home=home, collection=collection, dedup_on_ingest=True)
    report = ingest_flow(str(corpus.root), str(corpus.metadata), settings=cfg.model_dump(mode="json"))
    if report["failed"]:
        raise RuntimeError(f"ingest of the planted corpus failed for some files: {report['failures']}")
    store = open_store(cfg)
    try:
        summary = sweep(store, cfg, home.parent / "dedup")
    finally:
        store.close()
    return Built(corpus, home, collection, report, summary, home.parent / "dedup")
