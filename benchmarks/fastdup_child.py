"""fastdup over a list of files, for `dedup_peers.py`: run by the interpreter of a separate
environment that has fastdup (it pins numpy 1.26 and Pillow 10, which the product's environment
does not use), so this file imports nothing of the project's package (only `store_scale`'s peak-RSS
reader, which needs numpy alone).

fastdup runs with its defaults (its bundled ONNX model, `threshold` 0.9, 2 nearest neighbours per
image), or with K nearest neighbours per image when K is given; the image pairs it reports are printed
as JSON with the run's seconds and peak RSS, and `dedup_peers.py` turns them into clusters at
fastdup's own connected-components threshold.

    python -m venv /tmp/fastdup-env && /tmp/fastdup-env/bin/pip install fastdup==2.54
    /tmp/fastdup-env/bin/python benchmarks/fastdup_child.py FILES.json [K]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))

from store_scale import peak_rss_mb  # noqa: E402


def main() -> None:
    files = json.loads(Path(sys.argv[1]).read_text())
    t = time.perf_counter()
    import fastdup

    folder = Path(tempfile.mkdtemp(prefix="fastdup-in-"))
    for k, f in enumerate(files):  # one flat folder, names that give the index back
        (folder / f"{k:06d}{Path(f).suffix.lower()}").symlink_to(Path(f).resolve())
    fd = fastdup.create(input_dir=str(folder), work_dir=tempfile.mkdtemp(prefix="fastdup-work-"))
    k = {"nearest_neighbors_k": int(sys.argv[2])} if len(sys.argv) > 2 else {}
    fd.run(overwrite=True, verbose=False, **k)
    sim = fd.similarity()
    pairs = [(int(Path(str(a)).stem), int(Path(str(b)).stem), float(d))
             for a, b, d in zip(sim["from"], sim["to"], sim["distance"])]
    print(json.dumps({"pairs": pairs, "seconds": time.perf_counter() - t, "peak_rss_mb": peak_rss_mb(),
                      "version": fastdup.__version__}))


if __name__ == "__main__":
    main()
