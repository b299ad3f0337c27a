"""Read the optional metadata table (CSV or Parquet) that labels the images.

Rows are matched to files by a path column relative to the source root (or
absolute). Every other column becomes Qdrant payload.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from recommender.errors import MetadataError

PATH_COLUMNS = ("path", "relpath", "file", "filename", "png", "image")


def load_metadata(table: Path, source_root: Path) -> dict[str, dict[str, Any]]:
    """Map absolute file path -> payload dict from a CSV/Parquet table."""
    table = Path(table)
    if not table.is_file():
        raise MetadataError(f"Metadata file '{table}' does not exist.")
    try:
        df = pd.read_parquet(table) if table.suffix.lower() == ".parquet" else pd.read_csv(table)
    except Exception as exc:
        raise MetadataError(f"Metadata file '{table}' could not be read ({exc}); use a CSV with a header row or Parquet.") from exc
    column = next((c for c in PATH_COLUMNS if c in df.columns), None)
    if column is None:
        raise MetadataError(
            f"Metadata file '{table}' has no path column; add one named one of {', '.join(PATH_COLUMNS)} "
            f"(found columns: {', '.join(map(str, df.columns))})."
        )
    root = Path(source_root).resolve()
    out: dict[str, dict[str, Any]] = {}
    for record in df.to_dict(orient="records"):
        rel = str(record.pop(column))
        full = Path(rel) if Path(rel).is_absolute() else root / rel
        out[str(full.resolve())] = {str(k): _clean(v) for k, v in record.items() if not _is_missing(v)}
    return out


def keyword_fields(metadata: dict[str, dict[str, Any]]) -> list[str]:
    """Fields whose values are all strings: candidates for keyword payload indexes."""
    fields: dict[str, bool] = {}
    for payload in metadata.values():
        for key, value in payload.items():
            fields[key] = fields.get(key, True) and isinstance(value, str)
    return sorted(k for k, is_kw in fields.items() if is_kw)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _clean(value: Any) -> Any:
    """Numpy scalars -> Python scalars so the payload serialises everywhere."""
    return value.item() if hasattr(value, "item") else value
