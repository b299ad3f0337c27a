"""CLI commands of the recommender service: `serve`, `recommend`, `evaluate-retrieval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from recommender.errors import ConfigError, RecommenderError

err = Console(stderr=True)


def _settings(**overrides):
    from recommender.settings import get_settings

    try:
        return get_settings(**overrides)
    except Exception as exc:  # pydantic ValidationError names the field
        raise RecommenderError(f"Invalid configuration: {exc}") from exc


def register(app: typer.Typer) -> None:
    """Add the service's commands to the `recommender` app."""

    @app.command()
    def serve(
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0 exposes it to the network)."),
        port: int = typer.Option(8000, "--port", min=1, max=65535),
        collection: Optional[str] = typer.Option(None, "--collection", "-c", help="Collection (RECOMMENDER_COLLECTION)."),
        home: Optional[Path] = typer.Option(None, "--home", help="Data home (RECOMMENDER_HOME)."),
        max_upload_bytes: Optional[int] = typer.Option(None, "--max-upload-bytes", help="Largest upload (413 above)."),
    ) -> None:
        """Serve the REST API (OpenAPI docs at /docs)."""
        import uvicorn

        from recommender.api import create_app

        cfg = _settings(home=home, collection=collection, max_upload_bytes=max_upload_bytes)
        uvicorn.run(create_app(cfg), host=host, port=port, log_level="warning")

    @app.command()
    def recommend(
        positive: Optional[List[str]] = typer.Option(None, "--positive", "-p", help="Item id or ingested path to move towards (repeatable)."),
        negative: Optional[List[str]] = typer.Option(None, "--negative", "-n", help="Item to move away from (repeatable)."),
        image: Optional[Path] = typer.Option(None, "--image", help="Query image file (embedded, not stored)."),
        text: Optional[str] = typer.Option(None, "--text", help="Text query (CLIP collections)."),
        k: int = typer.Option(10, "-k", min=1, max=1000),
        offset: int = typer.Option(0, "--offset", min=0),
        filters: Optional[List[str]] = typer.Option(None, "--filter", help="KEY=VALUE, KEY=A|B or KEY>=N (repeatable)."),
        group_by: Optional[str] = typer.Option(None, "--group-by", help="At most --group-size results per value."),
        group_size: int = typer.Option(1, "--group-size", min=1),
        mmr_lambda: Optional[float] = typer.Option(None, "--mmr-lambda", min=0.0, max=1.0, help="1 = relevance only."),
        threshold: Optional[float] = typer.Option(None, "--threshold", help="Only scores above this."),
        keep_duplicates: bool = typer.Option(False, "--keep-duplicates", help="Do not collapse duplicate clusters."),
        collection: Optional[str] = typer.Option(None, "--collection", "-c"),
        home: Optional[Path] = typer.Option(None, "--home"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    ) -> None:
        """Recommendations from examples, an image or a text, with filters, grouping and diversity."""
        from recommender.recommend import Recommender, parse_filters

        rec = Recommender(_settings(home=home, collection=collection))
        try:
            results = rec.recommend(
                positive or [], negative or [], image=image, text=text, k=k, offset=offset,
                filters=parse_filters(filters), group_by=group_by, group_size=group_size, mmr_lambda=mmr_lambda,
                score_threshold=threshold, collapse_duplicates=not keep_duplicates,
            )
        finally:
            rec.close()
        if as_json:
            typer.echo(json.dumps([r.to_dict() for r in results]))
            return
        table = Table("score", "id", "path", *(["group"] if group_by else []))
        for r in results:
            table.add_row(f"{r.score:.4f}", r.id, r.path, *([str(r.reason.get("group"))] if group_by else []))
        Console().print(table)

    @app.command("evaluate-retrieval")
    def evaluate_retrieval(
        label: str = typer.Option(..., "--label", help="Payload field holding the class (e.g. genre, diagnosis)."),
        k: int = typer.Option(10, "--k", "-k", min=1, max=1000),
        out: Optional[Path] = typer.Option(None, "--out", help="Folder for retrieval_<label>_k<k>.json/.md."),
        no_classic: bool = typer.Option(False, "--no-classic", help="Skip the cosine-matrix comparison."),
        collection: Optional[str] = typer.Option(None, "--collection", "-c"),
        home: Optional[Path] = typer.Option(None, "--home"),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    ) -> None:
        """precision@k and mAP@k of same-label neighbours, per label and overall, vs the full cosine matrix."""
        from recommender.recommend import Recommender
        from recommender.retrieval_eval import evaluate, to_markdown, write

        if not label.strip():
            raise ConfigError("--label must name a payload field, e.g. --label genre.")
        rec = Recommender(_settings(home=home, collection=collection))
        try:
            report = evaluate(rec, label, k, compare_classic=not no_classic)
        finally:
            rec.close()
        if out:
            paths = write(report, out)
            err.print(f"wrote {paths[0]} and {paths[1]}")
        if as_json:
            typer.echo(json.dumps(report))
        else:
            typer.echo(to_markdown(report))
