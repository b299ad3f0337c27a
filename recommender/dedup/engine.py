"""The tiered engine: fingerprints + embeddings in, tiered pairs and clusters out.

Pipeline: exact (byte / pixel hash) -> candidates (pHash sweep at the strict
distance, embedding sweep at the lowest cosine any rule needs) -> per-pair
decision by the copy rule of `DedupConfig` -> union-find clusters with a
canonical member each. Without an embedding function the copy tier falls back
to pHash alone (strict distance) and there is no near tier.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from recommender.dedup.cluster import build_members
from recommender.dedup.config import TIER_RANK, DedupConfig
from recommender.dedup.embed import EmbedFn
from recommender.dedup.hashing import Fingerprint, fingerprint_files, hash_array, load_rgb
from recommender.dedup.methods import EmbeddingCosine, ExactHash, PerceptualHash
from recommender.dedup.sweep import hamming_of, match_new

PAIR_COLUMNS = ["i", "j", "id_a", "id_b", "path_a", "path_b", "tier", "cosine", "phash_distance", "inliers"]


@dataclass
class DedupResult:
    """Tiered pairs and clusters over `items` (row positions in `pairs.i/j` and `members.index`)."""

    items: list[Fingerprint]
    pairs: pd.DataFrame
    members: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    config: DedupConfig = field(default_factory=DedupConfig)

    def clusters(self) -> list[dict[str, Any]]:
        """JSON-able list of clusters: id, tier, canonical path and every member's path and tier."""
        out = []
        for cid, g in self.members.groupby("cluster_id", sort=True):
            canon = g[g["canonical"]].iloc[0]
            out.append({
                "cluster_id": str(cid), "tier": canon["cluster_tier"], "size": int(len(g)),
                "canonical": canon["path"],
                "members": [{"id": r.id, "path": r.path, "tier": r.tier, "canonical": bool(r.canonical)}
                            for r in g.itertuples()],
            })
        return out

    def summary(self) -> dict[str, Any]:
        """Counts per tier, duplicates removable, failures and stage timings (JSON-able)."""
        m = self.members
        return {
            "items": len(self.items),
            "failed": [{"path": it.path, "error": it.error} for it in self.items if it.error],
            "clusters": int(m["cluster_id"].nunique()) if len(m) else 0,
            "clustered_items": int(len(m)),
            "redundant_items": int((~m["canonical"]).sum()) if len(m) else 0,
            "clusters_by_tier": {t: int(v) for t, v in m[m["canonical"]]["cluster_tier"].value_counts().items()}
            if len(m) else {},
            "pairs_by_tier": {t: int(v) for t, v in self.pairs["tier"].value_counts().items()},
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "clusters_list": self.clusters(),
        }


