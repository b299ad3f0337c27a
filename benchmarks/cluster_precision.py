"""Same-picture cluster precision over a whole ingested collection, by a pixel-level check.

Issue 15: users delete files and hide recommendations by `exact`/`copy` clusters, so every member
must be the same picture as its canonical. This script reads the clusters the pipeline wrote into a
home's store (after `recommender ingest` or `recommender dedupe`) and checks every member against
its canonical with a pixel-level score the dedup engine does not use: both decoded as ingest
decodes them, greyscale, the member aligned onto the canonical (a similarity transform fitted by
ORB matches and RANSAC, the mirror image tried too), and the Pearson correlation of the pixels
where the two overlap; without an alignment, the correlation of both resized to 64x64. Pearson
ignores linear brightness and contrast changes (re-windowed exports). A member whose correlation
is >= --min-corr is counted as the same picture. Adjacent slices of one scan can correlate that
well too, and strong recolouring can fall below it, so the figure is an estimate to read with
the contact sheet, which shows each member's score.

Prints: clusters and clustered points per tier, cluster size distribution (median, p95, max), the
copy clusters flagged as a possible stack of slices (their file names, `recommender.dedup.stacks`),
member precision (members passing / members checked), cluster precision (clusters whose members
all pass), the worst clusters, and with --sheet a PNG contact sheet of sampled failing and passing
clusters (canonical first in each row).

With --review FILE.csv a person checks the score's verdicts: the first run writes every member under
--min-corr beside its canonical, numbered, to FILE.png and lists them in FILE.csv with an empty
`verdict` column; once that column is filled (same / different / unclear, by eye), the next run with
the same file reads it and also prints the reviewed member and cluster precision, as ranges: unclear
counted wrong, then counted right (a cluster fails when one of its members is judged different).
Members the score passes are not reviewed (adjacent slices can pass it) unless --review-below puts
them before the person too; --prefill copies verdicts already given for the same pairs from earlier
review files into a new one (a later file's verdict wins).

With --manifest (a CSV with a path column, `volume` and `slice_index`, paths relative to
--manifest-root, by default the manifest's folder; mri-slices' manifest is one) precision is also
read against ground truth, with no pixel score: a member is wrong when it is another slice (another
volume or another index) than its canonical and their decoded pixels differ.

    python benchmarks/cluster_precision.py --home /tmp/brain/after --sheet /tmp/brain/sheet.png
    python benchmarks/cluster_precision.py --home /tmp/brain/after --review docs/reviews/brain-mri-failing.csv
    python benchmarks/cluster_precision.py --home H --review new.csv --prefill docs/reviews/brain-mri-failing-members.csv \
        docs/reviews/brain-mri-failing-members-session34.csv docs/reviews/brain-mri-failing-members-session36.csv
    python benchmarks/cluster_precision.py --home /tmp/mri --manifest ../shared/corpora/mri-slices/manifest.csv

With --score-check the score itself is scored on pairs whose truth is known: the pairs of review CSVs, by the
person's verdict, and with --manifest neighbouring slices of one volume (different slices, 1-3 apart):

    python benchmarks/cluster_precision.py --score-check docs/reviews/*.csv --manifest ../shared/corpora/mri-slices/manifest.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender import payload as P  # noqa: E402
from recommender.decode import DecodeError, DecodeOptions, load_image  # noqa: E402
from recommender.dedup.stacks import flagged_as_stack  # noqa: E402
from recommender.settings import get_settings  # noqa: E402
from recommender.store import open_store  # noqa: E402

SIDE, THUMB = 64, 96


def grey(path: str, key: str | None, options: DecodeOptions) -> np.ndarray | None:
    """The greyscale pixels of an item, longer side at most 256 (None if it no longer decodes)."""
    try:
        img = load_image(path, options, key)
    except DecodeError:
        return None
    img = img.convert("L")
    img.thumbnail((256, 256))
    return np.asarray(img, np.float32)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    d = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / d) if d > 0 else float(np.array_equal(x, y))


def _small(a: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(a.astype(np.uint8)).resize((SIDE, SIDE), Image.BILINEAR), np.float32)


def _aligned(a: np.ndarray, b: np.ndarray) -> float | None:
    """Correlation of b warped onto a by a RANSAC similarity fit of ORB matches, over the overlap."""
    orb, bf = cv2.ORB_create(nfeatures=1000), cv2.BFMatcher(cv2.NORM_HAMMING)
    ka, da = orb.detectAndCompute(a.astype(np.uint8), None)
    kb, db = orb.detectAndCompute(b.astype(np.uint8), None)
    if da is None or db is None or len(da) < 8 or len(db) < 8:
        return None
    good = [m[0] for m in bf.knnMatch(db, da, k=2) if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
    if len(good) < 8:
        return None
    src = np.float32([kb[m.queryIdx].pt for m in good])
    dst = np.float32([ka[m.trainIdx].pt for m in good])
    m, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=4.0)
    if m is None or mask is None or int(mask.sum()) < 8:
        return None
    h, w = a.shape
    warped = cv2.warpAffine(b, m, (w, h), flags=cv2.INTER_LINEAR)
    cover = cv2.warpAffine(np.ones_like(b), m, (w, h), flags=cv2.INTER_NEAREST) > 0
    if cover.mean() < 0.3:
        return None
    return _pearson(a[cover], warped[cover])


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """The best of: aligned correlation of b and of mirrored b onto a, and the plain 64x64 one."""
    scores = [_pearson(_small(a), _small(b)), _pearson(_small(a), _small(b)[:, ::-1])]
    for cand in (b, np.ascontiguousarray(b[:, ::-1])):
        r = _aligned(a, cand)
        if r is not None:
            scores.append(r)
    return max(scores)


def clusters_of(home: Path, collection: str) -> dict[str, list[dict]]:
    """Members of every same-picture cluster in the store, canonical first."""
    store = open_store(get_settings(home=home, collection=collection))
    try:
        out: dict[str, list[dict]] = defaultdict(list)
        for pid, payload, _ in store.scroll(batch=1024):
            if payload.get(P.CLUSTER_ID) and payload.get(P.TIER) in ("exact", "copy"):
                out[payload[P.CLUSTER_ID]].append({"id": pid, **payload})
        for members in out.values():
            members.sort(key=lambda m: (not m.get(P.CANONICAL), m.get(P.PATH, "")))
        return dict(out)
    finally:
        store.close()


def key_of(m: dict) -> str | None:
    k = m.get(P.ITEM_KEY, "")
    return k if "#" in k else None


def check(clusters: dict[str, list[dict]], min_corr: float) -> dict[str, dict]:
    """Per cluster: each member's correlation with the canonical, and whether all pass."""
    options = DecodeOptions()
    out = {}
    for cid, members in clusters.items():
        canon = grey(members[0][P.PATH], key_of(members[0]), options)
        scores = []
        for m in members[1:]:
            g = grey(m[P.PATH], key_of(m), options)
            scores.append(corr(canon, g) if canon is not None and g is not None else float("nan"))
        ok = [s >= min_corr for s in scores if s == s]
        out[cid] = {"size": len(members), "tier": members[0].get(P.TIER), "scores": scores,
                    "passed": sum(ok), "checked": len(ok), "all_pass": all(ok)}
    return out


