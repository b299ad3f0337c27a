"""Deduplication over a collection: on ingest (new batch vs itself and the store) and as a full sweep.

The tier rules, clustering and reports live in `recommender.dedup` and work on
`Fingerprint`s and vectors; this module feeds them from the store and writes
the result back into the payload:

- `cluster_id`, `tier`, `canonical`: clusters of the *same picture* (tiers exact and
  copy). Queries collapse these, so a recommendation never shows two copies of one
  picture or a copy of the query.
- `near_cluster_id`: clusters that also follow `near` links (different shots, adjacent
  slices). They are a review list, not duplicates: chained as connected components they span
  whole volumes, and on brain MRI the near tier links distinct scans (precision 0.22,
  docs/benchmarks_dedup.md), so collapsing them would hide legitimate results. The
  full sweep writes them; reports list every tier.

Both keep apart what a curator marked not-a-duplicate (`Decisions.separated_pairs`, read from
the catalog before each batch and each sweep): those pairs are never matched or clustered again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from recommender import payload as P
from recommender.decisions import Decisions
from recommender.decode import DecodeOptions
from recommender.dedup import (DedupConfig, DedupEngine, EmbedFn, Fingerprint, SearchFn, build_pictures, candidate_cosine,
                               fingerprint_of, match_new, match_new_items, verification_floors, write_reports)
from recommender.dedup.embed import model_embedder
from recommender.errors import ModelUnavailableError
from recommender.models.registry import resolve_dedup_thresholds
from recommender.progress import progress_bar
from recommender.settings import Settings
from recommender.store import VectorStore
from recommender.stored_cut_outs import StoredCutOuts
from recommender.stored_hashes import StoredHashes

SAME_PICTURE = [t.value for t in P.SAME_PICTURE_TIERS]
log = logging.getLogger(__name__)

__all__ = ["IngestDeduper", "dedup_config", "sweep"]


def dedup_config(settings: Settings) -> DedupConfig:
    """The engine's thresholds: the model's measured ones, each overridden by the settings when set."""
    t = resolve_dedup_thresholds(settings)
    return DedupConfig().with_overrides(
        phash_strict=t.phash_strict, copy_cosine=t.copy_cosine, near_cosine=t.near_cosine,
        verify=settings.dedup_verify, keypoint_grid=settings.dedup_keypoint_grid,
        template_members=settings.dedup_template_members, frames=settings.dedup_frames, workers=0,
    )


def separated(store: VectorStore, settings: Settings) -> set[frozenset[str]]:
    """Point-id pairs the curator marked not-a-duplicate in this collection (the decision log in
    the catalog); an empty set when nobody did, at the cost of one indexed look-up."""
    log = Decisions(settings.catalog_path)
    try:
        return log.separated_pairs(settings.collection, store)
    finally:
        log.close()


def _model_embed(settings: Settings, dim: int) -> EmbedFn:
    """The collection's model as an embed function, loaded on first call: the sweep embeds only the
    pictures it cuts out of framed items (`DedupEngine.cut_outs`), so a collection without a template
    never loads it. Where the model cannot be loaded here, a warning says so and the cut-outs are zero
    vectors of the collection's dimension `dim`, which match nothing."""
    loaded: list[EmbedFn | None] = []

    def embed(images: Sequence[Any]) -> np.ndarray:
        if not loaded:
            try:
                loaded.append(model_embedder(settings.model, settings.device, settings)[0])
            except ModelUnavailableError as exc:  # the sweep itself needs no model: go on without cut-outs
                log.warning("framed items are matched by their own cosine only: %s", exc)
                loaded.append(None)
        if loaded[0] is None:
            return np.zeros((len(images), dim), np.float32)  # a zero cut-out matches nothing
        return loaded[0](images)
    return embed


def _keep_cut_outs(engine: DedupEngine, items: Sequence[Fingerprint], points: set[str], settings: Settings) -> None:
    """Keep the sweep's cut-outs of stored points (`StoredCutOuts`) for the ingests that come after it."""
    cuts = {k: v for k, v in engine.cut_outs(items).items() if items[k].id in points and v.any()}
    if cuts:
        kept = StoredCutOuts(settings)
        kept.add([items[k].id for k in cuts], list(cuts.values()))
        kept.save()


