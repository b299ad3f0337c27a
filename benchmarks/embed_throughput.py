"""Embedding throughput: naive one-at-a-time loop vs the streaming pipeline vs pure forward.

All in one process and one run, so every figure shares the same (noisy, shared)
machine state; each measurement is repeated `--repeats` times, interleaved,
and the medians are reported.

  (a) naive: open, preprocess (classic torchvision transform) and embed one image at a time;
  (b) pipeline: the ingest embed stage (`recommender.ingest.embed_files`), i.e. the ingest flow minus
      dedupe/cluster/upsert: worker threads (one per core) each decode a batch (with the dedup
      fingerprints the ingest stores) and run the model on it, single-threaded forwards side by side;
  (c) pure forward on pre-decoded tensors: eager vs optimised graph, contiguous vs
      channels_last, batch sizes, 1 vs N streams; the best is the ceiling for (b).
Also printed: per-image cosine between (b) and (a) (the pipeline must compute the same
vectors as the classic recipe) and the serial per-image cost of each stage, which is the
budget that decides (b)/(c) when decode and model share the same cores.

`--memory` additionally runs the decode stream in fresh subprocesses for several
corpus sizes and reports each one's peak RSS (flat memory = it does not grow).

    python benchmarks/embed_throughput.py --limit 300 --repeats 3
    python benchmarks/embed_throughput.py --memory --memory-counts 1000,7000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPORA = REPO.parent / "shared" / "corpora"

from recommender.decode import DecodeOptions, decode_file  # noqa: E402
from recommender.models import create_embedder  # noqa: E402


class PeakRSS:
    """Samples this process's RSS in a thread; `.peak_mb` is the maximum seen while active."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._proc = psutil.Process()

    def __enter__(self) -> "PeakRSS":
        self.peak = self.start = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)

    @property
    def growth_mb(self) -> float:
        """Peak minus the RSS at entry: what this phase added on top of what the process already held."""
        return round((self.peak - self.start) / 2**20, 1)


def list_images(corpus: Path, limit: int) -> list[Path]:
    files = sorted(p for p in corpus.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"no images under {corpus}")
    return files[:limit]


def run_naive(model: str, files: list[Path]) -> dict:
    """The classic similar-art loop: PIL open -> torchvision transform -> model(x[None]) per image."""
    from PIL import Image
    from torchvision import transforms

    emb = create_embedder(model, "cpu", channels_last=False)  # .module: the plain eager torchvision net
    tf = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    net = emb.module
    vectors = []
    with PeakRSS() as mem, torch.inference_mode():
        start = time.perf_counter()
        for p in files:
            x = tf(Image.open(p).convert("RGB")).unsqueeze(0)
            vectors.append(torch.nn.functional.normalize(net(x), dim=-1).numpy()[0])
        seconds = time.perf_counter() - start
    return {"images_per_s": len(files) / seconds, "seconds": seconds, "peak_rss_mb": mem.peak_mb,
            "rss_growth_mb": mem.growth_mb, "vectors": np.stack(vectors)}


def run_pipeline(model: str, files: list[Path], batch_size: int | None, workers: int | None,
                 streams: int | None = None, keep_vectors: bool = True, device: str = "cpu",
                 chunk_items: int | None = None, warm_up: bool = False) -> dict:
    """The ingest embed stage (`recommender.ingest.embed_files`: worker threads decode a batch, fingerprint it
    and embed it) over `files`, chunk by chunk as the flow submits them, no dedupe or upsert.

    `keep_vectors` keeps every chunk for the agreement check (the memory runs drop them, as the flow
    does after each chunk's upsert). The model loads before the clock starts, as a warm worker's has;
    `warm_up` also embeds one batch first (CUDA: cudnn autotuning and the allocator's first blocks,
    which `benchmarks/gpu_check.py` keeps off the clock).
    """
    from recommender.ingest import EmbedSpec, embed_files, embedder_for, scan_source, stages
    from recommender.settings import get_settings

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for i, p in enumerate(files):
            os.symlink(p.resolve(), src / f"{i:06d}{p.suffix}")
        cfg = get_settings(home=Path(tmp) / "home", model=model, device=device, batch_size=batch_size,
                           decode_workers=workers, qdrant_url=None, model_streams=streams,
                           **({"chunk_items": chunk_items} if chunk_items else {}))
        spec = EmbedSpec.from_settings(cfg)
        emb = embedder_for(spec)
        scanned = scan_source(src).files
        if warm_up:
            embed_files(scanned[: emb.max_batch], spec)
        n, done, seconds = 0, [], {}
        with PeakRSS() as mem:
            start = time.perf_counter()
            for chunk_files in stages.chunks(scanned, cfg.chunk_items):
                chunk = embed_files(chunk_files, spec)
                n += sum(len(ef.keys) for ef in chunk.files)
                seconds = {k: seconds.get(k, 0.0) + v for k, v in chunk.seconds.items()}
                if keep_vectors:
                    done += chunk.files
            elapsed = time.perf_counter() - start
        config = {"batch_size": emb.max_batch, "streams": emb.streams,
                  "workers": cfg.decode_workers or os.cpu_count(), "torch_threads": torch.get_num_threads()}
    by_name = {Path(ef.file.path).name: ef.vectors[0] for ef in done if ef.vectors is not None}
    vectors = np.stack([by_name[f"{i:06d}{p.suffix}"] for i, p in enumerate(files)]) if keep_vectors else None
    return {"images_per_s": n / elapsed, "seconds": elapsed, "items": n, "peak_rss_mb": mem.peak_mb,
            "rss_growth_mb": mem.growth_mb, "config": config, "vectors": vectors,
            "stage_seconds": {k: round(v, 2) for k, v in seconds.items()}}


