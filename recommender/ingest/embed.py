"""The embed stage: decode, fingerprint and embed a list of files, in whatever process runs it.

`embed_files` takes and returns plain data, so the flow can run it on a thread, in
another process or on a Dask worker. Each process loads the model once per
`EmbedSpec` and keeps it. Inside one call, worker threads each decode a small
batch and then run the model on it themselves: no hand-off queue between a decode
pool and a model thread, and one knob (workers) instead of two. On CPU the forwards
run single-threaded side by side; on a GPU the embedder lets one forward run at a
time while the other workers decode (docs/benchmarks_embed.md).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch

from recommender import payload as P
from recommender.decode import DecodeError, DecodeOptions, decode_file
from recommender.dedup import fingerprint_payload
from recommender.dedup.hashing import stored_size
from recommender.ingest.records import EmbeddedChunk, EmbeddedFile, EmbedSpec
from recommender.ingest.scan import SourceFile
from recommender.medical import DICOM_SUFFIXES, NIFTI_SUFFIXES
from recommender.models import Embedder, create_embedder
from recommender.models.device import usable_cores
from recommender.zeroshot import zero_shot_labels

_EMBEDDERS: dict[tuple, Embedder] = {}  # this process's configured ingest embedders (not the query cache)
_LOAD_LOCK = threading.Lock()
_THREADS_LOCK = threading.Lock()
_threads_users = 0
_threads_before = 0


def embed_files(files: Sequence[SourceFile], spec: EmbedSpec) -> EmbeddedChunk:
    """Decode, fingerprint and embed `files`; each file's refusal is kept with its reason, in input order."""
    seconds: dict[str, float] = defaultdict(float)
    clock = threading.Lock()
    start = time.perf_counter()
    emb = embedder_for(spec)
    seconds["load_model"] += time.perf_counter() - start
    opts = dataclasses.replace(spec.decode, draft_size=emb.decode_size if spec.jpeg_draft else None)

    def work(group: list[SourceFile]) -> list[EmbeddedFile]:
        t0 = time.perf_counter()
        decoded = [_decode(f, emb, opts) for f in group]
        t1 = time.perf_counter()
        _embed_group(decoded, emb, spec)
        with clock:  # worker threads add up, so a stage can exceed the call's wall time
            seconds["decode"] += t1 - t0
            seconds["embed"] += time.perf_counter() - t1
        return [ef for ef, _ in decoded]

    workers = max(1, spec.workers if spec.workers is not None else min(usable_cores(), 16))
    with _torch_threads(emb), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embed") as pool:
        done = [ef for group in pool.map(work, _groups(files, emb.max_batch)) for ef in group]
    return EmbeddedChunk(done, emb.name, emb.dim, dict(seconds))


def embedder_for(spec: EmbedSpec) -> Embedder:
    """This process's configured ingest embedder for the spec's model, device and batching (loaded on first use)."""
    key = (spec.model, spec.device, spec.batch_size, spec.model_streams)
    with _LOAD_LOCK:
        if key not in _EMBEDDERS:
            if len(_EMBEDDERS) >= 2:  # a long-lived worker switching models keeps at most two in memory
                _EMBEDDERS.pop(next(iter(_EMBEDDERS)))
            threads = torch.get_num_threads()
            _EMBEDDERS[key] = create_embedder(spec.model, spec.device).configure(spec.batch_size, spec.model_streams)
            torch.set_num_threads(threads)  # configure() lowers it process-wide; each call sets it while it runs
        return _EMBEDDERS[key]


@contextmanager
def _torch_threads(emb: Embedder) -> Iterator[None]:
    """Single-threaded torch work per worker thread while any embed call runs; the process's setting after.

    On CPU the forwards run side by side (cores // streams threads each). On a GPU the worker threads
    still run torch on the CPU (the uint8 resize in `prepare`); with torch's default of one intra-op
    thread per core, N workers on an N-core host would each start an N-thread team, so there too each
    worker runs torch single-threaded (on a 16-core H200 host the stage ran under 75 img/s without this;
    the run with it had too little time left to confirm the cure: docs/benchmarks_embed.md, "CUDA").
    """
    global _threads_users, _threads_before
    with _THREADS_LOCK:
        if _threads_users == 0:
            _threads_before = torch.get_num_threads()
            torch.set_num_threads(max(1, usable_cores() // emb.streams) if emb.device.type == "cpu" else 1)
        _threads_users += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_before)


def _decode(f: SourceFile, emb: Embedder, opts: DecodeOptions) -> tuple[EmbeddedFile, list[torch.Tensor]]:
    """One file -> its items' keys, hashes, payloads and uint8 model-ready tensors (or a per-file refusal)."""
    out, tensors = EmbeddedFile(f), []
    try:
        for item in decode_file(Path(f.path), options=opts):
            out.keys.append(item.key)
            out.hashes.append(item.content_hash)
            out.payloads.append({**item.payload, **fingerprint_payload(item.image, item.content_hash, stored_size(item.payload))})
            tensors.append(emb.prepare(item.image))  # uint8: 4x smaller than float while the batch fills
    except DecodeError as exc:
        return EmbeddedFile(f, error=exc.reason), []
    except Exception as exc:  # a decoder bug must not stop the run; report it per file
        return EmbeddedFile(f, error=f"unexpected decoding error: {type(exc).__name__}: {exc}"), []
    return out, tensors


def _embed_group(decoded: list[tuple[EmbeddedFile, list[torch.Tensor]]], emb: Embedder, spec: EmbedSpec) -> None:
    """One forward over every item of a worker batch; each file gets its rows (and CLIP zero-shot labels)."""
    tensors = [t for _, ts in decoded for t in ts]
    if not tensors:
        return
    vectors = emb.embed_batch(torch.stack(tensors))
    if spec.zero_shot_labels and emb.supports_text:
        payloads = [p for ef, _ in decoded for p in ef.payloads]
        for payload, (label, prob) in zip(payloads, zero_shot_labels(emb, vectors, spec.zero_shot_labels,
                                                                     spec.zero_shot_template)):
            payload.update({P.ZS_LABEL: label, P.ZS_PROB: prob})
    row = 0
    for ef, ts in decoded:
        if ts:
            ef.vectors = vectors[row : row + len(ts)]
            row += len(ts)


def _groups(files: Sequence[SourceFile], size: int) -> Iterator[list[SourceFile]]:
    """Consecutive files in groups of `size` (one forward each); a volume or DICOM file (possibly many slices) goes alone."""
    group: list[SourceFile] = []
    for f in files:
        if f.path.lower().endswith(DICOM_SUFFIXES + NIFTI_SUFFIXES):
            if group:
                yield group
                group = []
            yield [f]
            continue
        group.append(f)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group
