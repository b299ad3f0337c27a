"""What every command shares: settings from flags, the shared options, the stderr console."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from recommender.errors import ConfigError

if TYPE_CHECKING:  # pydantic-settings is imported when a command runs, not for --help
    from recommender.settings import Settings

err = Console(stderr=True)

HomeOpt = typer.Option(None, "--home", help="Data home (RECOMMENDER_HOME).")
CollectionOpt = typer.Option(None, "--collection", "-c", help="Collection (RECOMMENDER_COLLECTION).")
ModelOpt = typer.Option(None, "--model", help="Model name (RECOMMENDER_MODEL).")
DeviceOpt = typer.Option(None, "--device", help="auto, cpu, cuda, mps (RECOMMENDER_DEVICE).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout.")
WaitOpt = typer.Option(None, "--wait", min=0, help="Seconds to wait for another writer of the collection, "
                       "then exit 75 (RECOMMENDER_LOCK_TIMEOUT).")


def settings(**overrides: Any) -> "Settings":
    """Settings from `RECOMMENDER_*` with the flags that were given on top; a bad value names its field."""
    from pydantic import ValidationError

    from recommender.settings import get_settings

    try:
        return get_settings(**overrides)
    except ValidationError as exc:  # one line per bad field, naming its flag and variable
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))} (RECOMMENDER_{str(e['loc'][0]).upper()}) = {e.get('input')!r}: {e['msg']}"
            for e in exc.errors())
        raise ConfigError(f"Invalid configuration: {problems}") from exc


def quiet_prefect(json_mode: bool = False) -> None:
    """No telemetry (there may be no network); keep stdout clean for --json."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # slow, busy machines
    if json_mode:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
