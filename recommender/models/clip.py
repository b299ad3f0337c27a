"""open_clip models: image and text towers in one space.

Name format: `clip:<arch>:<weights>` where weights is an open_clip pretrained
tag (e.g. `laion2b_s34b_b79k`, downloaded once and cached by open_clip/HF),
or a local checkpoint file (a state_dict saved with torch.save or
safetensors); or `clip:hf-hub:<org/name>` (e.g. BiomedCLIP). A CLIP name
without weights is refused: open_clip would silently build a random model,
whose vectors mean nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from recommender.errors import ModelUnavailableError
from recommender.models.base import Embedder
from recommender.models.transforms import Normalized, split_open_clip_transform

_HOW_TO = (
    "Provide the weights by either: running once with network access so open_clip downloads and caches them "
    "(~/.cache/huggingface; HF_HUB_OFFLINE=1 then reuses the cache); or naming a local checkpoint as "
    "--model clip:<arch>:/path/to/open_clip_model.safetensors (or a torch.save()d state_dict .pt)."
)


def looks_like_path(weights: str) -> bool:
    """True when a weights string names a file rather than an open_clip pretrained tag."""
    return (
        os.sep in weights
        or "/" in weights
        or weights.startswith((".", "~"))
        or weights.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))
    )


def _create(arch: str, pretrained: str | None, device: torch.device):
    import open_clip

    if arch.startswith("hf-hub:"):
        target, weights = arch, None
    else:
        if arch not in open_clip.list_models():
            raise ModelUnavailableError(
                f"CLIP architecture '{arch}' is not known to open_clip {open_clip.__version__}. "
                f"Use one of `open_clip.list_models()` (e.g. ViT-B-32, ViT-B-16) or register a custom config "
                "with open_clip.add_model_config('/path/to/config.json')."
            )
        if not pretrained:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)[:6]) or "none published"
            raise ModelUnavailableError(
                f"CLIP model 'clip:{arch}' names no weights; refusing to embed with a randomly initialised model. "
                f"Use clip:{arch}:<tag> (known tags: {tags}) or clip:{arch}:/path/to/checkpoint."
            )
        if looks_like_path(pretrained):
            path = Path(pretrained).expanduser()
            if not path.is_file():
                raise ModelUnavailableError(f"CLIP checkpoint '{path}' for '{arch}' does not exist. {_HOW_TO}")
            weights = str(path)
        else:
            known = open_clip.list_pretrained_tags_by_model(arch)
            if pretrained not in known:
                raise ModelUnavailableError(
                    f"'{pretrained}' is neither a file nor a pretrained tag of '{arch}' "
                    f"(known tags: {', '.join(known) or 'none'}). {_HOW_TO}"
                )
            weights = pretrained
        target = arch
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(target, pretrained=weights, device=device)
        tokenizer = open_clip.get_tokenizer(target)
    except Exception as exc:  # download/network/hub/key-mismatch errors come in many types
        raise ModelUnavailableError(
            f"CLIP model '{target}' with weights '{weights or 'from hf-hub'}' could not be loaded "
            f"({type(exc).__name__}: {str(exc)[:300]}). {_HOW_TO}"
        ) from exc
    return model, preprocess, tokenizer


class ClipEmbedder(Embedder):
    """open_clip image + text towers; vectors are comparable across modalities."""

    family = "clip"
    supports_text = True

    def __init__(self, arch: str, pretrained: str | None, device: torch.device, channels_last: bool | None = None):
        model, preprocess, tokenizer = _create(arch, pretrained, device)
        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        dim = int(model.visual.output_dim)
        size = model.visual.image_size
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        try:
            prepare, mean, std = split_open_clip_transform(preprocess)
            float_pre = Normalized(prepare, mean, std)
        except ValueError:  # unfamiliar transform: keep it whole (float tensors, still correct)
            prepare, float_pre = None, preprocess
            mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
        name = f"clip:{arch}" + (f":{pretrained}" if pretrained else "")
        super().__init__(name=name, dim=dim, preprocess=float_pre, device=device, prepare=prepare,
                         mean=mean, std=std, input_size=size, channels_last=channels_last)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @property
    def logit_scale(self) -> float:
        """CLIP's learned temperature (100 for trained models), used by zero-shot softmax."""
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.exp().item()) if scale is not None else 100.0

    def _forward_images(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(batch)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Unit text vectors in the same space as this model's image vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode(), self._autocast():
            feats = torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32, copy=False)
