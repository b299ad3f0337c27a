"""The plain data that travels between ingest stages.

Everything here pickles (dataclasses of strings, numbers, dicts and numpy arrays),
so a stage can run in a thread, another process or on a Dask worker and hand its
result back to the single writer in the flow's process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from recommender.catalog import FileRecord
from recommender.decode import DecodeOptions
from recommender.ingest.scan import SourceFile
from recommender.settings import Settings


@dataclass(frozen=True)
class EmbedSpec:
    """What a worker needs to decode and embed files: the model, its device and batching, the decode options.

    Frozen and hashable: a worker process keeps one configured embedder per spec.
    """

    model: str
    device: str
    batch_size: int | None
    model_streams: int | None
    workers: int | None  # threads per embed call, each decoding a batch then embedding it
    jpeg_draft: bool
    decode: DecodeOptions
    zero_shot_labels: tuple[str, ...] = ()
    zero_shot_template: str = "a photo of {}"

    @classmethod
    def from_settings(cls, s: Settings) -> "EmbedSpec":
        return cls(
            model=s.model, device=s.device, batch_size=s.batch_size, model_streams=s.model_streams,
            workers=s.decode_workers, jpeg_draft=s.jpeg_draft,
            decode=DecodeOptions.from_settings(s),  # the draft size comes from the worker's model
            zero_shot_labels=tuple(s.zero_shot_labels), zero_shot_template=s.zero_shot_template,
        )


@dataclass
class EmbeddedFile:
    """One source file after decode and embed: one entry per item (a volume has one per slice), or why it failed.

    `payloads` hold what decoding and fingerprinting know (size, DICOM/NIfTI fields, pixel hash,
    pHash); `vectors` is float32 (items, dim), None when the file failed.
    """

    file: SourceFile
    keys: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    payloads: list[dict[str, Any]] = field(default_factory=list)
    vectors: np.ndarray | None = None
    error: str | None = None


@dataclass
class EmbeddedChunk:
    """What one embed call returns: its files in input order, the model that embedded them, and stage seconds."""

    files: list[EmbeddedFile]
    model: str
    dim: int
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Plan:
    """The plan stage's answer: files to decode, how many were unchanged (one stat each), and catalog rows gone from the source.

    `verify` holds files whose size and mtime match the catalog but not their inode or ctime (another
    file moved in, or the same one was rewritten): reading their bytes tells which. `restat` holds
    unchanged files whose catalog rows predate inode and ctime, to be recorded now.
    """

    todo: list[SourceFile]
    unchanged: int
    gone: list[FileRecord]  # catalog rows whose files left the source
    verify: list[SourceFile] = field(default_factory=list)
    restat: list[SourceFile] = field(default_factory=list)


@dataclass
class RunReport:
    """What one ingestion run did; printed by `ingest --json` and stored in the catalog."""

    run_id: str
    collection: str
    model: str
    source: str
    scanned: int = 0
    new: int = 0
    unchanged: int = 0
    duplicate: int = 0
    changed: int = 0
    deleted: int = 0
    failed: int = 0
    items: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # paths the scan passed over, with why
    metadata_issues: list[dict[str, Any]] = field(default_factory=list)  # table rows reported under the policy
    resumes: list[dict[str, Any]] = field(default_factory=list)  # interrupted runs this one picks up
    duplicates_by_tier: dict[str, int] = field(default_factory=dict)  # new items that joined a cluster
    # image sizes whose shared template (a slide deck's text, a viewer's frame) the verifier learned and
    # left out of matching: "WxH" -> share of the sample's keypoints that recur (recommender.dedup.templates)
    templates: dict[str, float] = field(default_factory=dict)
    # new items whose picture was cut out of its frame (a template, a flat background) and searched (framed copies)
    cut_outs: int = 0
    points: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    map: dict[str, Any] = field(default_factory=dict)  # the map stage: method used, points, or the error it logged
    projection: dict[str, Any] = field(default_factory=dict)  # the projection stage (projection_label set): fit or error
    status: str = "running"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
