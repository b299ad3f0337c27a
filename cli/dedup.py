"""Deduplication commands: `dedupe` (sweep the collection, write reports) and `evaluate-dedup`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cli.common import CollectionOpt, HomeOpt, err, settings


def dedupe(
    out: Optional[Path] = typer.Option(None, "--out", help="Write clusters/pairs (Parquet, CSV), leakage tables and report.html here."),
    collection: Optional[str] = CollectionOpt,
    home: Optional[Path] = HomeOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the summary (clusters with member paths) as JSON."),
) -> None:
    """Find exact, copy and near duplicates over the whole collection and label them in the payload."""
    from recommender.duplicates import sweep
    from recommender.locks import CollectionLock
    from recommender.maps import map_stage
    from recommender.store import open_store

    cfg = settings(home=home, collection=collection)
    lock = CollectionLock(cfg.home, cfg.collection, "dedupe").acquire(cfg.lock_timeout)
    store = open_store(cfg)
    try:
        summary = sweep(store, cfg, out)
        summary["map"] = map_stage(store, cfg)  # the map's labels (tiers) follow the sweep; never fails the dedupe
    finally:
        store.close()
        lock.release()
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    err.print(
        f"{summary['points']} points: {summary['clusters']} same-picture clusters {summary['clusters_by_tier']}, "
        f"{summary['redundant_items']} redundant items; look-alikes (near, not redundant): "
        f"{summary['look_alike_items']} items in {summary['look_alike_groups']} groups; {summary['seconds']} s"
        + (f"; report: {out / 'report.html'}" if out else "")
    )


def evaluate_dedup(
    source: Path = typer.Argument(..., help="Folder of real images to plant known copies from."),
    originals: int = typer.Option(200, help="Originals to transform."),
    distractors: int = typer.Option(300, help="Untouched distractor images."),
    seed: int = typer.Option(0, help="Random seed of the planted copies (the same seed plants the same set)."),
    model: str = typer.Option("mobilenet_v2", "--model", help="Model whose dedup thresholds to measure."),
    out: Optional[Path] = typer.Option(None, "--json", help="Write the full result as JSON here."),
    families: str = typer.Option("tuning", help="Planted edits: a tuning set or a held-out set (never tuned on) by name, or both (tuning and heldout), reported apart; `python -m recommender.dedup.evaluate --help` lists every set and what it holds."),
    keypoint_grid: int = typer.Option(1, help="The verifier's keypoints spread over an N x N grid (odd; 1 = off; see RECOMMENDER_DEDUP_KEYPOINT_GRID)."),
    template_members: int = typer.Option(16, help="Images of one size verified together that learn a template (0 = off; see RECOMMENDER_DEDUP_TEMPLATE_MEMBERS)."),
    metadata: Optional[Path] = typer.Option(None, help="A table with path, volume and slice_index columns (paths relative to its folder, e.g. mri-slices' manifest.csv): slices scored as an ingest with that metadata does."),
) -> None:
    """Precision, recall and F1 per tier and transform on planted copies, against a pHash baseline."""
    from recommender.dedup.evaluate import main as evaluate_main

    args = [str(source), "--originals", str(originals), "--distractors", str(distractors), "--seed", str(seed),
            "--model", model, "--families", families, "--keypoint-grid", str(keypoint_grid),
            "--template-members", str(template_members)]
    args += ["--metadata", str(metadata)] if metadata else []
    raise typer.Exit(evaluate_main(args + (["--json", str(out)] if out else [])))
