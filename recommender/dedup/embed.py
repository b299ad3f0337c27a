"""The embedding function the `copy` and `near` tiers need, as a plain callable.

The engine accepts any `embed(list[PIL.Image]) -> (n, d) float32, L2-normalised`.
`model_embedder` gives the project's model (the same vectors as the store) together
with the decode options ingest uses for it, so an evaluation sees the files exactly
as ingest does (JPEG drafts at the model's decode size included).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from PIL import Image

from recommender.decode import DecodeOptions

if TYPE_CHECKING:
    from recommender.settings import Settings

EmbedFn = Callable[[Sequence[Image.Image]], np.ndarray]


def batched(embed: EmbedFn, batch_size: int = 32) -> EmbedFn:
    """Wrap an embed function so large lists go through the model in fixed batches."""

    def run(images: Sequence[Image.Image]) -> np.ndarray:
        parts = [np.asarray(embed(list(images[s:s + batch_size])), dtype=np.float32)
                 for s in range(0, len(images), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    return run


def model_embedder(model: str = "mobilenet_v2", device: str = "cpu",
                   settings: "Settings | None" = None) -> tuple[EmbedFn, DecodeOptions]:
    """(embed function, ingest's decode options for it) of a registered model.

    The options come from `settings` (default: the environment's), with the JPEG draft
    size the model asks for, exactly as the ingest pipeline builds them.
    """
    from recommender.models import create_embedder
    from recommender.settings import get_settings

    embedder = create_embedder(model, device)
    options = DecodeOptions.from_settings(settings or get_settings(), embedder.decode_size)
    return batched(embedder.embed_images), options
