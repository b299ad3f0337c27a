"""Page routing: a sidebar radio mirrored in the URL (`?page=Similar&item=<id>`),
so analysts can share links and Browse can hand an item to Similar without a reload.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

PAGES: tuple[str, ...] = ("Browse", "Similar", "Search", "Duplicates", "Map", "Runs")


def init_from_url() -> None:
    """Seed session state from the URL once per browser session."""
    if st.session_state.get("_nav_init"):
        return
    st.session_state["_nav_init"] = True
    page = st.query_params.get("page", "Browse")
    page = next((p for p in PAGES if p.lower() == str(page).lower()), "Browse")
    st.session_state["page"] = page
    collection = st.query_params.get("collection")
    if collection:
        st.session_state["collection"] = collection
    item = st.query_params.get("item")
    if item:
        st.session_state["sim_item"] = item
        st.session_state["detail_id"] = item


def goto(page: str, **state: Any) -> None:
    """Button callback: switch page and set state (runs before the rerun, so widget keys may change)."""
    st.session_state["page"] = page
    for key, value in state.items():
        st.session_state[key] = value


VIEW_STATE = ("browse", "detail", "sim", "search", "dup", "map")  # prefixes of per-collection page state


def forget_views() -> None:
    """Collection switched: drop the pages' filters, selections and current items (they name another
    collection's values and ids)."""
    for key in list(st.session_state):
        if str(key).split("_", 1)[0].split("-", 1)[0] in VIEW_STATE:
            del st.session_state[key]


def sync_url(page: str) -> None:
    """Keep the address bar in step with the collection, the page and the current item."""
    params = {"page": page}
    if st.session_state.get("collection"):
        params["collection"] = st.session_state["collection"]
    item = st.session_state.get("sim_item") if page == "Similar" else None
    if item:
        params["item"] = item
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)
