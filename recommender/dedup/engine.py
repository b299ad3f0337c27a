"""The tiered engine: fingerprints + embeddings in, tiered pairs and clusters out.

Pipeline: exact (byte / pixel hash, `methods.ExactHash`) -> candidates (pHash sweep
at the strict distance, embedding sweep at the lowest cosine any rule needs) ->
the tier of each candidate pair from `tiers.decide_tiers`, with ambiguous pairs
verified by local features -> connected-component clusters with a canonical
member each. Without an embedding function the copy tier falls back to pHash alone
(strict distance) and there is no near tier. `match_new_items` applies the same
rule to new items against an existing collection reached through a `SearchFn`.
Both take `forbidden` item-id pairs (a curator's not-a-duplicate decisions), dropped
before any tier is decided or verified.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from cachetools import LRUCache
from PIL import Image
from scipy.cluster.hierarchy import DisjointSet

from recommender import payload as P
from recommender.decode import DecodeError, DecodeOptions, load_image
from recommender.dedup.cluster import (CANONICAL_POLICY, Forbidden, allowed, build_members, build_pictures,
                                       connected_labels)
from recommender.dedup.config import DedupConfig
from recommender.dedup.embed import EmbedFn
from recommender.dedup.frames import upright
from recommender.dedup.hashing import Fingerprint, fingerprint_files, fingerprint_image, hash_array, hash_variants
from recommender.dedup.methods import EmbeddingCosine, ExactHash, PerceptualHash
from recommender.dedup.sweep import SearchFn, hamming_of, match_new
from recommender.dedup.tiers import (candidate_cosine, decide_tiers, needs_verification, other_slices,
                                     small_candidates, small_pairs)
from recommender.dedup.verify import Job, LocalFeatureVerifier, Source, available

GUESS_PER_WORKER = 16
"""Pairs `_verify` hands each verifier thread per round. Wider rounds keep the threads busy while the
visit replays the last one, at the cost of pairs a verdict turns out to skip (verified for nothing).
On 2,000 brain-mri slices, 2 -> 8 -> 32 per worker: cluster stage 21.0 -> 19.7 -> 18.9 s, 0, 24 and 83
pairs verified beyond the 22,999 a one-by-one visit asks for; 16 is between (docs/benchmarks_dedup.md)."""

PAIR_COLUMNS = ["i", "j", "id_a", "id_b", "path_a", "path_b", P.TIER, "cosine", "phash_distance", "inliers"]
MATCH_COLUMNS = ["new", "existing", P.TIER, "cosine", "phash_distance", "inliers"]


@dataclass
class DedupResult:
    """Tiered pairs and clusters over `items` (row positions in `pairs.i/j` and `members.index`).

    `members` are the connected components of every pair (exact, copy and near: look-alike groups,
    chains included); `pictures`, when the caller built them (`DedupEngine.pictures`, as `recommender
    dedupe` does), are the same-picture stars it writes to the store. Reports describe `pictures` when
    present: they are what curators delete by, so a 2,500-slice group of look-alikes is never
    counted as 2,499 redundant files."""

    items: list[Fingerprint]
    pairs: pd.DataFrame
    members: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    config: DedupConfig = field(default_factory=DedupConfig)
    pictures: pd.DataFrame | None = None

    def same_picture(self) -> pd.DataFrame:
        """The clusters users act on: the same-picture stars when built, else the components."""
        return self.members if self.pictures is None else self.pictures

    def clusters(self) -> list[dict[str, Any]]:
        """JSON-able list of clusters: id, tier, canonical path and every member's path and tier."""
        out = []
        for cid, g in self.same_picture().groupby(P.CLUSTER_ID, sort=True):
            canon = g[g[P.CANONICAL]].iloc[0]
            out.append({
                P.CLUSTER_ID: str(cid), P.TIER: canon["cluster_tier"], "size": int(len(g)),
                P.CANONICAL: canon[P.PATH],
                "members": [{"id": r.id, P.PATH: r.path, P.TIER: r.tier, P.CANONICAL: bool(r.canonical)}
                            for r in g.itertuples()],
            })
        return out

    def summary(self) -> dict[str, Any]:
        """Counts per tier, duplicates removable, failures and stage timings (JSON-able). With `pictures`,
        the cluster counts are the same-picture clusters' and `look_alike_groups` counts the components
        of every pair (near included), whose members are not redundant."""
        m = self.same_picture()
        groups = {} if self.pictures is None else {
            "look_alike_groups": int(self.members[P.CLUSTER_ID].nunique()) if len(self.members) else 0,
            "look_alike_items": int(len(self.members))}
        return {
            "items": len(self.items),
            "failed": [{P.PATH: it.path, "error": it.error} for it in self.items if it.error],
            "clusters": int(m[P.CLUSTER_ID].nunique()) if len(m) else 0,
            "clustered_items": int(len(m)),
            "redundant_items": int((~m[P.CANONICAL]).sum()) if len(m) else 0,
            "clusters_by_tier": {t: int(v) for t, v in m[m[P.CANONICAL]]["cluster_tier"].value_counts().items()}
            if len(m) else {},
            **groups,
            "pairs_by_tier": {t: int(v) for t, v in self.pairs[P.TIER].value_counts().items()},
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "canonical_policy": CANONICAL_POLICY,
            "clusters_list": self.clusters(),
        }


