"""Picklable image transforms shared by the model families.

`Uint8Prepare` runs the geometric part of a model's preprocessing (resize,
crop, mode conversion) on a PIL image and returns a uint8 CHW tensor; the
float conversion and normalisation happen batched on the model's device
(`Embedder.embed_batch`). Keeping items uint8 until then cuts queued memory
4x, and resizing in PIL (before tensor conversion) is the cheapest path on CPU.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F


class Uint8Prepare:
    """Apply PIL-level transforms, then convert to a uint8 (3, H, W) tensor."""

    def __init__(self, pil_transforms: Sequence[Callable[[Image.Image], Image.Image]]):
        self.pil_transforms = list(pil_transforms)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if img.mode != "RGB":
            img = img.convert("RGB")
        for t in self.pil_transforms:
            img = t(img)
        if img.mode != "RGB":
            img = img.convert("RGB")
        return F.pil_to_tensor(img)


class ResizeCenterCrop:
    """Resize the short side to `resize`, then centre-crop `crop` x `crop` (the ImageNet eval recipe)."""

    def __init__(self, resize: int, crop: int, interpolation: InterpolationMode = InterpolationMode.BILINEAR):
        self.resize, self.crop, self.interpolation = resize, crop, interpolation

    def __call__(self, img: Image.Image) -> Image.Image:
        img = F.resize(img, self.resize, interpolation=self.interpolation, antialias=True)
        return F.center_crop(img, [self.crop, self.crop])


class Normalized:
    """Float preprocessing equal to `prepare` followed by the batched normalisation in `embed_batch`."""

    def __init__(self, prepare: Callable[[Image.Image], torch.Tensor], mean: Sequence[float], std: Sequence[float]):
        self.prepare = prepare
        self.mean = torch.tensor(list(mean)).view(3, 1, 1)
        self.std = torch.tensor(list(std)).view(3, 1, 1)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return (self.prepare(img).float() / 255.0 - self.mean) / self.std


def split_open_clip_transform(compose) -> tuple[Uint8Prepare, tuple[float, ...], tuple[float, ...]]:
    """Split an open_clip eval Compose at its ToTensor step into (uint8 prepare, mean, std).

    open_clip eval transforms are PIL ops (Resize, CenterCrop, RGB conversion)
    followed by ToTensor and Normalize; raises ValueError for any other shape
    so a caller can fall back to the float transform instead of guessing.
    """
    steps = list(getattr(compose, "transforms", []))
    cut = next((i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__), None)
    norms = [t for t in steps[cut + 1 :] if type(t).__name__ == "Normalize"] if cut is not None else []
    if cut is None or len(norms) != 1 or len(steps) != cut + 2:
        raise ValueError(f"unexpected open_clip transform {compose}")
    return Uint8Prepare(steps[:cut]), tuple(norms[0].mean), tuple(norms[0].std)
