"""An optional supervised projection, learned from one label of the train split (issue 16).

When a collection carries labels (a diagnosis, a genre) and a `split` field, a linear discriminant
(scikit-learn LDA with Ledoit-Wolf shrinkage: 1,280 dimensions against a few thousand labelled rows)
fitted on the train items only maps the model's vectors to a few dimensions in which the classes
separate. Queries then rank by a blend, `(1 - w) * cosine + w * cosine after the projection`: the
blend keeps what the plain cosine knows (the picture itself) and adds what the label taught (which
neighbours share its class). The weight w is chosen by two-fold cross-validation inside train (fitted
on one half's labels, the other half's items ask, only train items answer), so no test label is seen.

The blend re-ranks the first `RERANK_POOL` plain-cosine answers: the stored vectors stay the model's
own (deduplication and every other reader keep using them) and it runs the same on the embedded store
and a server. Every stored point's projected coordinates are saved at fit time (`Coordinates`), so a
query fetches no vectors; only points stored since are projected from theirs. Nothing but vectors is
used at query time. Measured in docs/benchmarks_recommender.md ("The supervised projection in the product").
"""

from __future__ import annotations

import itertools
import json
import logging
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from recommender import payload as P
from recommender.errors import ConfigError
from recommender.postprocess import unit
from recommender.settings import Settings

log = logging.getLogger(__name__)

BLEND = (0.25, 0.5, 0.75, 1.0)
"""Candidate weights w; the cross-validation inside train picks one."""
RERANK_POOL = 50
"""Plain-cosine answers the blend re-ranks (at least the answers asked for): on the test splits 50 keep
what re-ranking the whole collection gains (brain-mri 0.865 against 0.868, art-louvre equal)."""
SPLIT_FIELD = "split"
CV_K = 10
MIN_PER_CLASS = 4
"""Items a label value needs to be learned: the weight's two-fold cross-validation then learns it from two
items in each half (one item gives a class no spread, and the discriminant cannot be solved)."""
AUTO = "auto"
AUTO_LABELS: tuple[str, ...] = (P.ARTIST, P.STYLE, P.GENRE, P.DIAGNOSIS)
"""What `projection_label=auto` (the default) learns from: the first of these fields that the collection's
metadata fills with two classes or more. The finest art label first (neighbours by the same artist are what
an art analyst looks for before the same genre); diagnosis for medical collections."""
AUTO_COVERAGE = 0.8
"""`auto` learns only from a field that at least this share of the collection's points carries: a projection
re-ranks every query, and one learned on part of the collection (the paintings of one that also holds scans)
would re-rank the rest by axes that mean nothing for them. Name the field to learn from a part anyway."""
ALL = "all"
"""The split a fit records when the collection has no `split` field: it learned from every labelled item."""
MAX_FIT = 50_000
"""Labelled items a fit keeps at most, a uniform sample beyond (256 MB of 1,280-d vectors whatever the size of
the collection; a discriminant of a few dozen classes needs no more)."""
REFIT_CHANGE = 0.05
"""The ingest refits when the labelled items it learns from changed by more than this share since the fit
(points stored meanwhile are projected from their vectors at query time)."""


class NoLabel(ConfigError):
    """`auto` found no field to learn from: the collection ranks by plain cosine (not an error of the run)."""


@dataclass(frozen=True)
class Projection:
    """A fitted projection: `apply(x) = unit(x @ matrix + offset)`, blended with weight `weight`."""

    label: str
    weight: float
    matrix: np.ndarray  # (dim, r)
    offset: np.ndarray  # (r,)
    model: str
    split: str
    trained_on: int
    classes: list[str] = field(default_factory=list)
    cv: dict[str, float] = field(default_factory=dict)  # weight -> precision@10, two-fold inside train
    labelled: int = 0  # items of the split that carried the label when it was fitted (trained_on samples them)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # names this fit's coordinate files

    def apply(self, x: np.ndarray) -> np.ndarray:
        return unit(np.asarray(x, dtype=np.float32) @ self.matrix + self.offset)

    def rescore(self, query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """Blended similarity of each row of `vectors` to `query` (both in the model's space)."""
        q, v = unit(query.reshape(1, -1)), unit(vectors)
        return self.blend((v @ q.T).ravel(), self.apply(q)[0], self.apply(v))

    def blend(self, cosine: np.ndarray, query_coords: np.ndarray, coords: np.ndarray) -> np.ndarray:
        """`(1 - w) * cosine + w * cosine after the projection`, from the plain cosines and projected rows."""
        return (1.0 - self.weight) * np.asarray(cosine, dtype=np.float32) + self.weight * (coords @ query_coords)

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "weight": self.weight, "split": self.split, "trained_on": self.trained_on,
                "classes": len(self.classes), "model": self.model}


