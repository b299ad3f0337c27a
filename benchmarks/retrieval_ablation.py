"""Retrieval post-processing, each variant alone and combined: tuned on train queries, reported on test.

Issue 16's ablation, run by `benchmarks/retrieval_quality.py --ablation`. For each corpus the default
model's backbone (MobileNetV2, ImageNet weights) is run once per input scale (the product's geometry:
short side 256 * s, centre crop 224 * s, s in 1, 1/sqrt 2, sqrt 2) and its feature maps pooled by
average (the product's vectors today) and by GeM p 3; the descriptors are cached in `--cache`. Then
every variant of `recommender/postprocess.py` is scored by label precision@10:

  - database: every image of the corpus; queries: the `train` split (tuning) and the `test` split
    (reported); the query's copies (cosine >= 0.985 on the plain vectors, the copy tier) and itself
    are never answers, the same for every variant;
  - the best variant is chosen on the tuning queries only, per corpus and across corpora (mean
    relative gain), and then read on the test queries, with a 95 % bootstrap interval (1,000
    resamples of the queries).

Regional pooling (R-MAC and regional GeM over 14 regions of the scale-1 maps, each region whitened
by a PCA of the collection's regions before summing, `regional`) and diffusion (Iscen et al. 2017,
`diffused`) are measured too. Diffusion: ranking by a random walk on the collection's
mutual k-nearest-neighbour graph started from the query's own neighbours; it needs a linear solve per
query over the whole graph, so it is an upper bound of what a query-time graph method adds here.

No label is used by any of these variants: PCA, DBA, query expansion, regional pooling and diffusion see
only the vectors. Then
the optional supervised projection (`supervised`): a linear discriminant learned from the train
split's labels, blended with the cosine, its weight chosen by cross-validation inside train and
read on the test queries only.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from recommender import postprocess as pp

SCALES = (1.0, 0.7071, 1.4142)
COPY_COSINE = 0.985
K = 10


REGIONAL = ("rmac", "rgem")
"""Regional pooling at scale 1 (R-MAC: max; R-GeM: GeM p 3) over the regions of `regions`, kept per region."""


def extract(corpus_dir: Path, cache: Path) -> dict[str, np.ndarray]:
    """Pooled descriptors per (pooling, scale), regional descriptors, labels and splits of a corpus
    (cached as .npz; what a cache from an earlier version lacks is computed and added)."""
    out = cache / f"descriptors_{corpus_dir.name}.npz"
    data = dict(np.load(out)) if out.is_file() else {}
    rows = list(csv.DictReader((corpus_dir / "labels.csv").open()))
    wanted = [f"{p}_{s}" for p in ("avg", "gem") for s in SCALES] + [f"{kind}_regions" for kind in REGIONAL]
    feats: dict[str, list[np.ndarray]] = {k: [] for k in wanted if k not in data}
    if not feats:
        return data
    t0 = time.perf_counter()
    for s in SCALES:
        if not any(k.endswith(f"_{s}") or (s == 1.0 and k.endswith("_regions")) for k in feats):
            continue
        for fm in feature_maps(corpus_dir, [r["path"] for r in rows], s):
            if f"avg_{s}" in feats:
                feats[f"avg_{s}"].append(fm.mean((2, 3)))
            if f"gem_{s}" in feats:
                feats[f"gem_{s}"].append(pp.gem(fm).astype(np.float32))
            for kind in REGIONAL:
                if s == 1.0 and f"{kind}_regions" in feats:
                    feats[f"{kind}_regions"].append(regional(fm, kind).astype(np.float16))
        print(f"  {corpus_dir.name}: scale {s} embedded ({time.perf_counter() - t0:.0f} s)", flush=True)
    data.update({k: np.concatenate(v) for k, v in feats.items()})
    label = [c for c in rows[0] if c not in ("path", "split")][0]
    data.update(labels=np.array([r[label] for r in rows]), splits=np.array([r["split"] for r in rows]))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(out, **data)
    return data


def feature_maps(corpus_dir: Path, paths: list[str], s: float, batch: int = 32):
    """MobileNetV2's last feature maps (n, 1280, h, w) of the images, batch by batch, at input scale `s`
    with the product's geometry (short side 256 s, centre crop 224 s)."""
    import torch
    from PIL import Image

    from recommender.models import create_embedder

    net = create_embedder("mobilenet_v2").module.features.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def load(path: str) -> torch.Tensor:
        im = Image.open(corpus_dir / path).convert("RGB")
        short, crop = round(256 * s), round(224 * s)
        r = short / min(im.size)
        im = im.resize((max(crop, round(im.size[0] * r)), max(crop, round(im.size[1] * r))), Image.BILINEAR)
        left, top = (im.size[0] - crop) // 2, (im.size[1] - crop) // 2
        arr = np.array(im.crop((left, top, left + crop, top + crop)))
        return torch.from_numpy(arr).permute(2, 0, 1).float() / 255

    with torch.inference_mode():
        for i in range(0, len(paths), batch):
            yield net((torch.stack([load(p) for p in paths[i:i + batch]]) - mean) / std).numpy()


