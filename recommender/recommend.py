"""The `Recommender`: one query API for the CLI, the REST API and the dashboard.

Every query kind funnels into `Recommender.recommend`:
  - seeds: stored items (ids or ingested paths) as positive examples, negative
    examples, an uploaded image or a text (embedded on the fly, never stored),
    or a raw vector;
  - filters (equality, any-of, numeric ranges), a score threshold, limit/offset;
  - grouping (at most `group_size` results per value of a field);
  - diversity by maximal marginal relevance (`mmr_lambda`: 1 = pure relevance);
  - duplicate collapsing on the dedup engine's payload (`cluster_id`, `canonical`):
    never two members of one cluster, never a member of the query's own cluster,
    each kept cluster shown by its canonical member.
The search itself runs on Qdrant, or on an in-process exact index for the
embedded store (`query_engine`), with identical results.
"""

from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from recommender import postprocess, projection as proj_mod
from recommender.decode import decode_image_bytes
from recommender.errors import ConfigError, NotFoundError, RecommenderError
from recommender.decisions import Decisions
from recommender.feedback import Feedback
from recommender.models import cached_embedder
from recommender.settings import Settings
from recommender import payload as P
from recommender.store import VECTOR_NAME, Hit, VectorStore, open_store, validate_filter_spec

if TYPE_CHECKING:
    from recommender.models import Embedder

MAX_ROUNDS = 6  # over-fetch doublings when collapsing drops candidates
MMR_POOL = 5  # MMR re-ranks this many times the requested results (at least 50)


@dataclass
class Result:
    """One recommended item with its score, its payload and why it was returned."""

    id: str
    path: str
    score: float
    payload: dict[str, Any]
    reason: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_filters(pairs: list[str] | None) -> dict[str, Any]:
    """CLI filters: `KEY=VALUE` equality, `KEY=A|B` any-of, `KEY>=N`, `KEY<N` ... ranges (numbers stay numbers)."""
    out: dict[str, Any] = {}
    ops = {">=": "gte", "<=": "lte", ">": "gt", "<": "lt"}
    for pair in pairs or []:
        for sym, name in ops.items():
            key, sep, value = pair.partition(sym)
            if sep and key and "=" not in key:
                try:
                    out.setdefault(key.strip(), {})[name] = float(value)
                except (ValueError, TypeError):
                    raise ConfigError(f"Filter '{pair}': '{value}' is not a number.") from None
                break
        else:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ConfigError(
                    f"Filter '{pair}' is not KEY=VALUE, KEY=A|B or KEY>=NUMBER (e.g. --filter genre=Landscape)."
                )
            values = [_scalar(v) for v in value.split("|")]
            out[key.strip()] = values if len(values) > 1 else values[0]
    return validate_filter_spec(out)


def _scalar(value: str) -> Any:
    return int(value) if value.lstrip("-").isdigit() else {"true": True, "false": False}.get(value, value)


