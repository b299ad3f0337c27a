"""A reader process for tests/test_readers_beside_writers.py: what the API or dashboard does,
in a loop, until a stop file appears. Writes one JSON line per query to OUT (count seen, or error).

    python tests/reader_loop.py HOME ITEM OUT STOPFILE
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender.recommend import Recommender  # noqa: E402
from recommender.settings import get_settings  # noqa: E402


def main(home: str, item: str, out: str, stop: str) -> None:
    rec = Recommender(get_settings(home=home))
    with open(out, "a", buffering=1) as f:
        f.write(json.dumps({"ready": True, "owns": rec.store.client.owns}) + "\n")
        while not Path(stop).exists():
            try:
                hits = rec.similar_to_item(item, k=5)
                f.write(json.dumps({"t": time.time(), "count": rec.store.count(), "hits": len(hits)}) + "\n")
            except Exception as exc:  # the test fails on any of these
                f.write(json.dumps({"t": time.time(), "error": f"{type(exc).__name__}: {exc}"}) + "\n")
            time.sleep(0.02)
    rec.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
