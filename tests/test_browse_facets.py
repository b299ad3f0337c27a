"""Facets from the payload on a collection the real pipeline built: any-of filters, numeric ranges
and the exported table agree with the store's own filtered counts, and volume slices know their
neighbours."""

from __future__ import annotations

import pytest

from recommender import payload as P
from recommender.browse import Browser, Item, volume_neighbours
from recommender.store import open_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def opened(pipeline_built, tmp_path_factory):
    cfg = pipeline_built.copy_home(tmp_path_factory.mktemp("facets") / "home")
    store = open_store(cfg)
    yield store, Browser(store, cfg)
    store.close()


@pytest.mark.parametrize("filters", [
    {P.GENRE: ["Landscape", "Portrait"]},
    {P.WIDTH: {"gte": 200, "lte": 400}},
    {P.GENRE: ["Landscape"], P.WIDTH: {"gt": 100}},
    {P.SLICE_INDEX: {"lt": 3}},
])
def test_table_filters_match_the_store(opened, filters):
    """The dashboard's in-process label table and the vector engine's indexed filter give the same items."""
    store, browser = opened
    table = browser.frame(filters)
    assert len(table) == store.count_where(must=filters) > 0
    assert browser.page(filters, 0, 1000).total == len(table)
    assert set(table["id"]) == {pid for pid, _, _ in store.scroll_where(must=filters, limit=10_000)[0]}


def test_ranges_and_export_columns(opened):
    store, browser = opened
    ranges = browser.ranges()
    widths = [p[P.WIDTH] for _, p, _ in store.scroll() if isinstance(p.get(P.WIDTH), int)]
    assert ranges[P.WIDTH] == (min(widths), max(widths))
    assert P.INGESTED_AT in ranges or len({p.get(P.INGESTED_AT) for _, p, _ in store.scroll()}) == 1
    table = browser.frame()
    assert len(table) == store.count() and {"id", P.RELPATH, P.GENRE, P.WIDTH} <= set(table.columns)
    assert not table[P.RELPATH].dropna().str.startswith("/").any()
    assert P.RELPATH not in browser.fields() and P.WIDTH not in browser.fields()


def test_volume_neighbours_walk_a_nifti_volume_in_slice_order(opened):
    store, _ = opened
    slices = sorted((p[P.SLICE_INDEX], pid, p) for pid, p, _ in store.scroll()
                    if str(p.get(P.PATH, "")).endswith("t1_cut.nii.gz"))
    first = volume_neighbours(store, Item(slices[0][1], slices[0][2]))
    assert first == (None, 0, len(slices), slices[1][1])
    last = volume_neighbours(store, Item(slices[-1][1], slices[-1][2]))
    assert last == (slices[-2][1], len(slices) - 1, len(slices), None)
    painting = next((pid, p) for pid, p, _ in store.scroll() if p.get(P.GENRE))
    assert volume_neighbours(store, Item(*painting)) is None
