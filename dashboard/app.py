"""Streamlit entry point: `streamlit run dashboard/app.py` (or `recommender dashboard`).

A thin analyst UI over the `recommender` library: Browse, Similar, Search,
Duplicates, Map and Runs. Configuration comes from RECOMMENDER_* variables.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # `streamlit run` puts dashboard/ on the path, not the repo root
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from dashboard import nav, resources  # noqa: E402
from dashboard.views import browse, duplicates, map as map_view, runs, search, similar  # noqa: E402

RENDER = {
    "Browse": browse.render, "Similar": similar.render, "Search": search.render,
    "Duplicates": duplicates.render, "Map": map_view.render, "Runs": runs.render,
}


def main() -> None:
    st.set_page_config(page_title="Image recommender", page_icon=":material/photo_library:", layout="wide")
    nav.init_from_url()
    cfg = resources.settings()
    with st.sidebar:
        st.markdown("### :material/photo_library: Image recommender")
        names = resources.collections()
        if cfg.collection not in names:
            names.append(cfg.collection)
        st.selectbox("Collection", names, index=names.index(cfg.collection), key="collection",
                     on_change=nav.forget_views)
        page = st.radio("Page", nav.PAGES, key="page", label_visibility="collapsed")
    nav.sync_url(page)
    RENDER[page]()


main()