def _discriminant(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LDA fitted on (x, labels) as an affine map (matrix, offset), whatever sklearn's solver centres.

    Ledoit-Wolf shrinkage first; where a handful of items per class leaves the within-class covariance
    numerically singular, it is taken as isotropic (shrinkage 1: the directions that separate the class
    means), so a small labelled set still gets a projection instead of an error."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    for shrinkage in ("auto", 1.0):
        try:
            lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrinkage).fit(x, labels)
            offset = lda.transform(np.zeros((1, x.shape[1]), dtype=x.dtype))[0]
            matrix = lda.transform(np.eye(x.shape[1], dtype=x.dtype)) - offset
        except (np.linalg.LinAlgError, ValueError):
            continue
        if np.isfinite(matrix).all() and np.isfinite(offset).all():
            return matrix.astype(np.float32), offset.astype(np.float32)
    raise ConfigError(f"No projection could be learned from {len(x)} items: their classes do not separate "
                      "(every label value needs items of its own).")


def _cv_precision(x: np.ndarray, labels: np.ndarray, groups: np.ndarray, fit: np.ndarray, ask: np.ndarray,
                  weights: Iterable[float]) -> dict[float, float]:
    """precision@10 of the product's re-rank (first RERANK_POOL by cosine, blended) for the rows `ask`, the
    projection fitted on rows `fit`; every row answers but the query's own duplicates (same group)."""
    matrix, offset = _discriminant(x[fit], labels[fit])
    proj = unit(x @ matrix + offset)
    hits: dict[float, list[float]] = {w: [] for w in weights}
    for s in range(0, len(ask), 512):
        rows = ask[s:s + 512]
        cos = x[rows] @ x.T
        cos[groups[rows][:, None] == groups[None, :]] = -np.inf
        pool = np.argpartition(-cos, min(RERANK_POOL, x.shape[0] - 1) - 1, axis=1)[:, :RERANK_POOL]
        c = np.take_along_axis(cos, pool, 1)
        own = ~np.isfinite(c)  # the query's duplicates, when the pool reaches them: never answers
        c[own] = 0.0
        pr = np.einsum("qd,qkd->qk", proj[rows], proj[pool])
        for w in hits:
            blend = np.where(own, -np.inf, (1 - w) * c + w * pr)
            top = np.take_along_axis(pool, np.argsort(-blend, axis=1)[:, :CV_K], 1)
            hits[w].extend((labels[top] == labels[rows][:, None]).mean(axis=1).tolist())
    return {w: float(np.mean(v)) for w, v in hits.items()}