class DedupEngine:
    """Finds exact, copy and near duplicates; `find_duplicates` is the one entry point."""

    def __init__(self, config: DedupConfig | None = None, embed: EmbedFn | None = None, verifier: Any = None):
        self.config = config or DedupConfig()
        self.embed = embed
        self.verifier = verifier  # a LocalFeatureVerifier to share (its caches) across runs; made lazily
        self._cache: dict[tuple, set] = {}  # candidate sets, reused by threshold sweeps over the same arrays

    # -- stages --------------------------------------------------------------
    def fingerprint(self, paths: Sequence[str | Path], ids: Sequence[str] | None = None,
                    seqs: Sequence[float] | None = None,
                    payloads: Sequence[dict[str, Any]] | None = None) -> list[Fingerprint]:
        """Hash every file (bytes, pixels, pHash + mirror) in `config.workers` processes."""
        return fingerprint_files(paths, ids, seqs, payloads, workers=self.config.workers)

    def embed_items(self, items: Sequence[Fingerprint], batch: int = 64) -> np.ndarray:
        """Decode and embed items in batches (failed items get a zero vector, never matched)."""
        if self.embed is None:
            raise ValueError("no embedding function configured")
        parts: list[np.ndarray] = []
        dim = None
        for s in range(0, len(items), batch):
            chunk = items[s:s + batch]
            imgs, ok = [], []
            for k, it in enumerate(chunk):
                if it.error:
                    continue
                try:
                    imgs.append(load_rgb(Path(it.path).read_bytes()))
                    ok.append(k)
                except Exception as exc:  # changed on disk since fingerprinting
                    it.error = f"{type(exc).__name__}: {exc}"
            vec = np.asarray(self.embed(imgs), np.float32) if imgs else None
            dim = dim or (vec.shape[1] if vec is not None else None)
            out = np.zeros((len(chunk), dim or 1), np.float32)
            if vec is not None:
                out[ok] = vec
            parts.append(out)
        if not parts:
            return np.zeros((0, 1), np.float32)
        dim = max(p.shape[1] for p in parts)
        return np.concatenate([p if p.shape[1] == dim else np.zeros((len(p), dim), np.float32) for p in parts])

    def verifying(self) -> bool:
        """Whether ambiguous pairs get ORB+RANSAC verification (config.verify and OpenCV present)."""
        from recommender.dedup import verify

        return self.config.verify and verify.available()

    def classify(self, cosine: np.ndarray | None, phash_distance: np.ndarray) -> np.ndarray:
        """Tier per candidate pair from thresholds alone ('' = not a duplicate).

        With verification on, pairs left '' or 'near' with cosine >= verify_cosine are
        the ambiguous ones `find_duplicates` hands to the local-feature verifier.
        """
        c = self.config
        d = np.asarray(phash_distance)
        tier = np.full(len(d), "", dtype=object)
        if cosine is None:  # hashes only
            tier[d <= c.phash_strict] = "copy"
            return tier
        cos = np.asarray(cosine)
        tier[cos >= c.near_cosine] = "near"
        if self.verifying():
            copy = (d <= c.phash_strict) & (cos >= c.copy_cosine)
        else:
            copy = ((d <= c.phash_strict) | (cos >= c.copy_cosine)
                    | ((d <= c.phash_loose) & (cos >= c.copy_cosine_loose)))
        tier[copy] = "copy"
        return tier

    def _verify(self, items: Sequence[Fingerprint], ci: np.ndarray, cj: np.ndarray, cos: np.ndarray,
                dist: np.ndarray, tiers: np.ndarray, images: dict[int, Image.Image] | None) -> np.ndarray:
        """Upgrade ambiguous pairs to `copy` when local features agree; returns inlier counts (-1 = not run).

        Pairs are visited by descending cosine and skipped once both ends already sit in one
        copy cluster (verifying them could not change any cluster), or once an end has been
        verified `max_verify_per_item` times: a copy is among an item's most similar
        candidates, and the cap bounds the cost on collections of look-alikes (MRI) to
        O(N * cap) verifications instead of O(candidate pairs).
        """
        from recommender.dedup.cluster import UnionFind
        from recommender.dedup.verify import LocalFeatureVerifier

        c = self.config
        inliers = np.full(len(ci), -1, np.int32)
        uf = UnionFind(len(items))
        strong = np.isin(tiers, ["exact", "copy"])
        for a, b in zip(ci[strong].tolist(), cj[strong].tolist()):
            uf.union(a, b)
        # ambiguous: the model finds them similar, or the pHash does (grayscale copies can
        # drop to cosine ~0.77 while their pHash barely moves)
        amb = np.nonzero(~strong & ((cos >= c.verify_cosine) | (dist <= c.phash_strict)))[0]
        amb = amb[np.argsort(-cos[amb], kind="stable")]
        if self.verifier is None:
            self.verifier = LocalFeatureVerifier(mirror=c.flip_invariant, min_inliers=c.min_inliers)
        ver = self.verifier
        tries = np.zeros(len(items), np.int32)
        for k in amb.tolist():
            a, b = int(ci[k]), int(cj[k])
            if uf.find(a) == uf.find(b) or max(tries[a], tries[b]) >= c.max_verify_per_item:
                continue
            tries[a] += 1
            tries[b] += 1
            src_a = images[a] if images is not None else items[a].path
            src_b = images[b] if images is not None else items[b].path
            # content-addressed keys: a verifier shared across runs never confuses two images
            inliers[k] = ver.inliers(_vkey(items[a]), src_a, _vkey(items[b]), src_b)
            if inliers[k] >= c.min_inliers:
                tiers[k] = "copy"
                uf.union(a, b)
        return inliers

    def find_duplicates(self, items: Sequence[Fingerprint], embeddings: np.ndarray | None = None,
                        images: dict[int, Image.Image] | None = None) -> DedupResult:
        """Tiered pairs and clusters. `embeddings` (aligned, L2-normalised) are computed if an
        embed function is set and none are given; with neither, only exact and pHash copies."""
        c = self.config
        items = list(items)
        n = len(items)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        exact = ExactHash("sha256").find_duplicates(items)
        pairs: dict[tuple[int, int], str] = {p: "exact" for p in exact.as_set()}
        if c.exact_pixels:
            for p in ExactHash("pixel_hash").find_duplicates(items).as_set():
                pairs[p] = "exact"
        timings["exact"] = time.perf_counter() - t

        if embeddings is None and self.embed is not None:
            t = time.perf_counter()
            embeddings = self.embed_items(items)
            timings["embed"] = time.perf_counter() - t
        if embeddings is not None and len(embeddings) != n:
            raise ValueError(f"{len(embeddings)} embeddings for {n} items")

        t = time.perf_counter()
        key = ("phash", id(items[0]) if items else 0, n, c.phash_strict, c.flip_invariant)
        if key not in self._cache:
            self._cache[key] = PerceptualHash(c.phash_strict, c.flip_invariant).find_duplicates(items).as_set()
        cand = set(self._cache[key])
        timings["phash_sweep"] = time.perf_counter() - t
        if embeddings is not None:
            t = time.perf_counter()
            low = min(c.verify_cosine if self.verifying() else c.copy_cosine_loose, c.near_cosine, c.copy_cosine)
            key = ("cos", id(embeddings), n, low)
            if key not in self._cache:
                self._cache[key] = EmbeddingCosine(low, c.block_size, c.precision).find_duplicates(
                    items, embeddings).as_set()
            cand |= self._cache[key]
            timings["embedding_sweep"] = time.perf_counter() - t
        t = time.perf_counter()
        cand_list = sorted(cand | set(pairs))
        ci = np.array([p[0] for p in cand_list], np.int64)
        cj = np.array([p[1] for p in cand_list], np.int64)
        h = hash_array([it.phash for it in items])
        hm = hash_array([it.phash_mirror for it in items]) if c.flip_invariant else None
        dist = hamming_of(h, ci, cj, hm) if len(ci) else np.zeros(0, np.int16)
        cos = np.einsum("ij,ij->i", embeddings[ci], embeddings[cj]) if embeddings is not None and len(ci) else None
        tiers = self.classify(cos, dist)
        for k, p in enumerate(cand_list):
            if pairs.get(p) == "exact":
                tiers[k] = "exact"
        timings["classify"] = time.perf_counter() - t
        inliers = np.full(len(ci), -1, np.int32)
        if cos is not None and self.verifying():
            t = time.perf_counter()
            inliers = self._verify(items, ci, cj, cos, dist, tiers, images)
            timings["verify"] = time.perf_counter() - t
            timings["verified_pairs"] = float((inliers >= 0).sum())
        t = time.perf_counter()
        keep = tiers != ""
        pairs_df = pd.DataFrame({
            "i": ci[keep], "j": cj[keep],
            "id_a": [items[a].id for a in ci[keep]], "id_b": [items[b].id for b in cj[keep]],
            "path_a": [items[a].path for a in ci[keep]], "path_b": [items[b].path for b in cj[keep]],
            "tier": tiers[keep].astype(str),
            "cosine": cos[keep].astype(np.float32) if cos is not None else np.full(int(keep.sum()), np.nan, np.float32),
            "phash_distance": dist[keep].astype(np.int16),
            "inliers": inliers[keep],
        }, columns=PAIR_COLUMNS)
        members = build_members(items, pairs_df["i"].to_numpy(), pairs_df["j"].to_numpy(), pairs_df["tier"].tolist())
        timings["cluster"] = time.perf_counter() - t
        return DedupResult(items, pairs_df, members, timings, c)

    def run(self, paths: Sequence[str | Path], ids: Sequence[str] | None = None,
            seqs: Sequence[float] | None = None, payloads: Sequence[dict[str, Any]] | None = None) -> DedupResult:
        """Fingerprint, embed (if configured) and find duplicates among files."""
        t = time.perf_counter()
        items = self.fingerprint(paths, ids, seqs, payloads)
        fp = time.perf_counter() - t
        res = self.find_duplicates(items)
        res.timings = {"fingerprint": fp, **res.timings}
        return res

    def find_images(self, images: Sequence[Image.Image], ids: Sequence[str]) -> DedupResult:
        """Convenience for in-memory images (tests, the dashboard): no files needed."""
        from recommender.dedup.hashing import fingerprint_image

        items = [fingerprint_image(im, i, seq=float(k)) for k, (im, i) in enumerate(zip(images, ids))]
        emb = np.asarray(self.embed(list(images)), np.float32) if self.embed is not None else None
        return self.find_duplicates(items, emb, images=dict(enumerate(images)))


