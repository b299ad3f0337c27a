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

from recommender.dedup.hashing import HashIndex

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
                 precision: str = "auto", max_per_item: int | None = None,
                 progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j with x[i].x[j] >= threshold, as (i, j, score) arrays sorted by (i, j).

    `x` is (N, d) float32 with L2-normalised rows. Peak extra memory is about
    block_size^2 * 6 bytes (a tile plus its mask; bf16: half that) plus a bf16 copy of x,
    plus the pairs found. With `max_per_item` = k only the pairs among an item's k most
    similar partners are kept (a pair stays when it is in either end's k): the k-nearest-
    neighbour graph above the threshold, so memory is O(N * k) whatever the pair density
    (a collection of look-alikes, where every item has thousands of partners above the
    threshold, otherwise holds N * thousands of pairs). `progress` is called with the
    number of rows of each row block as it finishes (a progress bar's advance).
    """
    x = _as_unit_matrix(x)
    n = x.shape[0]
    if n < 2:
        return _EMPTY
    bs = max(1, int(block_size))
    keep = _TopK(n, max_per_item) if max_per_item else _AllPairs()
    for r0, c0, ii, jj, score in _tile_hits(x, threshold, bs, _resolve_precision(precision)):
        ok = score >= threshold
        if ok.any():
            keep.add(ii[ok], jj[ok], score[ok].astype(np.float32))
        if progress is not None and c0 + bs >= n:  # the row block's last tile
            progress(min(n, r0 + bs) - r0)
    return keep.pairs()


_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def _tile_hits(x: np.ndarray, threshold: float, bs: int, dtype: str):
    """(row block start, column block start, i, j, fp32 cosine) of each upper-triangle tile's entries at
    or above the threshold (bf16: the threshold lowered by the proven error bound, and the candidates
    re-scored in fp32 by `_rescore`, so some fall under it)."""
    n = x.shape[0]
    if dtype == "fp32":  # numpy: its allocations are visible to tracemalloc (see tests)
        for r0 in range(0, n, bs):
            rows = x[r0:min(n, r0 + bs)]
            for c0 in range(r0, n, bs):
                tile = rows @ x[c0:min(n, c0 + bs)].T
                if c0 == r0:  # diagonal tile: strict upper triangle only
                    ii, jj = np.nonzero(np.triu(tile >= threshold, k=1))
                else:  # most rows of a tile have no hit: one max pass, then look only at hit rows
                    hit = np.flatnonzero(tile.max(axis=1) >= threshold)
                    sub, jj = np.nonzero(tile[hit] >= threshold)
                    ii = hit[sub]
                score = tile[ii, jj]  # the tile is the fp32 product: nothing to re-score
                del tile  # free before the next product: one tile alive at a time
                yield r0, c0, ii.astype(np.int64) + r0, jj.astype(np.int64) + c0, score
        return
    import torch  # bf16 matrix units (AVX512-BF16 / AMX) run ~4x the fp32 rate

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
                    sub, jj = torch.nonzero(tile[hit] >= cut, as_tuple=True) if hit.numel() else (hit, hit)
                    ii = hit[sub]
                del tile
                ii, jj = ii.numpy().astype(np.int64) + r0, jj.numpy().astype(np.int64) + c0
                yield r0, c0, ii, jj, _rescore(x, ii, jj, c0, min(n, c0 + bs))


DENSE_TILE = 1 / 16
"""Share of a tile's hit rows x columns above which `_rescore` multiplies the hit rows by the column block
(BLAS) instead of gathering each candidate's two rows: on a collection of look-alikes nearly every pair is a
candidate (a 500-slice brain-mri chunk: 125k of them), and gathering 2 x 125k rows of 1,280 floats took
0.2-0.8 s where the product of 500 rows by 500 takes 10 ms."""


RESCORE_ROWS = 1024
"""Hit rows `_rescore` multiplies at once: 16 MB of products against a column block of 4,096."""


def _rescore(x: np.ndarray, i: np.ndarray, j: np.ndarray, c0: int, c1: int) -> np.ndarray:
    """The fp32 cosine x[i] . x[j] of a tile's candidates (columns j in [c0, c1))."""
    if not len(i):
        return np.zeros(0, np.float32)
    rows, at = np.unique(i, return_inverse=True)
    if len(i) < DENSE_TILE * len(rows) * (c1 - c0):
        return _rowdot_chunked(x, i, j)
    out = np.empty(len(i), np.float32)
    for s in range(0, len(rows), RESCORE_ROWS):  # a product of at most RESCORE_ROWS rows alive at a time
        sel = np.flatnonzero((at >= s) & (at < s + RESCORE_ROWS))
        out[sel] = (x[rows[s:s + RESCORE_ROWS]] @ x[c0:c1].T)[at[sel] - s, j[sel] - c0]
    return out


class _AllPairs:
    """Every pair found, in the order found."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, i: np.ndarray, j: np.ndarray, s: np.ndarray) -> None:
        self.parts.append((i, j, s))

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.parts:
            return _EMPTY
        i, j, s = (np.concatenate(a) for a in zip(*self.parts))
        order = np.lexsort((j, i))
        return i[order], j[order], s[order]


class _TopK:
    """Each item's k best partners so far: (N, k) scores and partner positions, -inf / -1 when empty."""

    def __init__(self, n: int, k: int) -> None:
        self.k = int(k)
        self.score = np.full((n, self.k), -np.inf, np.float32)
        self.other = np.full((n, self.k), -1, np.int32)

    def add(self, i: np.ndarray, j: np.ndarray, s: np.ndarray) -> None:
        self._merge(np.concatenate([i, j]), np.concatenate([j, i]), np.concatenate([s, s]))

    def _merge(self, rows: np.ndarray, others: np.ndarray, scores: np.ndarray) -> None:
        """Merge candidates into their rows' lists: per row, the k best of its list and its candidates."""
        better = scores > self.score[rows, -1]  # lists are kept best first: beat the k-th or stay out
        rows, others, scores = rows[better], others[better], scores[better]
        if not len(rows):
            return
        u = np.unique(rows)
        r = np.concatenate([np.repeat(u, self.k), rows])
        o = np.concatenate([self.other[u].ravel(), others.astype(np.int32)])
        s = np.concatenate([self.score[u].ravel(), scores])
        order = np.lexsort((-s, r))
        r, o, s = r[order], o[order], s[order]
        first = np.searchsorted(r, u)
        rank = np.arange(len(r)) - np.repeat(first, np.diff(np.append(first, len(r))))
        top = rank < self.k  # every row has at least its k current entries, so exactly k stay
        self.other[u] = o[top].reshape(len(u), self.k)
        self.score[u] = s[top].reshape(len(u), self.k)

    def pairs(self, rows: int = 65_536) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The lists as pairs i < j sorted by (i, j), each once. Each pair is one int64 key i * N + j,
        filled `rows` list rows at a time into one array: at 1M items x 16 the index arrays of a
        one-shot version (nonzero, gathers, a two-key lexsort) peaked about 1 GB above the lists."""
        n = len(self.other)
        count = int((self.other >= 0).sum())
        if not count:
            return _EMPTY
        key = np.empty(count, np.int64)
        score = np.empty(count, np.float32)
        at = 0
        for r0 in range(0, n, rows):
            other, s = self.other[r0:r0 + rows], self.score[r0:r0 + rows]
            valid = other >= 0
            me = np.arange(r0, r0 + len(other), dtype=np.int64)[:, None]
            got = (np.minimum(me, other) * n + np.maximum(me, other))[valid]
            key[at:at + len(got)], score[at:at + len(got)] = got, s[valid]
            at += len(got)
        order = np.argsort(key, kind="stable")
        key, score = key[order], score[order]
        del order
        first = np.ones(len(key), bool)
        first[1:] = key[1:] != key[:-1]  # a pair in both ends' lists once
        key, score = key[first], score[first]
        return key // n, key % n, score


def _rowdot_chunked(x: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 16_384) -> np.ndarray:
    """x[i] . x[j] row by row, gathering at most `chunk` rows of each side at a time (a dense tile
    has millions of hits: gathered at once they would take gigabytes)."""
    if not len(i):
        return np.zeros(0, np.float32)
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


def hamming_of(h: np.ndarray, i: np.ndarray, j: np.ndarray, mirror: np.ndarray | None = None,
               turns: np.ndarray | None = None) -> np.ndarray:
    """Hamming distances of given pairs (flip-invariant with `mirror`). With `turns` (`hashing.hash_variants`:
    each item's pHash and its three turned pHashes) the least over either item turned as well: with the
    mirror, that is every flip and quarter turn of one image against the other."""
    h = np.asarray(h, dtype=np.uint64)
    m = None if mirror is None else np.asarray(mirror, np.uint64)
    d = np.bitwise_count(h[i] ^ h[j]).astype(np.int16)
    if m is not None:
        d = np.minimum(d, np.bitwise_count(h[i] ^ m[j]).astype(np.int16))
    if turns is not None:
        for a, b in ((i, j), (j, i)):
            for k in (1, 2, 3):
                np.minimum(d, np.bitwise_count(turns[a, k] ^ h[b]).astype(np.int16), out=d)
                if m is not None:
                    np.minimum(d, np.bitwise_count(turns[a, k] ^ m[b]).astype(np.int16), out=d)
    return d


def turned_pairs(h: np.ndarray, turns: np.ndarray, max_distance: int, mirror: np.ndarray | None = None
                 ) -> set[tuple[int, int]]:
    """Pairs (i < j) where a turned pHash of one item (`turns[:, 1:]`) is within `max_distance` bits of the
    other's pHash (or mirrored pHash): copies saved turned, which `hamming_pairs` cannot see. Looked up in
    block indexes (`HashIndex`), not by a pass over every pair."""
    n = len(h)
    if n < 2:
        return set()
    queries = np.asarray(turns, np.uint64)[:, 1:].ravel()
    out: set[tuple[int, int]] = set()
    for target in (h, mirror) if mirror is not None else (h,):
        qi, rows = HashIndex(np.asarray(target, np.uint64), max_distance).pairs(queries)
        i = qi // 3
        keep = i != rows
        a, b = np.minimum(i, rows)[keep], np.maximum(i, rows)[keep]
        out |= set(zip(a.tolist(), b.tolist()))
    return out
