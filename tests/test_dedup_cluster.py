"""Connected-component clustering, the canonical policy and tier nesting (pure logic, no images)."""

from __future__ import annotations

import itertools

import numpy as np

from recommender.dedup.cluster import (EVERY_CANONICAL_UP_TO, OTHER_CANONICALS, build_members, build_pictures,
                                       choose_canonical, connected_labels)
from recommender.dedup.hashing import Fingerprint


def fp(id: str, w: int = 10, h: int = 10, seq: float = 0.0, path: str | None = None) -> Fingerprint:
    return Fingerprint(id, path or f"/data/{id}.jpg", w, h, seq, f"sha-{id}", f"px-{id}", 0, 0)


def test_connected_labels_merge_transitively_and_keep_others_apart():
    labels = connected_labels(6, np.array([0, 1, 4, 2]), np.array([1, 2, 5, 0]))  # a cycle and a repeated edge
    assert len(labels) == 6
    assert labels[0] == labels[1] == labels[2]
    assert labels[4] == labels[5]
    assert len({labels[0], labels[3], labels[4]}) == 3
    assert list(connected_labels(3, np.array([], np.int64), np.array([], np.int64))) == [0, 1, 2]


def test_canonical_prefers_the_least_compressed_copy_of_one_size():
    """At one resolution the better-quality file (more bytes per pixel) is kept, whenever it came."""
    q30, q95 = fp("q30", 20, 20, seq=0), fp("q95", 20, 20, seq=9)
    q30.bytes, q95.bytes = 40, 400
    assert [q30, q95][choose_canonical([0, 1], [q30, q95])].id == "q95"
    small = fp("small-but-heavy", 10, 10, seq=0)
    small.bytes = 10_000
    assert [small, q30][choose_canonical([0, 1], [small, q30])].id == "q30"   # resolution still comes first


def test_canonical_prefers_largest_resolution_then_earliest_then_path():
    items = [fp("small", 10, 10, seq=0), fp("big", 20, 20, seq=5), fp("big-late", 20, 20, seq=9)]
    assert items[choose_canonical([0, 1, 2], items)].id == "big"
    tie = [fp("b", 20, 20, seq=1, path="/z/b.jpg"), fp("a", 20, 20, seq=1, path="/a/a.jpg")]
    assert tie[choose_canonical([0, 1], tie)].id == "a"  # same size and time: path decides
    early = [fp("x", 20, 20, seq=3), fp("y", 20, 20, seq=2)]
    assert early[choose_canonical([0, 1], early)].id == "y"


def test_members_are_deterministic_and_tiers_nest():
    items = [fp("a", 30, 30), fp("b"), fp("c"), fp("d"), fp("lonely")]
    edges = [(0, 1, "exact"), (1, 2, "copy"), (2, 3, "near")]
    frames = []
    for perm in itertools.permutations(edges):
        i = np.array([e[0] for e in perm])
        j = np.array([e[1] for e in perm])
        frames.append(build_members(items, i, j, [e[2] for e in perm]))
    for f in frames[1:]:
        assert f.equals(frames[0])
    m = frames[0].set_index("id")
    assert set(m.index) == {"a", "b", "c", "d"}  # singletons are not members
    assert (m["cluster_id"] == "a").all()  # the canonical's id names the cluster
    assert m.loc["a", "canonical"] and not m.loc[["b", "c", "d"], "canonical"].any()
    assert m.loc["b", "tier"] == "exact" and m.loc["c", "tier"] == "copy" and m.loc["d", "tier"] == "near"
    assert (m["cluster_tier"] == "near").all()  # a cluster is only as certain as its weakest link
    assert m.loc["a", "tier"] == "near"


def test_two_clusters_get_their_own_canonicals():
    items = [fp("p", 5, 5), fp("q", 50, 50), fp("r", 7, 7), fp("s", 7, 7, seq=-1)]
    m = build_members(items, np.array([0, 2]), np.array([1, 3]), ["copy", "exact"]).set_index("id")
    assert m.loc["p", "cluster_id"] == "q" and m.loc["q", "canonical"]
    assert m.loc["r", "cluster_id"] == "s"  # same size: the earlier ingest wins
    assert m.loc["r", "tier"] == "exact"


def _stars(df) -> dict[str, set[str]]:
    return {cid: set(g["id"]) for cid, g in df.groupby("cluster_id")}