def slices_of(manifest: Path, root: Path | None) -> dict[str, tuple[str, int]]:
    """(volume, slice index) of every file the manifest lists, by resolved path."""
    from recommender.metadata import PATH_COLUMNS

    base = (root or manifest.parent).resolve()
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    column = next((c for c in PATH_COLUMNS if rows and c in rows[0]), None)
    if column is None or not {"volume", "slice_index"} <= set(rows[0] if rows else ()):
        raise SystemExit(f"{manifest}: needs a path column ({', '.join(PATH_COLUMNS)}), 'volume' and 'slice_index'")
    return {str((base / r[column]).resolve()): (r["volume"], int(r["slice_index"])) for r in rows}


def check_truth(clusters: dict[str, list[dict]], slices: dict[str, tuple[str, int]]) -> dict:
    """Members against ground truth: wrong when another slice than the canonical's with other pixels."""
    checked, wrong, unknown, examples = 0, 0, 0, []
    for cid, members in clusters.items():
        canon = slices.get(str(Path(members[0][P.PATH]).resolve()))
        for m in members[1:]:
            here = slices.get(str(Path(m[P.PATH]).resolve()))
            if canon is None or here is None:
                unknown += 1
                continue
            checked += 1
            if here != canon and m.get(P.PIXEL_HASH) != members[0].get(P.PIXEL_HASH):
                wrong += 1
                examples.append({"cluster": cid, "canonical": canon, "member": here})
    return {"truth_members_checked": checked, "truth_wrong": wrong, "truth_not_in_manifest": unknown,
            "truth_member_precision": round(1 - wrong / checked, 4) if checked else None,
            "truth_examples": examples[:5]}


