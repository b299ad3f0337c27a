"""The CUDA path, checked and timed on a machine with a GPU: parity with the CPU, forward and pipeline throughput.

One process, one run; every figure is printed as a line and written to --json. Needs a CUDA device.

1. **parity**: the same images embedded on the CPU (fp32) and on CUDA (the product's bf16 autocast,
   channels_last, pinned host memory): per-image cosine between the two vectors (min and median), and
   how many of each image's top-10 neighbours among the checked images agree (mean overlap / 10).
   For MobileNetV2 (ImageNet weights) and CLIP ViT-B-32 loaded from a local checkpoint (random init:
   no pretrained CLIP weights exist offline; the loading path is the one users' local weights take),
   whose text tower is checked the same way.
2. **forward**: images/s of `Embedder.embed_batch` on pre-decoded uint8 batches (host-to-device copy,
   normalisation on the device, forward, copy back), median of --repeats, per model and batch size;
   CLIP text prompts/s.
3. **pipeline**: the ingest's embed stage (`recommender.ingest.embed_files`: worker threads decode a
   group, fingerprint it and hand it to the model) over the corpus's files on CUDA, per batch size and
   chunk size: images/s and the stage's decode vs embed seconds (decode is CPU work: the GPU waits on it).

    python benchmarks/gpu_check.py --corpus ../shared/corpora/brain-mri --json gpu.json
"""

from __future__ import annotations

import argparse
import csv
import faulthandler
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recommender.decode import DecodeOptions, decode_file  # noqa: E402
from recommender.models import create_embedder  # noqa: E402
from embed_throughput import run_pipeline  # noqa: E402  (benchmarks/, on the path as the script's folder)

FIGURES: dict = {}
DEVICE = "cuda"  # --device cpu runs the same script as a smoke test on a machine without one


def sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def say(key: str, value, line: str) -> None:
    """Print one figure's line and keep it for --json."""
    FIGURES[key] = value
    print(line, flush=True)


def corpus_files(corpus: Path, limit: int | None) -> list[Path]:
    """Image files listed by labels.csv (or found under the folder), in a fixed order."""
    if (corpus / "labels.csv").exists():
        files = [corpus / r["path"] for r in csv.DictReader(open(corpus / "labels.csv"))]
    else:
        files = sorted(p for p in corpus.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return files[:limit] if limit else files


def clip_checkpoint(tmp: Path) -> str:
    """A random-init ViT-B-32 open_clip checkpoint on disk: the local-weights loading path, no download."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp / "vit_b_32_random.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return f"clip:ViT-B-32:{path}"


def batch_of(emb, files: list[Path]) -> torch.Tensor:
    """The uint8 batch the ingest hands the model for these files (its decode and `prepare`)."""
    opts = DecodeOptions(draft_size=emb.decode_size)
    return torch.stack([emb.prepare(decode_file(p, options=opts)[0].image) for p in files])


def topk_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean share of each row's top-k neighbours (by cosine, itself excluded) that two embeddings agree on."""
    def nn(v: np.ndarray) -> np.ndarray:
        s = v @ v.T
        np.fill_diagonal(s, -np.inf)
        return np.argsort(-s, axis=1)[:, :k]
    na, nb = nn(a), nn(b)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb)]))


AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def parity(name: str, label: str, files: list[Path], texts: list[str] | None, amp: str = "fp32") -> None:
    """CPU fp32 vs CUDA vectors (at the product's precision, or an autocast dtype) for the same inputs."""
    cpu, gpu = create_embedder(name, "cpu"), create_embedder(name, DEVICE)
    gpu.amp_dtype = AMP[amp]
    label = f"{label}.{amp}"
    x = batch_of(cpu, files)
    a, b = cpu.embed_batch(x), gpu.embed_batch(x)
    cos = np.sum(a * b, axis=1)
    say(f"parity.{label}.images", {"n": len(files), "cos_min": float(cos.min()), "cos_median": float(np.median(cos)),
                                    "top10_overlap": topk_overlap(a, b)},
        f"parity {label} images ({len(files)}): cosine CPU vs CUDA min {cos.min():.4f} median {np.median(cos):.4f}; "
        f"top-10 neighbour overlap {topk_overlap(a, b):.3f}")
    if texts:
        ta, tb = cpu.embed_text(texts), gpu.embed_text(texts)
        tc = np.sum(ta * tb, axis=1)
        rank_a, rank_b = np.argmax(a @ ta.T, axis=1), np.argmax(b @ tb.T, axis=1)
        say(f"parity.{label}.text", {"n": len(texts), "cos_min": float(tc.min()),
                                      "zero_shot_agreement": float(np.mean(rank_a == rank_b))},
            f"parity {label} text ({len(texts)} prompts): cosine min {tc.min():.4f}; "
            f"best prompt per image agrees on {np.mean(rank_a == rank_b):.3f} of images")


