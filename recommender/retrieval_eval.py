"""Retrieval quality: do an item's nearest neighbours share its label?

For every item with a value in the label field, the k nearest other items are
fetched through the Recommender's search backend (exact search), excluding the
item's duplicates (same sha256, same dedup `cluster_id`), and scored:
precision@k = share of the k neighbours with the same label; AP@k = mean of
precision@i over the ranks i holding a same-label neighbour, divided by
min(k, number of same-label items available). Reported per label and overall
(mean over queries).

The same metrics are computed the classic way of the similar-art recommenders
(full cosine-similarity matrix over the same vectors, argsort per row, top k)
and the two neighbour lists compared query by query: with exact search they
must be identical (ties between equal scores aside).

When the settings configure retrieval post-processing (`query_expansion`, or a supervised
projection fitted by `recommender fit-projection`), the configured pipeline is scored beside the plain cosine on the same queries. Queries
can be restricted to one split (`split=test`: the database stays the whole
collection) so that a default chosen on other queries is read on held-out ones;
overall figures carry a 95 % bootstrap interval over the queries.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from recommender import payload as P, projection
from recommender.errors import ConfigError
from recommender.recommend import Recommender

SPLIT_FIELD = "split"
BOOTSTRAP = 1000
CROSS_FOLDS = 5
TUNED_ON = ("query_expansion: chosen on the train-split queries of art-louvre (genre) and brain-mri (diagnosis), "
            "benchmarks/retrieval_quality.py --ablation; held out: their test splits")


@dataclass
class Corpus:
    ids: list[str]
    vectors: np.ndarray  # unit rows
    labels: list[Any]  # None where unlabelled
    exclude: list[list[int]]  # per row: rows that are its duplicates (itself included)
    splits: list[Any] | None = None  # the `split` payload field per row
    groups: list[Any] = field(default_factory=list)  # dedup cluster id, else point id: a fit's duplicate groups
    extra: dict[str, list[Any]] = field(default_factory=dict)  # other payload fields asked for, raw


def load_corpus(rec: Recommender, label: str, extra: Sequence[str] = ()) -> Corpus:
    """Every point's unit vector, label and duplicate set, and the raw values of the `extra` fields (one scroll)."""
    ids, vecs, labels, sha, cluster, splits = [], [], [], [], [], []
    more: dict[str, list[Any]] = {name: [] for name in extra}
    for pid, payload, vec in rec.store.scroll(batch=1024, with_vectors=True):
        ids.append(pid)
        vecs.append(vec)
        splits.append(payload.get(SPLIT_FIELD))
        for name, values in more.items():
            values.append(payload.get(name))
        value = payload.get(label)
        labels.append(None if value in (None, "") else (tuple(value) if isinstance(value, list) else value))
        sha.append(payload.get(P.SHA256))
        cluster.append(payload.get(P.CLUSTER_ID))
    if not ids:
        raise ConfigError("The collection is empty; run `recommender ingest SOURCE` first.")
    if all(lab is None for lab in labels):
        raise ConfigError(
            f"No item has a value for '{label}'. Ingest with --metadata FILE holding a '{label}' column, "
            "or pick a field that items carry (see an item's payload)."
        )
    groups: dict[tuple[str, Any], list[int]] = defaultdict(list)
    for i, (s, c) in enumerate(zip(sha, cluster)):
        if s is not None:
            groups[("sha", s)].append(i)
        if c is not None:
            groups[("cluster", c)].append(i)
    exclude = []
    for i, (s, c) in enumerate(zip(sha, cluster)):
        rows = {i, *groups.get(("sha", s), ()), *groups.get(("cluster", c), ())} if (s or c) else {i}
        exclude.append(sorted(rows))
    m = np.vstack(vecs).astype(np.float32)
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    return Corpus(ids, m, labels, exclude, splits, [c or pid for c, pid in zip(cluster, ids)], more)