def regions(h: int, w: int, levels: int = 3) -> list[tuple[int, int, int, int]]:
    """R-MAC's square regions (y0, y1, x0, x1): at level l, l x l windows of side 2 min(h, w) / (l + 1),
    evenly spaced (Tolias et al. 2016; on a 7 x 7 map: 1 + 4 + 9 regions)."""
    out = []
    for level in range(1, levels + 1):
        side = 2 * min(h, w) / (level + 1)
        starts = [(0.0, 0.0)] if level == 1 else [(i * (h - side) / (level - 1), j * (w - side) / (level - 1))
                                                   for i in range(level) for j in range(level)]
        out += [(round(y), min(h, round(y + side)), round(x), min(w, round(x + side))) for y, x in starts]
    return out


def regional(fm: np.ndarray, kind: str) -> np.ndarray:
    """(n, regions, channels) unit descriptors of each region of the maps: max (rmac) or GeM p 3 (rgem)."""
    out = []
    for y0, y1, x0, x1 in regions(*fm.shape[2:]):
        part = fm[:, :, y0:y1, x0:x1]
        out.append(pp.unit(part.max(axis=(2, 3)) if kind == "rmac" else pp.gem(part)))
    return np.stack(out, axis=1)


class Scorer:
    """precision@10 by label of any database/query vectors, with the same exclusions for every variant."""

    def __init__(self, data: dict[str, np.ndarray]):
        self.labels = data["labels"]
        self.plain = pp.unit(data["avg_1.0"])
        self.split = {s: np.flatnonzero(data["splits"] == s) for s in ("train", "test")}
        self.copies = {s: self.copies_of(q) for s, q in self.split.items()}

    def copies_of(self, q: np.ndarray) -> np.ndarray:
        """(len(q), n) mask of each query's copies on the plain vectors (itself included): never answers."""
        return (self.plain[q] @ self.plain.T) >= COPY_COSINE

    def per_query(self, db: np.ndarray, split: str, queries: np.ndarray | None = None) -> np.ndarray:
        return self.of(db, self.split[split], self.copies[split], queries)

    def of(self, db: np.ndarray, q: np.ndarray, copies: np.ndarray, queries: np.ndarray | None = None) -> np.ndarray:
        """per-query precision@10 of queries `q` (rows of db, or the given query vectors)."""
        sim = (db[q] if queries is None else queries) @ db.T
        sim[copies] = -np.inf
        top = np.argpartition(-sim, K, axis=1)[:, :K]
        return (self.labels[top] == self.labels[q][:, None]).mean(axis=1)


def expanded(db: np.ndarray, scorer: Scorer, split: str, n: int, alpha: float) -> np.ndarray:
    """Alpha-QE query vectors of a split: each query plus its n first answers (copies excluded)."""
    q = scorer.split[split]
    sim = db[q] @ db.T
    sim[scorer.copies[split]] = -np.inf
    top = np.argsort(-sim, axis=1)[:, :n]
    return np.stack([pp.alpha_qe(db[i], db[t], sim[r, t], alpha) for r, (i, t) in enumerate(zip(q, top))])


