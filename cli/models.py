"""`recommender models`: the model registry, with weights availability and dedup thresholds."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from cli.common import JsonOpt, err


def _thresholds(row: dict) -> str:
    if row["measured_on"] is None:
        return "[yellow]unmeasured[/]"
    return (f"phash <= {row['phash_strict']}, copy >= {row['copy_cosine']}, near >= {row['near_cosine']}\n"
            f"[dim]{row['measured_on']}[/]")


def models(as_json: bool = JsonOpt) -> None:
    """List every registered model: dimension, weights and whether they are here, dedup thresholds."""
    from recommender.models.registry import NAME_FORMS, calibration_hint, registry_rows

    rows = registry_rows()
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(caption="Other names: " + "; ".join(NAME_FORMS), show_lines=True)
    table.add_column("model", overflow="fold")
    table.add_column("dim", justify="right")
    table.add_column("text")
    table.add_column("weights (here offline?)", overflow="fold")
    table.add_column("dedup thresholds (measured on)", overflow="fold")
    for row in rows:
        offline = "[green]offline[/]" if row["offline"] else "[yellow]not here: downloads on first use[/]"
        table.add_row(f"{row['name']}\n[dim]{row['note']}[/]", str(row["dim"]), "yes" if row["text"] else "no",
                      f"{row['weights']}\n{offline}", _thresholds(row))
    Console().print(table)
    unmeasured = [row["name"] for row in rows if row["measured_on"] is None]
    if unmeasured:
        err.print(f"[yellow]warning:[/] no measured dedup thresholds for {', '.join(unmeasured)}: dedup borrows "
                  f"mobilenet_v2's; to calibrate, {calibration_hint('NAME')}.")
