"""`recommender ingest`: run the ingest stages over a folder and print its run report.

A one-off command runs the stages in this process (`recommender.ingest.run_ingest`): starting
Prefect's temporary server first costs 20-60 s for nothing. With `PREFECT_API_URL` set, or a
Dask cluster configured (`RECOMMENDER_DASK_ADDRESS`), the same stages run as the Prefect flow
and show in the Prefect UI. Both record the run in the catalog (the dashboard's Runs page).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from cli.common import CollectionOpt, DeviceOpt, HomeOpt, JsonOpt, ModelOpt, WaitOpt, err, quiet_prefect, settings


def ingest(
    source: Path = typer.Argument(..., help="Folder tree (or single file) of images and volumes."),
    metadata: Optional[Path] = typer.Option(None, "--metadata", "-m", help="CSV/Parquet with a path column."),
    collection: Optional[str] = CollectionOpt,
    model: Optional[str] = ModelOpt,
    device: Optional[str] = DeviceOpt,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per forward pass."),
    home: Optional[Path] = HomeOpt,
    wait: Optional[float] = WaitOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Ingest SOURCE: in this process, or as the Prefect flow when PREFECT_API_URL or a Dask address is set."""
    quiet_prefect(as_json)
    cfg = settings(home=home, collection=collection, model=model, device=device, batch_size=batch_size,
                   lock_timeout=wait, progress=None if as_json else sys.stderr.isatty() or None)
    if os.environ.get("PREFECT_API_URL") or cfg.dask_address:
        from flows.ingest import run_ingest_flow

        report = run_ingest_flow(str(source), str(metadata) if metadata else None, settings=cfg.model_dump(mode="json"))
    else:
        from recommender.ingest import run_ingest

        report = run_ingest(cfg, source, metadata).to_dict()
    if as_json:
        typer.echo(json.dumps(report))
        return
    for run in report["resumes"]:
        err.print(f"resumed interrupted run {run['run_id']} of {run['source']} "
                  f"({run['files_recorded']} files it had recorded were kept)")
    err.print(
        f"[bold]{report['collection']}[/]: scanned {report['scanned']}, new {report['new']}, "
        f"changed {report['changed']}, unchanged {report['unchanged']}, duplicate {report['duplicate']}, "
        f"deleted {report['deleted']}, failed {report['failed']}; "
        f"{report['points']} points; {report['seconds']} s ({report['images_per_second']} images/s)"
    )
    for failure in report["failures"]:
        err.print(f"  [red]failed[/] {failure['path']}: {failure['reason']}")
    for issue in report["metadata_issues"]:
        err.print(f"  [yellow]metadata[/] line {issue['line']} {issue['path']}: {issue['issue']}")
    for skipped in report["skipped"]:
        err.print(f"  [yellow]skipped[/] {skipped['path']}: {skipped['reason']}")
