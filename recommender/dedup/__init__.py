"""Deduplication, split the way imagededup splits it.

- methods (`methods.py`, over fingerprints from `hashing.py`): exact bytes/pixels,
  flip-invariant pHash, embedding cosine; each `find_duplicates(items, embeddings) -> PairSet`;
- search (`sweep.py`): the blocked all-pairs sweep and the `SearchFn` contract that
  the store's neighbour query also meets (`recommender.duplicates`);
- the tier of a pair (`tiers.decide_tiers`, the one rule) with local-feature
  verification of ambiguous pairs (`verify.py`);
- clustering (`cluster.py`): connected components and the canonical member;
- evaluation (`plant.py` writes planted copies, `evaluate.py` scores them through
  the public API here), plus leakage and report writers.

Typical use::

    from recommender.dedup import DedupEngine, DedupConfig, write_reports
    from recommender.dedup.embed import model_embedder
    embed, options = model_embedder("mobilenet_v2")
    result = DedupEngine(DedupConfig(), embed, options=options).run(paths)
    write_reports(result, "var/dedup")

See docs/dedup.md for the design and the measured thresholds.
"""

from recommender.dedup.cluster import build_members, build_pictures, choose_canonical, connected_labels
from recommender.dedup.config import DedupConfig
from recommender.dedup.embed import EmbedFn
from recommender.dedup.engine import DedupEngine, DedupResult, match_new_items, verification_floors
from recommender.dedup.hashing import (Fingerprint, fingerprint_file, fingerprint_files, fingerprint_image,
                                       fingerprint_of, fingerprint_payload)
from recommender.dedup.leakage import field_leakage, leakage_report
from recommender.dedup.methods import EmbeddingCosine, ExactHash, PairSet, PerceptualHash
from recommender.dedup.report import write_reports
from recommender.dedup.sweep import SearchFn, cosine_pairs, hamming_pairs, match_new, numpy_search
from recommender.dedup.tiers import TIER_RANK, TIERS, candidate_cosine, decide_tiers, needs_verification

__all__ = [
    "TIERS", "TIER_RANK", "DedupConfig", "DedupEngine", "DedupResult", "EmbedFn", "Fingerprint", "PairSet",
    "SearchFn", "ExactHash", "PerceptualHash", "EmbeddingCosine", "build_members", "build_pictures", "choose_canonical",
    "connected_labels", "cosine_pairs", "decide_tiers", "field_leakage", "fingerprint_file", "fingerprint_files",
    "fingerprint_image", "fingerprint_of", "fingerprint_payload", "hamming_pairs", "leakage_report", "match_new",
    "match_new_items", "needs_verification", "verification_floors", "candidate_cosine", "numpy_search", "write_reports",
]