def shortlist_dba(db: np.ndarray, scorer: Scorer, split: str, shortlist: int = 100, k: int = 5,
                  alpha: float = 3.0) -> np.ndarray:
    """per-query precision@10 of DBA computed only among each query's first `shortlist` answers (plus
    alpha-QE n1): what query time alone could do without storing augmented vectors."""
    out = []
    for r, q in enumerate(scorer.split[split]):
        s = db @ db[q]
        s[scorer.copies[split][r]] = -np.inf
        cand = np.argpartition(-s, shortlist)[:shortlist]
        top1 = cand[np.argmax(s[cand])]
        query = pp.alpha_qe(db[q], db[[top1]], s[[top1]], alpha)
        c = db[cand]
        idx, sim = pp.neighbours(c, k + 1)
        best = cand[np.argsort(-(pp.weighted_mean(c, idx, sim, alpha) @ query))[:K]]
        out.append((scorer.labels[best] == scorer.labels[q]).mean())
    return np.array(out)


def knn_graph(x: np.ndarray, k: int, gamma: float = 3.0):
    """Symmetrically normalised affinity D^-1/2 A D^-1/2 of the mutual k-NN graph, A = cosine ** gamma."""
    import scipy.sparse as sparse

    idx, sim = pp.neighbours(x, k + 1)  # itself first
    n = len(x)
    a = sparse.csr_matrix((np.clip(sim[:, 1:], 0, None).ravel() ** gamma, (np.repeat(np.arange(n), k),
                                                                            idx[:, 1:].ravel())), shape=(n, n))
    a = a.minimum(a.T)
    d = np.asarray(a.sum(axis=1)).ravel()
    scale = sparse.diags(1 / np.sqrt(np.where(d > 0, d, 1)))
    return scale @ a @ scale


def diffused(db: np.ndarray, scorer: Scorer, split: str, k: int, kq: int, alpha: float = 0.99,
             gamma: float = 3.0) -> np.ndarray:
    """per-query precision@10 of diffusion: solve (I - alpha S) f = y by conjugate gradients, y the
    query's kq nearest (itself included) weighted by cosine ** gamma, and rank by f."""
    import scipy.sparse as sparse
    from scipy.sparse.linalg import cg

    system = sparse.eye(len(db)) - alpha * knn_graph(db, k, gamma)
    out = []
    for r, q in enumerate(scorer.split[split]):
        sim = db @ db[q]
        sim[q] = 1.0
        seeds = np.argpartition(-sim, kq)[:kq]
        y = np.zeros(len(db))
        y[seeds] = np.clip(sim[seeds], 0, None) ** gamma
        f, _ = cg(system, y, rtol=1e-6, maxiter=20)
        f[scorer.copies[split][r]] = -np.inf
        best = np.argpartition(-f, K)[:K]
        out.append((scorer.labels[best] == scorer.labels[q]).mean())
    return np.array(out)


