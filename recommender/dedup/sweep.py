"""All-pairs similarity without an N x N matrix.

`cosine_pairs` tiles the upper triangle of X @ X.T into (block x block) products,
keeps only entries above the threshold, and so needs O(block^2 + N*d) memory
whatever N is. On CPUs with bf16 matrix units (AVX512-BF16/AMX) the tiles are
computed in bfloat16 (about 4x the fp32 speed) with a threshold lowered by a
proven error bound, and every surviving candidate is re-scored in fp32: the
result is identical to an fp32 sweep, only faster.

`hamming_pairs` does the same for 64-bit perceptual hashes, and `match_new`
answers "which existing items does each new item duplicate?" (the pure-numpy
twin of the Qdrant-backed lookup used at ingest: both are a `SearchFn`).
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Callable

import numpy as np

# bf16 has an 8-bit significand: unit roundoff u = 2^-8. For unit vectors,
# |x.y - bf16(x).bf16(y)| <= 2u + u^2, plus u for rounding the bf16 output;
# fp32 accumulation adds < 1e-4 at d <= 4096. 0.0125 > 3u + u^2 + 1e-4.
BF16_MARGIN = 0.0125


@lru_cache(maxsize=1)
def bf16_is_fast() -> bool:
    """True when a bf16 matmul beats fp32 by 2x here (decided once, by a 30 ms probe)."""
    import torch

    a = torch.randn(1024, 512)
    b = torch.randn(1024, 512)

    def clock(x: torch.Tensor, y: torch.Tensor) -> float:
        x @ y.T
        t = time.perf_counter()
        for _ in range(3):
            x @ y.T
        return time.perf_counter() - t

    try:
        return clock(a.bfloat16(), b.bfloat16()) * 2 < clock(a, b)
    except RuntimeError:
        return False


def _resolve_precision(precision: str) -> str:
    if precision in ("fp32", "bf16"):
        return precision
    if precision == "auto":
        return "bf16" if bf16_is_fast() else "fp32"
    raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', not {precision!r}")


def _as_unit_matrix(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected an (N, d) matrix, got shape {x.shape}")
    return x


def cosine_pairs(x: np.ndarray, threshold: float, block_size: int = 4096,
                 precision: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j with x[i].x[j] >= threshold, as (i, j, score) arrays sorted by (i, j).

    `x` is (N, d) float32 with L2-normalised rows. Peak extra memory is about
    block_size^2 * 6 bytes (a tile plus its mask; bf16: half that) plus a bf16 copy of x.
    """
    x = _as_unit_matrix(x)
    n = x.shape[0]
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if n < 2:
        return empty
    dtype = _resolve_precision(precision)
    bs = max(1, int(block_size))
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    if dtype == "fp32":  # numpy: its allocations are visible to tracemalloc (see tests)
        cut = threshold
        for r0 in range(0, n, bs):
            rows = x[r0:min(n, r0 + bs)]
            for c0 in range(r0, n, bs):
                tile = rows @ x[c0:min(n, c0 + bs)].T
                if c0 == r0:  # diagonal tile: strict upper triangle only
                    ii, jj = np.nonzero(np.triu(tile >= cut, k=1))
                else:  # most rows of a tile have no hit: one max pass, then look only at hit rows
                    hit = np.flatnonzero(tile.max(axis=1) >= cut)
                    sub, jj = np.nonzero(tile[hit] >= cut)
                    ii = hit[sub]
                del tile  # free before the next product: one tile alive at a time
                if len(ii):
                    out_i.append(ii.astype(np.int64) + r0)
                    out_j.append(jj.astype(np.int64) + c0)
    else:  # torch: bf16 matrix units (AVX512-BF16 / AMX) run ~4x the fp32 rate
        import torch

        xc = torch.from_numpy(x).to(torch.bfloat16)
        cut = threshold - BF16_MARGIN
        with torch.inference_mode():
            for r0 in range(0, n, bs):
                rows = xc[r0:min(n, r0 + bs)]
                for c0 in range(r0, n, bs):
                    tile = rows @ xc[c0:min(n, c0 + bs)].T
                    if c0 == r0:
                        ii, jj = torch.nonzero(torch.triu(tile >= cut, diagonal=1), as_tuple=True)
                    else:
                        hit = torch.nonzero(tile.amax(dim=1) >= cut, as_tuple=True)[0]
                        if not hit.numel():
                            continue
                        sub, jj = torch.nonzero(tile[hit] >= cut, as_tuple=True)
                        ii = hit[sub]
                    if ii.numel():
                        out_i.append(ii.numpy().astype(np.int64) + r0)
                        out_j.append(jj.numpy().astype(np.int64) + c0)
    if not out_i:
        return empty
    i = np.concatenate(out_i)
    j = np.concatenate(out_j)
    # exact fp32 re-score of the candidates (cheap: one dot product each)
    score = np.einsum("ij,ij->i", x[i], x[j]) if len(i) < 2_000_000 else _rowdot_chunked(x, i, j)
    keep = score >= threshold
    i, j, score = i[keep], j[keep], score[keep].astype(np.float32)
    order = np.lexsort((j, i))
    return i[order], j[order], score[order]


