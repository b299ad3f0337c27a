"""Query commands: `similar`, `recommend`, `embed-text` and `evaluate-retrieval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from cli.common import CollectionOpt, DeviceOpt, HomeOpt, JsonOpt, err, settings
from recommender.errors import ConfigError


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
    if (item is None) == (image is None):  # checked before the imports: a usage error costs no heavy import
        raise ConfigError("Give exactly one of ITEM (id or path) or --image PATH.")
    from recommender.recommend import Recommender, parse_filters

    rec = Recommender(settings(home=home, collection=collection))
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


def recommend(
    positive: Optional[List[str]] = typer.Option(None, "--positive", "-p", help="Item id or ingested path to move towards (repeatable)."),
    negative: Optional[List[str]] = typer.Option(None, "--negative", "-n", help="Item to move away from (repeatable)."),
    image: Optional[Path] = typer.Option(None, "--image", help="Query image file (embedded, not stored)."),
    text: Optional[str] = typer.Option(None, "--text", help="Text query (CLIP collections)."),
    k: int = typer.Option(10, "-k", min=1, max=1000, help="Number of results."),
    offset: int = typer.Option(0, "--offset", min=0, help="Skip this many results (paging)."),
    filters: Optional[List[str]] = typer.Option(None, "--filter", help="KEY=VALUE, KEY=A|B or KEY>=N (repeatable)."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="At most --group-size results per value."),
    group_size: int = typer.Option(1, "--group-size", min=1, help="Results per --group-by value."),
    mmr_lambda: Optional[float] = typer.Option(None, "--mmr-lambda", min=0.0, max=1.0, help="1 = relevance only."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Only scores above this."),
    keep_duplicates: bool = typer.Option(False, "--keep-duplicates", help="Do not collapse duplicate clusters."),
    collection: Optional[str] = CollectionOpt,
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Recommendations from examples, an image or a text, with filters, grouping and diversity."""
    from recommender.recommend import Recommender, parse_filters

    rec = Recommender(settings(home=home, collection=collection))
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


def embed_text(
    text: str = typer.Argument(..., help="Text to embed, e.g. 'a portrait of a woman'."),
    model: Optional[str] = typer.Option(None, "--model", help="Model name (RECOMMENDER_MODEL); must be CLIP."),
    device: Optional[str] = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Embed TEXT with a CLIP model's text tower (unit vector, same space as its images).

    Useful to query by words, to check that a model loads and to script zero-shot
    experiments; models without a text tower (the CNNs) are refused with a CLIP model to use.
    """
    from recommender.models import create_embedder

    cfg = settings(model=model, device=device)
    embedder = create_embedder(cfg.model, cfg.device)
    if not embedder.supports_text:
        raise ConfigError(
            f"Model '{embedder.name}' has no text tower, so it cannot embed text. "
            "Pass a CLIP model, e.g. --model clip:ViT-B-32:laion2b_s34b_b79k (or clip:<arch>:/path/to/checkpoint)."
        )
    vector = embedder.embed_text([text])[0]
    if as_json:
        typer.echo(json.dumps({"model": embedder.name, "dim": embedder.dim, "text": text,
                               "vector": [round(float(v), 7) for v in vector]}))
        return
    head = ", ".join(f"{v:+.4f}" for v in vector[:8])
    typer.echo(f"{embedder.name} dim={embedder.dim} norm={float((vector ** 2).sum()) ** 0.5:.4f} [{head}, ...]")


def evaluate_retrieval(
    label: str = typer.Option(..., "--label", help="Payload field holding the class (e.g. genre, diagnosis)."),
    k: int = typer.Option(10, "--k", "-k", min=1, max=1000, help="Precision is measured over the top k results."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for retrieval_<label>_k<k>.json/.md."),
    no_classic: bool = typer.Option(False, "--no-classic", help="Skip the cosine-matrix comparison."),
    split: Optional[str] = typer.Option(None, "--split", help="Only items with this `split` value ask (e.g. test); all answer."),
    query_expansion: Optional[int] = typer.Option(
        None, "--query-expansion", min=0, max=50, help="Score this alpha-QE depth as the pipeline (default: the setting)."),
    collection: Optional[str] = CollectionOpt,
    home: Optional[Path] = HomeOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """precision@k and mAP@k of same-label neighbours, per label and overall: plain cosine (checked
    against the full cosine matrix) and the configured pipeline side by side, with 95 % intervals."""
    from recommender.recommend import Recommender
    from recommender.retrieval_eval import evaluate, to_markdown, write

    if not label.strip():
        raise ConfigError("--label must name a payload field, e.g. --label genre.")
    rec = Recommender(settings(home=home, collection=collection, query_expansion=query_expansion))
    try:
        report = evaluate(rec, label, k, compare_classic=not no_classic, split=split)
    finally:
        rec.close()
    if out:
        paths = write(report, out)
        err.print(f"wrote {paths[0]} and {paths[1]}")
    if as_json:
        typer.echo(json.dumps(report))
    else:
        typer.echo(to_markdown(report))


def fit_projection(
    label: Optional[str] = typer.Option(None, "--label", help="Payload field holding the class (e.g. diagnosis, genre), "
                                        "or auto: the first of artist, style, genre, diagnosis the items fill."),
    split: str = typer.Option("train", "--split", help="Learn from the items whose `split` field has this value "
                              "(a collection without a split field learns from every labelled item)."),
    remove: bool = typer.Option(False, "--remove", help="Delete the collection's projection (queries rank by plain cosine)."),
    collection: Optional[str] = CollectionOpt,
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Learn the supervised projection from LABEL on the train split (the ingest does it by itself with
    `projection_label=auto`): queries then rank their first answers by a blend of cosine and cosine after
    the projection (weight chosen inside train)."""
    from recommender import projection

    cfg = settings(home=home, collection=collection)
    path = projection.path_for(cfg.home, cfg.collection)
    if remove:
        existed = projection.remove(path)
        typer.echo(f"removed {path}" if existed else f"no projection for collection '{cfg.collection}'")
        return
    if not label or not label.strip():
        raise ConfigError("--label must name a payload field, e.g. --label diagnosis (or pass --remove).")
    from recommender.store import open_store

    store = open_store(cfg)
    try:
        if not store.exists():
            raise ConfigError(f"Collection '{cfg.collection}' does not exist yet; run `recommender ingest SOURCE` first.")
        fitted = projection.fit_store(store, *projection.resolve(store, label.strip(), split))
        projection.save(fitted, path, store)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({**fitted.describe(), "cv": fitted.cv, "path": str(path)}))
        return
    cv = ", ".join(f"w {w}: {p:.4f}" for w, p in fitted.cv.items())
    typer.echo(f"projection on '{fitted.label}' from {fitted.trained_on} {fitted.split} items, {len(fitted.classes)} "
               f"classes; blend weight {fitted.weight} (precision@10, two-fold inside {fitted.split}: {cv}); wrote {path}")
