"""Split and patient leakage reports, including every cross-split exact duplicate of brain-mri."""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from recommender.dedup import DedupConfig, DedupEngine, leakage_report

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
MRI = CORPORA / "brain-mri"


def members_frame(rows):
    return pd.DataFrame(rows, columns=["id", "path", "cluster_id", "tier", "canonical", "cluster_tier"])


def test_leakage_counts_clusters_and_item_pairs_per_split_pair():
    m = members_frame([
        ("a", "a.png", "a", "copy", True, "copy"), ("b", "b.png", "a", "copy", False, "copy"),
        ("c", "c.png", "a", "copy", False, "copy"),
        ("d", "d.png", "d", "exact", True, "exact"), ("e", "e.png", "d", "exact", False, "exact"),
        ("f", "f.png", "f", "near", True, "near"), ("g", "g.png", "f", "near", False, "near"),
    ])
    payloads = {"a": {"split": "train", "patient": "p1"}, "b": {"split": "test", "patient": "p1"},
                "c": {"split": "test", "patient": "p2"}, "d": {"split": "train"}, "e": {"split": "train"},
                "f": {"split": "val"}, "g": {}}
    rep = leakage_report(m, payloads)
    sc = rep["split_clusters"]
    assert list(sc["cluster_id"]) == ["a"]  # d is all train; f has one unknown split, not evidence
    assert sc.iloc[0]["counts"] == {"test": 2, "train": 1}
    sp = rep["split_pairs"]
    assert sp.to_dict("records") == [{"value_a": "test", "value_b": "train", "clusters": 1, "item_pairs": 2}]
    assert list(rep["patient_clusters"]["cluster_id"]) == ["a"]
    assert rep["patient_pairs"].iloc[0]["item_pairs"] == 2  # p1 x2 against p2 x1


def test_no_payload_key_no_report():
    m = members_frame([("a", "a", "a", "copy", True, "copy"), ("b", "b", "a", "copy", False, "copy")])
    assert leakage_report(m, {"a": {}, "b": {}}) == {}


@pytest.mark.skipif(not MRI.is_dir(), reason="shared corpora not mounted")
@pytest.mark.slow
def test_every_cross_split_exact_duplicate_of_brain_mri_is_reported():
    rows = list(csv.DictReader(open(MRI / "labels.csv")))
    paths = [str(MRI / r["path"]) for r in rows]
    # independent ground truth: SHA-256 of every file, grouped
    by_sha: dict[str, list[int]] = defaultdict(list)
    for k, p in enumerate(paths):
        by_sha[hashlib.sha256(Path(p).read_bytes()).hexdigest()].append(k)
    cross = [g for g in by_sha.values() if len({rows[k]["split"] for k in g}) > 1]
    assert len(cross) > 0, "brain-mri is known to have cross-split duplicates"

    # exact tier only (phash_strict=-1 turns the hash-only copy rule off)
    engine = DedupEngine(DedupConfig(phash_strict=-1, workers=2))
    items = engine.fingerprint(paths, payloads=[{"split": r["split"]} for r in rows])
    res = engine.find_duplicates(items)
    rep = leakage_report(res.members, items=res.items)
    leaking = rep["split_clusters"]
    flagged_paths = {p for d in leaking["paths"] for ps in d.values() for p in ps}
    for g in cross:
        assert {paths[k] for k in g} <= flagged_paths
    assert (leaking["cluster_tier"] == "exact").all()
    # and nothing beyond the byte/pixel-identical groups is claimed at the exact tier
    exact_groups = {frozenset(g) for g in by_sha.values() if len(g) > 1}
    assert len(leaking) >= len(cross)
    n_exact_members = sum(len(g) for g in exact_groups)
    assert len(res.members) >= n_exact_members
    pairs = rep["split_pairs"]
    assert set(pairs["value_a"]) | set(pairs["value_b"]) == {"test", "train"}
    assert pairs["clusters"].sum() == len(leaking)
