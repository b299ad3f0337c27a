"""Duplicates: clusters found by the dedup engine, side by side, with tier, scores,
the canonical item marked, split leakage, and a CSV export of the current view; a curator
records keep / discard / not-a-duplicate per member (kept in the catalog, exported as CSV and
as the list of files to delete: the product never deletes a file itself).

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


DECIDE = (("keep", ":material/check:", "Keep this file"), ("discard", ":material/delete:", "Discard: never recommend it, "
           "list it for deletion"), ("not_duplicate", ":material/call_split:", "Not a duplicate of the others"))


def _decide(cluster_id: str, member, decision: str) -> None:
    """Button callback: record a decision on one member file."""
    rec = resources.recommender()
    rec.decisions().decide(rec.settings.collection, cluster_id, member.id, member.path, decision)


def _decision_exports(rec, df: pd.DataFrame) -> None:
    if df.empty:
        return
    counts = df["decision"].value_counts().to_dict()
    st.markdown("**Decisions**: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    c1, c2 = st.columns(2)
    c1.download_button("Export decisions (CSV)", df.to_csv(index=False).encode(), key="dup_decisions_csv",
                       file_name=f"decisions-{rec.settings.collection}.csv", mime="text/csv")
    c2.download_button("Files to delete (list)", "".join(f"{p}\n" for p in rec.decisions().delete_list(
        rec.settings.collection)).encode(), key="dup_delete_list", file_name="delete-list.txt", mime="text/plain")


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

    rec = resources.recommender()
    decisions = rec.decisions().frame(cfg.collection)
    _decision_exports(rec, decisions)
    decided = {(r["point_id"], r["path"]): r["decision"] for r in decisions.to_dict("records")}

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
                verdict = decided.get((m.id, m.path))
                col.markdown(f"{label}{copy}{score}{split}  \n`{m.name}`" + (f"  \ndecision: **{verdict}**" if verdict else ""))
                col.button("Similar", key=f"dup-sim-{c.tier}-{c.cluster_id}-{n}", on_click=goto,
                           args=("Similar",), kwargs={"sim_item": m.id})
                for bcol, (decision, icon, help_) in zip(col.columns(len(DECIDE), gap="small"), DECIDE):
                    bcol.button(icon, key=f"dup-{decision}-{c.tier}-{c.cluster_id}-{n}", help=help_,
                                on_click=_decide, args=(c.cluster_id, m, decision))
