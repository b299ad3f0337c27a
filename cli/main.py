"""The `recommender` command: ingest, query, deduplicate and serve from one entry point.

Flags override `RECOMMENDER_*` environment variables field by field.
"""

from __future__ import annotations

import sys

import typer

from cli import apps, dedup, ingest, maps, models, ops, query, schedule
from cli.common import err
from recommender.errors import RecommenderError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
_debug = False


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error.")) -> None:
    global _debug
    _debug = debug

app.command()(ingest.ingest)
app.command()(query.similar)
app.command()(query.recommend)
app.command("embed-text")(query.embed_text)
app.command("evaluate-retrieval")(query.evaluate_retrieval)
app.command("fit-projection")(query.fit_projection)
app.command()(dedup.dedupe)
app.command("evaluate-dedup")(dedup.evaluate_dedup)
app.command("map")(maps.map_layout)
app.command()(ops.check)
app.command()(ops.reembed)
app.command()(ops.refingerprint)
app.command()(ops.migrate)
app.command()(schedule.schedule)
app.command()(apps.serve)
app.command()(apps.dashboard)
app.command()(models.models)


def main() -> None:
    """Console entry point: expected errors print one clear line and exit with their code (README, "Exit codes")."""
    try:
        app(standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):
        err.print("[red]interrupted[/]: the next run of the same command resumes where this one stopped")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: click's own message and exit code 2
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:
        if _debug:
            raise
        code = exc.exit_code if isinstance(exc, RecommenderError) else 1
        what = "error" if isinstance(exc, RecommenderError) else f"unexpected error ({type(exc).__name__})"
        err.print(f"[red]{what}:[/] {exc}" + ("" if isinstance(exc, RecommenderError) else " (run with --debug for the traceback)"),
                  soft_wrap=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
