"""The `recommender` command: ingest, query and serve from one entry point.

Flags override `RECOMMENDER_*` environment variables field by field.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from recommender.errors import RecommenderError
from recommender.settings import Settings, get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
err = Console(stderr=True)

HomeOpt = typer.Option(None, "--home", help="Data home (RECOMMENDER_HOME).")
CollectionOpt = typer.Option(None, "--collection", "-c", help="Collection (RECOMMENDER_COLLECTION).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout.")


def _settings(**overrides: Any) -> Settings:
    try:
        return get_settings(**overrides)
    except Exception as exc:  # pydantic ValidationError: name the field
        raise RecommenderError(f"Invalid configuration: {exc}") from exc


def _quiet_prefect(json_mode: bool) -> None:
    """No telemetry (there is no network); keep stdout clean for --json."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # slow, busy machines
    if json_mode:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@app.command()
def ingest(
    source: Path = typer.Argument(..., help="Folder tree (or single file) of images and volumes."),
    metadata: Optional[Path] = typer.Option(None, "--metadata", "-m", help="CSV/Parquet with a path column."),
    collection: Optional[str] = CollectionOpt,
    model: Optional[str] = typer.Option(None, "--model", help="Model name (RECOMMENDER_MODEL)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, mps (RECOMMENDER_DEVICE)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per forward pass."),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run the Prefect ingest flow over SOURCE."""
    _quiet_prefect(as_json)
    cfg = _settings(home=home, collection=collection, model=model, device=device, batch_size=batch_size,
                    progress=None if as_json else sys.stderr.isatty() or None)
    from flows.ingest import ingest_flow

    report = ingest_flow(str(source), str(metadata) if metadata else None, settings=cfg.model_dump(mode="json"))
    if as_json:
        typer.echo(json.dumps(report))
        return
    err.print(
        f"[bold]{report['collection']}[/]: scanned {report['scanned']}, new {report['new']}, "
        f"changed {report['changed']}, unchanged {report['unchanged']}, duplicate {report['duplicate']}, "
        f"deleted {report['deleted']}, failed {report['failed']}; "
        f"{report['points']} points; {report['seconds']} s ({report['images_per_second']} images/s)"
    )
    for failure in report["failures"]:
        err.print(f"  [red]failed[/] {failure['path']}: {failure['reason']}")


@app.command()
def similar(
    item: Optional[str] = typer.Argument(None, help="Point id or ingested file path."),
    image: Optional[Path] = typer.Option(None, "--image", help="Query with an image file that need not be ingested."),
    k: int = typer.Option(10, "-k", min=1, max=1000, help="Number of results."),
    filters: Optional[List[str]] = typer.Option(None, "--filter", help="KEY=VALUE payload filter (repeatable)."),
    collection: Optional[str] = CollectionOpt,
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Items most similar to ITEM or to --image."""
    from recommender.recommend import Recommender, parse_filters

    if (item is None) == (image is None):
        raise RecommenderError("Give exactly one of ITEM (id or path) or --image PATH.")
    rec = Recommender(_settings(home=home, collection=collection))
    try:
        flt = parse_filters(filters)
        results = rec.similar_to_item(item, k, flt) if item else rec.similar_to_image(image, k, flt)
    finally:
        rec.close()
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results]))
        return
    table = Table("score", "id", "path")
    for r in results:
        table.add_row(f"{r.score:.4f}", r.id, r.path)
    Console().print(table)


@app.command()
def dashboard(
    collection: Optional[str] = CollectionOpt,
    home: Optional[Path] = HomeOpt,
    port: int = typer.Option(8501, "--port", help="HTTP port."),
    headless: bool = typer.Option(True, help="Do not open a browser."),
) -> None:
    """Start the Streamlit dashboard on the current collection."""
    cfg = _settings(home=home, collection=collection)
    import dashboard as dash_pkg

    env = {**os.environ, "RECOMMENDER_HOME": str(cfg.home), "RECOMMENDER_COLLECTION": cfg.collection}
    app_path = Path(dash_pkg.__file__).parent / "app.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(app_path), "--server.port", str(port),
           "--server.headless", str(headless).lower(), "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "viewer"]
    raise typer.Exit(subprocess.call(cmd, env=env))


@app.command()
def models() -> None:
    """List the model names the registry understands."""
    from recommender.models.torchvision_cnn import available_archs

    for arch in available_archs():
        typer.echo(f"{arch}    (or {arch}:/path/to/checkpoint.pth)")
    typer.echo("clip:<arch>:<pretrained tag | /path/to/checkpoint>   e.g. clip:ViT-B-32:laion2b_s34b_b79k")
    typer.echo("clip:hf-hub:<org/name>                                e.g. clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")


def _register_commands() -> None:
    """Command modules owned by each subsystem (one line each)."""
    from recommender.commands import ops; ops.register(app)  # noqa: E702
    from recommender.commands import dedup; dedup.register(app)  # noqa: E702
    from recommender.commands import schedule; schedule.register(app)  # noqa: E702
    from recommender.commands import embed; embed.register(app)  # noqa: E702
    from recommender.commands import serve; serve.register(app)  # noqa: E702


_register_commands()


def main() -> None:
    """Console entry point: expected errors print one clear line and exit 2."""
    try:
        app()
    except RecommenderError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
