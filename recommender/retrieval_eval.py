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
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recommender import payload as P
from recommender.errors import ConfigError
from recommender.recommend import Recommender


@dataclass
class Corpus:
    ids: list[str]
    vectors: np.ndarray  # unit rows
    labels: list[Any]  # None where unlabelled
    exclude: list[list[int]]  # per row: rows that are its duplicates (itself included)


def load_corpus(rec: Recommender, label: str) -> Corpus:
    """Every point's unit vector, label and duplicate set (one scroll)."""
    ids, vecs, labels, sha, cluster = [], [], [], [], []
    for pid, payload, vec in rec.store.scroll(batch=1024, with_vectors=True):
        ids.append(pid)
        vecs.append(vec)
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
    return Corpus(ids, m, labels, exclude)


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
    for q, nb in zip(queries, rows):
        lab = corpus.labels[q]
        rel = np.array([corpus.labels[j] == lab for j in nb], dtype=float)
        available = label_count[lab] - sum(1 for j in corpus.exclude[q] if corpus.labels[j] == lab)
        prec_at = np.cumsum(rel) / np.arange(1, len(rel) + 1) if len(rel) else np.zeros(0)
        ap = float((prec_at * rel).sum() / min(k, available)) if available > 0 else 0.0
        per[lab].append((float(rel.sum() / k), ap))
    table = {str(lab): {"queries": len(v), f"precision@{k}": round(float(np.mean([p for p, _ in v])), 4),
                        f"map@{k}": round(float(np.mean([a for _, a in v])), 4)} for lab, v in sorted(per.items(), key=lambda x: str(x[0]))}
    allv = [x for v in per.values() for x in v]
    overall = {"queries": len(allv), f"precision@{k}": round(float(np.mean([p for p, _ in allv])), 4),
               f"map@{k}": round(float(np.mean([a for _, a in allv])), 4)}
    return {"per_label": table, "overall": overall}


def evaluate(rec: Recommender, label: str, k: int = 10, compare_classic: bool = True) -> dict[str, Any]:
    """The full evaluation report (JSON-serialisable)."""
    if k < 1:
        raise ConfigError(f"--k must be at least 1, got {k}.")
    t0 = time.perf_counter()
    corpus = load_corpus(rec, label)
    queries = [i for i, lab in enumerate(corpus.labels) if lab is not None]
    t1 = time.perf_counter()
    rows, scores = neighbours_recommender(rec, corpus, queries, k)
    t2 = time.perf_counter()
    report: dict[str, Any] = {
        "collection": rec.settings.collection, "model": rec.model_name, "engine": rec.engine, "label": label, "k": k,
        "points": len(corpus.ids), "labelled": len(queries),
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
    return report


def to_markdown(report: dict[str, Any]) -> str:
    """The report as a table per label, Recommender vs classic side by side."""
    k = report["k"]
    head = f"| {report['label']} | queries | precision@{k} | mAP@{k} |"
    has_classic = "classic" in report
    if has_classic:
        head += f" classic precision@{k} | classic mAP@{k} |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    rows = list(report["recommender"]["per_label"].items()) + [("**overall**", report["recommender"]["overall"])]
    classic = {**report.get("classic", {}).get("per_label", {}), "**overall**": report.get("classic", {}).get("overall")}
    for name, m in rows:
        line = f"| {name} | {m['queries']} | {m[f'precision@{k}']:.4f} | {m[f'map@{k}']:.4f} |"
        if has_classic:
            c = classic[name]
            line += f" {c[f'precision@{k}']:.4f} | {c[f'map@{k}']:.4f} |"
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
