"""Would a whitening learned on copy pairs make the embedding a copy detector? A study, tuning side only.

Copy-detection systems (DISC21 baselines, Radenovic et al.'s learned whitening) project a CNN descriptor so
that a picture and its edited copies fall together: the covariance of the copy-minus-original differences is
whitened, then the collection's spread is rotated onto its principal axes. That projection costs one matrix
product per vector, so it could (a) accept a copy without ORB, (b) admit as candidates copies whose raw cosine
falls under `DedupConfig.verify_cosine`, or (c) skip ORB on look-alike pairs that are no copy (the verifier is
most of dedupe-on-ingest's time on brain-mri). This measures all three before any rule is written.

Data, apart from every held-out set: originals and a pool are drawn from the *train* split of each corpus
(`images/train`), copies are the tuning-side edits (tuning, degrade, stretch, turn, tilt). Originals 0-74 of
each corpus (and the pool without originals 75-149) learn the projection; originals 75-149 are scored.
Families are split too: learned on every other tuning edit and scored on the rest, both ways, so each figure
is read on edits the projection never saw.

    python benchmarks/copy_whitening.py ../shared/corpora --pool-brain 1500 --originals 150
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recommender.dedup import transforms as T  # noqa: E402
from recommender.dedup.embed import model_embedder  # noqa: E402

FAMILIES = [*T.TRANSFORMS, *T.DEGRADE, *T.STRETCH, *T.TURN, *T.TILT]
NATURAL = 0.95  # pool pairs at this raw cosine or more are left out of the negatives: natural duplicates
FLOOR = 0.80  # DedupConfig.verify_cosine: the raw cosine a pair needs to be verified on its cosine


def norm(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def embed_corpus(embed, folder: Path, n_pool: int, n_orig: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool vectors, copies' vectors as originals x families x dim); the originals are the pool's first."""
    files = sorted(folder.rglob("*.jpg"))
    random.Random(seed).shuffle(files)
    images = [Image.open(p).convert("RGB") for p in files[:n_pool]]
    pool = embed(images)
    copies = np.zeros((n_orig, len(FAMILIES), pool.shape[1]), np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for f, name in enumerate(FAMILIES):
            suffix, kw = T.save_kwargs(name)
            edited = []
            for g in range(n_orig):
                dest = Path(tmp) / f"{g}{suffix}"
                T.ALL_TRANSFORMS[name](images[g], random.Random(f"{seed}:{g}:{name}")).save(dest, **kw)
                with Image.open(dest) as im:
                    edited.append(im.convert("RGB"))
            copies[:, f] = embed(edited)
    return pool, copies


def learn(pool: np.ndarray, originals: np.ndarray, copies: np.ndarray, eps: float = 1e-3
          ) -> tuple[np.ndarray, np.ndarray]:
    """(mean, projection): whiten the copy differences, then rotate the whitened pool onto its principal axes."""
    mu = pool.mean(0)
    diffs = (originals[:, None, :] - copies).reshape(-1, pool.shape[1])
    w, v = np.linalg.eigh(diffs.T @ diffs / len(diffs))
    whiten = v @ np.diag(np.maximum(w, eps * w.max()) ** -0.5) @ v.T
    z = (pool - mu) @ whiten.T
    w2, v2 = np.linalg.eigh(z.T @ z / len(z))
    return mu, v2[:, np.argsort(-w2)].T @ whiten


def scores(pool: np.ndarray, copies: np.ndarray, scored: np.ndarray, project) -> dict[str, float]:
    """Retrieval, acceptance and pre-filter figures of one projection on the scored originals."""
    po, cp = project(pool), project(copies)  # cp: scored originals x families x dim
    raw = norm(pool) @ norm(pool[scored]).T
    sims = cp @ po.T  # originals x families x pool
    own = np.take_along_axis(sims, scored[:, None, None].repeat(sims.shape[1], 1), 2)[..., 0]
    rank = (sims > own[..., None]).sum(-1)
    hardest = np.stack([np.where((raw[:, k] < NATURAL) & (np.arange(len(pool)) != g), sims[k], -np.inf).max(-1)
                        for k, g in enumerate(scored)])
    raw_own = np.einsum("kfd,kd->kf", norm(copies), norm(pool[scored]))
    iu = np.triu_indices(len(pool), 1)
    rc = (norm(pool) @ norm(pool).T)[iu]
    look_alike = (po @ po.T)[iu][(rc >= FLOOR) & (rc < NATURAL)]
    keep_all = own.min()
    return {"top1": float((rank < 1).mean()), "top12": float((rank < 12).mean()),
            "raw_floor": float((raw_own >= FLOOR).mean()),
            "accept_recall": float((own > hardest.max()).mean()),
            "prefilter_cut": float((look_alike < keep_all).mean()), "look_alike_pairs": int(len(look_alike))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpora", type=Path, help="folder holding art-louvre/ and brain-mri/")
    ap.add_argument("--pool-art", type=int, default=950)
    ap.add_argument("--pool-brain", type=int, default=1500)
    ap.add_argument("--originals", type=int, default=150)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    embed, _ = model_embedder("mobilenet_v2", "cpu")
    half = args.originals // 2
    data = {}
    t0 = time.perf_counter()
    for corpus, n_pool in (("art-louvre", args.pool_art), ("brain-mri", args.pool_brain)):
        data[corpus] = embed_corpus(embed, args.corpora / corpus / "images" / "train", n_pool, args.originals, args.seed)
    print(f"embedded in {time.perf_counter() - t0:.0f} s; {len(FAMILIES)} tuning edits; learn on originals "
          f"0-{half - 1}, score {half}-{args.originals - 1}")
    every = list(range(len(FAMILIES)))
    splits = {"even -> odd": (every[0::2], every[1::2]), "odd -> even": (every[1::2], every[0::2])}
    print("| corpus | edits learned -> scored | projection | top-1 | top-12 | raw >= 0.80 | accepted with no look-alike "
          "above | look-alike pairs cut, every copy kept |")
    print("|---|---|---|---|---|---|---|---|")
    for tag, (learned, scored_f) in splits.items():
        pool_l = np.concatenate([np.delete(p, range(half, args.originals), 0) for p, _ in data.values()])
        orig_l = np.concatenate([p[:half] for p, _ in data.values()])
        copy_l = np.concatenate([c[:half][:, learned] for _, c in data.values()])
        mu, proj = learn(pool_l, orig_l, copy_l)
        for corpus, (pool, copies) in data.items():
            scored = np.arange(half, args.originals)
            for name, f in (("raw", norm), ("learned", lambda x: norm((x - mu) @ proj.T))):
                s = scores(pool, copies[half:][:, scored_f], scored, f)
                print(f"| {corpus} | {tag} | {name} | {s['top1']:.3f} | {s['top12']:.3f} | {s['raw_floor']:.3f} | "
                      f"{s['accept_recall']:.3f} | {s['prefilter_cut']:.3f} of {s['look_alike_pairs']:,} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