def folds(y: np.ndarray, n: int, seed: int = 0) -> list[np.ndarray]:
    """`n` parts of the rows with every class dealt out among them (each part's complement learns every class)."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(n)]
    for value in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == value))
        for i in range(n):
            parts[i].extend(rows[i::n].tolist())
    return [np.sort(np.array(part, dtype=np.int64)) for part in parts]


def fit(x: np.ndarray, labels: list[Any], groups: list[Any], label: str, model: str, split: str = "train",
        seed: int = 0) -> Projection:
    """Fit on labelled rows of one split (`x`, `labels`); choose the weight by two-fold cross-validation
    among them. `groups`: one key per row, equal for duplicates (never each other's answers)."""
    y = np.array([str(v) for v in labels])
    classes, counts = np.unique(y, return_counts=True)
    if (counts >= MIN_PER_CLASS).sum() < 2:
        raise ConfigError(f"Field '{label}' needs at least 2 values with {MIN_PER_CLASS}+ {split} items each to learn a "
                          f"projection; the {split} items have {dict(zip(classes.tolist(), counts.tolist()))}.")
    classes = classes[counts >= MIN_PER_CLASS]  # rarer values are left out
    learnable = np.isin(y, classes)
    xt = unit(np.asarray(x, dtype=np.float32)[learnable])
    y = y[learnable]
    g = np.array([str(v) for v in groups])[learnable]
    halves = folds(y, 2, seed)
    scores = {w: 0.0 for w in BLEND}
    for fit_rows, ask in (halves, halves[::-1]):
        for w, p in _cv_precision(xt, y, g, fit_rows, ask, BLEND).items():
            scores[w] += p / 2
    weight = max(BLEND, key=lambda w: (round(scores[w], 6), -w))  # ties: the lighter blend
    matrix, offset = _discriminant(xt, y)
    return Projection(label, weight, matrix, offset, model, split, len(y), classes.tolist(),
                      {str(w): round(v, 4) for w, v in scores.items()})


def in_fit_set(value: Any, part: Any, split: str) -> bool:
    """Whether an item with label `value` and split `part` is one a fit on `split` learns from (ALL: every
    labelled item). The fit and the evaluation's cross-fitting read the same rule."""
    return value is not None and (split == ALL or part == split)


def resolve(store: Any, label: str, split: str = "train") -> tuple[str, str]:
    """The (label, split) a fit learns from, read from the payload indexes (no scroll).

    `label` = AUTO picks the first of AUTO_LABELS with two learnable classes, provided AUTO_COVERAGE of the
    points carry it (raises NoLabel otherwise).
    A collection without any `split` value learns from every labelled item (split ALL): those labels are all
    the user has, and `recommender evaluate-retrieval` then scores the projection by cross-fitting."""
    split = split if store.facet(SPLIT_FIELD, limit=1) else ALL
    if label != AUTO:
        return label, split
    must = None if split == ALL else {SPLIT_FIELD: split}
    points, minority = store.count(), []
    for name in AUTO_LABELS:
        if sum(n >= MIN_PER_CLASS for n in store.facet(name, must=must, limit=100_000).values()) < 2:
            continue
        if (carry := store.count_where(has=[name])) >= AUTO_COVERAGE * points:
            return name, split
        minority.append(f"'{name}' on {carry}")
    if minority:
        raise NoLabel(f"Of {points} points only {', '.join(minority)} carry a label (auto needs {AUTO_COVERAGE:.0%}); "
                      "queries rank by plain cosine. To learn one anyway: RECOMMENDER_PROJECTION_LABEL=FIELD or "
                      "`recommender fit-projection --label FIELD`.")
    where = "labelled items" if split == ALL else f"items with {SPLIT_FIELD}={split}"
    raise NoLabel(f"No field among {', '.join(AUTO_LABELS)} has 2+ values with {MIN_PER_CLASS}+ {where} each; "
                  "queries rank by plain cosine (ingest with --metadata FILE holding one of those columns).")


def fit_store(store: Any, label: str, split: str = "train") -> Projection:
    """Fit on a collection's items that carry `label` and `split` (`split` = ALL: every labelled item; one
    scroll; only those vectors are kept)."""
    rows: list[tuple[np.ndarray, Any, Any]] = []
    seen_splits, labelled, fit_set, rng = set(), 0, 0, np.random.default_rng(0)
    for pid, payload, vec in store.scroll(batch=1024, with_vectors=True):
        value, part = payload.get(label), payload.get(SPLIT_FIELD)
        seen_splits.add(part)
        labelled += value is not None
        if in_fit_set(value, part, split):
            fit_set += 1
            row = (vec, value, payload.get(P.CLUSTER_ID) or pid)
            if len(rows) < MAX_FIT:
                rows.append(row)
            elif (at := int(rng.integers(0, fit_set))) < MAX_FIT:  # reservoir: each kept with chance MAX_FIT / fit_set
                rows[at] = row
    if not seen_splits:
        raise ConfigError("The collection is empty; run `recommender ingest SOURCE --metadata FILE` first.")
    if not labelled:
        raise ConfigError(f"No item carries a '{label}' field; name a metadata column (e.g. --label diagnosis).")
    if not rows:
        present = sorted(str(s) for s in seen_splits if s is not None)
        raise ConfigError(f"No item has both a '{label}' value and {SPLIT_FIELD}='{split}'; "
                          + (f"{SPLIT_FIELD} values present: {', '.join(present)}." if present else
                             f"ingest with --metadata FILE holding a '{SPLIT_FIELD}' column."))
    vecs, labels, groups = zip(*rows)
    fitted = fit(np.stack(vecs), list(labels), list(groups), label, store.model_name() or "", split)
    return replace(fitted, labelled=fit_set)


def _unchanged(store: Any, path: Path, label: str, split: str) -> bool:
    """True when the saved fit learned `label` on `split` for this model and the labelled items it learns
    from changed by at most REFIT_CHANGE since (a count on the payload index: no scroll)."""
    try:
        saved = load(path)
    except ConfigError:
        return False
    if saved is None or (saved.label, saved.split, saved.model) != (label, split, store.model_name() or ""):
        return False
    now = store.count_where(None if split == ALL else {SPLIT_FIELD: split}, has=[label])
    return abs(now - saved.labelled) <= REFIT_CHANGE * saved.labelled


def projection_stage(store: Any, settings: Settings, changed: bool = True) -> dict[str, Any]:
    """The ingest's projection stage: refit from `settings.projection_label` (default AUTO) when set and the
    run changed the collection (or none is saved yet). Never raises: a collection with nothing to learn
    from is reported as skipped, a failing fit as an error; the run completes and the previous projection
    stays in use."""
    label = settings.projection_label
    if not label:
        return {}
    path = path_for(settings.home, settings.collection)
    if not changed and path.is_file():
        return {"label": label, "refit": False}
    try:
        name, split = resolve(store, label, settings.projection_split)
        if _unchanged(store, path, name, split):
            return {"label": name, "refit": False, "why": f"labelled items changed by {REFIT_CHANGE:.0%} or less"}
        fitted = fit_store(store, name, split)
        save(fitted, path, store)
    except NoLabel as exc:
        return {"label": label, "skipped": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a view of the data: never fail the ingest that stored it
        log.warning("projection stage failed, the saved projection is unchanged: %s", exc)
        return {"label": label, "error": f"{type(exc).__name__}: {exc}"}
    return {**fitted.describe(), "refit": True, "cv": fitted.cv}


def path_for(home: Path, collection: str) -> Path:
    """One folder per collection: `projection.npz` and the coordinate files of the current fit."""
    return Path(home) / "projections" / collection / "projection.npz"


def _keys(point_ids: Sequence[str]) -> np.ndarray:
    """Point ids as the 16-byte keys the coordinate files are sorted and searched by."""
    return np.array([uuid.UUID(p).bytes for p in point_ids], dtype="S16")


def _coordinate_paths(path: Path, token: str) -> tuple[Path, Path]:
    return path.with_name(f"{token}.ids.npy"), path.with_name(f"{token}.coords.npy")


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)


def save(projection: Projection, path: Path, store: Any | None = None) -> Path:
    """Write atomically (a reader never sees half a file). With `store`: first every stored point's projected
    coordinates (one more scroll), so that queries re-rank without fetching vectors; files of older fits go."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if store is not None:
        ids, rows = [], []
        points = store.scroll(batch=1024, with_vectors=True)
        while chunk := list(itertools.islice(points, 4096)):
            ids.append(_keys([pid for pid, _, _ in chunk]))
            rows.append(projection.apply(np.stack([vec for _, _, vec in chunk])))
        keys = np.concatenate(ids) if ids else _keys([])
        order = np.argsort(keys)
        id_path, coord_path = _coordinate_paths(path, projection.token)
        _atomic_save(id_path, keys[order])
        _atomic_save(coord_path, np.concatenate(rows)[order] if rows else np.zeros((0, projection.matrix.shape[1]), np.float32))
    tmp = path.with_name(path.name + ".tmp.npz")
    meta = {k: getattr(projection, k) for k in ("label", "weight", "model", "split", "trained_on", "classes", "cv", "token",
                                                 "labelled")}
    np.savez(tmp, matrix=projection.matrix, offset=projection.offset, meta=np.array(json.dumps(meta)))
    tmp.replace(path)
    _drop_coordinates(path, keep=_coordinate_paths(path, projection.token))
    return path


def _drop_coordinates(path: Path, keep: Iterable[Path] = ()) -> None:
    """Delete the coordinate files beside `path` but those in `keep` (older fits', or all)."""
    for old in set(path.parent.glob("*.npy")) - set(keep):
        old.unlink(missing_ok=True)


def remove(path: Path) -> bool:
    """Delete a collection's projection and its coordinate files; False when there was none."""
    existed = path.is_file()
    path.unlink(missing_ok=True)
    _drop_coordinates(path)
    return existed


def load(path: Path) -> Projection | None:
    """The saved projection, or None when there is none."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return Projection(matrix=z["matrix"], offset=z["offset"], **meta)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"Projection file '{path}' can't be read ({exc}); refit it with "
                          "`recommender fit-projection --label FIELD` or delete it.") from exc


class Coordinates:
    """The projected coordinates of the points stored when the projection was fitted, memory-mapped and
    looked up by point id; points stored since are found missing (the caller projects their vectors)."""

    @classmethod
    def from_rows(cls, point_ids: Sequence[str], rows: np.ndarray) -> "Coordinates":
        """Coordinates held in memory (a projection that was never saved, e.g. one fold of an evaluation)."""
        keys = _keys(point_ids)
        order = np.argsort(keys)
        out = cls.__new__(cls)
        out.ids, out.rows = keys[order], np.asarray(rows, dtype=np.float32)[order]
        return out

    def __init__(self, path: Path, projection: Projection):
        id_path, coord_path = _coordinate_paths(path, projection.token)
        try:
            self.ids = np.load(id_path, mmap_mode="r")
            self.rows = np.load(coord_path, mmap_mode="r")
        except (OSError, ValueError):  # a fit without coordinates, or replaced under us: every point is missing
            self.ids = np.zeros(0, dtype="S16")
            self.rows = np.zeros((0, projection.matrix.shape[1]), np.float32)

    def lookup(self, point_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, found): the coordinates of each id (zeros where not found) and which were found."""
        keys = _keys(point_ids)
        at = np.minimum(np.searchsorted(self.ids, keys), max(len(self.ids) - 1, 0))
        found = (self.ids[at] == keys) if len(self.ids) else np.zeros(len(keys), bool)
        rows = np.zeros((len(keys), self.rows.shape[1]), np.float32)
        rows[found] = self.rows[at[found]]
        return rows, found
