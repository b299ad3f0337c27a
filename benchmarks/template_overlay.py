"""Copies in a collection where every image carries the same overlay, templates off and on.

Issue 15: a viewer that burns the same labels into every export, or a deck that puts every picture
on one layout, makes every image share pixels at the same place. This plants such a collection from a
real corpus: N images, each exported with the same overlay (`--overlay annotation`: corner labels and a
scale bar, the held-out `annotation` edit with fixed labels; `--overlay page`: the tuning catalogue
page), 40 of them saved again at JPEG quality 60 as the planted copies. The corpus's own duplicates
are set apart by the engine's verdicts on the clean files, so a false pair is a copy pair between two
source images the engine did not join before the overlay.

Prints, for `DedupConfig.template_members` 0 (off) and 16 (the default): planted copies found, false
pairs, and the templates learned (image size -> share of keypoints that recur).

    python benchmarks/template_overlay.py ../shared/corpora/brain-mri --n 200
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

from PIL import Image

from recommender.dedup import DedupConfig, DedupEngine
from recommender.dedup.embed import model_embedder
from recommender.dedup.plant import sample_files
from recommender.dedup.transforms import ALL_TRANSFORMS

PLANTED = 40


def plant(source: Path, n: int, overlay: str, work: Path) -> None:
    """`work/clean` (the sampled files as PNG) and `work/overlaid` (each under the same overlay, plus
    PLANTED re-saves at JPEG quality 60)."""
    (work / "clean").mkdir(parents=True)
    (work / "overlaid").mkdir()
    for k, f in enumerate(sample_files(source, n, seed=11)):
        img = Image.open(f).convert("RGB")
        img.save(work / "clean" / f"{k:04d}.png")
        ALL_TRANSFORMS[overlay](img, random.Random(0)).save(work / "overlaid" / f"{k:04d}.jpg", quality=90)
    for k in range(min(PLANTED, n)):
        Image.open(work / "overlaid" / f"{k:04d}.jpg").save(work / "overlaid" / f"{k:04d}_q60.jpg", quality=60)


def same_picture_pairs(folder: Path, members: int, embed, options) -> tuple[set[frozenset[str]], dict[str, float]]:
    """Source-image pairs the engine calls exact or copy (a file and its re-save share a source), and
    the templates it learned."""
    engine = DedupEngine(DedupConfig(template_members=members), embed, options=options)
    result = engine.find_duplicates(engine.fingerprint(sorted(folder.iterdir())))
    same = result.pairs[result.pairs["tier"].isin(["exact", "copy"])]
    stem = lambda p: Path(p).stem.split("_")[0]  # noqa: E731
    pairs = {frozenset((stem(a), stem(b))) for a, b in zip(same.path_a, same.path_b)}
    return pairs, (engine.verifier.template_shares() if engine.verifier is not None else {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", type=Path, help="folder of real images")
    ap.add_argument("--n", type=int, default=200, help="images sampled")
    ap.add_argument("--overlay", default="annotation", choices=["annotation", "page"])
    args = ap.parse_args()
    embed, options = model_embedder("mobilenet_v2")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        plant(args.source, args.n, args.overlay, work)
        natural, _ = same_picture_pairs(work / "clean", 0, embed, options)
        natural = {p for p in natural if len(p) == 2}
        print(f"{args.source.name}: {args.n} images under one '{args.overlay}' overlay, {min(PLANTED, args.n)} planted "
              f"re-saves; natural duplicate pairs among the clean files: {len(natural)}")
        for members in (0, DedupConfig.template_members):
            found, shares = same_picture_pairs(work / "overlaid", members, embed, options)
            planted = sum(frozenset((f"{k:04d}",)) in found for k in range(min(PLANTED, args.n)))
            false = {p for p in found if len(p) == 2 and p not in natural}
            print(f"template_members={members}: planted copies found {planted}/{min(PLANTED, args.n)}, "
                  f"false pairs {len(false)}, templates learned {shares or 'none'}")


if __name__ == "__main__":
    main()
