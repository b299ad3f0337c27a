"""The one definition of every payload field a point carries, and of the duplicate tiers.

Every module names payload fields through these constants, the store creates its
payload indexes from `FIELDS`, and filters, group-by and facets are validated
against it, so a field renamed here is renamed everywhere and a typo in a filter
is an error instead of an empty result.

Fields come from four places: the pipeline (identity and provenance), the decoder
(size, format, DICOM/NIfTI structure), deduplication (fingerprints and clusters) and
the user's metadata table (any column; the well-known art and medical ones are
declared here so they are indexed and shown as facets).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Iterable, Literal, Mapping


class Tier(str, Enum):
    """How alike two items are; see docs/dedup.md."""

    EXACT = "exact"  # same bytes, or same decoded pixels
    COPY = "copy"  # the same picture resized, re-encoded, cropped, recoloured, flipped ...
    NEAR = "near"  # different shots of one scene, adjacent slices: a review list, never hidden

    def __str__(self) -> str:
        return self.value


SAME_PICTURE_TIERS: tuple[Tier, ...] = (Tier.EXACT, Tier.COPY)  # clusters that recommendations collapse

FieldType = Literal["keyword", "integer", "float", "bool", "datetime", "text", "list", "object"]
Origin = Literal["pipeline", "decode", "dedup", "metadata"]


@dataclass(frozen=True)
class FieldSpec:
    """One payload field: its type, whether the store indexes it, whether users may filter
    on it or see it as a facet, and where it comes from."""

    name: str
    type: FieldType
    origin: Origin
    doc: str
    indexed: bool = False
    filterable: bool = False
    facet: bool = False


# Identity and provenance (written by the ingest pipeline).
PATH = "path"
RELPATH = "relpath"
ITEM_KEY = "item_key"
SHA256 = "sha256"
SOURCE = "source"
MODEL = "model"
RUN_ID = "run_id"
INGESTED_AT = "ingested_at"
COPIES = "copies"
DELETED = "deleted"
# Decoder.
WIDTH = "width"
HEIGHT = "height"
BYTES = "bytes"
FORMAT = "format"
MODALITY = "modality"
SERIES = "series"
SERIES_DESCRIPTION = "series_description"
VOLUME = "volume"
SLICE_INDEX = "slice_index"
N_SLICES = "n_slices"
INSTANCE_NUMBER = "instance_number"
PATIENT_ID = "patient_id"
STUDY = "study"
BODY_PART = "body_part"
SLICE_LOCATION = "slice_location"
WINDOW = "window"
AXIS = "axis"
VOXEL_SIZE = "voxel_size"
# Deduplication.
PIXEL_HASH = "pixel_hash"
PHASH = "phash"
PHASH_MIRROR = "phash_mirror"
PHASH_TURNS = "phash_turns"
FRAME = "frame"
FRAME_TILT = "frame_tilt"
CLUSTER_ID = "cluster_id"
TIER = "tier"
CANONICAL = "canonical"
NEAR_CLUSTER_ID = "near_cluster_id"
# CLIP zero-shot tags.
ZS_LABEL = "zs_label"
ZS_PROB = "zs_prob"
# Well-known metadata columns (art and medical).
ARTIST = "artist"
STYLE = "style"
GENRE = "genre"
YEAR = "year"
DIAGNOSIS = "diagnosis"
PATIENT = "patient"
SPLIT = "split"

CLUSTER_FIELDS: tuple[str, ...] = (CLUSTER_ID, TIER, CANONICAL, NEAR_CLUSTER_ID)
FINGERPRINT_FIELDS: tuple[str, ...] = (PIXEL_HASH, PHASH, PHASH_MIRROR, PHASH_TURNS)
GROUP_FIELDS: tuple[str, ...] = (SPLIT, PATIENT, VOLUME)  # carried into dedup leakage reports


def _f(name: str, type: FieldType, origin: Origin, doc: str, *, indexed: bool = False, facet: bool = False,
       filterable: bool | None = None) -> FieldSpec:
    return FieldSpec(name, type, origin, doc, indexed, indexed if filterable is None else filterable, facet)


FIELDS: dict[str, FieldSpec] = {s.name: s for s in (
    _f(PATH, "keyword", "pipeline", "Absolute path of the source file.", indexed=True),
    _f(RELPATH, "keyword", "pipeline", "Path relative to the ingested folder.", indexed=True),
    _f(ITEM_KEY, "keyword", "pipeline", "The file path, plus '#<index>' for a slice or frame."),
    _f(SHA256, "keyword", "pipeline", "Content hash (file bytes, plus ':<index>' for slices); the point id derives from it.",
       indexed=True),
    _f(SOURCE, "keyword", "pipeline", "Folder the item was ingested from.", indexed=True),
    _f(MODEL, "keyword", "pipeline", "Embedding model of the vector."),
    _f(RUN_ID, "keyword", "pipeline", "Ingest run that wrote the point.", indexed=True),
    _f(INGESTED_AT, "float", "pipeline", "Unix time of ingestion.", indexed=True),
    _f(COPIES, "list", "pipeline", "Other byte-identical files sharing this point, each with its metadata."),
    _f(DELETED, "bool", "pipeline", "Source file gone (RECOMMENDER_ON_DELETE=mark).", indexed=True),
    _f(WIDTH, "integer", "decode", "Width in pixels.", indexed=True),
    _f(HEIGHT, "integer", "decode", "Height in pixels.", indexed=True),
    _f(BYTES, "integer", "decode", "File size in bytes."),
    _f(FORMAT, "keyword", "decode", "dicom or nifti for medical files.", indexed=True, facet=True),
    _f(MODALITY, "keyword", "decode", "Imaging modality (DICOM Modality, or inferred for NIfTI).", indexed=True, facet=True),
    _f(SERIES, "keyword", "decode", "DICOM SeriesInstanceUID or NIfTI file name.", indexed=True, facet=True),
    _f(SERIES_DESCRIPTION, "keyword", "decode", "DICOM SeriesDescription."),
    _f(VOLUME, "keyword", "decode", "Volume (file) a slice belongs to.", indexed=True, facet=True),
    _f(SLICE_INDEX, "integer", "decode", "Slice or frame index within its volume.", indexed=True),
    _f(N_SLICES, "integer", "decode", "Slices or frames in the volume."),
    _f(INSTANCE_NUMBER, "integer", "decode", "DICOM InstanceNumber.", indexed=True),
    _f(PATIENT_ID, "keyword", "decode", "DICOM PatientID (an HMAC pseudonym with RECOMMENDER_PSEUDONYMIZE_KEY).",
       indexed=True, facet=True),
    _f(STUDY, "keyword", "decode", "DICOM StudyInstanceUID.", indexed=True, facet=True),
    _f(BODY_PART, "keyword", "decode", "DICOM BodyPartExamined.", indexed=True, facet=True),
    _f(SLICE_LOCATION, "float", "decode", "DICOM SliceLocation (mm).", indexed=True),
    _f(WINDOW, "list", "decode", "Display window (centre, width) used for a DICOM slice."),
    _f(AXIS, "integer", "decode", "NIfTI slicing axis."),
    _f(VOXEL_SIZE, "list", "decode", "NIfTI voxel size in mm."),
    _f(PIXEL_HASH, "keyword", "dedup", "Hash of the decoded pixels (exact tier).", indexed=True),
    _f(PHASH, "keyword", "dedup", "64-bit perceptual hash, hex (copy tier)."),
    _f(PHASH_MIRROR, "keyword", "dedup", "pHash of the mirrored image, hex (flipped copies)."),
    _f(PHASH_TURNS, "keyword", "dedup", "pHashes of the image turned by 90, 180 and 270 degrees, 48 hex digits "
       "(copies saved turned)."),
    _f(FRAME, "list", "dedup", "Where a picture lies on a flat background with text or a panel beside it, or askew "
       "(x0, y0, x1, y1 in the file's pixels, before turning by `frame_tilt`): a screen capture's picture or a "
       "scanned print, cut out and searched for its copies."),
    _f(FRAME_TILT, "float", "dedup", "Degrees the picture in `frame` lies turned by on its flat background (a print "
       "scanned askew): turned upright, cut out and searched for its copies."),
    _f(CLUSTER_ID, "keyword", "dedup", "Same-picture cluster (exact or copy tier).", indexed=True),
    _f(TIER, "keyword", "dedup", "Tier that put the item in its cluster.", indexed=True, facet=True),
    _f(CANONICAL, "bool", "dedup", "The member a same-picture cluster is shown as.", indexed=True),
    _f(NEAR_CLUSTER_ID, "keyword", "dedup", "Near-duplicate group for review (never hidden).", indexed=True),
    _f(ZS_LABEL, "keyword", "pipeline", "CLIP zero-shot label.", indexed=True, facet=True),
    _f(ZS_PROB, "float", "pipeline", "CLIP zero-shot probability."),
    _f(ARTIST, "keyword", "metadata", "Artist (art collections).", indexed=True, facet=True),
    _f(STYLE, "keyword", "metadata", "Style (art collections).", indexed=True, facet=True),
    _f(GENRE, "keyword", "metadata", "Genre (art collections).", indexed=True, facet=True),
    _f(YEAR, "integer", "metadata", "Year (art collections).", indexed=True),
    _f(DIAGNOSIS, "keyword", "metadata", "Diagnosis (medical collections).", indexed=True, facet=True),
    _f(PATIENT, "keyword", "metadata", "Patient identifier (medical collections).", indexed=True, facet=True),
    _f(SPLIT, "keyword", "metadata", "Dataset split (train, test, ...).", indexed=True, facet=True),
)}

FACET_FIELDS: tuple[str, ...] = tuple(n for n, s in FIELDS.items() if s.facet)
# Numbers and times users narrow by range (slider, date range): the indexed numeric fields.
RANGE_FIELDS: tuple[str, ...] = tuple(n for n, s in FIELDS.items() if s.indexed and s.type in ("integer", "float"))
TIME_FIELDS: tuple[str, ...] = (INGESTED_AT,)  # Unix seconds, shown and chosen as dates


def searched_by_filter(name: str) -> bool:
    """Fields a similarity query is commonly filtered by: the facets, the metadata table's columns
    (declared or the user's own). Why: a graph engine links its HNSW graph again within each large
    value of an indexed field, so that filtered searches stay connected; for bookkeeping fields
    (paths, hashes, run ids, sizes, timestamps) that only serves lookups and costs build time."""
    spec = FIELDS.get(name)
    return spec is None or spec.facet or spec.origin == "metadata"


def indexed_fields(extra_keywords: Iterable[str] = ()) -> dict[str, FieldType]:
    """Fields the store indexes: the declared ones plus the metadata table's string columns."""
    out: dict[str, FieldType] = {n: s.type for n, s in FIELDS.items() if s.indexed}
    for name in extra_keywords:
        out.setdefault(name, "keyword")
    return out


class UnknownFieldError(ValueError):
    """A filter, facet or group-by names a field no point can carry."""

    def __init__(self, field: str, known: Iterable[str], role: str = "filter"):
        self.field = field
        self.known = sorted(set(known))
        super().__init__(f"unknown {role} field '{field}'; fields that exist: {', '.join(self.known)}")


def check_fields(names: Iterable[str], metadata_fields: Iterable[str] = (), role: str = "filter") -> None:
    """Raise UnknownFieldError for a name that is neither declared here nor a metadata column."""
    known = {n for n, s in FIELDS.items() if s.filterable} | set(metadata_fields)
    for name in names:
        if name not in known:
            raise UnknownFieldError(name, known, role)


def tier_of(payload: Mapping[str, Any]) -> Tier | None:
    """The payload's tier as the enum (None when the item is in no cluster)."""
    value = payload.get(TIER)
    return Tier(value) if value else None
