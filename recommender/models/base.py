"""The embedder interface every model family implements.

Preprocessing is split in two so that decoded images stay small while they
wait in queues: `prepare` (decode workers, CPU) resizes and crops a PIL image
into a uint8 CHW tensor — 4x less memory than float32 — and `embed_batch`
converts a stacked uint8 batch to float and normalises it on the model's
device just before the forward pass. `preprocess` (PIL -> normalised float)
is kept for callers that want the classic one-step transform.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from recommender.errors import RecommenderError
from recommender.models.device import usable_cores


@dataclass(frozen=True)
class ModelInfo:
    """What a model declares about itself: vector size, input, normalisation, text support."""

    name: str
    family: str  # "cnn" or "clip"
    dim: int
    input_size: int  # square side the model sees after resize + centre crop
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    supports_text: bool
    device: str


class Embedder(ABC):
    """Maps images (and, for CLIP, text) into one L2-normalised vector space.

    `prepare`/`preprocess` run in decode workers (CPU, picklable); `embed_batch`
    runs the model on a stacked batch, so decoding can overlap model compute.
    """

    name: str
    dim: int
    family: str = "cnn"
    supports_text: bool = False

    def __init__(
        self,
        name: str,
        dim: int,
        preprocess: Callable[[Image.Image], torch.Tensor],
        device: torch.device,
        *,
        prepare: Callable[[Image.Image], torch.Tensor] | None = None,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        input_size: int = 224,
        decode_size: int | None = None,
        max_batch: int = 64,
        channels_last: bool | None = None,
    ):
        self.name = name
        self.dim = dim
        self.preprocess = preprocess
        self.prepare = prepare or preprocess
        self.device = device
        self.input_size = int(input_size)
        # smallest short side a decoder may deliver without losing detail (JPEG draft mode uses it)
        self.decode_size = int(decode_size or input_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.max_batch = max_batch
        # channels_last (NHWC) feeds CUDA tensor cores; on CPU the CNNs run as frozen oneDNN graphs that pick
        # their own layout, so contiguous input is best there (measured: docs/benchmarks_embed.md)
        self.channels_last = (device.type == "cuda") if channels_last is None else channels_last
        self._mean_t = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        self._std_t = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        # fp16 autocast on CUDA, full precision elsewhere. Measured on an H200 against the CPU's fp32 vectors
        # (128 brain-mri slices, benchmarks/gpu_check.py): fp16 cosine min 1.0000 and top-10 neighbours as
        # fp32's (0.998), at 22.7k img/s for MobileNetV2 (fp32 16.5k) and 17.8k for CLIP ViT-B-32 (fp32 4.4k);
        # bf16, as fast, moved vectors by up to 0.7 % (cosine 0.9929) and changed 7.5 % of the top-10, so a
        # collection embedded on a GPU would no longer be the CPU's vector space (docs/benchmarks_embed.md).
        self.amp_dtype: torch.dtype | None = torch.float16 if device.type == "cuda" else None
        self.streams = 1
        self._gate = threading.BoundedSemaphore(1)

    @property
    def info(self) -> ModelInfo:
        """The model's declared properties (dim, input size, normalisation, text support)."""
        return ModelInfo(self.name, self.family, self.dim, self.input_size, self.mean, self.std,  # type: ignore[arg-type]
                         self.supports_text, str(self.device))

    @abstractmethod
    def _forward_images(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) image features for a normalised float batch on self.device."""

    def _to_model_input(self, batch: torch.Tensor) -> torch.Tensor:
        """Move a batch to the device; uint8 batches are scaled and normalised there."""
        if self.device.type == "cuda" and batch.device.type == "cpu" and not batch.is_pinned():
            batch = batch.pin_memory()
        batch = batch.to(self.device, non_blocking=True)
        if batch.dtype == torch.uint8:
            batch = (batch.float().div_(255.0) - self._mean_t) / self._std_t
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    @property
    def preferred_batch_size(self) -> int:
        """Images per forward pass when the settings leave it unset, measured per device (docs/benchmarks_embed.md).

        On this class of CPU small batches stay in cache: MobileNetV2 runs at 2.6 ms/image
        with batches of 4-6 but 6.6 ms/image at 16; GPUs need large batches to fill.
        """
        return {"cuda": 256, "mps": 64}.get(self.device.type, 4)

    @property
    def preferred_streams(self) -> int:
        """Forward passes that may run at once when the settings leave it unset: one per CPU core (up to 8), one on a GPU.

        On CPU, N single-threaded forwards side by side beat one forward on N threads
        (2 cores: 442.6 vs 331.1 img/s for MobileNetV2 at batch 4): no barrier between
        the threads of each layer. A GPU is one queue, so its forwards take turns.
        """
        return max(1, min(usable_cores(), 8)) if self.device.type == "cpu" else 1

    def configure(self, batch_size: int | None = None, streams: int | None = None) -> "Embedder":
        """Set images per forward pass and how many forward passes may run at once (None = measured defaults).

        `embed_batch` is thread-safe: callers beyond `streams` wait. With several streams
        on CPU each forward runs single-threaded (torch's intra-op threads are set to
        cores // streams for the process). Queries (API, dashboard) keep the unconfigured
        default: one stream, torch's own thread count, chunks of `max_batch`.
        """
        self.max_batch = int(batch_size or self.preferred_batch_size)
        self.streams = int(streams or self.preferred_streams)
        self._gate = threading.BoundedSemaphore(self.streams)
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, usable_cores() // self.streams))
        return self

    def embed_batch(self, batch: torch.Tensor) -> np.ndarray:
        """Embed a stacked batch (uint8 from `prepare` or float from `preprocess`) into float32 (n, dim) unit vectors.

        Large batches (e.g. all slices of a volume) are split into chunks of
        `max_batch` so peak memory is bounded by the chunk, not the input.
        """
        if batch.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, batch.shape[0], self.max_batch):
            with self._gate, torch.inference_mode(), self._autocast():  # inference mode and autocast are per thread
                x = self._to_model_input(batch[start : start + self.max_batch])
                feats = torch.nn.functional.normalize(self._forward_images(x).float(), dim=-1)
                out.append(feats.cpu().numpy().astype(np.float32, copy=False))
        return np.concatenate(out) if len(out) > 1 else out[0]

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Convenience path for a few in-memory images (queries, tests)."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = torch.stack([self.prepare(img.convert("RGB")) for img in images])
        return self.embed_batch(batch)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Text vectors in the image space; only models with a text tower can."""
        raise RecommenderError(
            f"Model '{self.name}' has no text tower, so text embedding/search is not available. "
            "Use a CLIP model (e.g. --model clip:ViT-B-32:laion2b_s34b_b79k) and re-ingest with it."
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to `amp_dtype` on CUDA (fp16 unless a benchmark sets another); full precision elsewhere."""
        if self.device.type == "cuda" and self.amp_dtype is not None:
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()