def _rowdot_chunked(x: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 1_000_000) -> np.ndarray:
    return np.concatenate([np.einsum("ij,ij->i", x[i[s:s + chunk]], x[j[s:s + chunk]])
                           for s in range(0, len(i), chunk)])


def match_new(new: np.ndarray, existing: np.ndarray, threshold: float, k: int = 10,
              block_size: int = 4096) -> list[list[tuple[int, float]]]:
    """For each row of `new`, up to k (index into existing, cosine) with cosine >= threshold, best first.

    Same contract as a Qdrant `query_points(score_threshold=..., limit=k)` per new
    vector, so dedupe-on-ingest can swap in the store without changing callers.
    """
    new = _as_unit_matrix(new)
    existing = _as_unit_matrix(existing)
    result: list[list[tuple[int, float]]] = [[] for _ in range(new.shape[0])]
    if existing.shape[0] == 0 or new.shape[0] == 0:
        return result
    for r0 in range(0, new.shape[0], block_size):
        q = new[r0:r0 + block_size]
        best_s = np.full((q.shape[0], 0), -np.inf, np.float32)
        best_i = np.zeros((q.shape[0], 0), np.int64)
        for c0 in range(0, existing.shape[0], block_size):
            s = q @ existing[c0:c0 + block_size].T
            kk = min(k, s.shape[1])
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
            best_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
            best_i = np.concatenate([best_i, part + c0], axis=1)
            if best_s.shape[1] > k:
                top = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
                best_s = np.take_along_axis(best_s, top, 1)
                best_i = np.take_along_axis(best_i, top, 1)
        for r in range(q.shape[0]):
            order = np.argsort(-best_s[r], kind="stable")
            result[r0 + r] = [(int(best_i[r, o]), float(best_s[r, o])) for o in order if best_s[r, o] >= threshold]
    return result


SearchFn = Callable[[np.ndarray, float, int], list[list[tuple[int, float]]]]
"""search(new_vectors, score_threshold, k) -> per new vector, [(existing index, cosine)] best first."""


def numpy_search(existing: np.ndarray) -> SearchFn:
    """The in-memory SearchFn over an (M, d) matrix; a store query per vector has the same contract."""
    return lambda new, threshold, k: match_new(new, existing, threshold, k)


def hamming_pairs(h: np.ndarray, max_distance: int, mirror: np.ndarray | None = None,
                  block_size: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j with Hamming(h[i], h[j]) <= max_distance, as (i, j, distance).

    With `mirror` (the hashes of the mirrored images) the distance is
    min(d(h_i, h_j), d(h_i, mirror_j)): a flipped copy counts as a copy.
    Memory is O(block_size * N) bytes, never N x N.
    """
    h = np.asarray(h, dtype=np.uint64)
    n = len(h)
    out_i, out_j, out_d = [], [], []
    for r0 in range(0, n, block_size):
        r1 = min(n, r0 + block_size)
        cols = h[r0:]
        d = np.bitwise_count(h[r0:r1, None] ^ cols[None, :])
        if mirror is not None:
            np.minimum(d, np.bitwise_count(h[r0:r1, None] ^ np.asarray(mirror, np.uint64)[None, r0:]), out=d)
        mask = d <= max_distance
        # keep j > i only
        mask &= np.arange(r0, n)[None, :] > np.arange(r0, r1)[:, None]
        ii, jj = np.nonzero(mask)
        out_i.append(ii + r0)
        out_j.append(jj + r0)
        out_d.append(d[ii, jj].astype(np.int16))
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int16)
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64), np.concatenate(out_d)


def hamming_of(h: np.ndarray, i: np.ndarray, j: np.ndarray, mirror: np.ndarray | None = None) -> np.ndarray:
    """Hamming distances of given pairs (flip-invariant with `mirror`)."""
    h = np.asarray(h, dtype=np.uint64)
    d = np.bitwise_count(h[i] ^ h[j]).astype(np.int16)
    if mirror is not None:
        d = np.minimum(d, np.bitwise_count(h[i] ^ np.asarray(mirror, np.uint64)[j]).astype(np.int16))
    return d
