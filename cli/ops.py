"""Operations commands: `check` (catalog vs collection), `reembed` (model upgrade), `refingerprint` (fingerprints
brought up to date) and `migrate` (local mode to the edge engine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cli.common import CollectionOpt, HomeOpt, err, settings


def check(
    repair: bool = typer.Option(False, "--repair", help="Delete orphan points; forget files whose points are missing."),
    collection: Optional[str] = CollectionOpt,
    home: Optional[Path] = HomeOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Verify the catalog against the collection; exit 1 when they differ (and --repair was not given)."""
    from recommender.consistency import check as run_check

    report = run_check(settings(home=home, collection=collection), repair=repair)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    else:
        err.print(
            f"{report.collection}: {report.points} points, {report.catalog_points} referenced by the catalog; "
            f"{len(report.orphan_points)} orphan points, {len(report.files_missing_points)} files missing points"
            + ("; repaired (run ingest again to restore those files)" if report.repaired else "")
        )
        err.print(f"search: {_search_line(report.search)}")
    if not report.consistent and not report.repaired:
        raise typer.Exit(1)


def _search_line(info: dict) -> str:
    """One line on how queries find candidates (see VectorStore.search_info)."""
    from recommender.store.reduce import MIN_FIT

    if info.get("search") in ("pca", "full"):
        return (f"{info['search']} {info['dim']}-d graph, {info['pool']} candidates scored by the model's vectors "
                f"(fitted on {info['fitted_on']:,} points; top-10 recall on its sample {info['sample_recall']})")
    return {"scan": f"exact scan (the graph is built once the collection has {MIN_FIT:,} points)",
            "hnsw": "HNSW over the model's vectors", "server": "the server's HNSW",
            "local": "exact scan (qdrant-client local mode; `recommender migrate` moves it to the edge engine)"}.get(info.get("search"), str(info))


def reembed(
    model: str = typer.Option(..., "--model", help="The new model name."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Drop items whose files are gone."),
    keep_old: bool = typer.Option(False, "--keep-old", help="Keep the previous generation's collection."),
    collection: Optional[str] = CollectionOpt,
    home: Optional[Path] = HomeOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Upgrade the collection to another model: re-embed into a new collection, then switch the alias."""
    from recommender.reembed import reembed as run_reembed

    result = run_reembed(settings(home=home, collection=collection), model, allow_missing, keep_old)
    typer.echo(json.dumps(result) if as_json else
               f"{result['collection']}: {result['from_model']} -> {result['to_model']}, {result['points']} points")


def refingerprint(
    everything: bool = typer.Option(False, "--all", help="Recompute every point's fingerprint, not only those "
                                    "lacking a field (older versions stored a JPEG's frame at its draft's scale)."),
    collection: Optional[str] = CollectionOpt,
    home: Optional[Path] = HomeOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Bring stored fingerprints (pHashes, turned pHashes, frames) up to date from the files, without
    re-embedding; then run `recommender dedupe` to cluster with them. Exit 1 when a file could not be read."""
    from recommender.refingerprint import refingerprint as run

    result = run(settings(home=home, collection=collection), everything)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        err.print(f"{result['collection']}: {result['checked']} of {result['points']} points checked, "
                  f"{result['updated']} updated, {len(result['unreadable'])} unreadable in {result['seconds']} s")
        for bad in result["unreadable"][:10]:
            err.print(f"  {bad['path']}: {bad['reason']}")
    if result["unreadable"]:
        raise typer.Exit(1)


def migrate(
    home: Optional[Path] = HomeOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Move the home's embedded store from qdrant-client local mode to the edge engine (nothing is lost;
    the old store stays in place until the copy is complete and checked)."""
    from recommender.store.migrate import migrate_local_to_edge

    result = migrate_local_to_edge(settings(home=home))
    typer.echo(json.dumps(result) if as_json else
               f"{result['home']}: migrated {sum(result['collections'].values())} points in "
               f"{len(result['collections'])} collection(s) to {result['edge']}")
