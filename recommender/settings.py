"""One typed settings object, read from `RECOMMENDER_*` environment variables.

CLI flags override single fields via `Settings.with_overrides`, so every entry
point (CLI, flows, dashboard, API) resolves configuration the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="RECOMMENDER_", extra="ignore")

    home: Path = Field(Path("./var"), description="Data home: embedded Qdrant, catalog, caches.")
    qdrant_url: str | None = Field(None, description="Qdrant server URL; unset means the embedded store under home.")
    qdrant_api_key: str | None = Field(None, description="API key for a Qdrant server.")
    collection: str = Field("images", min_length=1, max_length=255, description="Qdrant collection name.")
    model: str = Field("mobilenet_v2", description="Embedding model name (see `recommender models`).")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    batch_size: int | None = Field(
        None, ge=1, description="Images per model forward pass; unset = the device's measured best (CPU 4, CUDA 256, MPS 64)."
    )
    model_streams: int | None = Field(
        None, ge=1, description="Forward passes that may run at once; unset = one per CPU core (up to 8) on CPU, 1 on a GPU."
    )
    chunk_items: int = Field(512, ge=1, description="Files per embed task (one task per chunk; a volume counts as one file).")
    chunks_ahead: int = Field(
        1, ge=1, description="Embed chunks running while the writer stores the previous one; on Dask, about one per worker."
    )
    dask_address: str | None = Field(
        None, description="Run the ingest flow's embed tasks on Dask: local:N (N worker processes here) or a scheduler address; unset = threads."
    )
    decode_workers: int | None = Field(
        None, ge=0, description="Ingest worker threads, each decoding a batch then embedding it; unset = one per CPU core (up to 16), 0 = one."
    )
    max_image_pixels: int = Field(100_000_000, ge=1, description="Refuse images above this many pixels (decompression bombs).")
    max_decoded_bytes: int = Field(
        268_435_456, ge=1, description="Refuse images whose decode (pixels in the mode PIL decodes to, plus the RGB conversion) needs more bytes than this; 256 MiB.")
    upsert_batch: int = Field(256, ge=1, description="Points per Qdrant upsert call.")
    shard_number: int = Field(1, ge=1, description="Shards of a new collection on a Qdrant cluster (fixed at creation).")
    replication_factor: int = Field(1, ge=1, description="Copies of each shard on a Qdrant cluster (<= number of nodes).")
    jpeg_draft: bool = Field(True, description="Decode big JPEGs at a reduced DCT scale that still covers the model input.")
    pseudonymize_key: str | None = Field(
        None, min_length=8, description="Secret that turns DICOM PatientID into a stable pseudonym (HMAC-SHA256) "
        "before it is stored; unset = stored as in the file.")
    volume_axis: int = Field(2, ge=0, le=2, description="NIfTI slicing axis (0, 1 or 2; 2 = axial for RAS volumes).")
    volume_min_foreground: float = Field(
        0.01, ge=0, le=1, description="Skip NIfTI slices with less than this fraction of non-background voxels."
    )
    zero_shot_labels: tuple[str, ...] = Field(
        (), description="Label names for CLIP zero-shot tagging; adds payload zs_label/zs_prob when the model has text."
    )
    zero_shot_template: str = Field("a photo of {}", description="Prompt template for zero-shot labels.")
    on_delete: Literal["remove", "mark"] = Field(
        "remove", description="Files gone from the source: remove their points, or keep them marked deleted=true."
    )
    lock_timeout: float = Field(0.0, ge=0, description="Seconds a second ingest waits for the collection lock before failing.")
    retry_attempts: int = Field(5, ge=1, description="Attempts for a Qdrant call that fails transiently (connection, timeout, 5xx).")
    retry_backoff: float = Field(0.5, ge=0, description="First retry delay in seconds; doubles each attempt.")
    progress: bool = Field(False, description="Show a progress bar with images/second (the CLI turns it on).")
    store_backend: Literal["auto", "edge", "local"] = Field(
        "auto", description="Embedded store engine: edge = Qdrant's in-process engine (HNSW, int8, vectors on disk), local = qdrant-client local mode; auto = the store the home already holds, else edge (`recommender migrate` moves a local-mode home)."
    )
    query_engine: Literal["auto", "qdrant", "exact"] = Field(
        "auto", description="Who answers queries: auto = in-process exact index for local mode, the engine itself for the edge store and a server."
    )
    exact_index_cache: bool = Field(True, description="Cache the exact index's vectors under home/exact_index (memory-mapped).")
    max_upload_bytes: int = Field(20_000_000, ge=1, description="Largest image upload the REST API accepts (413 above).")
    api_key: str | None = Field(None, min_length=8, description="REST API key: when set, every endpoint but /health (and the "
                                "docs) needs it in the X-API-Key header.")
    cors_origins: tuple[str, ...] = Field((), description='Origins the REST API allows cross-origin calls from, as a JSON '
                                          'list, e.g. ["http://localhost:3000"]; empty = none.')
    query_expansion: int = Field(
        0, ge=0, le=50, description="Alpha query expansion: re-ask with the query plus its first N answers "
        "(0 = off; retrieval ablation in docs/benchmarks.md).")
    query_expansion_alpha: float = Field(3.0, ge=0, description="Weight of each expansion answer: similarity ** alpha.")
    projection_label: str | None = Field(
        "auto", description="Refit the supervised projection from this label at the end of every ingest that changed "
        "the collection (train split only, or every labelled item when there is no split; see `recommender "
        "fit-projection`); auto = the first of artist, style, genre, diagnosis with 2+ classes that 80 % of the points "
        "carry; none = only by that command.")
    projection_split: str = Field("train", min_length=1, description="The `split` value the projection learns from.")
    use_projection: bool = Field(
        True, description="Rank by the supervised projection when the collection has one (`recommender fit-projection`); "
        "false = plain cosine.")
    dedup_on_ingest: bool = Field(True, description="Assign duplicate clusters while ingesting (against the batch and the collection).")
    dedup_phash_strict: int | None = Field(
        None, ge=0, le=64, description="copy tier: pHash Hamming distance that alone means the same picture; unset = measured for the model (`recommender models`).")
    dedup_copy_cosine: float | None = Field(
        None, ge=0, le=1, description="copy tier: embedding cosine that alone means the same picture; unset = measured for the model.")
    dedup_near_cosine: float | None = Field(
        None, ge=0, le=1, description="near tier: embedding cosine for near-identical shots / adjacent slices; unset = measured for the model.")
    dedup_verify: bool = Field(True, description="copy tier: confirm ambiguous pairs by ORB+RANSAC geometric verification.")
    dedup_candidates: int = Field(10, ge=1, description="Nearest neighbours checked per new item when deduplicating on ingest.")
    dedup_keypoint_grid: int = Field(
        1, ge=1, le=9, description="copy tier: spread the verifier's ORB keypoints over an N x N grid (odd N; 1 = off, "
        "5 for collections with stamps, logos or burned-in annotations: more of their copies verify, at about 20 % "
        "more verification time; docs/dedup.md).")
    dedup_template_members: int = Field(
        16, ge=0, description="copy tier: when at least this many images of one size are verified together, learn "
        "what they share at the same place (a slide deck's text, a viewer's frame) and leave it out of matching, so two "
        "pictures in one template are not copies (0 = off; docs/dedup.md).")
    dedup_frames: bool = Field(
        True, description="copy tier: find a picture shown on a flat background (a viewer's screen capture, a web page, a "
        "frame grab) and match the picture cut out of it; when text or a panel lies beside it, also search that picture "
        "for its copies and compare the image by its picture only (docs/dedup.md).")
    map_layout: Literal["umap", "pca", "off"] = Field(
        "umap", description="2-D map of the collection computed after each ingest and dedupe (dashboard Map page, "
        "`recommender map`): umap, pca (instant, coarser) or off; under 10 points, or if UMAP fails, PCA is used and recorded.")
    ignore_suffixes: tuple[str, ...] = Field(
        (".csv", ".parquet", ".md", ".txt", ".json", ".yaml", ".yml"),
        description="File suffixes skipped by the scanner (metadata and docs, not images).",
    )

    @field_validator("projection_label")
    @classmethod
    def _no_projection_label(cls, label: str | None) -> str | None:
        """`none`, `off` or an empty value switch the ingest's projection stage off."""
        return None if label is None or label.strip().lower() in ("", "none", "off") else label.strip()

    @field_validator("dedup_keypoint_grid")
    @classmethod
    def _odd_grid(cls, grid: int) -> int:
        if grid % 2 == 0:
            raise ValueError(f"{grid} is even; use an odd number (1 = off, 5): the keypoints of a picture and of "
                             "its mirror image must fall in mirrored cells")
        return grid

    @field_validator("home")
    @classmethod
    def _home_is_a_folder(cls, home: Path) -> Path:
        if home.exists() and not home.is_dir():
            raise ValueError(f"'{home}' is a file; the data home must be a folder (or not exist yet)")
        return home

    @property
    def qdrant_path(self) -> Path:
        """Folder of the embedded Qdrant store."""
        return self.home / "qdrant"

    @property
    def catalog_path(self) -> Path:
        """SQLite catalog of files and runs."""
        return self.home / "catalog.sqlite"

    def with_overrides(self, **overrides: Any) -> "Settings":
        """Return a copy with the non-None overrides applied (CLI flags win over env)."""
        values = {k: v for k, v in overrides.items() if v is not None}
        return type(self).model_validate({**self.model_dump(), **values}) if values else self


def get_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides applied."""
    return Settings().with_overrides(**overrides)
