"""`recommender schedule`: serve the ingest flow on a schedule against a Prefect server.

`ingest_flow.serve(...)` registers a deployment (name, schedule, parameters) on the
server named by PREFECT_API_URL and then runs this process as its runner: it polls
the server and executes each scheduled run in a subprocess. Re-running the command
with the same --name updates the deployment in place, so it is safe in a container
that restarts. See docs/operations.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from cli.common import CollectionOpt, DeviceOpt, HomeOpt, ModelOpt, quiet_prefect, settings
from recommender.errors import ConfigError

if TYPE_CHECKING:
    from recommender.settings import Settings


def deployment_name(source: Path) -> str:
    """Default deployment name: one deployment per source folder, so two folders don't overwrite each other."""
    return f"ingest-{source.resolve().name or 'root'}"


def flow_parameters(source: Path, metadata: Path | None, cfg: Settings) -> dict[str, Any]:
    """Parameters stored on the deployment; paths absolute because runs start in another working directory.

    The Qdrant API key is left out on purpose: deployment parameters are visible in the
    Prefect UI, and each run reads RECOMMENDER_QDRANT_API_KEY from its own environment.
    """
    if not source.exists():
        raise ConfigError(f"SOURCE {source} does not exist: give a folder (or file) of images.")
    if metadata is not None and not metadata.is_file():
        raise ConfigError(f"--metadata {metadata} is not a file: give a CSV or Parquet table with a path column.")
    params = cfg.model_dump(mode="json", exclude={"qdrant_api_key"})
    params["home"] = str(Path(cfg.home).resolve())
    return {
        "source": str(source.resolve()),
        "metadata": str(metadata.resolve()) if metadata else None,
        "settings": params,
    }


def check_schedule(cron: str | None, interval: float | None) -> None:
    """Exactly one of --cron / --interval, and a cron string the server will accept."""
    if (cron is None) == (interval is None):
        raise ConfigError('Give exactly one of --cron "EXPR" (e.g. "0 2 * * *") or --interval SECONDS.')
    if interval is not None and interval <= 0:
        raise ConfigError(f"--interval must be a positive number of seconds, got {interval}.")
    if cron is not None:
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=cron)
        except ValueError as exc:
            raise ConfigError(f'--cron "{cron}" is not a valid cron expression (five fields, e.g. "*/15 * * * *"): {exc}') from exc


def prefect_api_url() -> str:
    """The Prefect server this deployment goes to; a schedule needs a long-lived server, not the ephemeral one."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise ConfigError(
            "PREFECT_API_URL is not set. Start a server with `prefect server start` and export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (see docs/operations.md)."
        )
    import httpx

    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"Prefect server at {url} is not reachable ({exc}). Start it with `prefect server start` "
            "or fix PREFECT_API_URL."
        ) from exc
    return url


def schedule(
    source: Path = typer.Argument(..., help="Folder tree (or single file) to ingest on every run."),
    cron: Optional[str] = typer.Option(None, "--cron", help='Cron schedule, e.g. "0 2 * * *" (server time zone UTC).'),
    interval: Optional[float] = typer.Option(None, "--interval", help="Run every N seconds instead of --cron."),
    metadata: Optional[Path] = typer.Option(None, "--metadata", "-m", help="CSV/Parquet with a path column."),
    name: Optional[str] = typer.Option(None, "--name", help="Deployment name (default ingest-<folder name>)."),
    limit: int = typer.Option(1, "--limit", min=1, help="Concurrent runs this runner executes (embedded Qdrant needs 1)."),
    collection: Optional[str] = CollectionOpt,
    model: Optional[str] = ModelOpt,
    device: Optional[str] = DeviceOpt,
    home: Optional[Path] = HomeOpt,
) -> None:
    """Serve the ingest flow for SOURCE on a schedule against a Prefect server (runs until stopped)."""
    quiet_prefect()
    check_schedule(cron, interval)
    cfg = settings(home=home, collection=collection, model=model, device=device)
    params = flow_parameters(source, metadata, cfg)
    prefect_api_url()

    from prefect.types.entrypoint import EntrypointType

    from flows.ingest import ingest_flow

    # MODULE_PATH: runs import `flows.ingest` from the installed package, whatever the cwd.
    ingest_flow.serve(
        name=name or deployment_name(source),
        cron=cron,
        interval=interval,
        parameters=params,
        tags=["recommender", "ingest"],
        description=f"Scheduled ingest of {params['source']} into {cfg.collection}",
        limit=limit,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
