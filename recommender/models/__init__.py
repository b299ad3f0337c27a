"""Model registry and the one factory, `create_embedder`.

Names are data: `mobilenet_v2`, `resnet50`, `<cnn>:/path/to/checkpoint.pth`,
`clip:<arch>:<pretrained tag or checkpoint path>`, `clip:hf-hub:<org/name>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from recommender.errors import ConfigError
from recommender.models.base import Embedder
from recommender.models.device import resolve_device
from recommender.models.torchvision_cnn import available_archs


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
            return ModelSpec("clip", rest, None)
        arch, _, weights = rest.partition(":")
        if not arch:
            raise ConfigError(f"Model '{name}': expected clip:<arch>:<pretrained>.")
        return ModelSpec("clip", arch, weights or None)
    arch, _, weights = name.partition(":")
    if arch in available_archs():
        return ModelSpec("cnn", arch, weights or None)
    raise ConfigError(
        f"Unknown model '{name}'. Use one of {', '.join(available_archs())} (optionally ':/path/to/checkpoint.pth'), "
        "clip:<arch>:<pretrained tag or checkpoint path>, or clip:hf-hub:<org/name>."
    )


def create_embedder(name: str, device: str = "auto") -> Embedder:
    """Build the embedder for a model name on a device ('auto' picks CUDA, MPS, then CPU)."""
    spec = parse_model_name(name)
    dev = resolve_device(device)
    if spec.family == "clip":
        from recommender.models.clip import ClipEmbedder

        return ClipEmbedder(spec.arch, spec.weights, dev)
    from recommender.models.torchvision_cnn import TorchvisionEmbedder

    return TorchvisionEmbedder(spec.arch, spec.weights, dev)


@lru_cache(maxsize=4)
def cached_embedder(name: str, device: str = "auto") -> Embedder:
    """Process-wide embedder cache: queries reuse the loaded model."""
    return create_embedder(name, device)


__all__ = ["Embedder", "ModelSpec", "create_embedder", "cached_embedder", "parse_model_name"]