class Recommender:
    """Similar-item queries over one collection, with the collection's own model for uploads and text."""

    def __init__(self, settings: Settings, store: VectorStore | None = None):
        self.settings = settings
        self.store = store or open_store(settings)
        if not self.store.exists():
            raise NotFoundError(
                f"Collection '{settings.collection}' does not exist yet; run `recommender ingest SOURCE` first."
            )
        self.model_name = self.store.model_name() or settings.model
        self.engine = self._choose_engine()
        self._index_cache = None
        self._feedback: Feedback | None = None
        self._decisions: Decisions | None = None
        self._projection: tuple[Any, ...] | None = None  # (file stamp, Projection | None)
        self._override: tuple[Any, Any] | None = None  # projection_override
        self._lock = threading.RLock()

    def _choose_engine(self) -> str:
        wanted = getattr(self.settings, "query_engine", "auto")
        embedded = self.store.is_embedded()
        if wanted == "exact" and not embedded:
            raise ConfigError(
                "query_engine=exact mirrors the embedded store only; with a Qdrant server use 'qdrant' or 'auto'."
            )
        local_mode = embedded and not self.store.is_edge()  # edge searches its own HNSW
        return "exact" if (wanted == "exact" or (wanted == "auto" and local_mode)) else "qdrant"

    def close(self) -> None:
        for log in (self._feedback, self._decisions):
            if log is not None:
                log.close()
        self.store.close()

    def embedder(self) -> Embedder:
        """The model the collection was built with (cached per process)."""
        return cached_embedder(self.model_name, self.settings.device)

    def backend(self):
        """What answers searches: the exact in-process index (embedded) or the store itself (Qdrant)."""
        if self.engine == "qdrant":
            return self.store
        if self._index_cache is None:
            from recommender.exact_index import IndexCache

            folder = None
            if getattr(self.settings, "exact_index_cache", True) and not self.settings.qdrant_url:
                folder = self.settings.home / "exact_index" / self.settings.collection
            self._index_cache = IndexCache(self.store, folder)
        return self._index_cache.get()

    def resolve(self, item: str) -> str:
        """A point id, or the id of an ingested file given by path."""
        if _looks_like_id(item):
            self.store.get(item)
            return item
        try:  # an over-long name, a `~user` that does not exist: not a file, so not an ingested one
            path = str(Path(item).expanduser().resolve()) if Path(item).expanduser().exists() else item
        except (OSError, RuntimeError, ValueError):
            path = item
        if len(path) > 4096 or "\0" in path:
            raise NotFoundError(f"'{path[:80]}...' is not an ingested item of collection '{self.settings.collection}': "
                                "the id or path is too long or holds a NUL byte.")
        return self.store.find_by_path(path)

    # -- convenience wrappers (CLI, dashboard) -----------------------------------------
    def similar_to_item(self, item: str, k: int = 10, filters: Mapping[str, Any] | None = None, **options: Any) -> list[Result]:
        """The k nearest stored items to a stored item (never the item itself or its duplicates)."""
        return self.recommend([item], k=k, filters=filters, **options)

    def similar_to_image(self, image: Image.Image | Path | bytes, k: int = 10,
                         filters: Mapping[str, Any] | None = None, **options: Any) -> list[Result]:
        """The k nearest stored items to an image that is not stored (embedded on the fly)."""
        return self.recommend(image=image, k=k, filters=filters, **options)

    def similar_to_text(self, text: str, k: int = 10, filters: Mapping[str, Any] | None = None, **options: Any) -> list[Result]:
        """The k stored items closest to a text (CLIP collections; others raise a clear error)."""
        return self.recommend(text=text, k=k, filters=filters, **options)

    def similar_to_vector(self, vector: np.ndarray, k: int = 10, filters: Mapping[str, Any] | None = None,
                          kind: str = "vector", **options: Any) -> list[Result]:
        """The k nearest stored items to a vector in the collection's space."""
        return self.recommend(vector=vector, k=k, filters=filters, _kind=kind, **options)

    def embed_image(self, image: Image.Image | Path | bytes) -> np.ndarray:
        """One uploaded image (bytes, file or PIL) as a unit vector of the collection's model."""
        name = "upload"
        if isinstance(image, (str, Path)):
            name = str(image)
            try:
                image = Path(image).read_bytes()
            except OSError as exc:
                raise ConfigError(f"Query image '{name}' can't be read ({exc.strerror or exc}); pass an image file.") from exc
        if isinstance(image, (bytes, bytearray)):
            image = self.decode_image(bytes(image), name)
        return self.embedder().embed_images([image])[0]

    def decode_image(self, data: bytes, name: str = "upload") -> Image.Image:
        """Bytes of an image that is not stored, as the model will see it: refused before decoding above the
        settings' pixel and decoded-bytes limits, JPEG drafted to the model's decode size (as ingest does).

        The one decode path for query images, so the CLI, the API and the dashboard enforce the same limits."""
        cfg = self.settings
        draft = getattr(self.embedder(), "decode_size", None) if cfg.jpeg_draft else None
        return decode_image_bytes(data, name, cfg.max_image_pixels, draft_size=draft,
                                  max_decoded_bytes=cfg.max_decoded_bytes)

    def embed_text(self, text: str) -> np.ndarray:
        """A text as a vector of the collection's model (raises for models without a text tower)."""
        if not text or not text.strip():
            raise ConfigError("Text query is empty; give a description such as 'a still life with fruit'.")
        return self.embedder().embed_text([text.strip()])[0]

    # -- the one query ------------------------------------------------------------------
    def recommend(
        self,
        positive: Sequence[str] = (),
        negative: Sequence[str] = (),
        *,
        vector: np.ndarray | None = None,
        image: Image.Image | Path | bytes | None = None,
        text: str | None = None,
        k: int = 10,
        offset: int = 0,
        filters: Mapping[str, Any] | None = None,
        group_by: str | None = None,
        group_size: int = 1,
        mmr_lambda: float | None = None,
        diversity: float | None = None,
        score_threshold: float | None = None,
        collapse_duplicates: bool = True,
        exclude: Sequence[str] = (),
        session: str | None = None,
        _kind: str | None = None,
    ) -> list[Result]:
        """Results for stored examples (ids/paths) and/or one image, text or vector, with all options.

        `diversity` is the dashboard's slider (0 = off) and means `mmr_lambda = 1 - diversity`.
        `session`: that feedback session's likes join as positive and its dislikes as negative examples.
        Scores are cosine similarity for a single seed, Qdrant's best-score for several
        examples or any negative (higher is better either way).
        """
        if k < 1 or offset < 0 or group_size < 1:
            raise ConfigError(f"Need k >= 1, offset >= 0 and group_size >= 1 (got k={k}, offset={offset}, group_size={group_size}).")
        if diversity is not None and mmr_lambda is None and diversity > 0:
            mmr_lambda = 1.0 - float(diversity)
        if mmr_lambda is not None and not 0.0 <= mmr_lambda <= 1.0:
            raise ConfigError(f"mmr_lambda must be between 0 (most diverse) and 1 (pure relevance), got {mmr_lambda}.")
        seeds = [x for x in (vector is not None, image is not None, text is not None) if x]
        if len(seeds) > 1:
            raise ConfigError("Give at most one of an image, a text or a vector as the query.")
        spec = validate_filter_spec(dict(filters or {}))
        self.store.check_fields(spec, role="filter")
        if group_by:
            self.store.check_fields([group_by], role="group-by")
        kind = _kind or ("image" if image is not None else "text" if text is not None else "vector" if vector is not None else None)
        query_vec = None
        if image is not None:
            query_vec = self.embed_image(image)
        elif text is not None:
            query_vec = self.embed_text(text)
        elif vector is not None:
            query_vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        with self._lock:
            pos_ids = [self.resolve(p) for p in positive]
            neg_ids = [self.resolve(n) for n in negative]
            marks = self.feedback().examples(self.settings.collection, session) if session is not None else None
            if marks is not None:  # items removed since they were marked are left out
                present = {pid for pid, _, _ in self.store.get_many([*marks.likes, *marks.dislikes])}
                pos_ids += [p for p in marks.likes if p in present and p not in pos_ids and p not in neg_ids]
                neg_ids += [n for n in marks.dislikes if n in present and n not in pos_ids and n not in neg_ids]
            if not pos_ids and query_vec is None:
                raise ConfigError("Nothing to query: give an item (id or path), positive examples, an image or a text.")
            examples: list[Any] = [*pos_ids, *([query_vec] if query_vec is not None else [])]
            if kind is None or neg_ids or len(examples) > 1:
                kind = "item" if len(examples) == 1 and not neg_ids else "examples"
            own = [*pos_ids, *neg_ids]
            exclude = [*exclude, *self.decisions().hidden_points(self.settings.collection, self.store)]
            query_clusters = self._clusters_of(own) if collapse_duplicates else set()
            expansion = self.settings.query_expansion if len(examples) == 1 and not neg_ids else 0
            if expansion:
                examples = [self.expand_query(examples[0], [*own, *exclude], spec, collapse_duplicates, query_clusters)]
            hits = self._search(examples, neg_ids, [*own, *exclude], spec, offset + k, group_by, group_size,
                                mmr_lambda, score_threshold, collapse_duplicates, query_clusters)
        reason = {"query": kind, "model": self.model_name, "vector": VECTOR_NAME, "engine": self.engine}
        if expansion:
            reason["query_expansion"] = {"n": expansion, "alpha": self.settings.query_expansion_alpha}
        fitted = self.projection() if len(examples) == 1 and not neg_ids else None
        if fitted is not None:
            reason["projection"] = {"label": fitted.label, "weight": fitted.weight}
        if marks is not None:
            reason["feedback"] = {"session": session, "likes": len(marks.likes), "dislikes": len(marks.dislikes)}
        if neg_ids or len(examples) > 1:
            reason.update(positives=len(examples), negatives=len(neg_ids), strategy="best_score")
        if mmr_lambda is not None:
            reason["mmr_lambda"] = mmr_lambda
        out = []
        for h in hits[offset:offset + k]:
            why = dict(reason)
            if group_by:
                why["group"] = h.group
            if getattr(h, "collapsed_from", None):
                why["collapsed_from"] = h.collapsed_from
            out.append(Result(h.id, str(h.payload.get(P.PATH, "")), round(float(h.score), 6), h.payload, why))
        return out

    def decisions(self) -> Decisions:
        """The curators' decision log of this data home (opened on first use); discarded items are never
        recommended."""
        with self._lock:
            if self._decisions is None:
                self._decisions = Decisions(self.settings.catalog_path)
            return self._decisions

    def feedback(self) -> Feedback:
        """The feedback log of this data home (opened on first use)."""
        with self._lock:
            if self._feedback is None:
                self._feedback = Feedback(self.settings.catalog_path)
            return self._feedback

    def projection(self) -> proj_mod.Projection | None:
        """The supervised projection fitted for this collection (`recommender fit-projection`), if any and
        `use_projection` is on; re-read when the file changes, ignored when it was fitted on another model."""
        return self._fitted()[0]

    @contextmanager
    def projection_override(self, fitted: proj_mod.Projection, coords: proj_mod.Coordinates) -> Iterator[None]:
        """Rank by `fitted` instead of the saved projection inside the block: the retrieval evaluation's
        cross-fitting (a query ranked by a projection that never saw its label). Not for concurrent callers."""
        self._override = (fitted, coords)
        try:
            yield
        finally:
            self._override = None

    def _fitted(self) -> tuple[proj_mod.Projection | None, proj_mod.Coordinates | None]:
        if self._override is not None:
            return self._override
        if not self.settings.use_projection:
            return None, None
        path = proj_mod.path_for(self.settings.home, self.settings.collection)
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            stamp = None
        with self._lock:
            if self._projection is None or self._projection[0] != stamp:
                fitted = proj_mod.load(path) if stamp is not None else None
                if fitted is not None and fitted.model != self.model_name:
                    fitted = None  # the collection was re-embedded since: a stale fit must not rank
                coords = proj_mod.Coordinates(path, fitted) if fitted is not None else None
                self._projection = (stamp, fitted, coords)
            return self._projection[1], self._projection[2]

    def expand_query(self, example: str | np.ndarray, exclude: Sequence[str] = (), spec: Mapping[str, Any] | None = None,
                     collapse: bool = True, query_clusters: set[Any] | None = None) -> np.ndarray:
        """The query vector after alpha query expansion: the example (a stored id or a vector) plus its
        first `query_expansion` answers under the same filter and exclusions, weighted by similarity **
        alpha (`postprocess.alpha_qe`). Why: an item's nearest neighbours share its theme more reliably
        than its own vector alone does; one extra search of a few items costs ~1 ms."""
        n = self.settings.query_expansion
        if isinstance(example, str):
            base = self.store.get(example, with_vector=True)[1]
            query_clusters = self._clusters_of([example]) if query_clusters is None and collapse else query_clusters
        else:
            base = np.asarray(example, dtype=np.float32)
        first = self._search([example], [], [*exclude], dict(spec or {}), n, None, 1, None, None, collapse,
                             query_clusters or set(), with_vectors=True)
        if not first:
            return postprocess.unit(base)
        return postprocess.alpha_qe(base, np.stack([h.vector for h in first]), np.array([h.score for h in first]),
                                    self.settings.query_expansion_alpha)

    def ranked(self, query: str | np.ndarray, k: int, exclude: Sequence[str] = (), exact: bool = False) -> list[Hit]:
        """The top k for one stored id or vector as the configured pipeline ranks them (projection re-rank
        included; no filter, no duplicate collapsing): what the retrieval evaluation scores."""
        return self._search([query], [], list(exclude), {}, k, None, 1, None, None, False, set(), exact=exact)

    def _clusters_of(self, ids: Sequence[str]) -> set[Any]:
        if not ids:
            return set()
        rows = self.store.get_many(list(ids))
        return {p.get(P.CLUSTER_ID) for _, p, _ in rows if p.get(P.CLUSTER_ID) is not None}

    def _search(self, examples, neg_ids, exclude, spec, need, group_by, group_size, mmr_lambda,
                score_threshold, collapse, query_clusters, with_vectors: bool = False, exact: bool = False) -> list[Hit]:
        """Fetch candidates, re-rank them by the projection, collapse duplicates, group and diversify,
        over-fetching until `need` survive."""
        backend = self.backend()
        mmr = mmr_lambda is not None and mmr_lambda < 1.0
        want = max(need * MMR_POOL, 50) if mmr else need
        fitted, coords = self._fitted() if len(examples) == 1 and not neg_ids else (None, None)
        fetch = max(want, proj_mod.RERANK_POOL) if fitted is not None else want
        for _ in range(MAX_ROUNDS):
            common = dict(exclude_ids=exclude, must=spec, negative=neg_ids,
                          score_threshold=None if fitted is not None else score_threshold,
                          with_vectors=mmr or with_vectors)
            if exact:
                common["exact"] = True
            if group_by:
                raw = backend.query_groups(examples, group_by, group_size, fetch, **common)
                exhausted = len({h.group for h in raw}) < fetch
            else:
                raw = backend.query(examples, fetch, **common)
                exhausted = len(raw) < fetch
            if fitted is not None:
                raw = self._rerank(fitted, coords, examples[0], raw, score_threshold)
            hits = self._collapse(raw, query_clusters) if collapse else raw
            if group_by:
                hits = _cap_groups(sorted(hits, key=lambda h: -h.score), group_size)
            if len(hits) >= want or exhausted:
                break
            if fetch >= (self.store.count() if self.engine == "qdrant" else len(backend)):
                break
            fetch *= 4
        if mmr:
            hits = _mmr(hits[:want], mmr_lambda, need)
        return hits[:need]

    def _rerank(self, fitted: proj_mod.Projection, coords: proj_mod.Coordinates, example: str | np.ndarray,
                hits: list[Hit], score_threshold: float | None) -> list[Hit]:
        """Hits scored by the projection's blend and sorted by it (the threshold applies to the blend).

        The plain cosine is the engine's score; the projected rows come from the coordinates saved at fit
        time, and only points stored since (and a query that is not stored) are projected from their vectors."""
        if not hits:
            return hits
        ids = [h.id for h in hits] + ([example] if isinstance(example, str) else [])
        rows, found = coords.lookup(ids)
        missing = np.flatnonzero(~found)
        if len(missing):
            vectors = {pid: v for pid, _, v in self.store.get_many([ids[i] for i in missing], with_vectors=True)}
            have = [i for i in missing if ids[i] in vectors]  # a point deleted since keeps its plain cosine part only
            if have:
                rows[have] = fitted.apply(np.stack([vectors[ids[i]] for i in have]))
        query = rows[-1] if isinstance(example, str) else fitted.apply(np.asarray(example).reshape(1, -1))[0]
        scores = fitted.blend(np.array([h.score for h in hits]), query, rows[:len(hits)])
        for h, score in zip(hits, scores):
            h.score = float(score)
        kept = [h for h in hits if score_threshold is None or h.score >= score_threshold]
        return sorted(kept, key=lambda h: -h.score)

    def _collapse(self, hits: list[Hit], query_clusters: set[Any]) -> list[Hit]:
        """One result per duplicate cluster, shown by its canonical member; none from the query's clusters."""
        seen: set[Any] = set()
        canonicals: dict[Any, Hit] = {}
        for h in hits:
            if h.payload.get(P.CANONICAL) is True and h.payload.get(P.CLUSTER_ID) is not None:
                canonicals.setdefault(h.payload[P.CLUSTER_ID], h)
        out: list[Hit] = []
        for h in hits:
            cid = h.payload.get(P.CLUSTER_ID)
            if cid is None:
                out.append(h)
                continue
            if cid in query_clusters or cid in seen:
                continue
            seen.add(cid)
            if h.payload.get(P.CANONICAL) is True:
                out.append(h)
                continue
            canon = canonicals.get(cid)
            if canon is not None:
                shown = Hit(canon.id, h.score, canon.payload, canon.vector, h.group)
                shown.collapsed_from = h.id  # type: ignore[attr-defined]
                out.append(shown)
            else:
                out.append(h)  # canonical filtered out or unknown: the best member stands in
        return out


