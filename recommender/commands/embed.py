"""`recommender embed-text`: a text vector in a CLIP model's image space.

Useful to query a collection by words, to check that a model loads, and to
script zero-shot experiments. Models without a text tower (the CNNs) are
refused with a message naming a CLIP model to use instead.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from recommender.errors import RecommenderError


def register(app: typer.Typer) -> None:
    """Add `embed-text` to the main CLI."""

    @app.command("embed-text")
    def embed_text(
        text: str = typer.Argument(..., help="Text to embed, e.g. 'a portrait of a woman'."),
        model: Optional[str] = typer.Option(None, "--model", help="Model name (RECOMMENDER_MODEL); must be CLIP."),
        device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, mps (RECOMMENDER_DEVICE)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    ) -> None:
        """Embed TEXT with a CLIP model's text tower (unit vector, same space as its images)."""
        from recommender.models import create_embedder
        from recommender.settings import get_settings

        cfg = get_settings(model=model, device=device)
        embedder = create_embedder(cfg.model, cfg.device)
        if not embedder.supports_text:
            raise RecommenderError(
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
