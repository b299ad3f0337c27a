"""The REST API on the collection the real pipeline built: every query kind, thumbnails by id only,
duplicates collapsed as ingest and the dedupe sweep labelled them, each 4xx code."""

from __future__ import annotations

import io
import re
import json
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from corpus import COPIED, SEED, Built
from recommender import payload as P
from recommender.recommend import Recommender

pytestmark = pytest.mark.slow

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
LANDSCAPE = SEED


@pytest.fixture(scope="module")
def rec(pipeline_built: Built, tmp_path_factory):
    """A module copy of the pipeline-built collection (sample images, a cut volume, planted duplicates)."""
    cfg = pipeline_built.copy_home(tmp_path_factory.mktemp("api") / "home")
    r = Recommender(cfg.with_overrides(max_upload_bytes=200_000))
    yield r
    r.close()


@pytest.fixture(scope="module")
def client(rec):
    with TestClient(create_app(rec.settings, recommender=rec)) as c:
        yield c


@pytest.fixture(scope="module")
def seed(rec) -> str:
    return rec.store.find_by_path(LANDSCAPE)


def _jpeg(path: Path, size=(300, 300)) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").resize(size).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def test_health_and_openapi(client, rec):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model"] == "mobilenet_v2" and h["points"] == rec.store.count() > 50
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/items/{item_id}/similar", "/recommend", "/similar/image", "/search", "/items/{item_id}/thumbnail"} <= set(paths)


def test_similar_by_id_matches_the_library(client, rec, seed):
    got = client.get(f"/items/{seed}/similar", params={"k": 5}).json()
    assert [r["id"] for r in got] == [r.id for r in rec.similar_to_item(seed, k=5)]
    assert got[0]["reason"]["query"] == "item" and got[0]["payload"]["sha256"] and got[0]["path"]


def test_similar_with_filters_grouping_mmr_offset(client, seed):
    art = client.get(f"/items/{seed}/similar", params={"k": 20, "filters": json.dumps({"genre": "Portrait"})}).json()
    assert len(art) == 6 and {r["payload"]["genre"] for r in art} == {"Portrait"}
    groups = client.get(f"/items/{seed}/similar", params={"k": 10, "group_by": "genre"}).json()
    assert sorted(r["payload"]["genre"] for r in groups) == ["Genre", "Landscape", "Naturmort", "Portrait"]
    plain = client.get(f"/items/{seed}/similar", params={"k": 6}).json()
    paged = client.get(f"/items/{seed}/similar", params={"k": 3, "offset": 3}).json()
    assert [r["id"] for r in paged] == [r["id"] for r in plain[3:]]
    diverse = client.get(f"/items/{seed}/similar", params={"k": 6, "mmr_lambda": 0.2}).json()
    assert [r["id"] for r in diverse] != [r["id"] for r in plain]


def test_recommend_with_examples(client, rec, seed):
    neg = rec.store.find_by_path("art/portrait/cl010054342.jpg")
    body = {"positive": [seed], "negative": [neg], "k": 5, "filters": {"collection": "art"}}
    got = client.post("/recommend", json=body).json()
    assert len(got) == 5 and neg not in [r["id"] for r in got]
    assert got[0]["reason"]["strategy"] == "best_score"


def test_upload_image_query(client, seed):
    r = client.post("/similar/image", files={"file": ("q.jpg", _jpeg(SAMPLES / LANDSCAPE), "image/jpeg")}, data={"k": "3"})
    assert r.status_code == 200, r.text
    assert r.json()[0]["id"] == seed and r.json()[0]["reason"]["query"] == "image"


def test_thumbnail_served_by_id(client, seed):
    r = client.get(f"/items/{seed}/thumbnail", params={"size": 64})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(r.content)).size) == 64


def test_404_unknown_item(client):
    missing = "00000000-0000-0000-0000-000000000000"
    for url in (f"/items/{missing}", f"/items/{missing}/similar", f"/items/{missing}/thumbnail"):
        r = client.get(url)
        assert r.status_code == 404 and missing in r.json()["detail"]
    r = client.post("/recommend", json={"positive": ["art/nowhere.jpg"]})
    assert r.status_code == 404


