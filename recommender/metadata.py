"""Read the optional metadata table (CSV or Parquet) that labels the images.

Rows are matched to files by a path column relative to the source root (or
absolute). Every other column becomes Qdrant payload.

Policy (README, "Metadata tables"), every case reported in the run report with its line:
- a second row for the same file: the first row is kept;
- a row for a file that does not exist (yet): kept, and used when the file appears;
- a path outside the ingested folder: ignored;
- columns the payload schema does not declare: kept as payload (listed once);
- a table that is not UTF-8 or has no path column: the run stops before anything is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from recommender.errors import MetadataError
from recommender.payload import FIELDS

PATH_COLUMNS = ("path", "relpath", "file", "filename", "png", "image")


@dataclass
class MetadataTable:
    """The table's rows by absolute file path, and what was wrong with it (line numbers, kept going)."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    issues: list[dict[str, Any]] = field(default_factory=list)  # {"line", "path", "issue"}

    def get(self, path: str, default: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.rows.get(path, {} if default is None else default)


def load_metadata(table: Path, source_root: Path) -> MetadataTable:
    """Read a CSV/Parquet table into payload rows under the policy in the module docstring."""
    table = Path(table)
    if not table.is_file():
        raise MetadataError(f"Metadata file '{table}' does not exist.")
    df = _read(table)
    column = next((c for c in PATH_COLUMNS if c in df.columns), None)
    if column is None:
        raise MetadataError(
            f"Metadata file '{table}' has no path column; add one named one of {', '.join(PATH_COLUMNS)} "
            f"(found columns: {', '.join(map(str, df.columns))})."
        )
    root = Path(source_root).resolve()
    out = MetadataTable()
    undeclared = sorted(str(c) for c in df.columns if c != column and str(c) not in FIELDS)
    if undeclared:
        out.issues.append({"line": 1, "path": "", "issue": f"columns not in the payload schema, kept as payload "
                           f"(text columns indexed as keywords): {', '.join(undeclared)}"})
    first_line: dict[str, int] = {}
    header = 1 if table.suffix.lower() != ".parquet" else 0
    for i, record in enumerate(df.to_dict(orient="records")):
        line = i + 1 + header  # CSV: the header is line 1; Parquet: row number from 1
        rel = str(record.pop(column))
        full = (Path(rel) if Path(rel).is_absolute() else root / rel).resolve()
        key = str(full)
        problem = _row_problem(full, root, key, first_line)
        if problem:
            out.issues.append({"line": line, "path": rel, "issue": problem})
            if key in out.rows or not full.is_relative_to(root):
                continue
        first_line.setdefault(key, line)
        out.rows[key] = {str(k): _clean(v) for k, v in record.items() if not _is_missing(v)}
    return out


def _read(table: Path) -> pd.DataFrame:
    try:
        if table.suffix.lower() == ".parquet":
            return pd.read_parquet(table)
        return pd.read_csv(table, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataError(f"Metadata file '{table}' is not UTF-8 (byte {exc.object[exc.start]:#04x} at offset "
                            f"{exc.start}); save it as UTF-8 and run again.") from exc
    except Exception as exc:
        raise MetadataError(f"Metadata file '{table}' could not be read ({exc}); use a CSV with a header row or Parquet.") from exc


def _row_problem(full: Path, root: Path, key: str, first_line: dict[str, int]) -> str | None:
    if not full.is_relative_to(root):
        return f"path is outside the ingested folder {root}; row ignored"
    if key in first_line:
        return f"second row for this file (first on line {first_line[key]}); the first row is kept"
    if not full.exists():
        return "no such file under the ingested folder; row kept for when it appears"
    return None


def keyword_fields(metadata: MetadataTable) -> list[str]:
    """Fields whose values are all strings: candidates for keyword payload indexes."""
    fields: dict[str, bool] = {}
    for payload in metadata.rows.values():
        for key, value in payload.items():
            fields[key] = fields.get(key, True) and isinstance(value, str)
    return sorted(k for k, is_kw in fields.items() if is_kw)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _clean(value: Any) -> Any:
    """Numpy scalars -> Python scalars so the payload serialises everywhere."""
    return value.item() if hasattr(value, "item") else value