def _engine(settings: Settings, embed: EmbedFn | None = None) -> DedupEngine:
    """The engine with the settings' thresholds and decode limits (verification re-decodes files)."""
    return DedupEngine(dedup_config(settings), embed, options=DecodeOptions.from_settings(settings))


class IngestDeduper:
    """Clusters each new batch against itself and the collection, keeping one canonical per picture."""

    def __init__(self, store: VectorStore, settings: Settings, embed: EmbedFn | None = None):
        """`embed` is the ingest model's embed function, for the pictures cut out of framed items
        (`DedupEngine.framed_candidates`); without it, framed copies are found only by their own cosine."""
        self.store = store
        self.settings = settings
        self.engine = _engine(settings, embed)
        self.k = settings.dedup_candidates
        self.hashes = StoredHashes(store, self.engine.config.small_side)
        self.cut_outs = StoredCutOuts(settings)
        self.cut_count = 0  # new items whose picture was cut out of its frame (for the run report)

    def templates(self) -> dict[str, float]:
        """Image sizes whose template the verifier learned ("WxH" -> share of the sample's keypoints that recur)."""
        shares = getattr(self.engine.verifier, "template_shares", None)
        return shares() if shares is not None else {}

    def assign(self, ids: Sequence[str], payloads: list[dict[str, Any]], vectors: np.ndarray) -> dict[str, int]:
        """Add cluster fields to the new payloads (in place) and update affected stored points.

        Returns counts of new items per tier. Stored points whose cluster or canonical
        changes are updated with set_payload before the new points are written.
        """
        if not len(ids):
            return {}
        apart = separated(self.store, self.settings)
        new = [fingerprint_of(pid, p) for pid, p in zip(ids, payloads)]
        existing = self._same_pixels(new)
        by_hash = self._hash_candidates(new, vectors, existing, set(ids))
        self.hashes.add(new)
        search, floors = self._candidates(existing, set(ids), vectors)
        framed = self._framed_candidates(new, vectors, existing, search)
        cross = match_new_items(self.engine, new, vectors, existing, search, k=self.k, forbidden=apart,
                                candidates=by_hash + [(q, e, cos) for (q, e), (cos, _) in framed.items()],
                                floor=floors, framed={pair: cut for pair, (_, cut) in framed.items()})
        within = self.engine.find_duplicates(new, vectors, forbidden=apart, floor=floors).pairs
        near = int((cross[P.TIER] == P.Tier.NEAR.value).sum() + (within[P.TIER] == P.Tier.NEAR.value).sum())
        cross = cross[cross[P.TIER].isin(SAME_PICTURE)]
        within = within[within[P.TIER].isin(SAME_PICTURE)]
        if cross.empty and within.empty:
            return {"near_pairs": near} if near else {}
        existing += self._cluster_mates(existing, cross["existing"].unique())
        nodes = new + existing
        off = len(new)
        i = list(within["i"]) + list(cross["new"])
        j = list(within["j"]) + [off + e for e in cross["existing"]]
        tiers = list(within[P.TIER]) + list(cross[P.TIER])
        index = {it.id: k for k, it in enumerate(nodes)}
        for k, it in enumerate(existing):  # keep stored clusters together, with their stored tiers
            canon = it.payload.get(P.CLUSTER_ID)
            if canon and canon in index and canon != it.id:
                i.append(off + k)
                j.append(index[canon])
                tiers.append(it.payload.get(P.TIER) or P.Tier.NEAR.value)
        members = build_pictures(nodes, np.array(i), np.array(j), tiers, self._direct(nodes, vectors, off), apart)
        counts = self._write(members, ids, payloads, existing, off)
        self._clear_left([existing[k - off] for k in sorted({*i, *j} - set(members["index"])) if k >= off])
        return {**counts, "near_pairs": near} if near else counts

    def _hash_candidates(self, new: Sequence[Fingerprint], vectors: np.ndarray, existing: list[Fingerprint],
                         skip: set[str]) -> list[tuple[int, int, float]]:
        """(new index, existing index, cosine) of the stored points within `phash_small` bits of a new
        item where one side is a thumbnail, or within `phash_strict` bits of it (`StoredHashes`): pairs
        the batch sweep finds by pHash and the store's nearest neighbours can miss. The stored points
        join `existing`."""
        c = self.engine.config
        if not self.engine.verifying():
            return []
        radius = max(c.phash_small if c.small_side > 0 else -1, c.phash_strict)
        if radius < 0:
            return []
        found = self.hashes.near(new, radius, c.flip_invariant, c.max_verify_per_item, skip, strict=c.phash_strict)
        pairs = self._stored_pairs({(q, pid): 0.0 for q, pid, _ in found}, vectors, existing)
        return [(q, e, cos) for (q, e), (cos, _) in pairs.items()]

    def _framed_candidates(self, new: Sequence[Fingerprint], vectors: np.ndarray, existing: list[Fingerprint],
                           search: SearchFn) -> dict[tuple[int, int], tuple[float, float]]:
        """(new index, existing index) -> (the two images' cosine, the cut-out's cosine) of framed pairs
        across the store (`DedupEngine.framed_candidates` within the chunk): the stored points most
        similar to the picture cut out of a new framed item (`DedupEngine.cut_outs`), and the stored
        framed items whose cut-out a new item resembles (a painting arriving after its page, in this run
        or a later one: `StoredCutOuts`). The stored points join `existing`."""
        c = self.engine.config
        if self.engine.embed is None or not self.engine.verifying():
            return {}
        cuts = self.engine.cut_outs(new)
        found: dict[tuple[int, str], float] = {}
        if cuts:
            ks = sorted(cuts)
            for q, row in zip(ks, search(np.stack([cuts[k] for k in ks]), c.verify_cosine, c.max_verify_per_item)):
                found.update({(q, existing[e].id): float(score) for e, score in row})
        ids, seen = self.cut_outs.matrix()
        fresh = {it.id for it in new}
        if ids:
            x = np.asarray(vectors, np.float32)
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            for q, hits in enumerate(match_new(x, seen, c.verify_cosine, c.max_verify_per_item)):
                for col, score in hits:
                    if ids[col] not in fresh and not new[q].error:
                        found[(q, ids[col])] = max(found.get((q, ids[col]), -1.0), score)
        if cuts:
            self.cut_count += len(cuts)
            self.cut_outs.add([new[k].id for k in sorted(cuts)], [cuts[k] for k in sorted(cuts)])
            self.cut_outs.save()
        pairs = self._stored_pairs(found, vectors, existing)
        self._learn_stored_templates({(existing[e].width, existing[e].height) for _, e in pairs})
        return pairs

    def _learn_stored_templates(self, sizes: set[tuple[int, int]]) -> None:
        """Let the verifier learn the template of each size not learned yet from the stored points of that
        size (up to 256 read): a stored page met by a new painting is verified on its picture, as it was
        when its deck came in, though no image of its size comes in this run."""
        verifier = self.engine.local_verifier()
        for w, h in sorted(sizes):
            if w > 0 and h > 0 and not verifier.learned((w, h)):
                rows, _ = self.store.scroll_where({P.WIDTH: w, P.HEIGHT: h}, limit=256)
                self.engine.learn_templates([fingerprint_of(pid, p) for pid, p, _ in rows])

    def _stored_pairs(self, found: dict[tuple[int, str], float], vectors: np.ndarray,
                      existing: list[Fingerprint]) -> dict[tuple[int, int], tuple[float, float]]:
        """`found` (new index, stored id) -> score as (new index, existing index) -> (cosine of the two
        images, score), the stored points read once and added to `existing`."""
        if not found:
            return {}
        position = {it.id: n for n, it in enumerate(existing)}
        stored = {pid: (p, v) for pid, p, v in self.store.get_many(sorted({pid for _, pid in found}), with_vectors=True)}
        out = {}
        for (q, pid), score in found.items():
            if pid not in stored or P.PHASH not in stored[pid][0]:
                continue  # gone since it was read, or not written yet
            if pid not in position:
                position[pid] = len(existing)
                existing.append(self._with_cluster(fingerprint_of(pid, stored[pid][0]), stored[pid][0]))
            a, b = np.asarray(vectors[q], np.float32), np.asarray(stored[pid][1], np.float32)
            cos = float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
            out[(q, position[pid])] = (cos, score)
        return out

    def _direct(self, nodes: Sequence[Fingerprint], vectors: np.ndarray, off: int):
        """Tiers of (member, canonical) pairs no candidate joined, from their own evidence; stored
        nodes' vectors are read from the store when a pair needs them."""
        def direct(pairs: list[tuple[int, int]]) -> list[str]:
            need = sorted({k for pair in pairs for k in pair if k >= off})
            got = {pid: v for pid, _, v in self.store.get_many([nodes[k].id for k in need], with_vectors=True)}
            emb = np.zeros((len(nodes), vectors.shape[1]), np.float32)
            emb[:off] = vectors
            for k in need:
                if nodes[k].id in got:
                    emb[k] = got[nodes[k].id]
            return self.engine.pair_tiers(nodes, emb, pairs)
        return direct

    def _same_pixels(self, new: Sequence[Fingerprint]) -> list[Fingerprint]:
        hashes = sorted({it.pixel_hash for it in new if it.pixel_hash})
        rows, _ = self.store.scroll_where({P.PIXEL_HASH: hashes}, limit=1000) if hashes else ([], None)
        return [self._with_cluster(fingerprint_of(pid, p), p) for pid, p, _ in rows]

    def _candidates(self, existing: list[Fingerprint], skip: set[str],
                    vectors: np.ndarray) -> tuple[SearchFn, np.ndarray | None]:
        """The store search for this batch, its answers read once, and each new item's verification
        floor over the batch and those answers (`verification_floors`): one budget of
        `max_verify_per_item` verifications per new item across its chunk and the collection."""
        search = self._search(existing, skip)
        if not self.engine.verifying():
            return search, None
        c = self.engine.config
        low = candidate_cosine(c, True)
        query = np.asarray(vectors, np.float32)
        hits = search(query, low, self.k)

        def answered(batch: np.ndarray, threshold: float, k: int) -> list[list[tuple[int, float]]]:
            same = (threshold, k) == (low, self.k) and np.array_equal(batch, query)  # not just as many rows
            return hits if same else search(batch, threshold, k)
        return answered, verification_floors(c, vectors, [[cos for _, cos in found] for found in hits])

    def _search(self, existing: list[Fingerprint], skip: set[str]) -> SearchFn:
        """A SearchFn backed by the store's nearest-neighbour queries; hits join `existing`."""
        position = {it.id: n for n, it in enumerate(existing)}

        def search(vectors: np.ndarray, threshold: float, k: int) -> list[list[tuple[int, float]]]:
            out = []
            for hits in self.store.query_many(vectors, limit=k, score_threshold=threshold):
                found = []
                for hit in hits:
                    if hit.id in skip or P.PHASH not in hit.payload:
                        continue
                    if hit.id not in position:
                        position[hit.id] = len(existing)
                        existing.append(self._with_cluster(fingerprint_of(hit.id, hit.payload), hit.payload))
                    found.append((position[hit.id], hit.score))
                out.append(found)
            return out
        return search

    def _cluster_mates(self, existing: Sequence[Fingerprint], matched: Sequence[int]) -> list[Fingerprint]:
        """Stored members of the clusters that the new items join (their canonical may change)."""
        cids = sorted({existing[int(e)].payload.get(P.CLUSTER_ID) for e in matched} - {None})
        have = {it.id for it in existing}
        rows, _ = self.store.scroll_where({P.CLUSTER_ID: cids}, limit=10_000) if cids else ([], None)
        return [self._with_cluster(fingerprint_of(pid, p), p) for pid, p, _ in rows if pid not in have]

    def _clear_left(self, left: Sequence[Fingerprint]) -> None:
        """Drop the same-picture fields of stored points that were offered to this batch's clustering
        but are in no cluster now (split off: by a curator's not-a-duplicate, or a new canonical they
        do not match), so no point names a cluster it has left."""
        gone = [it.id for it in left if it.payload.get(P.CLUSTER_ID) is not None]
        if gone:
            self.store.delete_payload_keys(gone, [P.CLUSTER_ID, P.TIER, P.CANONICAL])

    @staticmethod
    def _with_cluster(fp: Fingerprint, payload: dict[str, Any]) -> Fingerprint:
        fp.payload.update({k: payload[k] for k in P.CLUSTER_FIELDS if k in payload})
        return fp

    def _write(self, members, ids, payloads, existing, off) -> dict[str, int]:
        counts: dict[str, int] = {}
        updates: dict[tuple, list[str]] = {}
        stored = set(members.loc[members["index"] >= off, P.CLUSTER_ID])  # clusters with points already there
        for row in members.itertuples():
            fields = {P.CLUSTER_ID: row.cluster_id, P.TIER: row.tier, P.CANONICAL: bool(row.canonical)}
            if row.index < off:
                payloads[row.index].update(fields)
                # a new item duplicates something unless it is the first of an all-new cluster; a better
                # copy that becomes its cluster's canonical is still a duplicate of what was stored
                dup = not row.canonical or row.cluster_id in stored
                counts[row.tier] = counts.get(row.tier, 0) + int(dup)
            else:
                old = existing[row.index - off].payload
                if any(old.get(k) != v for k, v in fields.items()):
                    updates.setdefault(tuple(fields.items()), []).append(row.id)
        for fields, pids in updates.items():
            self.store.set_payload(pids, dict(fields))
        return counts


