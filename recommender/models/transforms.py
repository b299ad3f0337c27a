"""Picklable image transforms shared by the model families.

A model's `prepare` runs the geometric part of its preprocessing (resize,
crop, mode conversion) on a PIL image and returns a uint8 CHW tensor; the
float conversion and normalisation happen batched on the model's device
(`Embedder.embed_batch`). Keeping items uint8 until then cuts queued memory
4x. The CNNs use `ResizeCenterCrop` (torch's uint8 antialiased resize, equal to
Pillow's); CLIP keeps open_clip's own PIL transforms (`Uint8Prepare`), so its
preprocessing stays exactly the one its weights were trained with.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import functional as F
from torchvision.transforms.v2 import functional as F2


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
    """The ImageNet eval recipe (short side to `resize`, bilinear with antialias; centre crop `crop`) on uint8 tensors.

    torch's uint8 antialiased bilinear kernel matches Pillow's (vectors equal to the
    classic PIL + torchvision transform at cosine 1.0000 on art-louvre) and runs 3.4x
    faster: 0.30 ms instead of 1.04 ms for a 500x500 painting (benchmarks/embed_choices.py).
    """

    def __init__(self, resize: int, crop: int):
        self.resize, self.crop = resize, crop

    def __call__(self, img: Image.Image) -> torch.Tensor:
        t = F.pil_to_tensor(img if img.mode == "RGB" else img.convert("RGB"))
        t = F2.resize(t, [self.resize], interpolation=F2.InterpolationMode.BILINEAR, antialias=True)
        return F2.center_crop(t, [self.crop, self.crop])


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
