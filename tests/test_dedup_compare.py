"""The curator's tools that need no collection: comparing two members, keeping separated pairs
apart in the cluster builders, the decision log's separated pairs, and the review orders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from recommender import payload as P
from recommender.browse import Cluster, Member, cluster_score, clusters_frame, sort_clusters
from recommender.decisions import Decisions
from recommender.dedup import DedupEngine, build_pictures
from recommender.dedup.compare import (common_size, load_member, metadata_difference, pixel_difference,
                                       zoom_crop)
from recommender.dedup.hashing import fingerprint_image

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
ART = sorted((SAMPLES / "art").rglob("*.jpg"))


def _painting(n: int = 0) -> Image.Image:
    with Image.open(ART[n]) as img:
        return img.convert("RGB")


# -- pixel and metadata difference --------------------------------------------------
def test_identical_pixels_differ_by_nothing_and_a_resized_copy_by_little():
    img = _painting()
    diff, mean = pixel_difference(img, img.copy())
    assert mean == 0.0 and diff.mode == "L" and not np.asarray(diff).any()
    half = img.resize((img.width // 2, img.height // 2))
    diff, small = pixel_difference(img, half)
    assert diff.size == half.size          # compared at the smaller size, never blurred up
    other = _painting(5)
    _, large = pixel_difference(img, other)
    assert 0 < small < 10 < large          # a resize is faint noise; another painting is not


def test_an_edited_region_lights_up_in_the_difference_image():
    img = _painting()
    edited = img.copy()
    edited.paste((255, 255, 255), (0, 0, img.width // 4, img.height // 4))
    diff, mean = pixel_difference(img, edited, max_side=max(img.size))
    arr = np.asarray(diff)
    corner = arr[: img.height // 4 - 2, : img.width // 4 - 2]
    rest = arr[img.height // 2:, img.width // 2:]
    assert corner.mean() > 50 and rest.max() == 0 and mean > 0


def test_difference_is_bounded_in_size_and_ignores_colour_mode():
    big = _painting().resize((2000, 1500))
    grey = ImageOps.grayscale(big)
    assert common_size(big, grey, max_side=512) == (512, 384)
    diff, mean = pixel_difference(big, grey, max_side=512)
    assert diff.size == (512, 384) and mean < 1.0


def test_zoom_crops_the_same_place_of_both_images():
    img = Image.fromarray(np.arange(100 * 80, dtype=np.uint32).reshape(80, 100).astype(np.uint8))
    assert zoom_crop(img, 1.0) is img
    z = zoom_crop(img, 4.0, (0.0, 0.0))
    assert z.size == img.size
    assert np.asarray(z)[0, 0] == np.asarray(img)[0, 0]        # top left stays top left
    z = zoom_crop(img, 2.0, (1.0, 1.0))
    assert np.asarray(z)[-1, -1] == np.asarray(img)[-1, -1]    # focus kept inside the image


def test_metadata_difference_lists_only_the_fields_that_differ_sizes_first():
    a = {P.PATH: "/data/a/original.jpg", P.WIDTH: 800, P.HEIGHT: 600, P.BYTES: 120_000, P.FORMAT: "JPEG",
         P.GENRE: "landscape", P.SPLIT: "train", P.PHASH: "ff00", P.CLUSTER_ID: "x"}
    b = {**a, P.PATH: "/data/b/small.png", P.WIDTH: 400, P.HEIGHT: 300, P.BYTES: 50_000, P.FORMAT: "PNG",
         P.SPLIT: None, P.PHASH: "ff01", P.CLUSTER_ID: "x", P.CANONICAL: False}
    rows = metadata_difference(a, b)
    assert [r["field"] for r in rows] == ["file", P.WIDTH, P.HEIGHT, P.BYTES, P.FORMAT, P.PATH, P.SPLIT]
    assert rows[0] == {"field": "file", "a": "original.jpg", "b": "small.png"}
    assert rows[-1] == {"field": P.SPLIT, "a": "train", "b": None}
    assert metadata_difference(a, dict(a)) == []
    assert [r["field"] for r in metadata_difference(a, b, fields=[P.GENRE, P.WIDTH])] == [P.WIDTH]


def test_members_load_through_the_project_decoder_slices_by_key():
    painting = load_member(str(ART[0]), str(ART[0]))
    assert painting.size == _painting().size
    volume = SAMPLES / "volumes" / "itk_kmeans_t1.nii.gz"
    a = load_member(str(volume), f"{volume}#24")
    b = load_member(str(volume), f"{volume}#30")
    assert a.size == b.size and pixel_difference(a, b)[1] > 0


# -- separated pairs in the cluster builders -----------------------------------------
def _items(n: int):
    img = _painting()
    return [fingerprint_image(img, f"p{k}", seq=float(k)) for k in range(n)]


def test_a_forbidden_pair_is_never_one_same_picture_cluster():
    items = _items(4)  # one picture four times: p0 is canonical (earliest)
    i, j = np.array([0, 0, 0, 1]), np.array([1, 2, 3, 2])
    tiers = ["exact"] * 4
    whole = build_pictures(items, i, j, tiers)
    assert whole[P.CLUSTER_ID].nunique() == 1 and len(whole) == 4
    apart = build_pictures(items, i, j, tiers, forbidden={frozenset(("p2", "p0"))})
    by_id = dict(zip(apart["id"], apart[P.CLUSTER_ID]))
    assert "p2" not in by_id or by_id["p2"] != by_id["p0"]
    assert by_id["p1"] == by_id["p3"] == by_id["p0"] == "p0"
    # forbidden with a member, not the canonical: the better-ranked member stays, the other leaves
    apart = build_pictures(items, i, j, tiers, forbidden={frozenset(("p3", "p1"))})
    by_id = dict(zip(apart["id"], apart[P.CLUSTER_ID]))
    assert by_id["p1"] == by_id["p2"] == "p0" and by_id.get("p3") != "p0"


def test_the_engine_drops_forbidden_pairs_before_tiers_and_clusters():
    img = _painting()
    images = [img, img.resize((img.width // 2, img.height // 2)), _painting(7)]
    engine = DedupEngine()
    both = engine.find_images(images, ["a", "b", "c"])
    assert {frozenset(p) for p in both.pairs[["id_a", "id_b"]].itertuples(index=False)} == {frozenset(("a", "b"))}
    items = [fingerprint_image(im, i, seq=float(k)) for k, (im, i) in enumerate(zip(images, "abc"))]
    apart = engine.find_duplicates(items, forbidden={frozenset(("a", "b"))})
    assert apart.pairs.empty and apart.members.empty


# -- the decision log's separated pairs ----------------------------------------------
def test_not_duplicate_pairs_the_file_with_the_members_it_was_decided_against(tmp_path):
    log = Decisions(tmp_path / "catalog.db")
    try:
        assert log.separated_pairs("c") == set()
        log.decide("c", "canon", "m2", "/x/m2.jpg", "not_duplicate", members=["canon", "m1", "m2"])
        log.decide("c", "canon", "m1", "/x/m1.jpg", "keep", members=["canon", "m1", "m2"])
        log.decide("c", "other", "n1", "/x/n1.jpg", "not_duplicate")   # recorded without members (the API)
        log.decide("d", "canon", "m1", "/x/m1.jpg", "not_duplicate")   # another collection
        assert log.separated_pairs("c") == {frozenset(("m2", "canon")), frozenset(("m2", "m1")),
                                            frozenset(("n1", "other"))}
        log.decide("c", "canon", "m2", "/x/m2.jpg", "undecided")        # taken back
        assert log.separated_pairs("c") == {frozenset(("n1", "other"))}
        log.decide("c", "canon", "canon", "/x/canon-copy.jpg", "not_duplicate")  # a byte copy of the canonical
        assert log.separated_pairs("c") == {frozenset(("n1", "other"))}
        assert log.frame("c")["decision"].tolist() == ["not_duplicate", "keep", "not_duplicate"]
    finally:
        log.close()


def test_a_log_written_before_members_were_recorded_still_opens(tmp_path):
    import sqlite3

    db = tmp_path / "catalog.db"
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, collection TEXT NOT NULL, "
                       "cluster_id TEXT NOT NULL, point_id TEXT NOT NULL, path TEXT NOT NULL, decision TEXT NOT NULL, "
                       "at REAL NOT NULL);"
                       "INSERT INTO decisions (collection, cluster_id, point_id, path, decision, at) "
                       "VALUES ('c', 'canon', 'm', '/m.jpg', 'not_duplicate', 1.0);")
    conn.commit()
    conn.close()
    log = Decisions(db)
    try:
        assert log.separated_pairs("c") == {frozenset(("m", "canon"))}
    finally:
        log.close()


# -- review orders -------------------------------------------------------------------
def _cluster(cid: str, tier: str, scores: list[float]) -> Cluster:
    members = [Member("c" + cid, {P.PATH: f"/{cid}/0.jpg"}, tier, True, 1.0)]
    members += [Member(f"{cid}{k}", {P.PATH: f"/{cid}/{k}.jpg"}, tier, False, s) for k, s in enumerate(scores, 1)]
    return Cluster(cid, tier, members)


def test_clusters_sort_by_size_tier_score_and_id():
    a, b, c = _cluster("a", "near", [0.7]), _cluster("b", "copy", [0.99, 0.9, 0.95]), _cluster("c", "exact", [1.0, 1.0])
    assert cluster_score(b) == 0.9 and cluster_score(Cluster("x", "exact", [])) is None
    assert [x.cluster_id for x in sort_clusters([a, b, c], "size")] == ["b", "c", "a"]
    assert [x.cluster_id for x in sort_clusters([a, b, c], "tier")] == ["c", "b", "a"]
    assert [x.cluster_id for x in sort_clusters([c, b, a], "score")] == ["a", "b", "c"]
    assert [x.cluster_id for x in sort_clusters([c, a, b], "id")] == ["a", "b", "c"]
    with pytest.raises(ValueError):
        sort_clusters([a], "colour")
    frame = clusters_frame([b], fields=())
    assert set(frame["cluster_score"]) == {0.9} and len(frame) == 4
