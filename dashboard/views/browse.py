"""Browse: a filtered, paginated thumbnail grid with facet counts and an item detail view."""

from __future__ import annotations

import streamlit as st

from dashboard import resources
from dashboard.images import full_image
from dashboard.nav import goto
from dashboard.widgets import filter_selectors, grid, label_line, local_time, range_selectors, table_exports
from recommender import payload as P
from recommender.browse import get_item, item_cluster, volume_neighbours
from recommender.errors import NotFoundError

PAGE_SIZES = (24, 48, 96)


def _reset_page() -> None:
    st.session_state["browse_page"] = 0


def _detail(store, point_id: str, fields: list[str]) -> None:
    try:
        item = get_item(store, point_id)
    except NotFoundError as exc:
        st.warning(str(exc))
        return
    with st.container(border=True):
        head, close = st.columns([6, 1])
        head.subheader(item.title)
        close.button("Close", key="detail_close", on_click=goto, args=("Browse",), kwargs={"detail_id": None})
        left, right = st.columns([3, 2])
        left.image(full_image(item.path, item.item_key), width="stretch")
        with right:
            st.button("Find similar items", key="detail_similar", type="primary", on_click=goto,
                      args=("Similar",), kwargs={"sim_item": item.id})
            st.caption(f"id `{item.id}`")
            _slice_navigation(store, item)
            st.dataframe(
                [{"field": k, "value": local_time(v) if k in P.TIME_FIELDS else str(v)}
                 for k, v in sorted(item.payload.items())],
                hide_index=True, width="stretch",
            )
        cluster = item_cluster(store, item)
        if cluster is not None:
            st.markdown(f"**Duplicate cluster** `{cluster.cluster_id}` — tier **{cluster.tier}**, "
                        f"{len(cluster.members)} items")
            cards = [{
                "id": m.id, "path": m.path, "item_key": m.item_key,
                "caption": ("★ **canonical**" if m.canonical else f"tier {m.tier}")
                + (" · same bytes" if m.byte_copy else "")
                + (f" · cos {m.score:.3f}" if m.score is not None else "")
                + ("  ← this item" if m.id == item.id and not m.byte_copy else ""),
            } for m in cluster.members]
            grid(cards, columns=6, key="detail-cluster")
        else:
            st.caption("Not in a duplicate cluster (or `recommender dedupe` has not been run).")


def _slice_navigation(store, item) -> None:
    """Previous / next slice of the same volume (NIfTI file, DICOM series or multi-frame file)."""
    where = volume_neighbours(store, item)
    if where is None:
        return
    prev_id, position, count, next_id = where
    a, b, c = st.columns([1, 2, 1])
    a.button("← Slice", key="detail_prev_slice", disabled=prev_id is None, on_click=goto, args=("Browse",),
             kwargs={"detail_id": prev_id}, help="Previous slice of this volume")
    b.markdown(f"slice **{position + 1}** of {count}")
    c.button("Slice →", key="detail_next_slice", disabled=next_id is None, on_click=goto, args=("Browse",),
             kwargs={"detail_id": next_id}, help="Next slice of this volume")


def _open_detail(card: dict) -> None:
    st.session_state["detail_id"] = card["id"]


def _open_similar(card: dict) -> None:
    goto("Similar", sim_item=card["id"])


def render() -> None:
    store = resources.require_collection()
    browser = resources.browser()
    total_all = store.count()
    st.title("Browse")
    fields = browser.fields()

    with st.sidebar:
        st.subheader("Filters")
        with st.expander("Ranges", expanded=False):
            ranged = range_selectors(browser.ranges(), "browse", on_change=_reset_page)
        current = {f: st.session_state.get(f"browse_f_{f}") for f in fields}
        current = {**{k: v for k, v in current.items() if v}, **ranged}
        counts = browser.facets(fields, current)
        filters = {**filter_selectors(fields, counts, "browse_f", on_change=_reset_page), **ranged}
        size = st.selectbox("Items per page", PAGE_SIZES, key="browse_size", on_change=_reset_page)

    if st.session_state.get("detail_id"):
        _detail(store, st.session_state["detail_id"], fields)

    page_no = int(st.session_state.get("browse_page", 0))
    page = browser.page(filters, page_no, size)
    n_pages = max(1, -(-page.total // size))
    page_no = min(page_no, n_pages - 1)

    info, prev, nxt = st.columns([6, 1, 1])
    info.markdown(
        f"**{page.total}** items match"
        + (f" (of {total_all})" if filters else "")
        + f" — page {page_no + 1} of {n_pages}"
    )
    prev.button("← Prev", key="browse_prev", disabled=page_no == 0,
                on_click=lambda: st.session_state.update(browse_page=page_no - 1))
    nxt.button("Next →", key="browse_next", disabled=page.next_offset is None,
               on_click=lambda: st.session_state.update(browse_page=page_no + 1))

    with st.expander(f"Export the {page.total} matching items"):
        table_exports(lambda: browser.frame(filters), f"items-{resources.settings().collection}", "browse_export")

    cards = [{
        "id": it.id, "path": it.path, "item_key": it.item_key,
        "caption": f"**{it.title}**  \n{label_line(it.payload, fields)}"
        + ("  \n:material/content_copy: dup " + str(it.payload.get(P.TIER)) + (" ★" if it.payload.get(P.CANONICAL) else "")
           if it.payload.get(P.CLUSTER_ID) else ""),
    } for it in page.items]
    grid(cards, columns=6, key="browse", stacked=True,
         actions=[("details", "Details", _open_detail, "Show the image and its metadata"),
                  ("similar", "Similar", _open_similar, "Find similar items")])
