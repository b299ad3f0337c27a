"""Pick the compute device: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from recommender.errors import ConfigError

if TYPE_CHECKING:
    import torch


def usable_cores() -> int:
    """CPU cores this process may run on (respects affinity masks and container CPU sets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_device(requested: str = "auto") -> torch.device:
    """Resolve 'auto' to the best available device; validate explicit requests.

    torch is imported here, not at the top, so that `usable_cores` costs callers without a model
    (dedupe verification) no torch import."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise ConfigError(f"Unknown device '{requested}': use auto, cpu, cuda, cuda:N or mps.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"Device '{requested}' requested but CUDA is not available here; use --device cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"Device '{requested}' requested but Apple MPS is not available here; use --device cpu.")
    return device