def sheet(clusters: dict[str, list[dict]], result: dict[str, dict], path: Path, rows: int = 12,
          per_row: int = 8, seed: int = 0) -> None:
    """A contact sheet: up to `rows` failing clusters, then passing ones, canonical first."""
    rng = random.Random(seed)
    failing = [c for c, r in result.items() if not r["all_pass"]]
    passing = [c for c, r in result.items() if r["all_pass"]]
    rng.shuffle(failing)
    rng.shuffle(passing)
    chosen = (failing[: rows // 2] + passing)[:rows]
    canvas = Image.new("RGB", (per_row * THUMB, max(1, len(chosen)) * (THUMB + 14)), "white")
    draw = ImageDraw.Draw(canvas)
    options = DecodeOptions()
    for r, cid in enumerate(chosen):
        y = r * (THUMB + 14)
        draw.text((2, y), f"{cid[:8]} {result[cid]['tier']} size {result[cid]['size']} "
                          f"{'ALL PASS' if result[cid]['all_pass'] else 'FAILS'}", fill="black")
        for k, m in enumerate(clusters[cid][:per_row]):
            try:
                img = ImageOps.pad(load_image(m[P.PATH], options, key_of(m)), (THUMB - 4, THUMB - 4))
            except DecodeError:
                continue
            canvas.paste(img, (k * THUMB + 2, y + 12))
            if k:
                s = result[cid]["scores"][k - 1]
                draw.text((k * THUMB + 4, y + 14), f"{s:.2f}", fill="red" if not s >= 0.9 else "lime")
    canvas.save(path)


def failing_members(clusters: dict[str, list[dict]], result: dict[str, dict], below: float) -> list[dict]:
    """Every member under `below` (or not scored), with its canonical: what a person reviews. `below` is
    --min-corr, or higher to have a person judge members the score passes too (adjacent slices can)."""
    rows = []
    for cid, r in sorted(result.items()):
        for m, s in zip(clusters[cid][1:], r["scores"]):
            if not s >= below:
                canon = clusters[cid][0]
                rows.append({"cluster": cid, "canonical": canon[P.PATH], "canonical_key": key_of(canon) or "",
                             "member": m[P.PATH], "member_key": key_of(m) or "",
                             "score": round(s, 3) if s == s else "", "verdict": ""})
    return rows


VERDICTS = ("same", "different", "unclear")


def _verdicts(path: Path) -> dict[tuple[str, ...], str]:
    with path.open(newline="") as f:
        return {_pair(r): r.get("verdict", "").strip().lower() for r in csv.DictReader(f)}


def review(rows: list[dict], path: Path, members: int, clusters: int, prefill: list[Path] = ()) -> dict:
    """Write the review sheet and CSV on the first run (verdicts already given in the `prefill` files for
    the same pairs copied in); once the CSV carries verdicts, read them and return the reviewed precision
    ranges, unclear counted wrong then right: of members (`members`: every member but the canonicals; those
    not reviewed count as passing) and of clusters (a cluster fails when one of its members is judged
    different). Pairs are keyed by canonical and member file name."""
    if not path.is_file():
        known: dict[tuple[str, ...], str] = {}
        for old in prefill:
            known.update({k: v for k, v in _verdicts(old).items() if v in VERDICTS})
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["n", *rows[0].keys()] if rows else ["n", "verdict"])
            w.writeheader()
            w.writerows({"n": k, **row, "verdict": known.get(_pair(row), "")} for k, row in enumerate(rows))
        pair_sheet(rows, path.with_suffix(".png"))
        todo = sum(_pair(r) not in known for r in rows)
        return {"review": f"fill the verdict column of {path} ({', '.join(VERDICTS)}; {todo} of {len(rows)} "
                          "left to judge), then run again"}
    given = _verdicts(path)
    verdicts = [given.get(_pair(r), "") for r in rows]
    bad = sorted({v for v in verdicts if v not in VERDICTS})
    if bad:
        raise SystemExit(f"{path}: verdict must be one of {', '.join(VERDICTS)} for every row; found {bad} "
                         "(a member missing from the file has an empty verdict: review it or start a new file)")
    same, different, unclear = (verdicts.count(v) for v in VERDICTS)
    failing = lambda kinds: len({r["cluster"] for r, v in zip(rows, verdicts) if v in kinds})  # noqa: E731
    kept = members - len(rows)
    return {"reviewed": len(rows), "reviewed_same": same, "reviewed_different": different, "reviewed_unclear": unclear,
            "reviewed_member_precision": [round((kept + same) / members, 4), round((kept + same + unclear) / members, 4)],
            "reviewed_cluster_precision": [round(1 - failing(("different", "unclear")) / clusters, 4),
                                           round(1 - failing(("different",)) / clusters, 4)]}


def _pair(row: dict) -> tuple[str, ...]:
    """A reviewed pair's key: file names and slice keys, so a review made on one machine reads on another."""
    return (Path(row["canonical"]).name, row.get("canonical_key") or "", Path(row["member"]).name, row.get("member_key") or "")


def pair_sheet(rows: list[dict], path: Path, side: int = 160, per_row: int = 4) -> None:
    """Each reviewed member beside its canonical, numbered as in the CSV, with its score."""
    height = side + 14
    canvas = Image.new("RGB", (per_row * (2 * side + 10), max(1, -(-len(rows) // per_row)) * height), "white")
    draw = ImageDraw.Draw(canvas)
    options = DecodeOptions()
    for k, row in enumerate(rows):
        x, y = (k % per_row) * (2 * side + 10), (k // per_row) * height
        for j, (p, key) in enumerate(((row["canonical"], row["canonical_key"]), (row["member"], row["member_key"]))):
            try:
                canvas.paste(ImageOps.pad(load_image(p, options, key or None), (side, side)), (x + j * side, y))
            except DecodeError:
                pass
        draw.text((x, y + side), f"#{k} {row['cluster'][:8]} score {row['score']}", fill="black")
    canvas.save(path)


def score_checked(reviews: list[Path], manifest: Path | None, min_corr: float, per_volume: int = 20,
                  seed: int = 43) -> dict:
    """How the score itself does on pairs whose truth is known: pairs a person judged in review CSVs (by
    verdict), and neighbouring slices of one volume at 1, 2 and 3 slices apart (a manifest's ground truth:
    different slices, which a copy rule must never join). Each row: pairs, how many pass --min-corr, median."""
    options, rows = DecodeOptions(), {}

    def row(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
        s = np.array([corr(a, b) for a, b in pairs if a is not None and b is not None])
        return {"pairs": len(s), "passing": int((s >= min_corr).sum()), "median": round(float(np.median(s)), 3) if len(s) else None}

    given: dict[tuple[str, ...], tuple[str, str, str]] = {}
    for f in reviews:
        with f.open(newline="") as fh:
            for r in csv.DictReader(fh):
                given[_pair(r)] = (r["canonical"], r["member"], r.get("verdict", "").strip().lower())
    for verdict in VERDICTS:
        pairs = [(grey(c, None, options), grey(m, None, options)) for c, m, v in given.values() if v == verdict]
        if pairs:
            rows[f"reviewed_{verdict}"] = row(pairs)
    if manifest:
        rng, volumes = random.Random(seed), defaultdict(dict)
        for path, (volume, index) in slices_of(manifest, None).items():
            volumes[volume][index] = path
        for d in (1, 2, 3):
            pairs = []
            for sl in volumes.values():
                near = [(i, i + d) for i in sorted(sl) if i + d in sl]
                pairs += [(grey(sl[i], None, options), grey(sl[j], None, options))
                          for i, j in rng.sample(near, min(per_volume, len(near)))]
            rows[f"neighbours_{d}_apart"] = row(pairs)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", type=Path, help="an ingested home whose clusters are scored (or --score-check)")
    ap.add_argument("--collection", default="images")
    ap.add_argument("--min-corr", type=float, default=0.9)
    ap.add_argument("--sheet", type=Path, help="write a PNG contact sheet of sampled clusters here")
    ap.add_argument("--manifest", type=Path, help="ground truth: CSV with a path column, volume, slice_index")
    ap.add_argument("--manifest-root", type=Path, help="folder the manifest's paths are relative to")
    ap.add_argument("--review", type=Path, help="CSV of the members under --min-corr for a person to judge "
                    "(written with a PNG sheet beside it when missing, read when its verdicts are filled)")
    ap.add_argument("--review-below", type=float, help="review every member scoring under this (default "
                    "--min-corr); higher puts members the score passes before a person too")
    ap.add_argument("--prefill", type=Path, nargs="*", default=[], help="earlier review CSVs whose verdicts are "
                    "copied into a new --review file for the same pairs (a later file's verdict wins)")
    ap.add_argument("--score-check", type=Path, nargs="*", metavar="REVIEW_CSV", help="score the score itself instead: "
                    "the pairs of these review CSVs by verdict, and with --manifest neighbouring slices of one volume")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.score_check is not None:
        rows = score_checked(args.score_check, args.manifest, args.min_corr)
        print(json.dumps(rows) if args.json else "\n".join(f"{k}: {v}" for k, v in rows.items()))
        return
    if args.home is None:
        ap.error("--home is required (or --score-check)")
    clusters = clusters_of(args.home, args.collection)
    result = check(clusters, args.min_corr)
    sizes = np.array([r["size"] for r in result.values()]) if result else np.zeros(1)
    by_tier: dict[str, int] = defaultdict(int)
    for r in result.values():
        by_tier[r["tier"]] += 1
    checked = sum(r["checked"] for r in result.values())
    passed = sum(r["passed"] for r in result.values())
    summary = {
        "home": str(args.home), "clusters": len(result), "clustered_points": int(sizes.sum()) if result else 0,
        "clusters_by_tier": dict(by_tier),
        "size_median": float(np.median(sizes)), "size_p95": float(np.percentile(sizes, 95)), "size_max": int(sizes.max()),
        "member_precision": round(passed / checked, 4) if checked else None, "members_checked": checked,
        "cluster_precision": round(sum(r["all_pass"] for r in result.values()) / len(result), 4) if result else None,
        "min_corr": args.min_corr,
        # copy clusters the Duplicates page and report.html flag as a possible stack of slices (dedup.stacks)
        "flagged_as_stack": sum(flagged_as_stack(members[0].get(P.TIER), (m[P.PATH] for m in members))
                                for members in clusters.values()),
        "worst": sorted(({"cluster": c, "size": r["size"], "failing": r["checked"] - r["passed"]}
                         for c, r in result.items() if not r["all_pass"]), key=lambda x: -x["failing"])[:5],
    }
    if args.manifest:
        summary.update(check_truth(clusters, slices_of(args.manifest, args.manifest_root)))
    if args.sheet:
        sheet(clusters, result, args.sheet)
        summary["sheet"] = str(args.sheet)
    if args.review:
        below = max(args.min_corr, args.review_below or args.min_corr)
        members = sum(len(r["scores"]) for r in result.values())
        summary.update(review(failing_members(clusters, result, below), args.review, members, len(result), args.prefill))
    print(json.dumps(summary) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
