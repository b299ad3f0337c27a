"""Map: a 2-D PCA projection of every embedding (computed once, cached under the
data home), coloured by a chosen label; clicking a point opens it."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import resources
from dashboard.images import thumbnail
from dashboard.nav import goto
from recommender import payload as P
from recommender.browse import projection

alt.data_transformers.disable_max_rows()
MAX_POINTS = 50_000


@st.cache_data(show_spinner="Projecting embeddings to 2-D (once per collection size)…", max_entries=4)
def _projection(home: str, collection: str, count: int) -> pd.DataFrame:
    return projection(resources.store(), resources.settings())


def chart(df: pd.DataFrame, color: str | None) -> alt.Chart:
    """The scatter; only the columns the chart needs travel to the browser."""
    cols = ["x", "y", "id", "name", *([color] if color else [])]
    enc = dict(
        x=alt.X("x:Q", axis=None), y=alt.Y("y:Q", axis=None),
        tooltip=[alt.Tooltip("name:N", title="file"), *([alt.Tooltip(f"{color}:N")] if color else [])],
    )
    if color:
        enc["color"] = alt.Color(f"{color}:N", legend=alt.Legend(orient="right"))
    sel = alt.selection_point(name="pick", fields=["id"], on="click")
    return (alt.Chart(df[cols]).mark_circle(size=28, opacity=0.75).encode(**enc)
            .add_params(sel).properties(height=560))


def render() -> None:
    store = resources.require_collection()
    cfg = resources.settings()
    st.title("Map of the collection")
    df = _projection(str(cfg.home), cfg.collection, store.count())
    labels = [c for c in df.columns if c not in ("id", "x", "y", P.PATH, P.ITEM_KEY)]
    c1, c2 = st.columns([2, 4])
    # labels come metadata table first (see recommender.browse.facet_candidates): colour by its first column
    color = c1.selectbox("Colour by", ["(none)", *labels], key="map_color", index=1 if labels else 0)
    color = None if color == "(none)" else color
    view = df if len(df) <= MAX_POINTS else df.sample(MAX_POINTS, random_state=0)
    view = view.assign(name=view[P.ITEM_KEY].map(lambda s: str(s).rsplit("/", 1)[-1]))
    if color:
        view = view.assign(**{color: view[color].fillna("(unlabelled)")})
    c2.markdown(f"**{len(view)} points** (PCA of {len(df)} embeddings; cached at "
                f"`{cfg.home / 'projections'}`). Click a point to open it.")
    event = st.altair_chart(chart(view, color), on_select="rerun", key="map_chart", width="stretch")
    picked = _picked_id(event)
    if picked:
        st.session_state["map_picked"] = picked
    pid = st.session_state.get("map_picked")
    row = df[df["id"] == pid]
    if pid and len(row):
        r = row.iloc[0]
        with st.container(border=True):
            a, b = st.columns([1, 4])
            a.image(thumbnail(r[P.PATH], r[P.ITEM_KEY], 240), width="stretch")
            b.markdown(f"**{str(r[P.ITEM_KEY]).rsplit('/', 1)[-1]}**  \n"
                       + "  \n".join(f"{l}: {r[l]}" for l in labels if pd.notna(r[l])))
            b.button("Find similar items", key="map_similar", type="primary", on_click=goto,
                     args=("Similar",), kwargs={"sim_item": pid})


def _picked_id(event) -> str | None:
    try:
        points = event["selection"]["pick"]
    except (KeyError, TypeError):
        return None
    if isinstance(points, list) and points:
        return points[0].get("id")
    return None