def variants(data: dict[str, np.ndarray]):
    """(name, database vectors, query expansion (n, alpha) or None) for every variant measured."""
    desc = {"avg": pp.unit(data["avg_1.0"]), "gem": pp.unit(data["gem_1.0"]),
            "avg-ms2": pp.multiscale([data["avg_1.0"], data["avg_1.4142"]]),
            "gem-ms2": pp.multiscale([data["gem_1.0"], data["gem_1.4142"]]),
            "gem-ms3": pp.multiscale([data[f"gem_{s}"] for s in SCALES])}
    for name, x in desc.items():
        yield name, x, None
        if name not in ("avg", "gem-ms2"):
            continue
        for dim, power in ((256, 0.0), (256, -0.25), (128, -0.5)):
            yield f"{name} + pca{dim} power {power}", pp.fit_pca(x, dim, power).apply(x), None
        for n in (1, 3):
            yield f"{name} + aqe n{n}", x, (n, 3.0)
        yield f"{name} + shortlist-dba k5 + aqe n1", x, "shortlist"
        for k in (3, 5, 8):
            aug = pp.dba(x, k)
            yield f"{name} + dba k{k}", aug, None
            yield f"{name} + dba k{k} + aqe n3", aug, (3, 3.0)
        centred = pp.fit_pca(x, 256, 0.0).apply(x)
        yield f"{name} + pca256 + dba k8 + aqe n3", pp.dba(centred, 8), (3, 3.0)
        for k, kq in ((10, 10), (50, 5)):
            yield f"{name} + diffusion k{k} kq{kq}", x, ("diffusion", k, kq)
    for kind in REGIONAL:
        parts = data[f"{kind}_regions"].astype(np.float32)
        yield f"{kind} L3", pp.unit(parts.sum(axis=1)), None
        flat = parts.reshape(-1, parts.shape[2])
        sample = flat[np.random.default_rng(0).choice(len(flat), min(len(flat), 40_000), replace=False)]
        for power in (0.0, -0.25):  # regions whitened before summing, as R-MAC does, with shrinkage
            pca = pp.fit_pca(sample, 512, power)
            yield (f"{kind} L3 + regional pca512 power {power}",
                   pp.unit(pca.apply(flat).reshape(len(parts), -1, 512).sum(axis=1)), None)


BLEND = (0.25, 0.5, 0.75, 1.0)
"""Weights w of the supervised projection: similarity (1 - w) * cosine + w * cosine after the projection."""


