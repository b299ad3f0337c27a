"""Report writers: Parquet/CSV tables, JSON summary and a self-contained HTML page."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from recommender.decode import load_image
from recommender.dedup import DedupConfig, DedupEngine, write_reports

ART = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "art-louvre" / "images"
pytestmark = pytest.mark.skipif(not ART.is_dir(), reason="shared corpora not mounted")


def test_write_reports_round_trip(tmp_path):
    src = [ART / "train/Genre/cl010052649.jpg", ART / "train/Portrait/cl010062088.jpg",
           ART / "train/Landscape/cl010064532.jpg"]
    data = tmp_path / "data"
    data.mkdir()
    paths = []
    for k, s in enumerate(src):
        img = load_image(s).resize((160, 160))
        img.save(data / f"{k}.png")
        paths.append(data / f"{k}.png")
    shutil.copy(paths[0], data / "0_copy.png")
    load_image(paths[1]).resize((80, 80)).save(data / "1_small.jpg", quality=90)
    paths += [data / "0_copy.png", data / "1_small.jpg"]
    payloads = [{"split": "train"}, {"split": "train"}, {"split": "train"}, {"split": "test"}, {"split": "train"}]
    res = DedupEngine(DedupConfig(workers=0)).run(paths, payloads=payloads)
    out = tmp_path / "report"
    summary = write_reports(res, out)

    for name in ("clusters", "pairs", "leakage_split_clusters", "leakage_split_pairs"):
        assert (out / f"{name}.parquet").is_file() and (out / f"{name}.csv").is_file()
    clusters = pd.read_parquet(out / "clusters.parquet")
    assert set(clusters["path"]) == {str(p) for p in (paths[0], paths[3], paths[1], paths[4])}
    assert clusters.groupby("cluster_id")["canonical"].sum().tolist() == [1, 1]
    pairs = pd.read_csv(out / "pairs.csv")
    assert {"path_a", "path_b", "tier", "cosine", "phash_distance"} <= set(pairs.columns)
    assert "exact" in set(pairs["tier"])

    js = json.loads((out / "summary.json").read_text())
    assert js == json.loads(json.dumps(summary, default=str))
    members = {m["path"] for c in js["clusters_list"] for m in c["members"]}
    assert str(paths[3]) in members and str(paths[2]) not in members
    assert js["leakage"]["split_pairs"][0]["item_pairs"] == 1

    html = (out / "report.html").read_text()
    assert html.count("<img src='data:image/jpeg;base64,") == 4  # every member, embedded
    assert "canonical" in html and "exact" in html
    b64 = html.split("data:image/jpeg;base64,")[1].split("'")[0]
    assert base64.b64decode(b64)[:2] == b"\xff\xd8"  # a real JPEG
    assert "src='http" not in html and "src='/" not in html  # nothing external
