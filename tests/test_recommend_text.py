"""Text queries on a CLIP collection: the sample paintings ingested with a tiny open_clip model.

No pretrained CLIP weights can be downloaded here, so the test saves a tiny
random-weight checkpoint: the semantics are meaningless, the mechanics (text
tower -> same vector space -> exact search, over REST too) are what is checked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from api.app import create_app
from flows.ingest import ingest_flow
from recommender.recommend import Recommender
from recommender.settings import get_settings

pytestmark = pytest.mark.slow  # Prefect ingest flows and real models

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
ARCH = "Tiny-ViT-RecText"


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    import open_clip

    root = tmp_path_factory.mktemp("tiny_clip_text")
    config = {"embed_dim": 32,
              "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (root / f"{ARCH}.json").write_text(json.dumps(config))
    open_clip.add_model_config(root / f"{ARCH}.json")
    torch.manual_seed(0)
    torch.save(open_clip.create_model(ARCH).state_dict(), root / "tiny.pt")
    src = root / "art"
    shutil.copytree(SAMPLES / "art", src)
    cfg = get_settings(home=root / "home", model=f"clip:{ARCH}:{root / 'tiny.pt'}", device="cpu")
    report = ingest_flow(str(src), settings=cfg.model_dump(mode="json"))
    assert report["points"] == 24 and report["failed"] == 0
    r = Recommender(cfg)
    yield r
    r.close()


def test_text_query_is_exact_search_with_the_text_tower(rec):
    results = rec.similar_to_text("a portrait of a woman", k=5)
    assert len(results) == 5 and all(r.reason["query"] == "text" for r in results)
    q = rec.embedder().embed_text(["a portrait of a woman"])[0]
    rows = list(rec.store.scroll(with_vectors=True))
    sims = np.stack([v / np.linalg.norm(v) for _, _, v in rows]) @ (q / np.linalg.norm(q))
    top = np.argsort(-sims)[:5]
    assert [r.id for r in results] == [rows[i][0] for i in top]
    np.testing.assert_allclose([r.score for r in results], sims[top], atol=1e-5)


def test_text_with_filters_and_empty_text(rec):
    got = rec.recommend(text="flowers", k=10, filters={"relpath": ["naturmort/" + p.name for p in (SAMPLES / "art/naturmort").iterdir()]})
    assert len(got) == 6 and all(r.path.split("/")[-2] == "naturmort" for r in got)
    with pytest.raises(Exception, match="empty"):
        rec.similar_to_text("  ")


def test_text_search_over_rest(rec):
    with TestClient(create_app(rec.settings, recommender=rec)) as client:
        r = client.get("/search", params={"q": "a landscape", "k": 3})
        assert r.status_code == 200 and [x["id"] for x in r.json()] == [x.id for x in rec.similar_to_text("a landscape", k=3)]
        body = {"text": "a landscape", "negative": [r.json()[0]["id"]], "k": 3}
        pushed = client.post("/recommend", json=body).json()
        assert r.json()[0]["id"] not in [x["id"] for x in pushed] and pushed[0]["reason"]["strategy"] == "best_score"
