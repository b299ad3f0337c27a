"""Map: the stored 2-D layout of the collection (UMAP of the embeddings, computed by the
pipeline's map stage, `recommender.maps`), coloured by any facet.

Lasso or box selection lists the selected items as a paged grid and exports them
(CSV, Parquet); clicking one point opens it, with "Find similar items". The page only
reads the stored layout: when there is none, a button computes it.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
import streamlit as st

from dashboard import resources
from dashboard.images import thumbnail
from dashboard.nav import goto
from dashboard.widgets import grid, table_exports
from recommender import payload as P
from recommender.maps import BASE_COLUMNS, compute_layout, layout_info, layout_path, load_layout

MAX_POINTS = 50_000  # drawn at most (a fixed sample above); selection and export cover the drawn points
MAX_COLOURS = 20  # facet values with their own colour; the rarer ones share "(other)"
PAGE_SIZE = 24
UNLABELLED, OTHER = "(unlabelled)", "(other)"


@st.cache_data(show_spinner="Reading the stored map…", max_entries=4)
def _layout(home: str, collection: str, count: int, stamp: int) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """The stored layout, re-read when the point count or the file changes (`stamp`: its mtime)."""
    df = load_layout(resources.store(), resources.settings())
    return df, (layout_info(df) if df is not None else {})


def _file_stamp() -> int:
    path = layout_path(resources.settings())
    return path.stat().st_mtime_ns if path.exists() else 0


def name_of(item_key: str) -> str:
    """What the analyst sees for a point: the file name (plus '#index' for a slice or frame)."""
    return str(item_key).rsplit("/", 1)[-1]


def labels_of(df: pd.DataFrame) -> list[str]:
    """Facet columns some point carries, in the layout's order (metadata table first)."""
    return [c for c in df.columns if c not in BASE_COLUMNS and df[c].notna().any()]


def colour_values(values: pd.Series) -> pd.Series:
    """Facet values as legend entries: missing ones unlabelled, beyond the commonest MAX_COLOURS 'other'."""
    values = values.fillna(UNLABELLED).astype(str)
    keep = set(values.value_counts().index[:MAX_COLOURS])
    return values.where(values.isin(keep), OTHER)


def figure(view: pd.DataFrame, color: str | None) -> tuple[go.Figure, list[list[int]]]:
    """The scatter (WebGL, one trace per colour), and each trace's rows of `view` (to read selections)."""
    groups = colour_values(view[color]) if color else pd.Series("points", index=view.index)
    fig, rows = go.Figure(), []
    order = sorted(groups.value_counts().items(), key=lambda vc: (vc[0] in (UNLABELLED, OTHER), -vc[1]))
    palette = qualitative.T10 if len(order) <= 10 else qualitative.Alphabet  # distinct hues, not the theme's blues
    for n, (value, _) in enumerate(order):  # commonest first; unlabelled and other last, in grey
        pos = [int(i) for i in (groups.to_numpy() == value).nonzero()[0]]
        part = view.iloc[pos]
        colour = "#b0b0b0" if value in (UNLABELLED, OTHER) else palette[n % len(palette)]
        marker = {"size": 7, "opacity": 0.8, "color": colour}
        fig.add_trace(go.Scattergl(
            x=part["x"], y=part["y"], mode="markers", name=str(value), customdata=pos, hovertext=part["name"],
            hovertemplate="%{hovertext}<extra>" + (f"{color}: {value}" if color else "") + "</extra>",
            marker=marker))
        rows.append(pos)
    fig.update_layout(height=600, margin={"l": 0, "r": 0, "t": 36, "b": 0}, dragmode="lasso",
                      showlegend=bool(color), legend={"title": {"text": color or ""}},
                      xaxis={"visible": False}, yaxis={"visible": False})
    return fig, rows


