"""The blocked all-pairs sweep: same pairs as the brute force, and memory bounded by the block."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from recommender.dedup import sweep
from recommender.dedup.sweep import cosine_pairs, hamming_pairs, match_new


def clustered(n: int, d: int, seed: int = 0, dup: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n // 20 + 1, d)).astype(np.float32)[rng.integers(0, n // 20 + 1, n)]
    x += 0.9 * rng.standard_normal((n, d)).astype(np.float32)
    x[n - dup:] = x[:dup] + 0.05 * rng.standard_normal((dup, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(x: np.ndarray, t: float) -> set[tuple[int, int]]:
    s = x @ x.T
    i, j = np.nonzero(np.triu(s >= t, 1))
    return set(zip(i.tolist(), j.tolist()))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "auto"])
@pytest.mark.parametrize("block", [333, 5000])
def test_cosine_pairs_equal_brute_force(precision, block):
    x = clustered(1500, 48)
    for t in (0.5, 0.9):
        i, j, s = cosine_pairs(x, t, block_size=block, precision=precision)
        assert set(zip(i.tolist(), j.tolist())) == brute(x, t)
        assert np.all(i < j) and np.all(s >= t)
        np.testing.assert_allclose(s, np.einsum("ij,ij->i", x[i], x[j]), rtol=1e-5)


def test_sweep_memory_is_bounded_by_block_not_n_squared():
    n, d = 20_000, 64
    x = clustered(n, d, seed=1, dup=200)
    peaks = {}
    for block in (512, 2048):
        tracemalloc.start()
        i, j, _ = cosine_pairs(x, 0.95, block_size=block, precision="fp32")
        peaks[block] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        found = set(zip(i.tolist(), j.tolist()))
        assert all((k, n - 200 + k) in found for k in range(200))  # every planted pair
    full = n * n * 4
    assert peaks[2048] < full / 50, peaks  # a 20k x 20k float32 matrix would be 1.6 GB
    # bounded by the block: tile (4 B) + mask and its triangle (1 B + 1 B) per element, plus outputs
    for block, peak in peaks.items():
        assert peak < 8 * block * block + 2_000_000, (block, peak)
    assert peaks[512] < peaks[2048]


def test_match_new_is_topk_above_threshold():
    x = clustered(800, 32, seed=2)
    new, existing = x[:30], x[30:]
    got = match_new(new, existing, threshold=0.6, k=5, block_size=100)
    s = new @ existing.T
    for r in range(len(new)):
        order = np.argsort(-s[r])[:5]
        want = [(int(c), float(s[r, c])) for c in order if s[r, c] >= 0.6]
        assert [g[0] for g in got[r]] == [w[0] for w in want]
        np.testing.assert_allclose([g[1] for g in got[r]], [w[1] for w in want], rtol=1e-5)
    assert any(got)  # the planted duplicates of rows 0..29 sit at the end of `existing`


def test_hamming_pairs_with_mirror_equal_brute_force():
    rng = np.random.default_rng(3)
    h = rng.integers(0, 2**63, 700, dtype=np.uint64)
    m = rng.integers(0, 2**63, 700, dtype=np.uint64)
    h[600:] = h[:100] ^ np.uint64(0b1011)  # 3 bits off
    m[650:] = h[200:250]  # mirrored hash equals another item's hash
    i, j, dist = hamming_pairs(h, 4, mirror=m, block_size=128)
    got = dict(zip(zip(i.tolist(), j.tolist()), dist.tolist()))
    want = {}
    for a in range(700):
        for b in range(a + 1, 700):
            dd = min(bin(int(h[a]) ^ int(h[b])).count("1"), bin(int(h[a]) ^ int(m[b])).count("1"))
            if dd <= 4:
                want[(a, b)] = dd
    assert got == want and len(want) >= 150


def knn_union(x: np.ndarray, t: float, k: int) -> set[tuple[int, int]]:
    """Brute force: pairs above t that are among either end's k most similar partners."""
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    out = set()
    for a in range(len(x)):
        best = [b for b in np.argsort(-s[a], kind="stable")[:k] if s[a, b] >= t]
        out |= {(min(a, int(b)), max(a, int(b))) for b in best}
    return out


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cosine_pairs_top_k_per_item_is_the_knn_graph_above_threshold(precision):
    x = clustered(900, 24, seed=3)
    for t, k in ((0.3, 5), (0.8, 3)):
        i, j, s = cosine_pairs(x, t, block_size=256, precision=precision, max_per_item=k)
        got = set(zip(i.tolist(), j.tolist()))
        assert got == knn_union(x, t, k)
        assert len(got) <= len(x) * k and np.all(i < j) and np.all(s >= t)
        assert np.all(np.diff(i * len(x) + j) > 0)  # sorted by (i, j), each pair once
        np.testing.assert_allclose(s, np.einsum("ij,ij->i", x[i], x[j]), rtol=1e-5)


def test_top_k_bounds_memory_where_every_pair_is_a_candidate():
    """A collection of look-alikes: every pair is above the threshold. All pairs grow as N^2;
    the k best per item stay O(N * k), and each item keeps its k nearest."""
    rng = np.random.default_rng(4)
    n, d, k = 3000, 32, 8
    x = rng.standard_normal(d).astype(np.float32) + 0.1 * rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    peaks, found = {}, {}
    for bound in (None, k):
        tracemalloc.start()
        i, j, _ = cosine_pairs(x, 0.5, block_size=512, precision="fp32", max_per_item=bound)
        peaks[bound] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        found[bound] = len(i)
    assert found[None] == n * (n - 1) // 2
    assert found[k] <= n * k
    assert peaks[k] < peaks[None] / 4, peaks


