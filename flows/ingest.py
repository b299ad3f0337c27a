"""The ingest flow: scan -> plan -> decode -> dedupe (exact) -> embed -> cluster (copy/near) -> upsert -> report.

Files are processed in chunks of about `chunk_items` items. Within a chunk,
worker threads take a batch each through decode -> dedupe -> embed
(`IngestJob.process`); the next chunk's `embed` task is submitted before this
one is clustered and written, so the model never waits for the store and
memory stays flat however large the corpus is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from recommender.pipeline import Batch, IngestJob
from recommender.progress import progress_bar
from recommender.scan import SourceFile
from recommender.settings import Settings, get_settings

_TASK = dict(cache_policy=NO_CACHE, persist_result=False)


@task(name="scan", **_TASK)
def scan_task(job: IngestJob) -> list[SourceFile]:
    return job.scan()


@task(name="plan", **_TASK)
def plan_task(job: IngestJob, files: list[SourceFile]) -> list[SourceFile]:
    return job.plan(files)


@task(name="embed", **_TASK)
def embed_task(job: IngestJob, files: list[SourceFile]) -> tuple[list[Batch], list[SourceFile]]:
    """Decode -> dedupe (exact) -> embed batches until about `chunk_items` items; return them and the files left."""
    return job.process(files, max_items=job.settings.chunk_items)


@task(name="cluster", **_TASK)
def cluster_task(job: IngestJob, batches: list[Batch]) -> list[Batch]:
    return job.cluster(batches)


@task(name="upsert", **_TASK)
def upsert_task(job: IngestJob, batches: list[Batch]) -> None:
    for b in batches:
        job.upsert(b)


@task(name="report", **_TASK)
def report_task(job: IngestJob) -> dict[str, Any]:
    report = job.finish("completed")
    create_markdown_artifact(
        key="ingest-report",
        markdown=_report_markdown(report.to_dict()),
        description=f"Ingest of {report.source} into {report.collection}",
    )
    return report.to_dict()


def _report_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Ingest {r['run_id']}",
        f"- source: `{r['source']}` -> collection `{r['collection']}` ({r['model']})",
        f"- scanned {r['scanned']}, new {r['new']}, unchanged {r['unchanged']}, "
        f"duplicate {r['duplicate']}, changed {r['changed']}, deleted {r['deleted']}, failed {r['failed']}; "
        f"points now {r['points']}",
        f"- new items in duplicate clusters, by tier: {r['duplicates_by_tier'] or 'none'}",
        f"- {r['seconds']} s, {r['images_per_second']} images/s; stages: {r['stage_seconds']}",
    ]
    lines += [f"- failed: `{f['path']}`: {f['reason']}" for f in r["failures"][:50]]
    return "\n".join(lines)



@flow(name="ingest")
def ingest_flow(source: str, metadata: str | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ingest a folder tree (optionally with a metadata table) into the configured collection."""
    cfg = Settings.model_validate(settings) if settings else get_settings()
    run_id = str(flow_run.id) if flow_run.id else None
    job = IngestJob(cfg, Path(source), Path(metadata) if metadata else None, run_id=run_id)
    try:
        todo = plan_task(job, scan_task(job))
        with progress_bar(len(todo), enabled=cfg.progress) as advance:
            pending = embed_task.submit(job, todo) if todo else None
            while pending is not None:  # the next chunk decodes and embeds while this one is clustered and written
                batches, rest = pending.result()
                pending = embed_task.submit(job, rest) if rest else None
                upsert_task(job, cluster_task(job, batches))
                advance(sum(len(b.files) for b in batches))
        return report_task(job)
    except BaseException as exc:
        job.finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        job.close()