def _vkey(item: Fingerprint) -> tuple[str, str, str]:
    return (item.id, item.path, item.sha256)


SearchFn = Callable[[np.ndarray, float, int], list[list[tuple[int, float]]]]
"""search(new_vectors, score_threshold, k) -> per new vector, [(existing index, cosine)] best first."""


def numpy_search(existing: np.ndarray) -> SearchFn:
    """The in-memory SearchFn over an (M, d) matrix; a Qdrant query per vector has the same contract."""
    return lambda new, threshold, k: match_new(new, existing, threshold, k)


def match_new_items(engine: DedupEngine, new_items: Sequence[Fingerprint], new_emb: np.ndarray | None,
                    existing_items: Sequence[Fingerprint], search: SearchFn | None = None,
                    k: int = 10) -> pd.DataFrame:
    """Dedupe-on-ingest: tiered matches of each new item against an existing collection.

    Exact by byte/pixel hash lookup, then embedding candidates from `search` (numpy here,
    Qdrant in the store) classified by the same rule and verifier as `find_duplicates`.
    Rows: new (index into new_items), existing (index into existing_items), tier, cosine,
    phash_distance, inliers. `existing_items` only needs the hashes and paths.
    """
    c = engine.config
    rows: list[dict[str, Any]] = []
    by_hash: dict[str, int] = {}
    for e, it in enumerate(existing_items):
        for h in (it.sha256, it.pixel_hash if c.exact_pixels else ""):
            if h:
                by_hash.setdefault(h, e)
    exact_new: set[int] = set()
    for q, it in enumerate(new_items):
        e = by_hash.get(it.sha256, by_hash.get(it.pixel_hash) if c.exact_pixels else None)
        if e is not None and not it.error:
            rows.append({"new": q, "existing": e, "tier": "exact", "cosine": 1.0, "phash_distance": 0, "inliers": -1})
            exact_new.add(q)
    if new_emb is not None and search is not None and len(new_items):
        low = min(c.verify_cosine if engine.verifying() else c.copy_cosine_loose, c.near_cosine, c.copy_cosine)
        hits = search(np.asarray(new_emb, np.float32), low, k)
        if engine.verifying():
            from recommender.dedup.verify import LocalFeatureVerifier

            if engine.verifier is None:
                engine.verifier = LocalFeatureVerifier(mirror=c.flip_invariant, min_inliers=c.min_inliers)
        for q, found in enumerate(hits):
            if q in exact_new or new_items[q].error:
                continue
            tries = 0
            for e, cos in found:
                a, b = new_items[q], existing_items[e]
                d = int(min(np.bitwise_count(np.uint64(a.phash) ^ np.uint64(b.phash)),
                            np.bitwise_count(np.uint64(a.phash) ^ np.uint64(b.phash_mirror))
                            if c.flip_invariant else 64))
                tier = engine.classify(np.array([cos]), np.array([d]))[0]
                inl = -1
                if tier != "copy" and engine.verifying() and cos >= c.verify_cosine and tries < c.max_verify_per_item:
                    tries += 1
                    inl = engine.verifier.inliers(_vkey(a), a.path, _vkey(b), b.path)
                    if inl >= c.min_inliers:
                        tier = "copy"
                if tier:
                    rows.append({"new": q, "existing": e, "tier": tier, "cosine": float(cos),
                                 "phash_distance": d, "inliers": inl})
    return pd.DataFrame(rows, columns=["new", "existing", "tier", "cosine", "phash_distance", "inliers"])


def strongest(tiers: Sequence[str]) -> str:
    """The strongest of some tier labels."""
    return min(tiers, key=lambda t: TIER_RANK[t])