def test_sweep_reports_progress_by_row_block():
    x = clustered(1000, 16, seed=5)
    done: list[int] = []
    cosine_pairs(x, 0.9, block_size=300, precision="fp32", max_per_item=4, progress=done.append)
    assert done == [300, 300, 300, 100]


def test_top_k_pairs_are_the_same_whatever_rows_are_read_at_a_time():
    from recommender.dedup.sweep import _TopK

    x = clustered(500, 16, seed=5)
    keep = _TopK(len(x), 4)
    sim = x @ x.T
    a, b = np.nonzero(np.triu(sim >= 0.3, k=1))
    keep.add(a.astype(np.int64), b.astype(np.int64), sim[a, b].astype(np.float32))
    whole = keep.pairs()
    for rows in (1, 7, 64):
        for got, want in zip(keep.pairs(rows=rows), whole):
            np.testing.assert_array_equal(got, want)
    assert len(whole[0]) > len(x)


@pytest.mark.parametrize("radius", [0, 1, 2, 3])
def test_hash_index_finds_exactly_the_hashes_within_its_radius(radius):
    """The block index (multi-index hashing) that dedupe on ingest asks for stored pHashes within
    `phash_strict` bits returns the same rows as a full pass, for hashes planted at every distance."""
    from recommender.dedup.hashing import HashIndex

    rng = np.random.default_rng(radius)
    base = rng.integers(0, 2**63, 64, dtype=np.int64).astype(np.uint64)
    planted = [int(b) ^ sum(1 << int(bit) for bit in rng.choice(64, d, replace=False))
               for b in base for d in range(5)]
    hashes = np.concatenate([rng.integers(0, 2**63, 2000, dtype=np.int64).astype(np.uint64),
                             np.array(planted, np.uint64)])
    index = HashIndex(hashes, radius)
    for q in [*base.tolist(), *rng.integers(0, 2**63, 20).tolist()]:
        want = np.flatnonzero(np.bitwise_count(hashes ^ np.uint64(q)) <= radius)
        assert np.array_equal(index.within(int(q)), want)


def test_turned_phashes_are_those_of_the_turned_image_and_find_turned_pairs():
    """`phash_turns` computes the pHashes of an image turned by 90, 180 and 270 degrees from its own DCT,
    within the few bits that Pillow's two-pass resize leaves (it rounds between its passes, which a turn
    swaps) of the turned image's own pHash; `turned_pairs` finds, through a block index, exactly the pairs a full pass over
    every pair and every turn finds."""
    from pathlib import Path

    from PIL import Image

    from recommender.dedup.hashing import HashIndex, phash_pair, phash_turns
    from recommender.dedup.sweep import turned_pairs

    paths = sorted((Path(__file__).resolve().parents[1] / "samples").rglob("*.jpg"))[:12]
    for p in paths:
        img = Image.open(p).convert("RGB")
        turned = [phash_pair(img.transpose(t))[0] for t in
                  (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)]
        got = phash_turns(img)
        assert all((a ^ b).bit_count() <= 4 for a, b in zip(got, turned))
        assert min((t ^ phash_pair(img)[0]).bit_count() for t in got) > 4  # a turn is not the picture
    rng = np.random.default_rng(1)
    h = rng.integers(0, 2**63, 3000, dtype=np.int64).astype(np.uint64)
    turns = np.stack([h, *(rng.integers(0, 2**63, 3000, dtype=np.int64).astype(np.uint64) for _ in range(3))], axis=1)
    turns[:40, 1] = h[40:80] ^ np.uint64(1)  # 40 items whose quarter turn is another item, one bit off
    turns[80:90, 3] = h[90:100] ^ np.uint64(6)  # and 10 whose three-quarter turn is, two bits off
    want = {(min(i, j), max(i, j)) for i in range(len(h)) for k in (1, 2, 3)
            for j in np.flatnonzero(np.bitwise_count(h ^ turns[i, k]) <= 2).tolist() if i != j}
    assert len(want) >= 50 and turned_pairs(h, turns, 2) == want
    q = turns[:, 1:].ravel()
    qi, rows = HashIndex(h, 2).pairs(q)
    assert {(int(a), int(b)) for a, b in zip(qi, rows)} == {(a, int(b)) for a in range(len(q)) for b in HashIndex(h, 2).within(int(q[a]))}


@pytest.mark.parametrize("block", [128, 4096])
def test_bf16_sweep_of_look_alikes_rescored_in_fp32(block, monkeypatch):
    """A collection of look-alikes (MRI slices): nearly every pair is a bf16 candidate, so the candidates
    are re-scored by the fp32 product of the tile (`sweep._rescore`, a few hit rows at a time) instead of
    row by row; the pairs and their scores are the fp32 sweep's."""
    monkeypatch.setattr(sweep, "RESCORE_ROWS", 70)  # several row slices per tile
    rng = np.random.default_rng(5)
    x = rng.standard_normal(64).astype(np.float32) + 0.12 * rng.standard_normal((600, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t = float(np.quantile((x @ x.T)[np.triu_indices(600, 1)], 0.3))  # 70 % of the pairs pass
    i, j, s = cosine_pairs(x, t, block_size=block, precision="bf16")
    assert set(zip(i.tolist(), j.tolist())) == brute(x, t)
    np.testing.assert_allclose(s, np.einsum("ij,ij->i", x[i], x[j]), rtol=1e-5)