def run_forward(model: str, files: list[Path], batch_sizes: list[int], seconds_each: float,
                streams_options: list[int]) -> dict:
    """Best pure-forward throughput on pre-decoded uint8 tensors.

    Grid: eager vs optimised graph, contiguous vs channels_last, batch sizes, and (optimised)
    1 vs N parallel streams (N threads calling the model side by side, as the pipeline's
    workers do), so (c) is the model's ceiling for (b).
    """
    from recommender.models.torchvision_cnn import optimize_for_cpu

    emb = create_embedder(model, "cpu", channels_last=False)
    opts = DecodeOptions(draft_size=emb.decode_size)
    pool = torch.stack([emb.prepare(decode_file(p, options=opts)[0].image) for p in files[: max(batch_sizes)]])
    out = {}
    eager = emb.module
    for graph, cl in (("eager", False), ("eager", True), ("optimized", False), ("optimized", True)):
        emb.channels_last = cl
        net = eager.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        emb.net = optimize_for_cpu(net, cl) if graph == "optimized" else net
        for streams in (streams_options if graph == "optimized" else [1]):
            for bs in batch_sizes:
                emb.configure(bs, streams)
                x = pool[:bs]
                for _ in range(3):  # warm-up: the frozen graph profiles and re-optimises per new input shape
                    emb.embed_batch(x)
                key = f"{graph}_bs{bs}_{'channels_last' if cl else 'contiguous'}" + (f"_x{streams}streams" if streams > 1 else "")
                out[key] = _free_running(emb, x, streams, seconds_each)
    return out


def _free_running(emb, x: torch.Tensor, threads: int, seconds: float) -> float:
    """Images/s of `threads` threads embedding `x` back to back for `seconds`."""
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop or counts[i] < 2 * len(x):
            emb.embed_batch(x)
            counts[i] += len(x)

    start = time.perf_counter()
    if threads == 1:  # in this thread: the one it was configured and warmed up in
        loop(0)
        return counts[0] / (time.perf_counter() - start)
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - start)