def _cap_groups(hits: list[Hit], group_size: int) -> list[Hit]:
    counts: dict[Any, int] = {}
    out = []
    for h in hits:
        if counts.get(h.group, 0) < group_size:
            counts[h.group] = counts.get(h.group, 0) + 1
            out.append(h)
    return out


def _mmr(hits: list[Hit], lam: float, n: int) -> list[Hit]:
    """Greedy maximal marginal relevance: lam * relevance - (1 - lam) * max similarity to picked ones."""
    cands = [h for h in hits if h.vector is not None]
    if not cands:
        return hits[:n]
    vecs = np.stack([h.vector / (np.linalg.norm(h.vector) or 1.0) for h in cands]).astype(np.float32)
    rel = np.array([h.score for h in cands], dtype=np.float64)
    sim = vecs @ vecs.T
    picked: list[int] = []
    max_sim = np.full(len(cands), -np.inf)
    available = np.ones(len(cands), bool)
    while len(picked) < min(n, len(cands)):
        red = np.where(np.isfinite(max_sim), max_sim, 0.0)
        gain = np.where(available, lam * rel - (1 - lam) * red, -np.inf)
        best = int(np.argmax(gain))
        picked.append(best)
        available[best] = False
        max_sim = np.maximum(max_sim, sim[best])
    return [cands[i] for i in picked]


def _looks_like_id(item: str) -> bool:
    try:
        uuid.UUID(item)
        return True
    except ValueError:
        return False  # point ids are UUIDs (content hashes); anything else is looked up as a path


__all__ = ["Recommender", "Result", "parse_filters", "RecommenderError"]