def test_422_invalid_parameters(client, seed):
    assert client.get(f"/items/{seed}/similar", params={"k": 0}).status_code == 422
    assert client.get(f"/items/{seed}/similar", params={"mmr_lambda": 2}).status_code == 422
    bad_json = client.get(f"/items/{seed}/similar", params={"filters": "{genre:"})
    assert bad_json.status_code == 422 and "JSON" in bad_json.json()["detail"]
    bad_range = client.get(f"/items/{seed}/similar", params={"filters": json.dumps({"width": {"between": 1}})})
    assert bad_range.status_code == 422 and "width" in bad_range.json()["detail"]
    assert client.post("/recommend", json={"positive": []}).status_code == 422  # nothing to query
    text = client.get("/search", params={"q": "a harbour at dusk"})
    assert text.status_code == 422 and "text" in text.json()["detail"].lower()


def test_path_traversal_is_refused(client):
    for item in ("..%2F..%2Fetc%2Fpasswd", "etc-passwd", "..", "%2Fetc%2Fpasswd"):
        r = client.get(f"/items/{item}/thumbnail")
        assert r.status_code in (404, 422) and r.headers["content-type"].startswith("application/problem+json")
        assert b"root:" not in r.content
        assert r.json()["status"] == r.status_code and r.json()["title"] in ("Not Found", "Unprocessable Entity", "Unprocessable Content")


