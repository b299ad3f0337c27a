"""`recommender map`: (re)compute the stored 2-D map of a collection (the dashboard's Map page)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cli.common import CollectionOpt, HomeOpt, JsonOpt, err, settings
from recommender.errors import ConfigError


def map_layout(
    method: Optional[str] = typer.Option(None, "--method", help="umap or pca (RECOMMENDER_MAP_LAYOUT; default umap)."),
    refresh: bool = typer.Option(False, "--refresh", help="Recompute even when the stored map still fits the collection."),
    collection: Optional[str] = CollectionOpt,
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Compute the 2-D map (UMAP of the embeddings, or PCA) and store it under the data home."""
    if method is not None and method not in ("umap", "pca"):  # checked before the imports
        raise ConfigError(f"--method must be umap or pca, got {method!r}.")
    from recommender.maps import compute_layout, layout_info, layout_path
    from recommender.store import open_store

    cfg = settings(home=home, collection=collection)
    store = open_store(cfg)
    try:
        if not store.exists() or store.count() == 0:
            raise ConfigError(f"Collection '{cfg.collection}' under {cfg.home} has no items: run `recommender ingest` first.")
        chosen = method or ("umap" if cfg.map_layout == "off" else cfg.map_layout)
        info = layout_info(compute_layout(store, cfg, method=chosen, refresh=refresh))  # type: ignore[arg-type]
    finally:
        store.close()
    info["path"] = str(layout_path(cfg))
    if as_json:
        typer.echo(json.dumps(info))
        return
    note = f" ({info['note']})" if info.get("note") else ""
    err.print(f"{cfg.collection}: {info['method']} map of {info['count']} points{note}; stored at {info['path']}")