def neighbours_recommender(rec: Recommender, corpus: Corpus, queries: list[int], k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Top-k rows per query through the Recommender's search backend (exact search)."""
    row = {pid: i for i, pid in enumerate(corpus.ids)}
    backend = rec.backend()
    rows, scores = [], []
    for q in queries:
        excl = [corpus.ids[j] for j in corpus.exclude[q]]
        hits = backend.query(corpus.ids[q], k, exclude_ids=excl, exact=True)
        rows.append([row[h.id] for h in hits])
        scores.append([h.score for h in hits])
    return rows, scores


def neighbours_pipeline(rec: Recommender, corpus: Corpus, queries: list[int], k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Top-k rows per query through the configured pipeline, as `Recommender.recommend` runs it (the query
    expanded, the answers re-ranked by the projection), with the plain search's exclusions, exact search."""
    row = {pid: i for i, pid in enumerate(corpus.ids)}
    rows, scores = [], []
    for q in queries:
        excl = [corpus.ids[j] for j in corpus.exclude[q]]
        query = rec.expand_query(corpus.ids[q], excl, collapse=False) if rec.settings.query_expansion else corpus.ids[q]
        hits = rec.ranked(query, k, excl, exact=True)
        rows.append([row[h.id] for h in hits])
        scores.append([h.score for h in hits])
    return rows, scores


def neighbours_crossfitted(rec: Recommender, corpus: Corpus, queries: list[int], k: int,
                           fitted: projection.Projection) -> tuple[list[list[int]], dict[str, Any]]:
    """Top-k rows per query through the configured pipeline, where every query whose label taught `fitted`
    is ranked by a projection refitted without it: the rows `fitted` learned from are dealt into
    CROSS_FOLDS parts by class, and each part's queries are ranked by a fit on the other parts (weight
    chosen inside them, as the product does), every item answering. A figure read on the labels a
    projection learned would only say how well it memorised them."""
    splits = corpus.splits or [None] * len(corpus.ids)
    taught = [i for i, (v, part) in enumerate(zip(corpus.extra[fitted.label], splits))
              if projection.in_fit_set(v, part, fitted.split)]
    asking = set(queries) & set(taught)
    rows: dict[int, list[int]] = {}
    if len(asking) < len(queries):
        rest = [q for q in queries if q not in asking]
        rows.update(zip(rest, neighbours_pipeline(rec, corpus, rest, k)[0]))
    y = np.array([str(corpus.extra[fitted.label][i]) for i in taught])
    taught_rows = np.array(taught, dtype=np.int64)
    for part in projection.folds(y, CROSS_FOLDS):
        fold = [int(i) for i in taught_rows[part] if int(i) in asking]
        if not fold:
            continue
        learn = np.setdiff1d(taught_rows, taught_rows[part])
        try:
            refit = projection.fit(corpus.vectors[learn], [corpus.extra[fitted.label][i] for i in learn],
                                   [corpus.groups[i] for i in learn], fitted.label, fitted.model, fitted.split)
        except ConfigError as exc:
            raise ConfigError(f"The projection can't be scored on the items it learned from: a fit on {CROSS_FOLDS - 1} "
                              f"of {CROSS_FOLDS} folds of its '{fitted.label}' items failed ({exc}). Score it on "
                              "queries it did not learn from (--split test), or label more items.") from exc
        coords = projection.Coordinates.from_rows(corpus.ids, refit.apply(corpus.vectors))
        with rec.projection_override(refit, coords):
            rows.update(zip(fold, neighbours_pipeline(rec, corpus, fold, k)[0]))
    note = {"queries": len(asking), "folds": CROSS_FOLDS,
            "why": f"these queries' '{fitted.label}' labels taught the projection: each is ranked by one refitted "
                   f"on the other {CROSS_FOLDS - 1} folds of its items"}
    return [rows[q] for q in queries], note


def neighbours_classic(corpus: Corpus, queries: list[int], k: int, block: int = 512) -> tuple[list[list[int]], list[list[float]]]:
    """The classic recipe: cosine-similarity matrix (in row blocks), mask self/duplicates, argsort, top k."""
    rows, scores = [], []
    for s in range(0, len(queries), block):
        qs = queries[s:s + block]
        sim = corpus.vectors[qs] @ corpus.vectors.T
        for r, q in enumerate(qs):
            sim[r, corpus.exclude[q]] = -np.inf
            top = np.argsort(-sim[r], kind="stable")[:k]
            rows.append(top.tolist())
            scores.append(sim[r, top].tolist())
    return rows, scores


def metrics(corpus: Corpus, queries: list[int], rows: list[list[int]], k: int) -> dict[str, Any]:
    """precision@k and mAP@k per label and overall."""
    label_count: dict[Any, int] = defaultdict(int)
    for lab in corpus.labels:
        if lab is not None:
            label_count[lab] += 1
    per: dict[Any, list[tuple[float, float]]] = defaultdict(list)
    every: list[float] = []
    for q, nb in zip(queries, rows):
        lab = corpus.labels[q]
        rel = np.array([corpus.labels[j] == lab for j in nb], dtype=float)
        available = label_count[lab] - sum(1 for j in corpus.exclude[q] if corpus.labels[j] == lab)
        prec_at = np.cumsum(rel) / np.arange(1, len(rel) + 1) if len(rel) else np.zeros(0)
        ap = float((prec_at * rel).sum() / min(k, available)) if available > 0 else 0.0
        per[lab].append((float(rel.sum() / k), ap))
        every.append(float(rel.sum() / k))
    table = {str(lab): {"queries": len(v), f"precision@{k}": round(float(np.mean([p for p, _ in v])), 4),
                        f"map@{k}": round(float(np.mean([a for _, a in v])), 4),
                        f"precision@{k}_ci95": bootstrap_ci([p for p, _ in v])}
             for lab, v in sorted(per.items(), key=lambda x: str(x[0]))}
    allv = [x for v in per.values() for x in v]
    overall = {"queries": len(allv), f"precision@{k}": round(float(np.mean([p for p, _ in allv])), 4),
               f"map@{k}": round(float(np.mean([a for _, a in allv])), 4),
               f"precision@{k}_ci95": bootstrap_ci(every)}
    return {"per_label": table, "overall": overall}


def bootstrap_ci(values: list[float], seed: int = 0) -> list[float]:
    """95 % percentile bootstrap interval of a mean over queries (fixed seed: reports are reproducible)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return [0.0, 0.0]
    means = v[np.random.default_rng(seed).integers(0, len(v), (BOOTSTRAP, len(v)))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def evaluate(rec: Recommender, label: str, k: int = 10, compare_classic: bool = True,
             split: str | None = None) -> dict[str, Any]:
    """The full evaluation report (JSON-serialisable). `split`: only items whose `split` field has this
    value ask (every item still answers)."""
    if k < 1:
        raise ConfigError(f"--k must be at least 1, got {k}.")
    t0 = time.perf_counter()
    fitted = rec.projection()
    corpus = load_corpus(rec, label, [fitted.label] if fitted is not None else [])
    queries = [i for i, lab in enumerate(corpus.labels) if lab is not None]
    if split is not None:
        queries = [i for i in queries if corpus.splits and corpus.splits[i] == split]
        if not queries:
            values = sorted({str(v) for v in corpus.splits or [] if v is not None})
            raise ConfigError(f"No labelled item has {SPLIT_FIELD}='{split}'; "
                              + (f"values present: {', '.join(values)}." if values else
                                 f"ingest with --metadata FILE holding a '{SPLIT_FIELD}' column."))
    t1 = time.perf_counter()
    rows, scores = neighbours_recommender(rec, corpus, queries, k)
    t2 = time.perf_counter()
    report: dict[str, Any] = {
        "collection": rec.settings.collection, "model": rec.model_name, "engine": rec.engine, "label": label, "k": k,
        "points": len(corpus.ids), "labelled": len(queries), "split": split,
        "recommender": metrics(corpus, queries, rows, k),
        "seconds": {"load": round(t1 - t0, 3), "recommender": round(t2 - t1, 3)},
    }
    if compare_classic:
        c_rows, c_scores = neighbours_classic(corpus, queries, k)
        report["seconds"]["classic"] = round(time.perf_counter() - t2, 3)
        report["classic"] = metrics(corpus, queries, c_rows, k)
        same = sum(a == b for a, b in zip(rows, c_rows))
        same_sets = sum(set(a) == set(b) for a, b in zip(rows, c_rows))
        diff = max((abs(x - y) for a, b in zip(scores, c_scores) for x, y in zip(a, b)), default=0.0)
        report["agreement"] = {"queries": len(queries), "identical_lists": same, "identical_sets": same_sets,
                               "max_abs_score_diff": float(diff)}
    if rec.settings.query_expansion or fitted is not None:
        t3 = time.perf_counter()
        crossfit = None
        if fitted is not None:
            p_rows, crossfit = neighbours_crossfitted(rec, corpus, queries, k, fitted)
        else:
            p_rows, _ = neighbours_pipeline(rec, corpus, queries, k)
        report["seconds"]["pipeline"] = round(time.perf_counter() - t3, 3)
        report["pipeline"] = metrics(corpus, queries, p_rows, k)
        report["pipeline_config"] = {"query_expansion": rec.settings.query_expansion}
        if rec.settings.query_expansion:
            report["pipeline_config"].update(query_expansion_alpha=rec.settings.query_expansion_alpha, tuned_on=TUNED_ON)
        if fitted is not None:
            report["pipeline_config"]["projection"] = {
                **fitted.describe(), "tuned_on": f"labels of {SPLIT_FIELD}={fitted.split} only (weight by two-fold "
                f"cross-validation inside it)", "cross_fitted": crossfit}
    return report


def to_markdown(report: dict[str, Any]) -> str:
    """The report as a table per label: plain cosine (Recommender, classic matrix) and the configured
    pipeline side by side, precision with its 95 % bootstrap interval."""
    k = report["k"]
    p, ci = f"precision@{k}", f"precision@{k}_ci95"
    head = f"| {report['label']} | queries | {p} [95 % CI] | mAP@{k} |"
    has_classic, has_pipeline = "classic" in report, "pipeline" in report
    if has_classic:
        head += f" classic {p} | classic mAP@{k} |"
    if has_pipeline:
        head += f" pipeline {p} [95 % CI] | pipeline mAP@{k} |"
    lines = []
    if report.get("split"):
        lines.append(f"Queries: items with split = {report['split']} ({report['labelled']}); answers: all "
                     f"{report['points']} items.")
    if has_pipeline:
        lines.append(f"Pipeline: {report['pipeline_config']}.")
        crossfit = report["pipeline_config"].get("projection", {}).get("cross_fitted")
        if crossfit and crossfit["queries"]:
            lines.append(f"Cross-fitted: {crossfit['queries']} queries whose labels taught the projection are each "
                         f"ranked by a projection refitted without their fold ({crossfit['folds']} folds).")
    if lines:
        lines.append("")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]

    def side(part: str) -> dict[str, Any]:
        return {**report.get(part, {}).get("per_label", {}), "**overall**": report.get(part, {}).get("overall")}

    classic, pipeline = side("classic"), side("pipeline")
    rows = list(report["recommender"]["per_label"].items()) + [("**overall**", report["recommender"]["overall"])]
    for name, m in rows:
        line = f"| {name} | {m['queries']} | {m[p]:.4f} [{m[ci][0]:.3f}, {m[ci][1]:.3f}] | {m[f'map@{k}']:.4f} |"
        if has_classic:
            c = classic[name]
            line += f" {c[p]:.4f} | {c[f'map@{k}']:.4f} |"
        if has_pipeline:
            c = pipeline[name]
            line += f" {c[p]:.4f} [{c[ci][0]:.3f}, {c[ci][1]:.3f}] | {c[f'map@{k}']:.4f} |"
        lines.append(line)
    if "agreement" in report:
        a = report["agreement"]
        lines.append("")
        lines.append(f"Identical top-{k} lists vs the full cosine matrix: {a['identical_lists']}/{a['queries']} "
                     f"(same sets {a['identical_sets']}); max |score diff| {a['max_abs_score_diff']:.2e}.")
    return "\n".join(lines)


def write(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write `retrieval_<label>_k<k>.json` and `.md` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"retrieval_{report['label']}_k{report['k']}"
    j, m = out / f"{stem}.json", out / f"{stem}.md"
    j.write_text(json.dumps(report, indent=2))
    m.write_text(to_markdown(report) + "\n")
    return j, m