def stage_costs(model: str, files: list[Path]) -> dict:
    """Serial ms per image of each stage on one thread: what the workers spend besides the forward."""
    from recommender.dedup import fingerprint_payload

    emb = create_embedder(model, "cpu").configure(4, 1)
    torch.set_num_threads(1)
    opts = DecodeOptions(draft_size=emb.decode_size)
    items = [decode_file(p, options=opts)[0] for p in files]

    def per_image(fn, xs) -> float:
        start = time.perf_counter()
        for x in xs:
            fn(x)
        return round((time.perf_counter() - start) / len(xs) * 1000, 3)

    batch = torch.stack([emb.prepare(it.image) for it in items[:4]])
    emb.embed_batch(batch)
    out = {
        "read+decode": per_image(lambda p: decode_file(p, options=opts), files),
        "fingerprint (pHash + pixel hash)": per_image(lambda it: fingerprint_payload(it.image, it.content_hash), items),
        "prepare (resize+crop)": per_image(lambda it: emb.prepare(it.image), items),
        "forward bs4, 1 thread": per_image(lambda _: emb.embed_batch(batch), range(max(1, len(files) // 4))) / 4,
    }
    torch.set_num_threads(os.cpu_count() or 1)
    return out


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Per-image cosine between two runs' unit vectors (same files, same order)."""
    cos = np.sum(a * b, axis=1)
    return {"median": round(float(np.median(cos)), 4), "p01": round(float(np.quantile(cos, 0.01)), 4),
            "min": round(float(cos.min()), 4)}


def _decode_prepare(args: tuple[str, int]) -> torch.Tensor:
    path, size = args
    from recommender.models.torchvision_cnn import cnn_prepare

    return cnn_prepare()(decode_file(Path(path), options=DecodeOptions(draft_size=size))[0].image)


class _DS(torch.utils.data.Dataset):
    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return _decode_prepare((str(self.files[i]), 256))


def run_decode_backends(files: list[Path], workers: int) -> dict:
    """Decode+prepare throughput (no model) with threads, processes and a torch DataLoader."""
    args = [(str(p), 256) for p in files]
    out = {}
    start = time.perf_counter()
    for a in args:
        _decode_prepare(a)
    out["serial"] = len(files) / (time.perf_counter() - start)
    with ThreadPoolExecutor(workers) as ex:
        start = time.perf_counter()
        list(ex.map(_decode_prepare, args))
        out["threads"] = len(files) / (time.perf_counter() - start)
    start = time.perf_counter()  # process start-up (spawn: fork after torch threads can deadlock) is part of the cost
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        list(ex.map(_decode_prepare, args, chunksize=8))
    out["processes"] = len(files) / (time.perf_counter() - start)
    start = time.perf_counter()
    loader = torch.utils.data.DataLoader(_DS(files), batch_size=32, num_workers=workers,
                                         multiprocessing_context="spawn")
    for _ in loader:
        pass
    out["dataloader"] = len(files) / (time.perf_counter() - start)
    return out


def stream_child(args: argparse.Namespace) -> None:
    """Subprocess body for --memory: stream N images through the pipeline, print peak RSS (ru_maxrss)."""
    files = list_images(Path(args.corpus), args.limit)
    r = run_pipeline(args.model, files, args.batch_size, args.workers, streams=args.streams, keep_vectors=False)
    r.pop("vectors", None)
    r["ru_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    r["n"] = len(files)
    print(json.dumps(r))


def memory_scaling(args: argparse.Namespace) -> list[dict]:
    rows = []
    for n in [int(c) for c in args.memory_counts.split(",")]:
        cmd = [sys.executable, __file__, "--stream-child", "--limit", str(n), "--corpus", args.memory_corpus,
               "--model", args.model]
        cmd += ["--workers", str(args.workers)] if args.workers is not None else []
        cmd += ["--batch-size", str(args.batch_size)] if args.batch_size else []
        cmd += ["--streams", str(args.streams)] if args.streams else []
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append({k: row[k] for k in ("n", "items", "images_per_s", "peak_rss_mb", "ru_maxrss_mb")})
        print(f"  memory: {n} images -> peak RSS {row['ru_maxrss_mb']} MB "
              f"({row['images_per_s']:.1f} img/s, decode+embed)",
              flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(CORPORA / "art-louvre" / "images"))
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--batch-size", type=int, default=None, help="pipeline images per forward (default: Settings default)")
    ap.add_argument("--streams", type=int, default=None, help="pipeline model streams (default: Settings default)")
    ap.add_argument("--workers", type=int, default=None, help="pipeline worker threads (default: Settings default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-sizes", default="1,2,4,8,16,64")
    ap.add_argument("--forward-streams", default=f"1,{os.cpu_count()}", help="stream counts in the forward grid")
    ap.add_argument("--forward-seconds", type=float, default=1.5)
    ap.add_argument("--decode-backends", action="store_true", help="also compare threads/processes/DataLoader")
    ap.add_argument("--memory", action="store_true", help="peak RSS of the stream for --memory-counts images")
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--memory-counts", default="1000,7000")
    ap.add_argument("--memory-corpus", default=str(CORPORA / "brain-mri" / "images"))
    ap.add_argument("--stream-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", dest="json_out", default=None, help="write all figures to this JSON file")
    args = ap.parse_args()
    if args.stream_child:
        return stream_child(args)

    result: dict = {"machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}, "
                               f"cuda={torch.cuda.is_available()}", "model": args.model, "limit": args.limit,
                    "batch_size": args.batch_size, "streams": args.streams, "workers": args.workers, "load_avg_start": os.getloadavg()}
    if not args.memory_only:
        files = list_images(Path(args.corpus), args.limit)
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        stream_opts = sorted({int(b) for b in args.forward_streams.split(",")})
        naive, pipe, fwd = [], [], []
        for r in range(args.repeats):
            naive.append(run_naive(args.model, files))
            pipe.append(run_pipeline(args.model, files, args.batch_size, args.workers, streams=args.streams))
            fwd.append(run_forward(args.model, files, sizes, args.forward_seconds, stream_opts))
            best = max(fwd[-1].values())
            print(f"round {r + 1}: naive {naive[-1]['images_per_s']:.1f} img/s, pipeline {pipe[-1]['images_per_s']:.1f} "
                  f"img/s, best forward {best:.1f} img/s ({max(fwd[-1], key=fwd[-1].get)}); "
                  f"ratio {pipe[-1]['images_per_s'] / naive[-1]['images_per_s']:.2f}, "
                  f"pipeline/forward {pipe[-1]['images_per_s'] / best:.2f}; load {os.getloadavg()[0]:.1f}", flush=True)
        med = statistics.median
        fwd_med = {k: round(med(f[k] for f in fwd), 2) for k in fwd[0]}
        best_key = max(fwd_med, key=fwd_med.get)
        result.update({
            "naive_images_per_s": round(med(x["images_per_s"] for x in naive), 2),
            "pipeline_images_per_s": round(med(x["images_per_s"] for x in pipe), 2),
            "ratio_pipeline_over_naive": round(med(p["images_per_s"] / n["images_per_s"] for p, n in zip(pipe, naive)), 2),
            "forward_images_per_s": fwd_med,
            "best_forward": best_key,
            "pipeline_over_best_forward": round(med(p["images_per_s"] / max(f.values()) for p, f in zip(pipe, fwd)), 2),
            "peak_rss_mb": {"naive": max(x["peak_rss_mb"] for x in naive), "pipeline": max(x["peak_rss_mb"] for x in pipe)},
            "rss_growth_mb": {"naive": max(x["rss_growth_mb"] for x in naive),
                              "pipeline": max(x["rss_growth_mb"] for x in pipe)},
            "pipeline_stage_seconds_last": pipe[-1]["stage_seconds"],
            "pipeline_config": pipe[-1]["config"],
            "cosine_pipeline_vs_naive": agreement(pipe[-1]["vectors"], naive[-1]["vectors"]),
            "forward_rounds": [{k: round(v, 1) for k, v in f.items()} for f in fwd],
            "rounds": {"naive": [round(x["images_per_s"], 2) for x in naive],
                       "pipeline": [round(x["images_per_s"], 2) for x in pipe],
                       "best_forward": [round(max(f.values()), 2) for f in fwd]},
        })
        print(f"MEDIANS over {args.repeats} rounds, {len(files)} images of {args.corpus}:")
        print(f"  (a) naive loop       {result['naive_images_per_s']:8.1f} img/s   peak RSS {result['peak_rss_mb']['naive']} MB "
              f"(+{result['rss_growth_mb']['naive']} MB during the phase)")
        print(f"  (b) pipeline         {result['pipeline_images_per_s']:8.1f} img/s   peak RSS {result['peak_rss_mb']['pipeline']} MB "
              f"(+{result['rss_growth_mb']['pipeline']} MB during the phase)  {result['pipeline_config']}")
        print(f"  cosine(b, a) per image: {result['cosine_pipeline_vs_naive']} (1.0 = the classic recipe's vectors)")
        print(f"  pipeline stages (s, last round): {result['pipeline_stage_seconds_last']}")
        print(f"  ratio b/a            {result['ratio_pipeline_over_naive']:8.2f}")
        print(f"  (c) best forward     {fwd_med[best_key]:8.1f} img/s   ({best_key})")
        print(f"  pipeline / forward   {result['pipeline_over_best_forward']:8.2f}")
        print("  forward grid: " + ", ".join(f"{k}={v:.1f}" for k, v in fwd_med.items()))
        result["stage_costs_ms_per_image"] = stage_costs(args.model, files)
        print("  serial ms/image: " + ", ".join(f"{k} {v:.3f}" for k, v in result["stage_costs_ms_per_image"].items()))
        if args.decode_backends:
            result["decode_backends"] = {k: round(v, 1) for k, v in run_decode_backends(files, args.workers or os.cpu_count()).items()}
            print("  decode+prepare only (img/s): " + ", ".join(f"{k}={v}" for k, v in result["decode_backends"].items()))
    if args.memory or args.memory_only:
        result["memory_scaling"] = memory_scaling(args)
    result["load_avg_end"] = os.getloadavg()
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
