"""One typed settings object, read from `RECOMMENDER_*` environment variables.

CLI flags override single fields via `Settings.with_overrides`, so every entry
point (CLI, flows, dashboard, API) resolves configuration the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="RECOMMENDER_", extra="ignore")

    home: Path = Field(Path("./var"), description="Data home: embedded Qdrant, catalog, caches.")
    qdrant_url: str | None = Field(None, description="Qdrant server URL; unset means embedded local mode under home.")
    qdrant_api_key: str | None = Field(None, description="API key for a Qdrant server.")
    collection: str = Field("images", description="Qdrant collection name.")
    model: str = Field("mobilenet_v2", description="Embedding model name (see `recommender models`).")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    batch_size: int = Field(32, ge=1, description="Images per model forward pass.")
    decode_workers: int = Field(2, ge=0, description="Parallel decode workers (0 = decode in the main process).")
    max_image_pixels: int = Field(100_000_000, ge=1, description="Refuse images above this many pixels (decompression bombs).")
    upsert_batch: int = Field(256, ge=1, description="Points per Qdrant upsert call.")
    ignore_suffixes: tuple[str, ...] = Field(
        (".csv", ".parquet", ".md", ".txt", ".json", ".yaml", ".yml"),
        description="File suffixes skipped by the scanner (metadata and docs, not images).",
    )

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