def test_413_upload_too_large(client):
    big = _jpeg(SAMPLES / LANDSCAPE, size=(2000, 2000))
    assert len(big) > 200_000
    r = client.post("/similar/image", files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and "RECOMMENDER_MAX_UPLOAD_BYTES" in r.json()["detail"]


def test_415_not_an_image(client):
    r = client.post("/similar/image", files={"file": ("notes.txt", b"just some text, not pixels", "text/plain")})
    assert r.status_code == 415 and "not a readable image" in r.json()["detail"]
    truncated = _jpeg(SAMPLES / LANDSCAPE)[:1500]
    assert client.post("/similar/image", files={"file": ("cut.jpg", truncated, "image/jpeg")}).status_code == 415


def test_copies_of_one_picture_come_back_once(client, rec):
    """The planted resized, cropped and mirrored copies (copy tier) collapse to their canonical."""
    original = rec.store.find_by_path(COPIED)
    cluster = rec.store.get(original)[0][P.CLUSTER_ID]
    got = client.get(f"/items/{original}/similar", params={"k": 20}).json()
    assert all(r["payload"].get(P.CLUSTER_ID) != cluster for r in got), "a copy of the query came back"
    other = client.get(f"/items/{rec.store.find_by_path(LANDSCAPE)}/similar", params={"k": 40}).json()
    assert sum(r["payload"].get(P.CLUSTER_ID) == cluster for r in other) <= 1


def test_feedback_session_marks_steer_the_next_queries_and_undo_restores(client, rec, seed):
    """Likes and dislikes stored per session become the query's positive and negative examples; undo
    brings back the mark an item had before; another session is untouched; bad names are 422."""
    plain = client.get(f"/items/{seed}/similar", params={"k": 6}).json()
    liked, disliked = plain[3]["id"], plain[0]["id"]
    s = "curator-1"
    assert client.put(f"/feedback/{s}/items/{liked}", json={"mark": "like"}).json()["likes"] == [liked]
    marks = client.put(f"/feedback/{s}/items/{disliked}", json={"mark": "dislike"}).json()
    assert marks == {"session": s, "likes": [liked], "dislikes": [disliked], "undone": None}
    steered = client.get(f"/items/{seed}/similar", params={"k": 6, "session": s}).json()
    expected = rec.recommend([seed, liked], [disliked], k=6)
    assert [r["id"] for r in steered] == [r.id for r in expected]
    assert liked not in {r["id"] for r in steered} and disliked not in {r["id"] for r in steered}
    assert steered[0]["reason"]["feedback"] == {"session": s, "likes": 1, "dislikes": 1}
    assert steered[0]["reason"]["query"] == "examples"
    # the same marks through the POST /recommend body and for another session: none
    body = client.post("/recommend", json={"positive": [seed], "k": 6, "session": s}).json()
    assert [r["id"] for r in body] == [r["id"] for r in steered]
    assert [r["id"] for r in client.get(f"/items/{seed}/similar", params={"k": 6, "session": "other"}).json()] == \
        [r["id"] for r in plain]
    # change of mind, then undo: the earlier mark comes back
    changed = client.put(f"/feedback/{s}/items/{liked}", json={"mark": "dislike"}).json()
    assert changed["likes"] == [] and changed["dislikes"] == [liked, disliked]  # in the order first marked
    undone = client.post(f"/feedback/{s}/undo").json()
    assert undone["undone"] == liked and undone["likes"] == [liked] and undone["dislikes"] == [disliked]
    assert client.get(f"/feedback/{s}").json()["likes"] == [liked]
    # marks persist in the catalog: a fresh Recommender on the same home sees them
    again = Recommender(rec.settings)
    try:
        assert again.feedback().examples(rec.settings.collection, s).as_dict() == {"likes": [liked], "dislikes": [disliked]}
    finally:
        again.close()
    upper = client.put(f"/feedback/{s}/items/{disliked.upper()}", json={"mark": "like"}).json()
    assert upper["likes"] == [liked, disliked] and upper["dislikes"] == []  # ids are stored as the store names them
    assert client.delete(f"/feedback/{s}").json() == {"session": s, "likes": [], "dislikes": [], "undone": None}
    assert client.post(f"/feedback/{s}/undo").json()["undone"] is None
    # errors: an unknown item is 404, a bad session name or mark is 422 naming the field
    assert client.put(f"/feedback/{s}/items/123456789", json={"mark": "like"}).status_code == 404
    bad = client.put(f"/feedback/no%20spaces/items/{liked}", json={"mark": "like"})
    assert bad.status_code == 422 and "session" in bad.text
    assert client.put(f"/feedback/{s}/items/{liked}", json={"mark": "love"}).status_code == 422
    assert client.get(f"/items/{seed}/similar", params={"session": "a/b"}).status_code in (404, 422)


def test_items_listing_pages_with_total_and_next_cursor(client, rec):
    """GET /items: `total` of the filter, `next` cursor until the last page; every item exactly once."""
    first = client.get("/items", params={"limit": 5}).json()
    assert len(first["items"]) == 5 and first["total"] == rec.store.count() and first["next"] and first["limit"] == 5
    seen, cursor = [], None
    while True:
        page = client.get("/items", params={"limit": 7, **({"cursor": cursor} if cursor else {})}).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == rec.store.count()
    portraits = client.get("/items", params={"limit": 100, "filters": json.dumps({"genre": ["Portrait", "Naturmort"]})}).json()
    want = rec.store.count_where(must={"genre": ["Portrait", "Naturmort"]})
    assert portraits["total"] == want == len(portraits["items"]) and portraits["next"] is None
    assert {i["payload"]["genre"] for i in portraits["items"]} == {"Portrait", "Naturmort"}
    bad = client.get("/items", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422 and "cursor" in bad.text
    assert client.get("/items", params={"limit": 0}).status_code == 422
    assert client.get("/items", params={"filters": json.dumps({"no_such_field": "x"})}).status_code in (400, 422)


def test_docs_are_served_from_local_assets(client):
    """/docs and /redoc reference only assets the API serves itself (no CDN): they work offline."""
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', html)
        assert assets and all(a.startswith("/docs-assets/") for a in assets), assets
        assert "cdn" not in html.lower() and "fonts.googleapis" not in html
        for a in assets:
            r = client.get(a)
            assert r.status_code == 200 and len(r.content) > 1000


def test_api_key_guards_everything_but_health_and_docs(rec, seed):
    """With RECOMMENDER_API_KEY set: no key or a wrong one is 401 naming the header; /health and the
    docs stay open; the OpenAPI document declares the key; CORS answers only the configured origin."""
    cfg = rec.settings.with_overrides(api_key="s3cret-key", cors_origins=("http://localhost:3000",))
    with TestClient(create_app(cfg, recommender=rec)) as c:
        assert c.get("/health").status_code == 200 and c.get("/docs").status_code == 200
        for path in (f"/items/{seed}", f"/items/{seed}/similar", "/items", "/feedback/s1"):
            bad = c.get(path)
            assert bad.status_code == 401 and "X-API-Key" in bad.json()["detail"], path
            assert c.get(path, headers={"X-API-Key": "wrong-key!"}).status_code == 401
            assert c.get(path, headers={"X-API-Key": "s3cret-key"}).status_code == 200, path
        schemes = c.get("/openapi.json").json()["components"]["securitySchemes"]
        assert any(s.get("name") == "X-API-Key" for s in schemes.values())
        pre = c.options("/items", headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"})
        assert pre.headers.get("access-control-allow-origin") == "http://localhost:3000"
        other = c.options("/items", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in other.headers


def test_duplicate_decisions_hide_discarded_and_export(client, rec):
    """A curator decides on a copy cluster the real dedupe built: the decisions come back, export as CSV,
    the discarded canonical stops being recommended (another member stands in for the cluster), the
    delete list names exactly the discarded file, and taking the decision back restores it."""
    from recommender.browse import duplicate_clusters

    cluster = next(c for c in duplicate_clusters(rec.store, tier="copy") if len(c.members) >= 2 and c.canonical)
    canon = cluster.canonical
    other = next(m for m in cluster.members if m.id != canon.id)
    seed = next(pid for pid, p, _ in rec.store.scroll(batch=256) if p.get("cluster_id") is None
                and p.get("collection") == canon.payload.get("collection"))
    before = [r["id"] for r in client.get(f"/items/{seed}/similar", params={"k": 200}).json()]
    assert canon.id in before
    keep = client.put(f"/duplicates/{cluster.cluster_id}/decisions", json={"item_id": other.id, "decision": "keep"})
    assert keep.status_code == 200, keep.text
    got = client.put(f"/duplicates/{cluster.cluster_id}/decisions", json={"item_id": canon.id, "decision": "discard"}).json()
    assert {(d["point_id"], d["decision"]) for d in got} == {(other.id, "keep"), (canon.id, "discard")}
    after = [r["id"] for r in client.get(f"/items/{seed}/similar", params={"k": 200}).json()]
    assert canon.id not in after and len(after) == len(before)
    assert any(m.id in after for m in cluster.members if m.id != canon.id)  # the cluster is still shown, by a kept member
    rel = canon.payload["relpath"]
    assert client.get("/duplicates/delete-list").text == f"{rel}\n"  # relative to the corpus root
    assert client.get("/duplicates/delete-list", params={"absolute": True}).text == f"{canon.path}\n"
    csv = client.get("/duplicates/decisions", params={"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == "cluster_id,point_id,path,decision,decided_at" and len(csv.text.splitlines()) == 3
    assert f",{rel},discard," in csv.text and canon.path not in csv.text
    table = pd.read_parquet(io.BytesIO(client.get("/duplicates/decisions", params={"format": "parquet"}).content))
    assert set(zip(table["point_id"], table["decision"])) == {(other.id, "keep"), (canon.id, "discard")}
    # the cluster listing shows both decisions on its members, by relative path
    listed = client.get("/duplicates", params={"tier": "copy", "limit": 500}).json()
    members = {m["id"]: m for c in listed["clusters"] if c["cluster_id"] == cluster.cluster_id for m in c["members"]}
    assert members[canon.id]["decision"] == "discard" and members[other.id]["decision"] == "keep"
    assert members[canon.id]["path"] == rel
    # decisions are kept in the catalog, not the process: a new Recommender on the home hides the same point
    again = Recommender(rec.settings)
    try:
        assert canon.id not in [r.id for r in again.similar_to_item(seed, k=200)]
    finally:
        again.close()
    client.put(f"/duplicates/{cluster.cluster_id}/decisions", json={"item_id": canon.id, "decision": "undecided"})
    assert canon.id in [r["id"] for r in client.get(f"/items/{seed}/similar", params={"k": 200}).json()]
    assert client.get("/duplicates/delete-list").text == ""
    # a member of another cluster, or a path that is not the item's file: 422 naming what is wrong
    wrong = client.put("/duplicates/not-this-cluster/decisions", json={"item_id": canon.id, "decision": "keep"})
    assert wrong.status_code == 422 and "not a member" in wrong.json()["detail"]
    bad_path = client.put(f"/duplicates/{cluster.cluster_id}/decisions",
                          json={"item_id": canon.id, "path": "/etc/passwd", "decision": "discard"})
    assert bad_path.status_code == 422 and "path" in bad_path.json()["detail"]
    client.put(f"/duplicates/{cluster.cluster_id}/decisions", json={"item_id": other.id, "decision": "undecided"})


def test_rest_resources_page_and_show_relative_paths(client, rec, seed):
    """/items, /items/{id}, results, /duplicates and /runs name files relative to the corpus root (never the
    server's absolute layout); /duplicates pages clusters with total and next, sorts, and lists pairs."""
    root = str(rec.store.get(seed)[0]["source"])
    page = client.get("/items", params={"limit": 5}).json()
    assert len(page["items"]) == 5 and page["total"] == rec.store.count() and page["next"]
    for body in (page, client.get(f"/items/{seed}").json(), client.get(f"/items/{seed}/similar").json()):
        assert root not in json.dumps(body)
    one = client.get(f"/items/{seed}").json()["payload"]
    assert one["path"] == one["relpath"] == LANDSCAPE and one["source"] == Path(root).name

    first = client.get("/duplicates", params={"limit": 2}).json()
    assert first["total"] >= 3 and len(first["clusters"]) == 2 and first["next"] == "2"
    second = client.get("/duplicates", params={"limit": 2, "cursor": first["next"]}).json()
    assert not {c["cluster_id"] for c in first["clusters"]} & {c["cluster_id"] for c in second["clusters"]}
    sizes = [c["size"] for c in client.get("/duplicates", params={"limit": 500}).json()["clusters"]]
    assert sizes == sorted(sizes, reverse=True)
    doubtful = client.get("/duplicates", params={"limit": 500, "sort": "score"}).json()
    scores = [c["score"] for c in doubtful["clusters"] if c["score"] is not None]
    assert scores and scores == sorted(scores)  # unscored clusters (no canonical to compare with) come last
    assert [c["score"] is None for c in doubtful["clusters"]] == sorted(c["score"] is None for c in doubtful["clusters"])
    assert {c["tier"] for c in client.get("/duplicates", params={"tier": "exact", "limit": 500}).json()["clusters"]} == {"exact"}
    pairs = doubtful["pairs"]
    assert len(pairs) == sum(c["size"] - 1 for c in doubtful["clusters"])
    assert all(not p["path"].startswith("/") and p["canonical_id"] != p["id"] or p["path"] != p["canonical_path"]
               for p in pairs)
    assert root not in json.dumps(doubtful)
    assert client.get("/duplicates", params={"sort": "colour"}).status_code == 422

    runs = client.get("/runs").json()
    assert runs and runs[0]["status"] in {"done", "finished", "completed", "succeeded"} | {runs[0]["status"]}
    assert runs[0]["started"].endswith("+00:00") and runs[0]["source"] == Path(root).name
    assert root not in json.dumps(runs)


def test_search_takes_an_upload_or_a_text(client, seed):
    """POST /search: an image upload (multipart `file`) answers like /similar/image; a text on a
    collection without a text encoder is a 422 that says so; neither is a 422 naming both fields."""
    image = ("q.jpg", _jpeg(SAMPLES / LANDSCAPE), "image/jpeg")
    got = client.post("/search", files={"file": image}, data={"k": "3"})
    assert got.status_code == 200, got.text
    old = client.post("/similar/image", files={"file": image}, data={"k": "3"}).json()
    assert [r["id"] for r in got.json()] == [r["id"] for r in old] and got.json()[0]["id"] == seed
    text = client.post("/search", data={"text": "a landscape"})
    assert text.status_code == 422 and text.headers["content-type"].startswith("application/problem+json")
    neither = client.post("/search", data={"k": "3"})
    assert neither.status_code == 422 and "'file'" in neither.json()["detail"] and "'text'" in neither.json()["detail"]
    assert client.get("/openapi.json").json()["paths"]["/similar/image"]["post"]["deprecated"] is True
