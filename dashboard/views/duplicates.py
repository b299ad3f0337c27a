"""Duplicates: clusters found by the dedup engine, side by side, with tier, scores,
the canonical item marked, split leakage, and a CSV export of the current view.

Shows what ingest and `recommender dedupe` write: same-picture clusters (exact, copy),
byte-identical files that share one point (its `copies`), and near clusters."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import resources
from dashboard.images import thumbnail
from dashboard.nav import goto
from recommender import payload as P
from recommender.browse import clusters_frame, duplicate_clusters, score_clusters, split_leakage

PER_PAGE = 10
TIER_CHOICES = ("all", *(t.value for t in P.Tier))


@st.cache_data(max_entries=8, show_spinner="Reading duplicate clusters…")
def _view(home: str, collection: str, stamp: str, tier: str) -> tuple[list, bool, pd.DataFrame, bytes, dict]:
    """Clusters of a tier (scored), leakage table, CSV export and counts; cached until the collection changes."""
    store = resources.store()
    everything = duplicate_clusters(store)
    by_tier = {t: sum(1 for c in everything if c.tier == t) for t in TIER_CHOICES[1:]}
    clusters = everything if tier == "all" else [c for c in everything if c.tier == tier]
    score_clusters(store, clusters)
    has_split = any(m.payload.get(P.SPLIT) is not None for c in everything for m in c.members)
    leak = split_leakage(clusters) if has_split else pd.DataFrame()
    export = clusters_frame(clusters, fields=(P.SPLIT,) if has_split else ()).to_csv(index=False).encode()
    return clusters, has_split, leak, export, {"all": len(everything), **by_tier}


def render() -> None:
    store = resources.require_collection()
    cfg = resources.settings()
    st.title("Duplicates")
    tier = st.radio("Tier", TIER_CHOICES, horizontal=True, key="dup_tier",
                    on_change=lambda: st.session_state.update(dup_page=0))
    clusters, has_split, leak, export, counts = _view(str(cfg.home), cfg.collection, resources.stamp(), tier)
    if not counts["all"]:
        st.info(
            f"No duplicate clusters in this collection yet. Ingest writes `{P.CLUSTER_ID}`, `{P.TIER}` and "
            f"`{P.CANONICAL}` on same-picture duplicates, and the full sweep adds `{P.NEAR_CLUSTER_ID}`; run it with\n\n"
            f"```\nrecommender dedupe --home {cfg.home} --collection {cfg.collection}\n```\n\n"
            "then reload this page."
        )
        return
    st.markdown(f"**{len(clusters)} clusters** ({sum(len(c.members) for c in clusters)} items) — "
                + ", ".join(f"{t}: {counts[t]}" for t in TIER_CHOICES[1:]))
    if has_split:
        st.subheader(f"Split leakage ({len(leak)} clusters span more than one split)")
        if len(leak):
            st.dataframe(leak, hide_index=True, width="stretch")
        else:
            st.caption("No cluster crosses splits in this view.")

    n_pages = max(1, -(-len(clusters) // PER_PAGE))
    page = min(int(st.session_state.get("dup_page", 0)), n_pages - 1)
    shown = clusters[page * PER_PAGE:(page + 1) * PER_PAGE]
    st.download_button("Export this view as CSV", export,
                       file_name=f"duplicates-{cfg.collection}-{tier}.csv", mime="text/csv", key="dup_export")

    nav = st.columns([6, 1, 1])
    nav[0].caption(f"page {page + 1} of {n_pages}")
    nav[1].button("← Prev", key="dup_prev", disabled=page == 0,
                  on_click=lambda: st.session_state.update(dup_page=page - 1))
    nav[2].button("Next →", key="dup_next", disabled=page >= n_pages - 1,
                  on_click=lambda: st.session_state.update(dup_page=page + 1))

    for c in shown:
        with st.container(border=True):
            st.markdown(f"**Cluster** `{c.cluster_id}` — tier **{c.tier}** — {len(c.members)} items")
            cols = st.columns(max(len(c.members), 4))
            for n, (col, m) in enumerate(zip(cols, c.members)):
                col.image(thumbnail(m.path, m.item_key, 200), width="stretch")
                label = "★ **canonical**" if m.canonical else f"tier **{m.tier}**"
                copy = " · same bytes" if m.byte_copy else ""
                score = f" · cos {m.score:.3f}" if m.score is not None else ""
                split = f" · {m.payload[P.SPLIT]}" if m.payload.get(P.SPLIT) is not None else ""
                col.markdown(f"{label}{copy}{score}{split}  \n`{m.name}`")
                col.button("Similar", key=f"dup-sim-{c.tier}-{c.cluster_id}-{n}", on_click=goto,
                           args=("Similar",), kwargs={"sim_item": m.id})
