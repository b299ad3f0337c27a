"""Ingest as stages over plain data: scan -> plan -> embed (decode, fingerprint, model) -> dedupe -> cluster -> upsert -> report.

- `stages`: scan, plan, chunk, classify, payloads (decide, never write);
- `embed`: `embed_files`, the stage a thread, a process or a Dask worker runs;
- `writer`: the single writer (collection lock, store, catalog) in the driver process;
- `runner`: `drive` composes the stages and times each; `run_ingest` runs them here without Prefect.
"""

from recommender.ingest.records import EmbeddedChunk, EmbeddedFile, EmbedSpec, Plan, RunReport
from recommender.ingest.runner import IngestRun, StageTimer, drive, run_ingest
from recommender.ingest.scan import ScanResult, SourceFile, scan_source



def __getattr__(name: str):
    """The embed stage loads torch: imported on first use, so a no-op re-ingest never pays for it."""
    if name in ("embed_files", "embedder_for"):
        from recommender.ingest import embed

        return getattr(embed, name)
    raise AttributeError(name)


__all__ = [
    "EmbedSpec", "EmbeddedChunk", "EmbeddedFile", "IngestRun", "Plan", "RunReport", "SourceFile", "StageTimer",
    "ScanResult", "drive", "embed_files", "embedder_for", "run_ingest", "scan_source",
]
