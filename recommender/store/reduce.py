"""The embedded store's search vector: a PCA of the stored vectors that the HNSW graph walks.

Why: at one million points the graph walk over the model's 1,280 dimensions is what a filtered
query waits on (13.95 ms for recall@10 0.917 with a 10 % filter; 5.98 ms for 0.962 at 256
dimensions, "Embedded store at scale" in docs/benchmarks.md). Image embeddings keep most of their
variance in a few directions, so a 128-d PCA picks the candidates (the top 100 by PCA cosine hold
the true top 10: 0.995 to 1.000 on art-louvre and brain-mri) and the candidates are then scored by
the raw vectors. Scores, dedup thresholds and every vector a caller reads stay the model's own.

The basis is fitted on a sample of the collection once it has `MIN_FIT` points. The fit checks
itself on that sample: the candidate pool is the smallest of `POOLS` whose top-10 recall against
exact cosine reaches `TARGET_RECALL` there. Vectors without a dominant subspace (no pool reaches
it) get a *full* basis instead: the search vector is the model's vector itself, as a collection
without this reduction would search it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEARCH_DIM = 128
MIN_FIT = 1_000  # below this a full scan of the raw vectors is as fast as a graph walk
FIT_SAMPLE = 8_192
POOLS = (100, 200, 400, 800)
TARGET_RECALL = 0.99
CHECK_QUERIES, K = 200, 10


@dataclass(frozen=True)
class SearchBasis:
    """Mean and principal directions of the stored vectors, and how many candidates to rescore."""

    mean: np.ndarray  # (dim,)
    components: np.ndarray  # (search_dim, dim)
    pool: int
    fitted_on: int
    recall: float  # top-10 recall of the pool on the fitting sample (for a full basis: the reduction's, refused)

    @property
    def full(self) -> bool:
        """True when the search vector is the model's vector (no component kept: no reduction)."""
        return self.components.shape[0] == 0

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0] if self.full else self.components.shape[0])

    def project(self, x: np.ndarray) -> np.ndarray:
        """Search vectors (unit rows) for raw vectors (rows, or one vector)."""
        x = np.asarray(x, dtype=np.float32)
        y = x if self.full else (x - self.mean) @ self.components.T
        norms = np.linalg.norm(y, axis=-1, keepdims=True)
        return (y / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    def save(self, path: Path) -> None:
        """Written whole or not at all (a temporary file renamed over the old one)."""
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, mean=self.mean, components=self.components,
                 info=np.array([self.pool, self.fitted_on, self.recall], dtype=np.float64))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "SearchBasis | None":
        if not path.exists():
            return None
        with np.load(path) as f:
            pool, fitted_on, recall = f["info"].tolist()
            return cls(f["mean"].astype(np.float32), f["components"].astype(np.float32),
                       int(pool), int(fitted_on), float(recall))


def fit_basis(sample: np.ndarray, count: int, dim: int = SEARCH_DIM) -> SearchBasis:
    """PCA of `sample` (rows of the collection, `count` points in all), with its candidate pool
    chosen on that sample; a full basis when no pool reaches the target or the model has at most
    `dim` dimensions."""
    x = np.asarray(sample, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    full = SearchBasis(np.zeros(x.shape[1], np.float32), np.zeros((0, x.shape[1]), np.float32), POOLS[0], count, 1.0)
    if x.shape[1] <= dim:
        return full
    mean = x.mean(axis=0)
    cov = np.cov(x - mean, rowvar=False, dtype=np.float64)
    values, vectors = np.linalg.eigh(cov)
    components = vectors[:, np.argsort(values)[::-1][:dim]].T.astype(np.float32)
    pool, recall = _choose_pool(x, SearchBasis(mean, components, POOLS[-1], count, 0.0))
    if recall < TARGET_RECALL:
        return SearchBasis(full.mean, full.components, POOLS[0], count, recall)
    return SearchBasis(mean, components, pool, count, recall)


def _choose_pool(x: np.ndarray, basis: SearchBasis) -> tuple[int, float]:
    """The smallest pool whose top-10 recall on the sample reaches the target (else the widest tried).

    Only pools of at most a tenth of the sample are tried: a pool that is a large share of the
    sample holds its top 10 whatever the basis, and would pass a check the collection fails."""
    queries = np.random.default_rng(0).choice(len(x), min(CHECK_QUERIES, len(x)), replace=False)
    rows = np.arange(len(queries))
    exact = x[queries] @ x.T
    exact[rows, queries] = -np.inf
    truth = np.argpartition(-exact, K, axis=1)[:, :K]
    y = basis.project(x)
    approx = y[queries] @ y.T
    approx[rows, queries] = -np.inf
    order = np.argsort(-approx, axis=1)
    recall = 0.0
    for pool in [p for p in POOLS if p <= len(x) // 10] or POOLS[:1]:
        recall = float(np.mean([np.isin(t, c).mean() for t, c in zip(truth, order[:, :pool])]))
        if recall >= TARGET_RECALL:
            break
    return pool, recall
