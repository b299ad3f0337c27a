"""The ingest flow: the library's stages (`recommender.ingest`), with the embed stage mapped over chunks as tasks.

Each `embed` task gets plain data (a chunk of file paths and an `EmbedSpec`) and
returns plain data (keys, hashes, payloads, float32 vectors), so it runs on any
Prefect task runner: threads in the flow's process by default, or a Dask cluster
(`RECOMMENDER_DASK_ADDRESS` with `run_ingest_flow`, docs/scaling.md). Dedupe, cluster,
upsert and the report stay in the flow's process, the single writer of the collection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from recommender.ingest import EmbeddedChunk, EmbedSpec, IngestRun, SourceFile, drive, embed_files
from recommender.settings import Settings, get_settings


@task(name="embed", cache_policy=NO_CACHE, persist_result=False)
def embed_task(files: list[SourceFile], spec: EmbedSpec) -> EmbeddedChunk:
    """Decode, fingerprint and embed one chunk of files (any process: the model loads once per process)."""
    return embed_files(files, spec)


@flow(name="ingest")
def ingest_flow(source: str, metadata: str | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ingest a folder tree (optionally with a metadata table) into the configured collection."""
    cfg = Settings.model_validate(settings) if settings else get_settings()
    run_id = str(flow_run.id) if flow_run.id else None
    run = IngestRun(cfg, Path(source), Path(metadata) if metadata else None, run_id=run_id)
    report = drive(run, embed_task.submit).to_dict()
    create_markdown_artifact(
        key="ingest-report",
        markdown=_report_markdown(report),
        description=f"Ingest of {report['source']} into {report['collection']}",
    )
    return report


def task_runner_for(dask_address: str | None) -> TaskRunner:
    """The task runner for the embed tasks: threads here (None), `local:N` Dask worker processes here,
    or an existing Dask scheduler (`tcp://host:8786`)."""
    if not dask_address:
        return ThreadPoolTaskRunner()
    from prefect_dask import DaskTaskRunner

    if dask_address.startswith("local:"):
        n = int(dask_address.removeprefix("local:") or 1)
        return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                              cluster_kwargs={"n_workers": n, "processes": True, "threads_per_worker": 1})
    return DaskTaskRunner(address=dask_address)


def run_ingest_flow(source: str, metadata: str | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run `ingest_flow` with its embed tasks on the runner `dask_address` in the settings asks for."""
    cfg = Settings.model_validate(settings) if settings else get_settings()
    runner = task_runner_for(cfg.dask_address)
    return ingest_flow.with_options(task_runner=runner)(source, metadata, cfg.model_dump(mode="json"))


def _report_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Ingest {r['run_id']}",
        f"- source: `{r['source']}` -> collection `{r['collection']}` ({r['model']})",
        f"- scanned {r['scanned']}, new {r['new']}, unchanged {r['unchanged']}, "
        f"duplicate {r['duplicate']}, changed {r['changed']}, deleted {r['deleted']}, failed {r['failed']}; "
        f"points now {r['points']}",
        f"- new items in duplicate clusters, by tier: {r['duplicates_by_tier'] or 'none'}",
        *([f"- templates left out of matching (image size: share of keypoints): {r['templates']}"]
          if r.get("templates") else []),
        *([f"- pictures cut out of their frames (templates, flat backgrounds) and searched: {r['cut_outs']}"]
          if r.get("cut_outs") else []),
        f"- {r['seconds']} s, {r['images_per_second']} images/s; stages: {r['stage_seconds']}",
        f"- map: {r.get('map') or 'not computed'}",
        *([f"- projection: {r['projection']}"] if r.get("projection") else []),
    ]
    lines += [f"- failed: `{f['path']}`: {f['reason']}" for f in r["failures"][:50]]
    lines += [f"- skipped: `{f['path']}`: {f['reason']}" for f in r["skipped"][:50]]
    return "\n".join(lines)
