"""Dedup accuracy on planted copies of real images, against an imagededup-style pHash baseline.

Same code as `recommender evaluate-dedup`; prints precision, recall and F1 per tier and per
transform, the threshold sweep and the baseline, for each corpus given (default: both shared ones).
The planted copies are written to disk and decoded, fingerprinted and deduplicated by the
production code with ingest's decode options for the model (RECOMMENDER_JPEG_DRAFT=false:
full-size decoding).

    python benchmarks/evaluate_dedup.py                      # art-louvre and brain-mri, 200 originals each
    python benchmarks/evaluate_dedup.py ../shared/corpora/art-louvre --originals 100
"""

from __future__ import annotations

import sys
from pathlib import Path

from recommender.dedup.evaluate import main as evaluate

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"

if __name__ == "__main__":
    args = sys.argv[1:]
    sources = [a for a in args if not a.startswith("-") and Path(a).is_dir()]
    options = [a for a in args if a not in sources]
    codes = [evaluate([str(s), *options]) for s in (sources or [CORPORA / "art-louvre", CORPORA / "brain-mri"])]
    sys.exit(max(codes))
