"""Similar: the k nearest items of a chosen item, refined by liked/disliked examples,
filters, one-per-group and diversity; updates run as a fragment (no page reload).

Likes and dislikes are kept in the feedback log of the data home under a feedback session (a
name per browser session by default; type a user name to keep them across visits and share them
with the API's `session` parameter), so they steer every next query until undone or cleared."""

from __future__ import annotations

import time
import uuid

import streamlit as st

from dashboard import resources
from dashboard.images import thumbnail
from dashboard.nav import goto
from dashboard.widgets import filter_selectors, grid, label_line, range_selectors, ranking_note, score_caption
from recommender import payload as P
from recommender.browse import get_item
from recommender.errors import RecommenderError


def _session() -> str:
    return (st.session_state.get("feedback_session") or "").strip() or st.session_state["feedback_default"]


def _sync() -> None:
    """The page's example lists from the feedback log (the one place they live)."""
    rec = resources.recommender()
    marks = rec.feedback().examples(rec.settings.collection, _session())
    st.session_state["sim_pos"], st.session_state["sim_neg"] = marks.likes, marks.dislikes


def _mark(pid: str, mark: str) -> None:
    rec = resources.recommender()
    rec.feedback().mark(rec.settings.collection, _session(), pid, mark)
    _sync()


def _add(kind: str, card: dict) -> None:
    """Click on a result: like or dislike it (a later mark replaces an earlier one)."""
    _mark(card["id"], "like" if kind == "sim_pos" else "dislike")


def _remove(kind: str, pid: str) -> None:
    _mark(pid, "clear")


def _undo() -> None:
    rec = resources.recommender()
    rec.feedback().undo(rec.settings.collection, _session())
    _sync()


def _clear() -> None:
    rec = resources.recommender()
    rec.feedback().reset(rec.settings.collection, _session())
    _sync()


def _examples(store, kind: str, title: str) -> None:
    ids = st.session_state.get(kind, [])
    if not ids:
        return
    st.markdown(f"**{title}** ({len(ids)})")
    cols = st.columns(8)
    for col, pid in zip(cols * (len(ids) // 8 + 1), ids):
        item = get_item(store, pid)
        col.image(thumbnail(item.path, item.item_key, 96), width="stretch")
        col.button("remove", key=f"rm-{kind}-{pid}", on_click=_remove, args=(kind, pid))


@st.fragment
def _body(fields: list[str]) -> None:
    from dashboard.query import similar  # imports torch: only when this page is shown

    rec = resources.recommender()
    store = rec.store
    st.text_input("Item (point id or ingested file path)", key="sim_item")
    item_ref = (st.session_state.get("sim_item") or "").strip()
    if not item_ref:
        st.info("Pick an item in **Browse** (button *Similar*) or paste a point id or path above.")
        return
    try:
        seed_id = rec.resolve(item_ref)
        seed = get_item(store, seed_id)
    except RecommenderError as exc:
        resources.show_error(exc)
        return

    c1, c2, c3, c4 = st.columns([2, 2, 2, 2])
    k = c1.slider("Results (k)", 4, 48, 12, step=4, key="sim_k")
    group_by = c2.selectbox("One per group", ["(none)", *fields], key="sim_group")
    diversity = c3.slider("Diversity", 0.0, 0.9, 0.0, step=0.1, key="sim_div",
                          help="0 = pure similarity; higher trades relevance for variety (MMR).")
    with c4.popover("Filters"):
        browser = resources.browser()
        filters = {**filter_selectors(fields, browser.facets(fields), "sim_f"),
                   **range_selectors(browser.ranges(), "sim")}

    left, right = st.columns([1, 5])
    left.image(thumbnail(seed.path, seed.item_key, 240), width="stretch")
    left.caption(f"**query:** {seed.title}  \n{label_line(seed.payload, fields)}")
    with right:
        _examples(store, "sim_pos", ":material/thumb_up: More like")
        _examples(store, "sim_neg", ":material/thumb_down: Less like")
        b1, b2, b3 = st.columns([2, 2, 4])
        if st.session_state.get("sim_pos") or st.session_state.get("sim_neg"):
            b1.button("Clear examples", key="sim_clear", on_click=_clear)
        b2.button("Undo last mark", key="sim_undo", on_click=_undo, icon=":material/undo:")
        b3.text_input("Feedback session", key="feedback_session", on_change=_sync, label_visibility="collapsed",
                      placeholder="Feedback session (your name keeps marks across visits)",
                      help="Likes and dislikes are stored under this name; the REST API's `session` parameter reads them.")

    start = time.perf_counter()
    try:
        results = similar(rec, seed_id, k=k, filters=filters, session=_session(),
                          group_by=None if group_by == "(none)" else group_by, diversity=diversity)
    except RecommenderError as exc:
        resources.show_error(exc)
        return
    elapsed = time.perf_counter() - start
    st.markdown(f"**{len(results)} results** in {elapsed * 1000:.0f} ms"
                + (f" — filters: {filters}" if filters else "") + ranking_note(results))
    st.session_state["sim_last"] = [(r.id, r.score) for r in results]
    cards = [{
        "id": r.id, "path": r.path, "item_key": r.payload.get(P.ITEM_KEY, ""),
        "caption": f"{score_caption(r.score)}  \n{label_line(r.payload, fields)}",
    } for r in results]
    grid(cards, columns=4, key="sim",
         actions=[("like", ":material/thumb_up:", lambda c: _add("sim_pos", c), "More like this (positive example)"),
                  ("dislike", ":material/thumb_down:", lambda c: _add("sim_neg", c), "Less like this (negative example)"),
                  ("open", ":material/open_in_new:", lambda c: goto("Similar", sim_item=c["id"]),
                   "Make this the query item")])


def render() -> None:
    resources.require_collection()
    st.title("Similar items")
    st.session_state.setdefault("feedback_default", f"dashboard-{uuid.uuid4().hex[:12]}")
    _sync()
    _body(resources.browser().fields())
