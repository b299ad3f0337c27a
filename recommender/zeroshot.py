"""Zero-shot labels, as in the CLIP workshop: the closest label prompt per image.

Each label becomes a prompt ("a photo of {label}"), the prompts are embedded
with the model's text tower, and a softmax over the image-prompt cosine
similarities (scaled by CLIP's learned temperature) gives the top label and
its probability. Text vectors are cached per (model, labels, template), so an
ingest embeds the prompts once, not once per batch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from recommender.errors import ConfigError
from recommender.models.base import Embedder

_CACHE: dict[tuple[int, str, tuple[str, ...], str], np.ndarray] = {}


def label_vectors(embedder: Embedder, labels: Sequence[str], template: str = "a photo of {}") -> np.ndarray:
    """Unit text vectors of the label prompts (cached); raises for models without a text tower."""
    labels = tuple(labels)
    if not labels:
        raise ConfigError("zero_shot_labels is empty; give at least two labels (RECOMMENDER_ZERO_SHOT_LABELS).")
    if "{}" not in template:
        raise ConfigError(f"zero-shot template '{template}' must contain '{{}}' where the label goes.")
    key = (id(embedder), embedder.name, labels, template)
    if key not in _CACHE:
        _CACHE[key] = embedder.embed_text([template.format(label) for label in labels])
    return _CACHE[key]


def zero_shot_labels(
    embedder: Embedder, vectors: np.ndarray, labels: Sequence[str], template: str = "a photo of {}"
) -> list[tuple[str, float]]:
    """Top label and its softmax probability for each image vector (rows of `vectors`, unit length)."""
    if len(vectors) == 0:
        return []
    text = label_vectors(embedder, labels, template)
    scale = float(getattr(embedder, "logit_scale", 100.0))
    logits = scale * (np.asarray(vectors, dtype=np.float32) @ text.T)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    top = probs.argmax(axis=1)
    labels = tuple(labels)
    return [(labels[j], round(float(probs[i, j]), 6)) for i, j in enumerate(top)]


__all__ = ["label_vectors", "zero_shot_labels"]