class DedupEngine:
    """Finds exact, copy and near duplicates; `find_duplicates` is the one entry point.

    `options` are the decode options of the fingerprint and embed stages: pass ingest's
    (`DecodeOptions.from_settings`) to see files exactly as ingest does.
    """

    def __init__(self, config: DedupConfig | None = None, embed: EmbedFn | None = None, verifier: Any = None,
                 options: DecodeOptions | None = None):
        self.config = config or DedupConfig()
        self.embed = embed
        self.options = options or DecodeOptions()
        self.verifier = verifier  # a LocalFeatureVerifier to share (its caches) across runs; made lazily
        self._cache: dict[tuple, set] = {}  # candidate sets, reused by threshold sweeps over the same arrays
        self.progress: Callable[[int], None] | None = None  # told the items the embedding sweep finished (a bar)
        # the cut-out pictures of framed items, embedded (`framed_candidates`), by content key; None = no frame
        self._crop_cache: LRUCache = LRUCache(maxsize=20_000)  # at most 100 MB of 1,280-d vectors

    # -- stages --------------------------------------------------------------
    def fingerprint(self, paths: Sequence[str | Path], ids: Sequence[str] | None = None,
                    seqs: Sequence[float] | None = None,
                    payloads: Sequence[dict[str, Any]] | None = None) -> list[Fingerprint]:
        """Decode and hash every file (bytes, pixels, pHash + mirror) in `config.workers` processes."""
        return fingerprint_files(paths, ids, seqs, payloads, workers=self.config.workers, options=self.options)

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
                    imgs.append(load_image(it.path, self.options, it.key or None))
                    ok.append(k)
                except DecodeError as exc:  # changed on disk since fingerprinting
                    it.error = exc.reason
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
        return self.config.verify and available()

    def local_verifier(self) -> Any:
        """The engine's LocalFeatureVerifier (made on first use; its feature cache lives across runs)."""
        if self.verifier is None:
            c = self.config
            self.verifier = LocalFeatureVerifier(mirror=c.flip_invariant, min_inliers=c.min_inliers,
                                                 small_side=c.small_side, small_min_corr=c.small_min_corr,
                                                 keypoint_grid=c.keypoint_grid, template_members=c.template_members,
                                                 frames=c.frames, smooth_sigma=c.smooth_sigma)
        return self.verifier

    def source(self, item: Fingerprint) -> Source:
        """A loader of the item's pixels for verification: full size (no JPEG draft), luminance, slices by key."""
        return partial(load_image, item.path, replace(self.options, draft_size=None, grey=True), item.key or None)

    def _evidence(self, items: Sequence[Fingerprint], ci: np.ndarray, cj: np.ndarray,
                  embeddings: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """What the tier rule reads of pairs (ci[k], cj[k]): pHash distance (flip-aware when
        configured), cosine (None without embeddings) and whether they are two slices of one volume."""
        h = hash_array([it.phash for it in items])
        hm = hash_array([it.phash_mirror for it in items]) if self.config.flip_invariant else None
        turns = hash_variants(items) if self.config.flip_invariant else None
        dist = hamming_of(h, ci, cj, hm, turns) if len(ci) else np.zeros(0, np.int16)
        cos = np.einsum("ij,ij->i", embeddings[ci], embeddings[cj]) if embeddings is not None and len(ci) else None
        return dist, cos, other_slices(items, ci, cj)

    def learn_templates(self, items: Sequence[Fingerprint], images: dict[int, Image.Image] | None = None) -> None:
        """Let the verifier learn the templates of the image sizes among `items` it has not learned yet
        (`LocalFeatureVerifier.learn_templates`), each size's images in SHA-256 order: a sample the order
        of arrival does not choose. Sizes already learned cost one look-up per item."""
        verifier = self.local_verifier()
        if verifier.template_members <= 0:
            return
        groups: dict[tuple[int, int], list[int]] = {}
        for k, it in enumerate(items):
            if not it.error and it.width > 0 and it.height > 0:
                groups.setdefault((it.width, it.height), []).append(k)
        todo = {size: sorted(ks, key=lambda k: (items[k].sha256, items[k].key)) for size, ks in groups.items()
                if len(ks) >= verifier.template_members and not verifier.learned(size)}
        if todo:
            verifier.learn_templates({size: [images[k] if images is not None and k in images else self.source(items[k])
                                             for k in ks] for size, ks in todo.items()})

    def framed_candidates(self, items: Sequence[Fingerprint], embeddings: np.ndarray,
                          images: dict[int, Image.Image] | None = None) -> set[tuple[int, int]]:
        """Pairs (i < j) where the picture cut out of a framed image (`cut_outs`: a page or slide of a size
        with a template, or a screen capture's picture on a flat background) is among the
        `max_verify_per_item` most similar of the other items, or of their cut-out pictures, at
        `verify_cosine` or more: how a painting on a catalogue page becomes a candidate of the painting,
        which the model ranks behind other pages.
        Needs the engine's embed function (the cut-outs are embedded here); without one, none."""
        crops = self.cut_outs(items, images)
        if not crops:
            return set()
        c = self.config
        ks = sorted(crops)
        q = np.stack([crops[k] for k in ks])
        found: set[tuple[int, int]] = set()
        for table, cols in ((embeddings, range(len(items))), (q, ks)):  # blocked: memory bounded whatever N
            for a, hits in zip(ks, match_new(q, table, c.verify_cosine, c.max_verify_per_item + 1)):
                others = [cols[col] for col, _ in hits if cols[col] != a][:c.max_verify_per_item]  # not itself
                found.update((min(a, b), max(a, b)) for b in others if not items[b].error)
        return found

    def framed_cosines(self, items: Sequence[Fingerprint], embeddings: np.ndarray | None, ci: np.ndarray,
                       cj: np.ndarray) -> np.ndarray:
        """Per pair (ci[k], cj[k]): the highest cosine of the cut-out picture of either (`framed_candidates`)
        with the other or with the other's cut-out (-inf when neither has one). A pair at `verify_cosine`
        or more is verified whatever the two whole images' cosine (a page and its painting: 0.72 on median)."""
        out = np.full(len(ci), -np.inf, np.float32)
        if embeddings is None or not self._crop_cache or not len(ci):
            return out
        cut = [self._crop_cache.get(_vkey(it)) for it in items]  # looked up once per item, not per pair
        has = np.array([v is not None for v in cut], bool)
        ci, cj = np.asarray(ci, np.int64), np.asarray(cj, np.int64)
        x = np.asarray(embeddings, np.float32)
        for k in np.flatnonzero(has[ci] | has[cj]).tolist():
            a, b = int(ci[k]), int(cj[k])
            sims = [float(v @ w) for v, w in ((cut[a], x[b]), (cut[b], x[a]), (cut[a], cut[b]))
                    if v is not None and w is not None]
            out[k] = max(sims)
        return out

    def cut_outs(self, items: Sequence[Fingerprint], images: dict[int, Image.Image] | None = None) -> dict[int, np.ndarray]:
        """Embeddings of the pictures cut out of the framed items (index -> unit vector), each computed once
        per engine (`_crop_cache`, by content key). Framed: of a size with a template, or showing a picture
        on a flat background (`Fingerprint.frame`, with `config.frames`)."""
        if self.embed is None or not self.verifying():
            return {}
        self.learn_templates(items, images)
        verifier = self.local_verifier()
        framed = [k for k, it in enumerate(items) if not it.error and (
            verifier.template_of((it.width, it.height)) is not None or (self.config.frames and it.frame is not None))]
        todo = [k for k in framed if _vkey(items[k]) not in self._crop_cache]
        for s in range(0, len(todo), 64):  # a batch of cut-outs in memory at a time
            done, cuts = [], []
            for k in todo[s:s + 64]:
                cut = self._cut_out(verifier, items[k], images.get(k) if images is not None else None)
                if cut is None:
                    self._crop_cache[_vkey(items[k])] = None  # no frame found: not looked at again
                else:
                    done.append(k)
                    cuts.append(cut)
            if cuts:
                vec = np.asarray(self.embed(cuts), np.float32)
                vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
                for k, v in zip(done, vec):
                    self._crop_cache[_vkey(items[k])] = v
        return {k: v for k in framed if (v := self._crop_cache.get(_vkey(items[k]))) is not None}

    def _cut_out(self, verifier: LocalFeatureVerifier, item: Fingerprint, image: Image.Image | None) -> Image.Image | None:
        """The picture of a framed item cut out of its full-resolution RGB image (None: no frame, or the
        file no longer decodes): where its size's template leaves it, else its `frame`."""
        templated = verifier.template_of((item.width, item.height)) is not None
        if templated:
            box = verifier.picture_box(_vkey(item), image if image is not None else self.source(item))
        else:
            box = item.frame
        try:
            img = None if box is None else (image if image is not None else load_image(item.path, self.options,
                                                                                        item.key or None))
        except DecodeError:
            return None
        if img is None:
            return None
        rx, ry = img.width / item.width, img.height / item.height  # a JPEG draft decodes smaller
        scaled = (box[0] * rx, box[1] * ry, box[2] * rx, box[3] * ry)
        if item.tilt and not templated:
            return upright(img.convert("RGB"), scaled, item.tilt)  # a print scanned askew, turned back
        return img.convert("RGB").crop(tuple(round(v) for v in scaled))

    def _job(self, items: Sequence[Fingerprint], a: int, b: int, images: dict[int, Image.Image] | None) -> Job:
        """The verifier's arguments for items a and b: their images, or loaders of their files
        (content-addressed keys: a verifier shared across runs never confuses two images), and
        whether to try b mirrored (with `mirror_gate`, only when b's mirrored pHash is at least as
        close to a's as b's own: a flipped copy is closer mirrored)."""
        src_a = images[a] if images is not None else self.source(items[a])
        src_b = images[b] if images is not None else self.source(items[b])
        mirror = True
        ha = int(items[a].phash)
        distance = (ha ^ int(items[b].phash)).bit_count()
        if self.config.mirror_gate:
            hm = int(items[b].phash_mirror)
            mirror = (ha ^ hm).bit_count() <= distance or any(  # a copy flipped and saved turned
                (t ^ hm).bit_count() <= self.config.phash_strict for t in items[a].phash_turns)
        smooth = distance <= self.config.phash_strict  # the pHash vouches: worth a smoothed look
        return (_vkey(items[a]), src_a, _vkey(items[b]), src_b, mirror, smooth)

    def _verify(self, items: Sequence[Fingerprint], ci: np.ndarray, cj: np.ndarray, cos: np.ndarray,
                dist: np.ndarray, tiers: np.ndarray, images: dict[int, Image.Image] | None,
                floor: np.ndarray | None = None, framed: np.ndarray | None = None) -> np.ndarray:
        """Inlier counts of the ambiguous pairs (-1 = not verified), for `decide_tiers`.

        Pairs within `phash_strict` bits come first, then the others by descending cosine (grain or
        noise pulls a copy's cosine under its look-alikes' while its pHash barely moves, so by cosine
        it would lose its turn to the cap); a pair is skipped once both ends already sit in one
        copy cluster (verifying them could not change any cluster), or once an end has been
        verified `max_verify_per_item` times: a copy is among an item's most similar
        candidates, and the cap bounds the cost on collections of look-alikes (MRI) to
        O(N * cap) verifications instead of O(candidate pairs). Thumbnail pairs (`small_pairs`)
        come after, by pHash distance with their own per-item count: the model sees a thumbnail
        as a blur, so by cosine they would come last and lose their turn to the cap. Framed pairs
        (`framed_cosines`) come between, by the cut-out's cosine with a count of their own: a page's cosine to
        its painting is low.

        The visit is sequential (each verdict can skip later pairs) but the work is not: the next
        pairs the rule would verify if every pending one failed are verified side by side
        (`inliers_many`), then the visit replays them in order and keeps the verdicts it reaches,
        computing any pair a merge or cap left out of the guess; so the counts are those of a
        one-by-one visit.
        """
        c = self.config
        inliers = np.full(len(ci), -1, np.int32)
        strong = np.isin(tiers, list(P.SAME_PICTURE_TIERS))
        component = connected_labels(len(items), ci[strong], cj[strong]).tolist()
        joined = DisjointSet(sorted(set(component)))  # components merged by verified copies during this loop
        framed_cos = np.full(len(ci), -np.inf, np.float32) if framed is None else framed
        framed = framed_cos >= c.verify_cosine
        small = small_pairs(c, items, ci, cj)
        aside = small | framed  # verified for their pHash or cut-out, not their cosine
        amb = np.nonzero(needs_verification(c, tiers, cos, dist, other_slices(items, ci, cj), small=small,
                                            framed=framed) & above_floor(c, floor, ci, cj, cos, dist, aside))[0]
        kind = np.where(framed, 2, np.where(small, 1, 0))  # each kind has its own per-item count
        big, cut, little = amb[kind[amb] == 0], amb[kind[amb] == 2], amb[kind[amb] == 1]
        order = [*big[np.lexsort((-cos[big], dist[big] > c.phash_strict))].tolist(),
                 *cut[np.argsort(-framed_cos[cut], kind="stable")].tolist(),
                 *little[np.argsort(dist[little], kind="stable")].tolist()]
        counts = {k: np.zeros(len(items), np.int32) for k in (0, 1, 2)}
        verifier = self.local_verifier()
        if len(amb):
            self.learn_templates(items, images)
        width = GUESS_PER_WORKER * verifier.workers

        def due(k: int, extra: dict[tuple[int, int], int]) -> bool:
            a, b, t = int(ci[k]), int(cj[k]), int(kind[k])
            seen = max(counts[t][a] + extra.get((t, a), 0), counts[t][b] + extra.get((t, b), 0))
            return not joined.connected(component[a], component[b]) and seen < c.max_verify_per_item

        pos = 0
        while pos < len(order):
            guess: list[int] = []
            extra: dict[tuple[int, int], int] = {}
            end = pos
            while end < len(order) and len(guess) < width:
                k = order[end]
                if due(k, extra):
                    guess.append(k)
                    for e in (int(ci[k]), int(cj[k])):
                        extra[(int(kind[k]), e)] = extra.get((int(kind[k]), e), 0) + 1
                end += 1
            done = dict(zip(guess, verifier.inliers_many([self._job(items, int(ci[k]), int(cj[k]), images)
                                                          for k in guess])))
            for k in order[pos:end]:
                if not due(k, {}):
                    continue
                a, b = int(ci[k]), int(cj[k])
                counts[int(kind[k])][[a, b]] += 1
                inliers[k] = done[k] if k in done else verifier.inliers(*self._job(items, a, b, images))
                if inliers[k] >= c.min_inliers:
                    joined.merge(component[a], component[b])
            pos = end
        return inliers

    def pair_tiers(self, items: Sequence[Fingerprint], embeddings: np.ndarray | None,
                   pairs: Sequence[tuple[int, int]], images: dict[int, Image.Image] | None = None) -> list[str]:
        """The tier of each given pair from its own evidence: the rule and the verification that
        candidate pairs get. Same-picture clusters ask it for a member and a canonical that no
        candidate pair joins (`cluster.build_pictures`), so a cluster never rests on a chain."""
        if not pairs:
            return []
        c = self.config
        ci = np.array([a for a, _ in pairs], np.int64)
        cj = np.array([b for _, b in pairs], np.int64)
        exact = np.array([items[a].sha256 == items[b].sha256 or (c.exact_pixels and bool(items[a].pixel_hash)
                          and items[a].pixel_hash == items[b].pixel_hash) for a, b in pairs], bool)
        dist, cos, slices = self._evidence(items, ci, cj, embeddings)
        verifying = cos is not None and self.verifying()
        tiers = decide_tiers(c, dist, cos, exact=exact, verifying=verifying, other_slices=slices)
        if verifying:
            inliers = np.full(len(ci), -1, np.int32)
            small = small_pairs(c, items, ci, cj)
            todo = np.flatnonzero(needs_verification(c, tiers, cos, dist, slices, small=small,
                                                     framed=self.framed_cosines(items, embeddings, ci, cj)
                                                     >= c.verify_cosine))
            if len(todo):
                self.learn_templates(items, images)
            inliers[todo] = self.local_verifier().inliers_many([self._job(items, int(ci[k]), int(cj[k]), images)
                                                                for k in todo.tolist()])
            tiers = decide_tiers(c, dist, cos, exact=exact, inliers=inliers, verifying=True, other_slices=slices)
        return [str(getattr(t, "value", t)) for t in tiers]

    def pictures(self, result: DedupResult, embeddings: np.ndarray | None,
                 forbidden: Forbidden = ()) -> pd.DataFrame:
        """The same-picture (star) clusters of a batch: `cluster.build_pictures` over its exact and copy
        pairs, asking `pair_tiers` for a member and a canonical no pair joins. What `recommender dedupe`
        writes, unlike `result.members` (connected components, chains included)."""
        items = result.items
        same = result.pairs[result.pairs[P.TIER].isin([t.value for t in P.SAME_PICTURE_TIERS])]
        return build_pictures(items, same["i"].to_numpy(), same["j"].to_numpy(), same[P.TIER].tolist(),
                              lambda todo: self.pair_tiers(items, embeddings, todo), forbidden)

    def find_duplicates(self, items: Sequence[Fingerprint], embeddings: np.ndarray | None = None,
                        images: dict[int, Image.Image] | None = None, forbidden: Forbidden = (),
                        floor: np.ndarray | None = None) -> DedupResult:
        """Tiered pairs and clusters. `embeddings` (aligned, L2-normalised) are computed if an
        embed function is set and none are given; with neither, only exact and pHash copies.
        `forbidden` id pairs are left out of the pairs (a curator said they differ). With `floor`
        (per item, `verification_floors`), a pair is verified for its cosine only when that cosine
        reaches the floor of both items."""
        c = self.config
        items = list(items)
        n = len(items)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        exact_pairs = ExactHash(P.SHA256).find_duplicates(items).as_set()
        if c.exact_pixels:
            exact_pairs |= ExactHash(P.PIXEL_HASH).find_duplicates(items).as_set()
        timings["exact"] = time.perf_counter() - t

        if embeddings is None and self.embed is not None:
            t = time.perf_counter()
            embeddings = self.embed_items(items)
            timings["embed"] = time.perf_counter() - t
        if embeddings is not None and len(embeddings) != n:
            raise ValueError(f"{len(embeddings)} embeddings for {n} items")
        verifying = embeddings is not None and self.verifying()

        t = time.perf_counter()
        key = ("phash", id(items[0]) if items else 0, n, c.phash_strict, c.flip_invariant)
        if key not in self._cache:
            self._cache[key] = PerceptualHash(c.phash_strict, c.flip_invariant).find_duplicates(items).as_set()
        cand = set(self._cache[key])
        if verifying:  # thumbnails: candidates by a looser pHash bound, for the verifier to decide
            key = ("small", id(items[0]) if items else 0, n, c.phash_small, c.small_side, c.flip_invariant)
            if key not in self._cache:
                self._cache[key] = small_candidates(c, items)
            cand |= self._cache[key]
        timings["phash_sweep"] = time.perf_counter() - t
        if embeddings is not None:
            t = time.perf_counter()
            low = candidate_cosine(c, verifying)
            key = ("cos", id(embeddings), n, low, c.max_candidates_per_item)
            if key not in self._cache:
                self._cache[key] = EmbeddingCosine(low, c.block_size, c.precision, c.max_candidates_per_item,
                                                   self.progress).find_duplicates(items, embeddings).as_set()
            cand |= self._cache[key]
            timings["embedding_sweep"] = time.perf_counter() - t
        if verifying and self.embed is not None and (c.template_members > 0 or c.frames):
            t = time.perf_counter()
            cand |= self.framed_candidates(items, embeddings, images)
            timings["framed"] = time.perf_counter() - t
        t = time.perf_counter()
        cand_list = sorted(cand | exact_pairs)
        ci = np.array([p[0] for p in cand_list], np.int64)
        cj = np.array([p[1] for p in cand_list], np.int64)
        exact = np.array([p in exact_pairs for p in cand_list], bool)
        ok = allowed(items, ci, cj, forbidden)
        ci, cj, exact = ci[ok], cj[ok], exact[ok]
        dist, cos, slices = self._evidence(items, ci, cj, embeddings)
        tiers = decide_tiers(c, dist, cos, exact=exact, verifying=verifying, other_slices=slices)
        timings["classify"] = time.perf_counter() - t
        inliers = np.full(len(ci), -1, np.int32)
        if cos is not None and verifying:
            t = time.perf_counter()
            inliers = self._verify(items, ci, cj, cos, dist, tiers, images, floor,
                                   self.framed_cosines(items, embeddings, ci, cj))
            tiers = decide_tiers(c, dist, cos, exact=exact, inliers=inliers, verifying=True, other_slices=slices)
            timings["verify"] = time.perf_counter() - t
            timings["verified_pairs"] = float((inliers >= 0).sum())
        t = time.perf_counter()
        keep = tiers != ""
        pairs_df = pd.DataFrame({
            "i": ci[keep], "j": cj[keep],
            "id_a": [items[a].id for a in ci[keep]], "id_b": [items[b].id for b in cj[keep]],
            "path_a": [items[a].path for a in ci[keep]], "path_b": [items[b].path for b in cj[keep]],
            P.TIER: tiers[keep].astype(str),
            "cosine": cos[keep].astype(np.float32) if cos is not None else np.full(int(keep.sum()), np.nan, np.float32),
            "phash_distance": dist[keep].astype(np.int16),
            "inliers": inliers[keep],
        }, columns=PAIR_COLUMNS)
        members = build_members(items, pairs_df["i"].to_numpy(), pairs_df["j"].to_numpy(), pairs_df[P.TIER].tolist(),
                                forbidden=forbidden)
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
        """Convenience for in-memory images (tests, notebooks): no files needed."""
        items = [fingerprint_image(im, i, seq=float(k)) for k, (im, i) in enumerate(zip(images, ids))]
        emb = np.asarray(self.embed(list(images)), np.float32) if self.embed is not None else None
        return self.find_duplicates(items, emb, images=dict(enumerate(images)))


def verification_floors(config: DedupConfig, embeddings: np.ndarray,
                        outside: Sequence[Sequence[float]] = (), block: int = 1024) -> np.ndarray:
    """Per item, the least cosine at which a candidate is still verified for its cosine: the
    `max_verify_per_item`-th highest of its cosines >= `verify_cosine` to the other rows of
    `embeddings` and to its candidates elsewhere (`outside[i]`: the stored collection's), or -inf
    when it has fewer such candidates.

    Why: dedupe on ingest meets a new item's candidates twice, in its own chunk
    (`find_duplicates`) and in the collection (`match_new_items`), and each visit had its own cap,
    so on brain-mri an item was verified 21 times on median where the batch engine's one count
    allows 12. One floor read by both visits keeps each item to its most similar candidates,
    wherever they are."""
    cap, low = config.max_verify_per_item, config.verify_cosine
    x = np.asarray(embeddings, np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    far = np.full((len(x), max((len(o) for o in outside), default=0)), -np.inf, np.float32)
    for q, cosines in enumerate(outside):
        far[q, :len(cosines)] = cosines
    floors = np.full(len(x), -np.inf, np.float32)
    for s in range(0, len(x), block):
        sims = np.hstack([x[s:s + block] @ x.T, far[s:s + block]])
        sims[np.arange(len(sims)), np.arange(s, s + len(sims))] = -np.inf  # not itself
        if sims.shape[1] >= cap:  # the cap-th highest counts only from verify_cosine up (else fewer candidates)
            kth = np.partition(sims, -cap, axis=1)[:, -cap]
            floors[s:s + block] = np.where(kth >= low, kth, -np.inf)
    return floors


def above_floor(config: DedupConfig, floor: np.ndarray | None, ci: np.ndarray, cj: np.ndarray | None,
                cos: np.ndarray, dist: np.ndarray, small: np.ndarray) -> np.ndarray:
    """Which pairs the floors let through: all when there are none; thumbnail pairs and pairs within
    `phash_strict` bits always (they are verified for their pHash, not their cosine); the others when
    the cosine reaches the floor of item ci (and of cj when given)."""
    if floor is None:
        return np.ones(len(ci), bool)
    need = floor[ci] if cj is None else np.maximum(floor[ci], floor[cj])
    return small | (dist <= config.phash_strict) | (cos >= need)


def _vkey(item: Fingerprint) -> tuple[str, str, str]:
    return (item.id, item.path, item.sha256)


def match_new_items(engine: DedupEngine, new_items: Sequence[Fingerprint], new_emb: np.ndarray | None,
                    existing_items: Sequence[Fingerprint], search: SearchFn | None = None,
                    k: int = 10, forbidden: Forbidden = (),
                    candidates: Sequence[tuple[int, int, float]] = (),
                    floor: np.ndarray | None = None, framed: dict[tuple[int, int], float] | None = None) -> pd.DataFrame:
    """Dedupe-on-ingest: tiered matches of each new item against an existing collection.

    Exact by byte/pixel hash lookup, then embedding candidates from `search` (numpy
    `sweep.numpy_search`, or the store's neighbour query), tiered by `decide_tiers` and
    verified like `find_duplicates` (at most `max_verify_per_item` per new item, best
    candidates first). Rows: new (index into new_items), existing (index into
    existing_items), tier, cosine, phash_distance, inliers. `existing_items` only needs
    the hashes and paths; `search` may append the items it finds to it. `candidates` are more
    (new, existing, cosine) pairs to decide, found otherwise: the thumbnail pairs the caller found
    by pHash among the stored items (`recommender.stored_hashes`), which the cosine search misses.
    Small pairs are verified with their own per-item count, as in `find_duplicates`. A `forbidden`
    (new id, existing id) pair is never a match. With `floor` (per new item, `verification_floors`),
    a pair is verified for its cosine only when that cosine reaches the new item's floor. `framed`
    (new, existing) -> the cosine of the new item's cut-out picture with the existing one
    (`DedupEngine.framed_candidates`): those pairs are verified whatever their own cosine, with a
    count of their own.
    """
    c = engine.config
    verifying = new_emb is not None and engine.verifying()
    by_hash: dict[str, int] = {}
    for e, it in enumerate(existing_items):
        for h in (it.sha256, it.pixel_hash if c.exact_pixels else ""):
            if h:
                by_hash.setdefault(h, e)
    qs, es, coss, exacts = [], [], [], []
    for q, it in enumerate(new_items):
        e = by_hash.get(it.sha256, by_hash.get(it.pixel_hash) if c.exact_pixels else None)
        if e is not None and not it.error and frozenset((it.id, existing_items[e].id)) not in forbidden:
            qs.append(q), es.append(e), coss.append(1.0), exacts.append(True)
    exact_new = set(qs)
    if new_emb is not None and search is not None and len(new_items):
        hits = search(np.asarray(new_emb, np.float32), candidate_cosine(c, verifying), k)
        for q, found in enumerate(hits):
            if q in exact_new or new_items[q].error:
                continue
            for e, cos in found:
                qs.append(q), es.append(e), coss.append(float(cos)), exacts.append(False)
    seen = set(zip(qs, es))
    for q, e, cos in candidates:
        if q not in exact_new and not new_items[q].error and (q, e) not in seen:
            seen.add((q, e))
            qs.append(q), es.append(e), coss.append(float(cos)), exacts.append(False)
    both = list(new_items) + list(existing_items)
    ok = allowed(both, np.array(qs, np.int64), np.array(es, np.int64) + len(new_items), forbidden)
    qs, es = [x for x, k in zip(qs, ok) if k], [x for x, k in zip(es, ok) if k]
    coss, exacts = [x for x, k in zip(coss, ok) if k], [x for x, k in zip(exacts, ok) if k]
    if not qs:
        return pd.DataFrame([], columns=MATCH_COLUMNS)
    q_arr, e_arr, cos = np.array(qs, np.int64), np.array(es, np.int64), np.array(coss)
    exact = np.array(exacts, bool)
    h = hash_array([it.phash for it in both])
    hm = hash_array([it.phash_mirror for it in both]) if c.flip_invariant else None
    dist = hamming_of(h, q_arr, e_arr + len(new_items), hm, hash_variants(both) if c.flip_invariant else None)
    slices = other_slices(both, q_arr, e_arr + len(new_items))
    tiers = decide_tiers(c, dist, cos, exact=exact, verifying=verifying, other_slices=slices)
    inliers = np.full(len(qs), -1, np.int32)
    if verifying:
        tries: dict[int, Counter] = {0: Counter(), 1: Counter(), 2: Counter()}
        small = small_pairs(c, both, q_arr, e_arr + len(new_items))
        cut = np.array([(framed or {}).get((q, e), -np.inf) for q, e in zip(qs, es)], np.float32) >= c.verify_cosine
        kind = np.where(cut, 2, np.where(small, 1, 0))
        rows = []  # pairs within phash_strict bits first, then in order, at most max_verify_per_item per new
        # item (and as many small and framed pairs): no verdict changes which pairs run
        due = np.flatnonzero(needs_verification(c, tiers, cos, dist, slices, small=small, framed=cut) & above_floor(
            c, floor, q_arr, None, cos, dist, small | cut))
        for r in due[np.argsort(dist[due] > c.phash_strict, kind="stable")].tolist():
            count = tries[int(kind[r])]
            if count[qs[r]] < c.max_verify_per_item:
                count[qs[r]] += 1
                rows.append(r)
        jobs = [engine._job(both, qs[r], len(new_items) + es[r], None) for r in rows]
        if jobs:
            engine.learn_templates(both)
        inliers[rows] = engine.local_verifier().inliers_many(jobs)
        tiers = decide_tiers(c, dist, cos, exact=exact, inliers=inliers, verifying=True, other_slices=slices)
    keep = tiers != ""
    return pd.DataFrame({"new": q_arr[keep], "existing": e_arr[keep], P.TIER: tiers[keep].astype(str),
                         "cosine": cos[keep], "phash_distance": dist[keep].astype(np.int64),
                         "inliers": inliers[keep]}, columns=MATCH_COLUMNS)
