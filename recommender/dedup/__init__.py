"""Deduplication engine: exact, copy and near duplicates, clusters, leakage and reports.

Typical use::

    from recommender.dedup import DedupEngine, DedupConfig, write_reports
    from recommender.dedup.embed import default_embedder
    result = DedupEngine(DedupConfig(), default_embedder()).run(paths)
    write_reports(result, "var/dedup")

See docs/dedup.md for the design and the measured thresholds.
"""

from recommender.dedup.cluster import UnionFind, build_members, choose_canonical, connected_labels
from recommender.dedup.config import TIERS, DedupConfig
from recommender.dedup.engine import DedupEngine, DedupResult, match_new_items, numpy_search
from recommender.dedup.hashing import Fingerprint, fingerprint_bytes, fingerprint_files, fingerprint_image
from recommender.dedup.leakage import field_leakage, leakage_report
from recommender.dedup.methods import EmbeddingCosine, ExactHash, PairSet, PerceptualHash
from recommender.dedup.report import write_reports
from recommender.dedup.sweep import cosine_pairs, hamming_pairs, match_new

__all__ = [
    "TIERS", "DedupConfig", "DedupEngine", "DedupResult", "match_new_items", "numpy_search", "Fingerprint", "UnionFind", "PairSet",
    "ExactHash", "PerceptualHash", "EmbeddingCosine", "build_members", "choose_canonical", "connected_labels",
    "cosine_pairs", "hamming_pairs", "match_new", "fingerprint_bytes", "fingerprint_files", "fingerprint_image",
    "field_leakage", "leakage_report", "write_reports",
]