def _with_aliases(pairs: set[frozenset[str]], items: Sequence[Fingerprint]) -> set[frozenset[str]]:
    """The pairs, also for the sweep's aliases of byte-identical copies ('<point id>@<n>'): a file kept
    apart from a point is kept apart from every copy of it too."""
    if not pairs:
        return pairs
    names: dict[str, list[str]] = {}
    for it in items:
        names.setdefault(it.id.split("@", 1)[0], []).append(it.id)
    out = set(pairs)
    for pair in pairs:
        a, b = (tuple(pair) * 2)[:2]
        out |= {frozenset((x, y)) for x in names.get(a, [a]) for y in names.get(b, [b]) if x != y}
    return out


def sweep(store: VectorStore, settings: Settings, out_dir: Path | None = None) -> dict[str, Any]:
    """Cluster the whole collection (blocked sweep, no N x N matrix) and rewrite the cluster fields."""
    started = time.perf_counter()
    ids, payloads, vectors = [], {}, []
    for pid, payload, vec in store.scroll(batch=1024, with_vectors=True):
        ids.append(pid)
        payloads[pid] = payload
        vectors.append(vec)
    items = [fingerprint_of(pid, payloads[pid]) for pid in ids]
    for k, pid in enumerate(list(ids)):  # byte-identical files of one point join the sweep as exact copies
        for n, copy in enumerate(payloads[pid].get(P.COPIES, [])):
            alias = f"{pid}@{n}"
            payloads[alias] = {**payloads[pid], **copy}
            fp = fingerprint_of(alias, payloads[alias])
            fp.seq = items[k].seq + 1e-3  # recorded after the point: never its canonical
            items.append(fp)
            vectors.append(vectors[k])
    emb = np.stack(vectors) if vectors else np.zeros((0, 1), np.float32)
    built = settings.with_overrides(model=store.model_name())  # cut-outs in the collection's vector space
    engine = _engine(settings, _model_embed(built, emb.shape[1]))
    apart = _with_aliases(separated(store, settings), items)
    with progress_bar(len(items), enabled=settings.progress, label="dedupe sweep") as advance:
        engine.progress = advance
        result = engine.find_duplicates(items, emb, forbidden=apart)
    engine.progress = None
    _keep_cut_outs(engine, items, set(ids), built)
    pictures = result.pictures = engine.pictures(result, emb, apart)
    wanted: dict[str, dict[str, Any]] = {pid: {} for pid in ids}
    for row in pictures.itertuples():
        if row.id in wanted:  # copies ride along in reports, not as points
            wanted[row.id].update({P.CLUSTER_ID: row.cluster_id, P.TIER: row.tier, P.CANONICAL: bool(row.canonical)})
    for row in result.members.itertuples():
        if row.id in wanted:
            wanted[row.id][P.NEAR_CLUSTER_ID] = row.cluster_id
    groups: dict[tuple, list[str]] = {}
    stale: dict[tuple, list[str]] = {}
    for pid, fields in wanted.items():
        if any(payloads[pid].get(k) != v for k, v in fields.items()):
            groups.setdefault(tuple(sorted(fields.items())), []).append(pid)
        gone = tuple(k for k in P.CLUSTER_FIELDS if k in payloads[pid] and k not in fields)
        if gone:
            stale.setdefault(gone, []).append(pid)
    for fields, pids in groups.items():
        store.set_payload(pids, dict(fields))
    for keys, pids in stale.items():
        store.delete_payload_keys(pids, list(keys))
    summary = write_reports(result, out_dir, payloads) if out_dir else result.summary()
    summary.update({"points": len(ids), "updated": sum(map(len, groups.values())),
                    "cleared": sum(map(len, stale.values())),
                    "same_picture_clusters": int(pictures[P.CLUSTER_ID].nunique()) if len(pictures) else 0,
                    "seconds": round(time.perf_counter() - started, 3)})
    return summary
