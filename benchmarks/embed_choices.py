"""The measurements behind the embedding pipeline's preprocessing and fingerprint choices.

One run over `../shared/corpora/art-louvre` (1,250 paintings with genre labels), MobileNetV2:

1. Preprocessing variants against the classic recipe (PIL `Resize(256)`, `CenterCrop(224)`):
   per-image cosine to the classic vectors, genre precision@10 (leave-one-out, full cosine
   matrix) and top-10 overlap with the classic neighbours. Variants: the pipeline's
   `ResizeCenterCrop` on the full decode (the default), the same after a JPEG draft decode
   down to the crop size (half scale for these 500 px files), and one OpenCV `INTER_AREA`
   resample of the centre square.
2. Per-image cost (ms, one thread, median of --repeats passes over --limit images) of the
   resize (classic PIL vs torch uint8 antialias vs OpenCV), the pixel hash (SHA-256 vs BLAKE3)
   and the pHash thumbnail (plain Lanczos vs reducing_gap=2); plus the Hamming distance of our
   pHash to `imagehash.phash` and between the full and the half-scale (draft) decode.

    python benchmarks/embed_choices.py [--limit 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import statistics
import sys
import time
from pathlib import Path

import blake3
import cv2
import imagehash
import numpy as np
import torch
from PIL import Image
from torchvision import transforms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ART = REPO.parent / "shared" / "corpora" / "art-louvre"

from recommender.decode import DecodeOptions, decode_file  # noqa: E402
from recommender.dedup.hashing import phash_pair  # noqa: E402
from recommender.models import create_embedder  # noqa: E402
from recommender.models.torchvision_cnn import CROP, RESIZE  # noqa: E402

CLASSIC = transforms.Compose([transforms.Resize(RESIZE), transforms.CenterCrop(CROP), transforms.PILToTensor()])


def opencv_crop_resize(img: Image.Image) -> torch.Tensor:
    """The centre square the classic recipe keeps, resampled once with OpenCV INTER_AREA."""
    arr = np.asarray(img)
    h, w = arr.shape[:2]
    side = round(min(h, w) * CROP / RESIZE)
    top, left = (h - side) // 2, (w - side) // 2
    out = cv2.resize(arr[top : top + side, left : left + side], (CROP, CROP), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(out).permute(2, 0, 1)


def precision_at_10(vectors: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :10]
    return float((labels[top] == labels[:, None]).mean()), top


def embed_all(emb, paths: list[Path], draft: int | None, prepare) -> np.ndarray:
    out = []
    for i in range(0, len(paths), 32):
        imgs = [decode_file(p, options=DecodeOptions(draft_size=draft))[0].image for p in paths[i : i + 32]]
        out.append(emb.embed_batch(torch.stack([prepare(im) for im in imgs])))
    return np.concatenate(out)


def preprocessing(emb) -> list[dict]:
    rows = list(csv.DictReader(open(ART / "labels.csv")))
    paths = [ART / r["path"] for r in rows]
    labels = np.array([r["genre"] for r in rows])
    variants = {
        "classic PIL recipe (reference)": (None, CLASSIC),
        "pipeline: ResizeCenterCrop, full decode": (None, emb.prepare),
        "draft decode to the crop size + ResizeCenterCrop": (CROP, emb.prepare),
        "OpenCV INTER_AREA centre square, full decode": (None, opencv_crop_resize),
    }
    vecs = {name: embed_all(emb, paths, draft, prep) for name, (draft, prep) in variants.items()}
    ref = vecs["classic PIL recipe (reference)"]
    _, ref_top = precision_at_10(ref, labels)
    out = []
    for name, v in vecs.items():
        p10, top = precision_at_10(v, labels)
        cos = np.sum(v * ref, axis=1)
        overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, ref_top)]))
        out.append({"variant": name, "cos_median": float(np.median(cos)), "cos_min": float(cos.min()),
                    "genre_p10": p10, "top10_overlap": overlap})
    return out


def per_image_ms(fn, xs, repeats: int) -> float:
    for x in xs[:10]:
        fn(x)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for x in xs:
            fn(x)
        runs.append((time.perf_counter() - start) / len(xs) * 1000)
    return statistics.median(runs)


def sha256_pixels(img: Image.Image) -> str:
    h = hashlib.sha256(f"{img.width}x{img.height}:".encode())
    h.update(np.asarray(img))
    return h.hexdigest()


def blake3_pixels(img: Image.Image) -> str:
    h = blake3.blake3(f"{img.width}x{img.height}:".encode())
    h.update(np.asarray(img))
    return h.hexdigest()


def costs(emb, limit: int, repeats: int) -> dict:
    paths = sorted((ART / "images").rglob("*.jpg"))[:limit]
    full = [decode_file(p)[0].image for p in paths]
    half = [decode_file(p, options=DecodeOptions(draft_size=CROP))[0].image for p in paths]
    torch.set_num_threads(1)
    timings = {
        "resize: classic PIL Resize+CenterCrop": per_image_ms(CLASSIC, full, repeats),
        "resize: torch uint8 antialias (ResizeCenterCrop)": per_image_ms(emb.prepare, full, repeats),
        "resize: OpenCV INTER_AREA": per_image_ms(opencv_crop_resize, full, repeats),
        "pixel hash: SHA-256": per_image_ms(sha256_pixels, full, repeats),
        "pixel hash: BLAKE3": per_image_ms(blake3_pixels, full, repeats),
        "pHash thumbnail: plain Lanczos": per_image_ms(
            lambda im: im.convert("L").resize((32, 32), Image.Resampling.LANCZOS), full, repeats),
        "pHash thumbnail: reducing_gap=2": per_image_ms(
            lambda im: im.convert("L").resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=2.0), full, repeats),
    }
    ours = [phash_pair(im)[0] for im in full]
    ref = [int(str(imagehash.phash(im)), 16) for im in full]
    drafted = [phash_pair(im)[0] for im in half]
    bits = lambda a, b: [bin(x ^ y).count("1") for x, y in zip(a, b)]  # noqa: E731
    to_imagehash, to_draft = bits(ours, ref), bits(ours, drafted)
    return {"ms_per_image": timings,
            "phash_bits_vs_imagehash": {"median": float(np.median(to_imagehash)), "max": max(to_imagehash)},
            "phash_bits_full_vs_half_scale_decode": {"median": float(np.median(to_draft)), "max": max(to_draft)},
            "half_scale_size": list(half[0].size)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=300, help="images for the per-image costs")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    emb = create_embedder("mobilenet_v2", "cpu")
    print(f"1. preprocessing vs the classic recipe, {ART.name} (1,250 paintings, genre labels):")
    for r in preprocessing(emb):
        print(f"  {r['variant']:50s} cosine median {r['cos_median']:.4f} min {r['cos_min']:.4f}  "
              f"genre P@10 {r['genre_p10']:.4f}  top-10 overlap {r['top10_overlap']:.3f}")
    c = costs(emb, args.limit, args.repeats)
    print(f"2. per-image cost, 1 thread, median of {args.repeats} passes over {args.limit} images (ms):")
    for name, ms in c["ms_per_image"].items():
        print(f"  {name:50s} {ms:.3f}")
    print(f"  pHash (ours) vs imagehash.phash, bits of 64: {c['phash_bits_vs_imagehash']}")
    print(f"  pHash full vs half-scale decode {c['half_scale_size']}, bits: {c['phash_bits_full_vs_half_scale_decode']}")


if __name__ == "__main__":
    main()