def test_same_picture_clusters_do_not_chain_look_alikes():
    """A~B and B~C do not make A, B and C one picture: every member must match the canonical."""
    items = [fp("a", 30, 30), fp("b", 20, 20), fp("c"), fp("d"), fp("e")]
    i, j, tiers = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4]), ["copy", "copy", "copy", "near"]
    asked: list[tuple[int, int]] = []

    def never(pairs):
        asked.extend(pairs)
        return [""] * len(pairs)

    df = build_pictures(items, i, j, tiers, never)
    # the policy's canonical (a, the largest) would keep only b; b keeps a and c, each linked to it
    # directly, and d, which matches neither b nor a, is split off: no member rests on a chain
    assert _stars(df) == {"b": {"a", "b", "c"}}
    # only pairs no edge joins are asked about; in a small group every member is tried as the canonical
    assert sorted(asked) == [(0, 2), (0, 3), (1, 3), (2, 0), (3, 0), (3, 1)]
    assert set(df[df.canonical]["id"]) == {"b"} and set(df["tier"]) == {"copy"}
    assert _stars(build_pictures(items, i, j, tiers)) == _stars(df)   # no evidence function: split as well
    everyone = build_pictures(items, i, j, tiers, lambda pairs: ["copy"] * len(pairs))
    assert _stars(everyone) == {"a": {"a", "b", "c", "d"}}      # near edges never join a picture
    for perm in itertools.permutations(range(4)):               # deterministic in the set of edges
        p = list(perm)
        assert _stars(build_pictures(items, i[p], j[p], [tiers[k] for k in p], never)) == _stars(df)


def test_a_poorly_linked_original_keeps_its_edits_together():
    """The original matches every edit, but the edits link to each other more than to it: the bordered
    copy (largest, best linked) and the next best-linked edits would each split the two thumbnails off,
    so the star is built around the original, the one canonical that keeps the whole picture."""
    names = ["orig", "border", "e2", "e3", "e4", "thumb1", "thumb2"]
    items = [fp("orig"), fp("border", 40, 40), fp("e2", 20, 20), fp("e3", 20, 20), fp("e4", 20, 20),
             fp("thumb1", 5, 5), fp("thumb2", 5, 5)]
    edges = [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4), (0, 1), (0, 5), (0, 6)]
    i, j = np.array([a for a, _ in edges]), np.array([b for _, b in edges])

    def original_matches_all(pairs):
        return ["copy" if 0 in pair else "" for pair in pairs]

    df = build_pictures(items, i, j, ["copy"] * len(edges), original_matches_all)
    assert _stars(df) == {"orig": set(names)}


def test_large_groups_try_only_the_best_linked_canonicals():
    """Trying every member is quadratic in a group's size: a small group tries them all, a group larger
    than EVERY_CANONICAL_UP_TO the hub and OTHER_CANONICALS more."""
    def canonicals_tried(n: int) -> int:
        items = [fp(f"m{k}", 10 + k, 10 + k) for k in range(n)]
        calls: list[int] = []

        def never(pairs):
            calls.append(len(pairs))
            return [""] * len(pairs)

        # a path: every canonical keeps at most its two neighbours; a star over the whole group asks
        # about at least n - 3 members, one over a part split off about fewer
        build_pictures(items, np.arange(n - 1), np.arange(1, n), ["copy"] * (n - 1), never)
        return sum(c >= n - 3 for c in calls)

    assert canonicals_tried(6) == 6
    assert canonicals_tried(EVERY_CANONICAL_UP_TO) == EVERY_CANONICAL_UP_TO
    assert canonicals_tried(EVERY_CANONICAL_UP_TO + 4) == 1 + OTHER_CANONICALS


def test_star_tiers_come_from_the_canonical_pair():
    items = [fp("a", 30, 30), fp("b"), fp("c")]
    df = build_pictures(items, np.array([0, 0, 1]), np.array([1, 2, 2]), ["exact", "copy", "exact"])
    rows = {r.id: r for r in df.itertuples()}
    assert rows["b"].tier == "exact" and rows["c"].tier == "copy"
    assert rows["a"].tier == "copy" and rows["a"].cluster_size == 3   # the canonical carries the weakest tier


def test_a_cluster_never_holds_two_slices_of_one_volume():
    """A PNG export of slice 34 matches slices 33, 34 and 35 of its NIfTI volume (neighbouring slices at 1 mm
    pass as copies of another file's slice; its metadata names another volume than the NIfTI file): the
    cluster keeps the export and one slice of the volume, the exact one first, and the neighbours stay out."""
    png = fp("png", 181, 217)
    png.volume, png.slice_index = "colin27_ch2", 34
    nifti = [fp(f"nii{k}", 181, 217) for k in (33, 34, 35)]
    for f, k in zip(nifti, (33, 34, 35)):
        f.volume, f.slice_index = "colin27_ch2.nii.gz", k
    items = [png, *nifti]

    def always(pairs):
        return ["copy"] * len(pairs)

    df = build_pictures(items, np.array([0, 0, 0]), np.array([1, 2, 3]), ["copy", "exact", "copy"], always)
    assert _stars(df) == {"png": {"png", "nii34"}}
    # the volume's own slices are kept apart even when the evidence function calls them copies
    assert build_pictures(items, np.array([1, 2]), np.array([2, 3]), ["copy", "copy"], always).empty
    # two images that are no slices are clustered as before
    plain = [fp("a", 20, 20), fp("b"), fp("c")]
    assert _stars(build_pictures(plain, np.array([0, 0]), np.array([1, 2]), ["copy", "copy"])) == {"a": {"a", "b", "c"}}