def discriminant(x: np.ndarray, labels: np.ndarray, fit: np.ndarray):
    """A linear discriminant projection (scikit-learn LDA, Ledoit-Wolf shrinkage: 1,280 dimensions
    against ~1,000 labelled rows) fitted on rows `fit` only; returns a function of vectors."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    model = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(x[fit], labels[fit])
    return lambda v: pp.unit(model.transform(v))


def blended(x: np.ndarray, projected: np.ndarray, w: float) -> np.ndarray:
    """Unit rows whose dot products are (1 - w) * those of x + w * those of the projection."""
    return np.hstack([np.sqrt(1 - w) * pp.unit(x), np.sqrt(w) * projected]).astype(np.float32)


def supervised(data: dict[str, np.ndarray], scorer: Scorer, seed: int = 0) -> list[dict]:
    """Issue 16's optional supervised projection, on the product's vectors (avg) and on GeM over two scales.

    Labels of the train split only: the blend weight is chosen by two-fold cross-validation inside
    train (the projection fitted on one half's labels, the other half's items as queries), then the
    projection is fitted on every train label and read on the test queries, whose labels no fit saw.
    The database is the whole corpus, as for every variant; nothing but vectors is used at query time."""
    rng = np.random.default_rng(seed)
    train = rng.permutation(scorer.split["train"])
    halves = (np.sort(train[: len(train) // 2]), np.sort(train[len(train) // 2:]))
    labels = data["labels"]
    rows = []
    for name, x in (("avg", scorer.plain),
                    ("gem-ms2", pp.multiscale([data["gem_1.0"], data["gem_1.4142"]]))):
        folds = [(discriminant(x, labels, fit)(x), q, scorer.copies_of(q)) for fit, q in (halves, halves[::-1])]
        full = discriminant(x, labels, scorer.split["train"])(x)
        for w in BLEND:
            cv = np.concatenate([scorer.of(blended(x, proj, w), q, copies) for proj, q, copies in folds])
            test = scorer.per_query(blended(x, full, w), "test")
            rows.append({"variant": f"{name} + lda blend w{w}", "tuning": (float(cv.mean()), *bootstrap(cv)),
                         "test": (float(test.mean()), *bootstrap(test))})
            print(f"  supervised {name + ' + lda blend w' + str(w):<30} tuning (2-fold in train) {cv.mean():.4f}"
                  f"  test {test.mean():.4f}", flush=True)
    return rows


def bootstrap(values: np.ndarray, seed: int = 0, n: int = 1000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(n)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def run(corpora: dict[str, Path], cache: Path) -> dict[str, list[dict]]:
    """Every variant on every corpus: tuning (train) and reported (test) precision@10 with a 95 % CI."""
    results: dict[str, list[dict]] = {}
    for name, folder in corpora.items():
        data = extract(folder, cache)
        scorer = Scorer(data)
        rows = []
        for variant, db, qe in variants(data):
            score = {}
            for split in ("train", "test"):
                if qe == "shortlist":
                    per = shortlist_dba(db, scorer, split)
                elif isinstance(qe, tuple) and qe[0] == "diffusion":
                    per = diffused(db, scorer, split, *qe[1:])
                else:
                    queries = expanded(db, scorer, split, *qe) if qe else None
                    per = scorer.per_query(db, split, queries)
                score[split] = (float(per.mean()), *bootstrap(per))
            rows.append({"variant": variant, "tuning": score["train"], "test": score["test"]})
            print(f"  {name:<11} {variant:<34} tuning {score['train'][0]:.4f}  test {score['test'][0]:.4f} "
                  f"[{score['test'][1]:.3f}, {score['test'][2]:.3f}]", flush=True)
        results[name] = rows + [{**r, "supervised": True} for r in supervised(data, scorer)]
    return results


def table(results: dict[str, list[dict]]) -> str:
    """Markdown tables: every label-free variant per corpus, the choice made on tuning queries marked;
    then the supervised projection, its blend weight chosen per corpus by cross-validation in train."""
    free = {c: [r for r in rows if not r.get("supervised")] for c, rows in results.items()}
    out = []
    names = [r["variant"] for r in next(iter(free.values()))]
    gain = {v: float(np.mean([next(r for r in rows if r["variant"] == v)["tuning"][0] / rows[0]["tuning"][0]
                              for rows in free.values()])) for v in names}
    chosen = max(gain, key=gain.get)
    head = "| variant | " + " | ".join(f"{c} tuning (train) | {c} test [95 % CI]" for c in free) + " | mean tuning gain |"
    out += [head, "|" + "---|" * (head.count("|") - 1)]
    for v in names:
        cells = []
        for rows in free.values():
            r = next(r for r in rows if r["variant"] == v)
            t = r["test"]
            cells.append(f"{r['tuning'][0]:.4f} | {t[0]:.4f} [{t[1]:.3f}, {t[2]:.3f}]")
        mark = "**" if v == chosen else ""
        out.append(f"| {mark}{v}{mark} | " + " | ".join(cells) + f" | {100 * (gain[v] - 1):+.1f} % |")
    out.append("")
    out.append(f"Chosen on tuning queries only (largest mean relative gain over plain cosine): **{chosen}**.")
    for c, rows in free.items():
        base, best = rows[0]["test"][0], next(r for r in rows if r["variant"] == chosen)["test"][0]
        out.append(f"- {c}: test precision@10 {base:.4f} -> {best:.4f} ({100 * (best / base - 1):+.1f} %).")
    out += ["", "Supervised projection (labels of the train split only; tuning = two-fold cross-validation "
            "inside train):", "", "| corpus | variant | tuning (2-fold in train) | test [95 % CI] | test vs plain |",
            "|---|---|---|---|---|"]
    for c, rows in results.items():
        base = rows[0]["test"][0]
        sup = [r for r in rows if r.get("supervised")]
        best = {v: max((r for r in sup if r["variant"].startswith(v)), key=lambda r: r["tuning"][0])["variant"]
                for v in ("avg", "gem-ms2")}
        for r in sup:
            t, mark = r["test"], "**" if r["variant"] in best.values() else ""
            out.append(f"| {c} | {mark}{r['variant']}{mark} | {r['tuning'][0]:.4f} | {t[0]:.4f} [{t[1]:.3f}, {t[2]:.3f}] "
                       f"| {100 * (t[0] / base - 1):+.1f} % |")
    out.append("")
    out.append("Bold: the blend weight chosen by the cross-validation, per corpus and descriptor.")
    return "\n".join(out)
