"""The `recommender` command: ingest, query, deduplicate and serve from one entry point.

Flags override `RECOMMENDER_*` environment variables field by field.
"""

from __future__ import annotations

import sys

import typer

from cli import apps, dedup, ingest, models, ops, query, schedule
from cli.common import err
from recommender.errors import RecommenderError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

app.command()(ingest.ingest)
app.command()(query.similar)
app.command()(query.recommend)
app.command("embed-text")(query.embed_text)
app.command("evaluate-retrieval")(query.evaluate_retrieval)
app.command()(dedup.dedupe)
app.command("evaluate-dedup")(dedup.evaluate_dedup)
app.command()(ops.check)
app.command()(ops.reembed)
app.command()(schedule.schedule)
app.command()(apps.serve)
app.command()(apps.dashboard)
app.command()(models.models)


def main() -> None:
    """Console entry point: expected errors print one clear line and exit 2."""
    try:
        app()
    except RecommenderError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
