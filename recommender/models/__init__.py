"""Model names, the registry (`registry.py`, a data table) and the one factory, `create_embedder`.

Names are data, so a collection records exactly which vector space it holds:
  - `mobilenet_v2`, `resnet50`: torchvision ImageNet CNNs (pooled penultimate features);
  - `<cnn>:/path/to/checkpoint.pth`: the same architecture with local weights;
  - `clip:<arch>:<pretrained tag | /path/to/checkpoint>`: open_clip image + text towers;
  - `clip:hf-hub:<org/name>`: an open_clip model on the Hugging Face hub (e.g. BiomedCLIP).
Weights that can't be found raise `ModelUnavailableError` saying how to provide
them; nothing ever falls back to another model (that would be another vector space).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from recommender.errors import ConfigError
from recommender.models.registry import (
    NAME_FORMS,
    REGISTRY,
    DedupThresholds,
    RegistryEntry,
    UnmeasuredThresholdsWarning,
    cnn_archs,
    dedup_thresholds,
    entry,
    registry_rows,
    resolve_dedup_thresholds,
)

if TYPE_CHECKING:
    from recommender.models.base import Embedder, ModelInfo


def __getattr__(name: str) -> Any:
    """`Embedder` and `ModelInfo` live beside torch: imported on first use, so the registry (names,
    dimensions, thresholds) costs no torch import (a no-op re-ingest never loads it)."""
    if name in ("Embedder", "ModelInfo"):
        from recommender.models import base

        return getattr(base, name)
    raise AttributeError(name)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model name: family, architecture and where its weights come from."""

    family: str  # "cnn" or "clip"
    arch: str
    weights: str | None

    @property
    def name(self) -> str:
        return ":".join(p for p in (("clip" if self.family == "clip" else None), self.arch, self.weights) if p)


def parse_model_name(name: str) -> ModelSpec:
    """Parse a model name; raise ConfigError listing the valid forms."""
    if name.startswith("clip:"):
        rest = name[len("clip:"):]
        if rest.startswith("hf-hub:"):
            if len(rest) == len("hf-hub:"):
                raise ConfigError(f"Model '{name}': expected clip:hf-hub:<org/name>.")
            return ModelSpec("clip", rest, None)
        arch, _, weights = rest.partition(":")
        if not arch:
            raise ConfigError(f"Model '{name}': expected clip:<arch>:<pretrained tag or /path/to/checkpoint>.")
        return ModelSpec("clip", arch, weights or None)
    arch, _, weights = name.partition(":")
    if arch in cnn_archs():
        return ModelSpec("cnn", arch, weights or None)
    raise ConfigError(
        f"Unknown model '{name}'. Use one of {', '.join(cnn_archs())}, or {'; '.join(NAME_FORMS)} "
        "(see `recommender models`)."
    )


def declared_dim(name: str) -> int | None:
    """The vector size a model name will produce, known without loading weights (None if unknown)."""
    spec = parse_model_name(name)
    known = entry(spec.arch if spec.family == "cnn" else name)
    if known is not None:
        return known.dim
    import open_clip

    cfg = open_clip.get_model_config(spec.arch) if not spec.arch.startswith("hf-hub:") else None
    return int(cfg["embed_dim"]) if cfg else None


def create_embedder(name: str, device: str = "auto", channels_last: bool | None = None) -> Embedder:
    """Build the embedder for a model name on a device ('auto' picks CUDA, MPS, then CPU).

    `channels_last=None` lets each device use its measured best memory format.
    """
    from recommender.models.device import resolve_device

    spec = parse_model_name(name)
    dev = resolve_device(device)
    if spec.family == "clip":
        from recommender.models.clip import ClipEmbedder

        return ClipEmbedder(spec.arch, spec.weights, dev, channels_last=channels_last)
    from recommender.models.torchvision_cnn import TorchvisionEmbedder

    return TorchvisionEmbedder(spec.arch, spec.weights, dev, channels_last=channels_last)


@lru_cache(maxsize=4)
def cached_embedder(name: str, device: str = "auto") -> Embedder:
    """Process-wide embedder cache: queries reuse the loaded model."""
    return create_embedder(name, device)


__all__ = [
    "REGISTRY",
    "DedupThresholds",
    "Embedder",
    "ModelInfo",
    "ModelSpec",
    "RegistryEntry",
    "UnmeasuredThresholdsWarning",
    "cached_embedder",
    "create_embedder",
    "declared_dim",
    "dedup_thresholds",
    "parse_model_name",
    "registry_rows",
    "resolve_dedup_thresholds",
]