def forward(name: str, label: str, files: list[Path], batch_sizes: list[int], repeats: int,
            texts: list[str] | None, amp: str = "fp32") -> None:
    """Images/s of embed_batch on pre-decoded uint8 batches, per batch size (median of repeats)."""
    emb = create_embedder(name, DEVICE)
    emb.amp_dtype = AMP[amp]
    label = f"{label}.{amp}"
    pool = batch_of(emb, files[: max(batch_sizes)])
    while len(pool) < max(batch_sizes):
        pool = torch.cat([pool, pool])[: max(batch_sizes)]
    for bs in batch_sizes:
        emb.configure(bs, 1)
        x = pool[:bs]
        for _ in range(3):
            emb.embed_batch(x)
        rates = []
        for _ in range(repeats):
            sync()
            start, n = time.perf_counter(), 0
            while n < max(2048, 4 * bs):
                emb.embed_batch(x)
                n += bs
            rates.append(n / (time.perf_counter() - start))
        say(f"forward.{label}.bs{bs}", statistics.median(rates),
            f"forward {label} batch {bs}: {statistics.median(rates):,.0f} img/s (median of {repeats}, host uint8 in, "
            f"float32 vectors out)")
    if texts:
        prompts = (texts * (1024 // len(texts) + 1))[:1024]
        emb.embed_text(prompts)
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            emb.embed_text(prompts)
            rates.append(len(prompts) / (time.perf_counter() - start))
        say(f"forward.{label}.text", statistics.median(rates),
            f"forward {label} text: {statistics.median(rates):,.0f} prompts/s (1,024 per call)")


def pipeline(name: str, label: str, files: list[Path], batch_size: int, chunk: int, repeats: int) -> None:
    """The ingest embed stage over the files on the device (`embed_throughput.run_pipeline`, warmed up
    first): images/s, decode vs embed seconds."""
    runs = [run_pipeline(name, files, batch_size, None, keep_vectors=False, device=DEVICE,
                         chunk_items=chunk, warm_up=True) for _ in range(repeats)]
    rate = statistics.median(r["images_per_s"] for r in runs)
    secs = runs[-1]["stage_seconds"]
    say(f"pipeline.{label}.bs{batch_size}.chunk{chunk}", {"images_per_s": rate, "stage_seconds": secs},
        f"pipeline {label} batch {batch_size} chunk {chunk}: {rate:,.0f} img/s over {runs[-1]['items']} files "
        f"(median of {repeats}); decode {secs.get('decode', 0):.1f} s, embed {secs.get('embed', 0):.1f} s summed over workers")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=REPO / "samples" / "art")
    ap.add_argument("--parity-images", type=int, default=256)
    ap.add_argument("--batch-sizes", default="32,128,256,512")
    ap.add_argument("--pipeline", default="64:512,256:512,256:2048", help="batch:chunk pairs for the embed stage")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sections", default="parity,forward,pipeline")
    ap.add_argument("--amp", default="fp32,bf16,fp16", help="precisions for parity and forward (fp32 = the product's)")
    ap.add_argument("--watchdog", type=float, default=0.0,
                    help="after this many seconds print every thread's stack and exit (a hang shows where it waits)")
    ap.add_argument("--json", dest="json_out", type=Path, default=None)
    ap.add_argument("--device", default="cuda", help="cuda (the check) or cpu (a smoke test of this script)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if args.watchdog:
        faulthandler.dump_traceback_later(args.watchdog, exit=True)
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check needs a CUDA device (torch.cuda.is_available() is False).")
    files = corpus_files(args.corpus, None)
    gpu = torch.cuda.get_device_name(0) if DEVICE.startswith("cuda") else "none"
    say("machine", {"gpu": gpu, "torch": torch.__version__, "cpus": os.cpu_count()},
        f"machine: {gpu}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"corpus {args.corpus.name} ({len(files)} files)")
    texts = ["a brain MRI slice with a tumour", "a healthy brain MRI slice", "a painting of a landscape",
             "a portrait", "a still life with fruit", "an axial T1 slice", "a religious scene", "a sculpture"]
    with tempfile.TemporaryDirectory() as tmp:
        models = [("mobilenet_v2", "mobilenet_v2", None), (clip_checkpoint(Path(tmp)), "clip_vit_b_32", texts)]
        sections, amps = args.sections.split(","), args.amp.split(",")
        if "parity" in sections:
            for name, label, txt in models:
                for amp in amps:
                    parity(name, label, files[: args.parity_images], txt, amp)
        sizes = [int(s) for s in args.batch_sizes.split(",")]
        if "forward" in sections:
            for name, label, txt in models:
                for amp in amps:
                    forward(name, label, files, sizes, args.repeats, txt, amp)
        if "pipeline" in sections:
            for pair in args.pipeline.split(","):
                bs, chunk = (int(v) for v in pair.split(":"))
                pipeline("mobilenet_v2", "mobilenet_v2", files, bs, chunk, args.repeats)
    if args.json_out:
        args.json_out.write_text(json.dumps(FIGURES, indent=1))


if __name__ == "__main__":
    main()
