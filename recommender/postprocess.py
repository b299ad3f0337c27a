"""Retrieval post-processing learned from the collection itself, no labels (issue 16).

The image-retrieval literature gains over a plain cosine with the same network by changing what is
compared, not the weights: how the feature map is pooled (GeM, several scales), how the space is
centred or whitened (PCA, with eigenvalue shrinkage), and using the collection's own neighbourhoods
(alpha query expansion on the query side, database-side augmentation on the stored side). Each is a
small function here, on unit row vectors, so the benchmark (`benchmarks/retrieval_quality.py`), the
evaluation command and the query path apply the same arithmetic. Which ones the product uses by
default is measured, per corpus, in docs/benchmarks.md ("Retrieval quality"): chosen on tuning
queries, reported on held-out ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms != 0.0, norms, 1e-12)


def gem(feature_map: np.ndarray, p: float = 3.0, eps: float = 1e-6) -> np.ndarray:
    """Generalised-mean pooling of (n, channels, h, w) maps: p = 1 is average pooling, large p tends to
    max pooling. Why: p = 3 weights the strongest local responses (the object) over the background."""
    fm = np.clip(np.asarray(feature_map, dtype=np.float64), eps, None)
    return (fm ** p).mean(axis=(2, 3)) ** (1.0 / p)


def multiscale(descriptors: list[np.ndarray]) -> np.ndarray:
    """One descriptor from the same images at several input scales: the mean of the unit descriptors."""
    return unit(sum(unit(d) for d in descriptors))


@dataclass(frozen=True)
class Pca:
    """A PCA fitted on the collection: `apply` centres, projects to `dim` components and scales each by
    its eigenvalue to the power `power` (0: plain rotation, -0.5: full whitening; faiss' eigen_power)."""

    mean: np.ndarray
    components: np.ndarray  # (dim_in, dim)
    eigenvalues: np.ndarray  # (dim,)
    power: float

    def apply(self, x: np.ndarray) -> np.ndarray:
        scale = np.maximum(self.eigenvalues, 1e-12) ** self.power
        return unit((np.asarray(x, dtype=np.float32) - self.mean) @ (self.components * scale))


def fit_pca(x: np.ndarray, dim: int | None = None, power: float = 0.0) -> Pca:
    """PCA of unit rows. Why shrinkage (power between -0.5 and 0): full whitening inflates the
    low-variance directions, which in a collection's own statistics are mostly noise."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov((x - mean).T))
    order = np.argsort(-values)[: dim or x.shape[1]]
    return Pca(mean.astype(np.float32), vectors[:, order].astype(np.float32),
               values[order].astype(np.float32), power)


def neighbours(x: np.ndarray, k: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of each row by cosine (itself first), as (indices, similarities), in row blocks."""
    k = min(k, len(x))
    idx = np.empty((len(x), k), dtype=np.int64)
    sim = np.empty((len(x), k), dtype=np.float32)
    for s in range(0, len(x), block):
        g = x[s:s + block] @ x.T
        top = np.argpartition(-g, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(g, top, 1), axis=1)
        idx[s:s + block] = np.take_along_axis(top, order, 1)
        sim[s:s + block] = np.take_along_axis(g, idx[s:s + block], 1)
    return idx, sim


def weighted_mean(x: np.ndarray, idx: np.ndarray, sim: np.ndarray, alpha: float) -> np.ndarray:
    """Each row replaced by the mean of rows `idx` weighted by similarity ** alpha (negatives count 0)."""
    w = np.clip(sim, 0.0, None) ** alpha
    return unit(np.einsum("nk,nkd->nd", w, x[idx]))


def dba(x: np.ndarray, k: int, alpha: float = 3.0) -> np.ndarray:
    """Database-side augmentation: every stored vector becomes the weighted mean of itself and its k
    nearest neighbours, so that items of one theme move together before any query is asked."""
    if k <= 0:
        return unit(x)
    idx, sim = neighbours(x, k + 1)
    return weighted_mean(x, idx, sim, alpha)


def alpha_qe(query: np.ndarray, top: np.ndarray, top_sim: np.ndarray, alpha: float = 3.0) -> np.ndarray:
    """Alpha query expansion: the query plus its first results, weighted by similarity ** alpha.
    `query` (d,), `top` (n, d) the result vectors, `top_sim` (n,) their similarity to the query."""
    w = np.clip(np.asarray(top_sim, dtype=np.float32), 0.0, None) ** alpha
    return unit(np.asarray(query, dtype=np.float32) + (w[:, None] * np.asarray(top, dtype=np.float32)).sum(axis=0))