def selected_rows(event: Any, traces: Sequence[Sequence[int]]) -> list[int]:
    """Rows of the drawn view that a plotly selection event names (click, box or lasso), in view order."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return []
    rows: set[int] = set()
    for p in points or []:
        data = p.get("customdata")
        if isinstance(data, list):
            data = data[0] if data else None
        if isinstance(data, (int, float)):
            rows.add(int(data))
        elif p.get("curve_number") is not None and p.get("point_index") is not None:
            rows.add(int(traces[p["curve_number"]][p["point_index"]]))
    return sorted(rows)


def export_frame(selection: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """What the export buttons write: id, file (relpath, path, item_key), map coordinates, facet values."""
    return selection[["id", P.RELPATH, P.PATH, P.ITEM_KEY, "x", "y", *labels]].reset_index(drop=True)


def _compute_button(store, cfg) -> None:
    """No stored map yet: say why, and offer to compute it here."""
    st.info("No map is stored for this collection yet. Each ingest stores one unless "
            "`RECOMMENDER_MAP_LAYOUT=off`; `recommender map` computes it from the command line.")
    if st.button("Compute map", key="map_compute", type="primary"):
        method = "umap" if cfg.map_layout == "off" else cfg.map_layout
        with st.spinner(f"Computing the map ({method.upper()} of {store.count()} embeddings)…"):
            compute_layout(store, cfg, method=method)
        _layout.clear()
        st.rerun()


def _one_point(row: pd.Series, labels: Sequence[str]) -> None:
    """A single clicked point: its picture, labels and the way on to Similar."""
    with st.container(border=True):
        a, b = st.columns([1, 4])
        a.image(thumbnail(row[P.PATH], row[P.ITEM_KEY], 240), width="stretch")
        b.markdown(f"**{name_of(row[P.ITEM_KEY])}**  \n"
                   + "  \n".join(f"{l}: {row[l]}" for l in labels if pd.notna(row[l])))
        b.button("Find similar items", key="map_similar", type="primary", on_click=goto,
                 args=("Similar",), kwargs={"sim_item": row["id"]})


def _selection(selection: pd.DataFrame, labels: Sequence[str], collection: str) -> None:
    """The selected points: export buttons, then a paged grid of their thumbnails."""
    out = export_frame(selection, labels)
    info, exports = st.columns([4, 4])
    info.markdown(f"**{len(out)} selected**")
    table_exports(out, f"{collection}-map-selection", "map_export", container=exports, what="selection")
    if len(out) == 1:
        _one_point(selection.iloc[0], labels)
        return
    _selection_grid(selection, labels)


def _selection_grid(selection: pd.DataFrame, labels: Sequence[str]) -> None:
    key = hash(tuple(selection["id"]))
    if st.session_state.get("map_sel_key") != key:  # a new selection starts on its first page
        st.session_state.update(map_sel_key=key, map_sel_page=0)
    n_pages = max(1, -(-len(selection) // PAGE_SIZE))
    page = min(int(st.session_state.get("map_sel_page", 0)), n_pages - 1)
    info, prev, nxt = st.columns([6, 1, 1])
    info.caption(f"page {page + 1} of {n_pages}")
    prev.button("← Prev", key="map_sel_prev", disabled=page == 0,
                on_click=lambda: st.session_state.update(map_sel_page=page - 1))
    nxt.button("Next →", key="map_sel_next", disabled=page >= n_pages - 1,
               on_click=lambda: st.session_state.update(map_sel_page=page + 1))
    rows = selection.iloc[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
    cards = [{"id": r["id"], "path": r[P.PATH], "item_key": r[P.ITEM_KEY],
              "caption": f"**{name_of(r[P.ITEM_KEY])}**  \n"
              + " · ".join(str(r[l]) for l in labels[:3] if pd.notna(r[l]))} for _, r in rows.iterrows()]
    grid(cards, columns=6, key="map_sel", stacked=True,
         actions=[("similar", "Similar", lambda card: goto("Similar", sim_item=card["id"]), "Find similar items")])


def render() -> None:
    store = resources.require_collection()
    cfg = resources.settings()
    st.title("Map of the collection")
    df, info = _layout(str(cfg.home), cfg.collection, store.count(), _file_stamp())
    if df is None:
        _compute_button(store, cfg)
        return
    labels = labels_of(df)
    c1, c2 = st.columns([2, 4])
    # labels come metadata table first (see recommender.browse.facet_candidates): colour by its first column
    color = c1.selectbox("Colour by", ["(none)", *labels], key="map_color", index=1 if labels else 0)
    color = None if color == "(none)" else color
    view = df if len(df) <= MAX_POINTS else df.sample(MAX_POINTS, random_state=0)
    view = view.reset_index(drop=True).assign(name=lambda v: v[P.ITEM_KEY].map(name_of))
    method = str(info.get("method", "?")).upper()
    note = f"; {info['note']}" if info.get("note") else ""
    c2.markdown(f"**{len(view)} points** ({method} layout of {len(df)} embeddings{note}; stored at "
                f"`{layout_path(cfg)}`). Lasso or box-select points to list and export them; click one to open it.")
    fig, traces = figure(view, color)
    event = st.plotly_chart(fig, on_select="rerun", selection_mode=("points", "box", "lasso"), key="map_chart",
                            width="stretch", config={"displaylogo": False})
    rows = selected_rows(event, traces)
    if rows:
        _selection(view.iloc[rows], labels, cfg.collection)
    else:
        st.caption("Nothing selected yet.")
