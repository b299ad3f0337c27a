"""Duplicates: clusters found by the dedup engine, for a curator to review.

Clusters are listed by tier and sorted by size, tier, score (the most doubtful first: lowest member
cosine to the canonical) or id, ten a page; each shows its members in a paged grid (eight a row,
sixteen a page, so a 78-member cluster is five short pages, never 78 columns), the canonical
marked, with keep / discard / not-a-duplicate per member file (kept in the catalog). Two members
can be compared side by side: zoomed alike, their pixel difference, and the labels they differ in.
The view and the decisions export as CSV and Parquet, the discarded files as a plain list to delete:
the product never deletes a file itself.

Shows what ingest and `recommender dedupe` write: same-picture clusters (exact, copy),
byte-identical files that share one point (its `copies`), and near clusters. Widget keys are
stable (`dup_sort`, `dup_tier`, `dup-compare-<tier>-<cluster>` ...): browser tests click them.
"""

from __future__ import annotations

import io

import pandas as pd
import streamlit as st
from PIL import Image

from dashboard import resources
from dashboard.images import full_image, thumbnail
from dashboard.nav import goto
from dashboard.widgets import table_exports
from recommender import payload as P
from recommender.browse import (CLUSTER_SORTS, Cluster, Member, cluster_score, clusters_frame, duplicate_clusters,
                                score_clusters, sort_clusters, split_leakage)
from recommender.decode import DecodeError, DecodeOptions
from recommender.dedup.compare import load_member, metadata_difference, pixel_difference, zoom_crop
from recommender.dedup.stacks import STACK_WARNING

PER_PAGE = 10
MEMBERS_PER_ROW = 8
MEMBERS_PER_PAGE = 16
COMPARE_SIDE = 1024  # the compared pair is decoded at most this large on its long side
TIER_CHOICES = ("all", *(t.value for t in P.Tier))
FOCUS = {"centre": (0.5, 0.5), "top left": (0.0, 0.0), "top right": (1.0, 0.0), "bottom left": (0.0, 1.0),
         "bottom right": (1.0, 1.0)}


@st.cache_data(max_entries=8, show_spinner="Reading duplicate clusters…")
def _view(home: str, collection: str, stamp: str, tier: str, sort: str
          ) -> tuple[list[Cluster], bool, pd.DataFrame, pd.DataFrame, dict]:
    """Clusters of a tier (scored, sorted), leakage table, the view as a table, and counts per tier;
    cached until the collection changes."""
    store = resources.store()
    everything = duplicate_clusters(store)
    by_tier = {t: sum(1 for c in everything if c.tier == t) for t in TIER_CHOICES[1:]}
    clusters = everything if tier == "all" else [c for c in everything if c.tier == tier]
    score_clusters(store, clusters)
    clusters = sort_clusters(clusters, sort)
    has_split = any(m.payload.get(P.SPLIT) is not None for c in everything for m in c.members)
    leak = split_leakage(clusters) if has_split else pd.DataFrame()
    table = clusters_frame(clusters, fields=(P.SPLIT,) if has_split else ())
    return clusters, has_split, leak, table, {"all": len(everything), **by_tier}


DECIDE = (
    ("keep", ":material/check:", "Keep this file"),
    ("discard", ":material/delete:", "Discard: never recommend it, list it for deletion"),
    ("not_duplicate", ":material/call_split:", "Not a duplicate of the others: the next dedupe keeps it out of "
     "this cluster"),
)


def _decide(cluster: Cluster, member: Member, decision: str) -> None:
    """Button callback: record a decision on one member file, with the cluster's other members as the
    curator saw them (a not-a-duplicate keeps the file apart from exactly those)."""
    rec = resources.recommender()
    rec.decisions().decide(rec.settings.collection, cluster.cluster_id, member.id, member.path, decision,
                           members=[m.id for m in cluster.members])


def _decision_exports(rec, df: pd.DataFrame) -> None:
    if df.empty:
        return
    counts = df["decision"].value_counts().to_dict()
    st.markdown("**Decisions**: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    table_exports(df, f"decisions-{rec.settings.collection}", "dup_decisions", what="decisions")
    st.download_button("Files to delete (list)", "".join(f"{p}\n" for p in rec.decisions().delete_list(
        rec.settings.collection)).encode(), key="dup_delete_list", file_name="delete-list.txt", mime="text/plain")


def _reset_page() -> None:
    st.session_state["dup_page"] = 0


def render() -> None:
    resources.require_collection()
    cfg = resources.settings()
    st.title("Duplicates")
    left, right = st.columns([3, 2])
    with left:
        tier = st.radio("Tier", TIER_CHOICES, horizontal=True, key="dup_tier", on_change=_reset_page)
    with right:
        sort = st.selectbox("Sort by", list(CLUSTER_SORTS), format_func=CLUSTER_SORTS.get, key="dup_sort",
                            on_change=_reset_page)
    clusters, has_split, leak, table, counts = _view(str(cfg.home), cfg.collection, resources.stamp(), tier, sort)
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
            table_exports(leak, f"leakage-{cfg.collection}-{tier}", "dup_leak_export", what="leakage")
        else:
            st.caption("No cluster crosses splits in this view.")

    n_pages = max(1, -(-len(clusters) // PER_PAGE))
    page = min(int(st.session_state.get("dup_page", 0)), n_pages - 1)
    shown = clusters[page * PER_PAGE:(page + 1) * PER_PAGE]
    table_exports(table, f"duplicates-{cfg.collection}-{tier}", "dup_export", what="this view")

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
            _cluster_card(c, decided)


def _cluster_card(c: Cluster, decided: dict[tuple[str, str], str]) -> None:
    """One cluster: heading, its members a page at a time, and the compare panel when asked for."""
    ck = f"{c.tier}-{c.cluster_id}"
    weakest = cluster_score(c)
    st.markdown(f"**Cluster** `{c.cluster_id}` — tier **{c.tier}** — {len(c.members)} items"
                + (f" — lowest cos **{weakest:.3f}**" if weakest is not None else ""))
    if c.numbered_like_slices:
        st.warning(STACK_WARNING)
    start, stop = _member_page(c, ck)
    width = min(MEMBERS_PER_ROW, max(len(c.members), 4))
    for row in range(start, stop, MEMBERS_PER_ROW):
        cols = st.columns(width)
        for col, n in zip(cols, range(row, min(row + MEMBERS_PER_ROW, stop))):
            _member_tile(col, c, n, decided.get((c.members[n].id, c.members[n].path)))
    if st.toggle("Compare side by side", key=f"dup-compare-{ck}"):
        _compare_panel(c, ck)


def _member_page(c: Cluster, ck: str) -> tuple[int, int]:
    """(start, stop) member positions of the cluster's current page, with its own Prev/Next when the
    cluster has more than one page (state `dup_mpage_<tier>-<cluster>`)."""
    key = f"dup_mpage_{ck}"
    n_pages = max(1, -(-len(c.members) // MEMBERS_PER_PAGE))
    page = min(int(st.session_state.get(key, 0)), n_pages - 1)
    start, stop = page * MEMBERS_PER_PAGE, min(len(c.members), (page + 1) * MEMBERS_PER_PAGE)
    if n_pages > 1:
        nav = st.columns([6, 1, 1])
        nav[0].caption(f"members {start + 1}–{stop} of {len(c.members)} (page {page + 1} of {n_pages})")
        nav[1].button("← Prev", key=f"dup-mprev-{ck}", disabled=page == 0,
                      on_click=lambda: st.session_state.update({key: page - 1}))
        nav[2].button("Next →", key=f"dup-mnext-{ck}", disabled=page >= n_pages - 1,
                      on_click=lambda: st.session_state.update({key: page + 1}))
    return start, stop


def _member_tile(col, c: Cluster, n: int, verdict: str | None) -> None:
    """Member `n` of the cluster: thumbnail, labels, decision and its buttons (keys use `n`, the
    member's place in the whole cluster, so they do not change with the member page)."""
    m = c.members[n]
    col.image(thumbnail(m.path, m.item_key, 200), width="stretch")
    label = "★ **canonical**" if m.canonical else f"tier **{m.tier}**"
    copy = " · same bytes" if m.byte_copy else ""
    score = f" · cos {m.score:.3f}" if m.score is not None else ""
    split = f" · {m.payload[P.SPLIT]}" if m.payload.get(P.SPLIT) is not None else ""
    col.markdown(f"{label}{copy}{score}{split}  \n`{m.name}`" + (f"  \ndecision: **{verdict}**" if verdict else ""))
    col.button("Similar", key=f"dup-sim-{c.tier}-{c.cluster_id}-{n}", on_click=goto,
               args=("Similar",), kwargs={"sim_item": m.id})
    for bcol, (decision, icon, help_) in zip(col.columns(len(DECIDE), gap="small"), DECIDE):
        bcol.button(icon, key=f"dup-{decision}-{c.tier}-{c.cluster_id}-{n}", help=help_,
                    on_click=_decide, args=(c, m, decision))


def _most_doubtful(c: Cluster) -> int:
    """Position of the member least like the canonical (lowest score), the default to compare with."""
    others = [(m.score if m.score is not None else 2.0, n) for n, m in enumerate(c.members) if not m.canonical]
    return min(others)[1] if others else min(1, len(c.members) - 1)


@st.cache_data(max_entries=32, show_spinner="Comparing…")
def _pair(path_a: str, key_a: str, path_b: str, key_b: str) -> tuple[bytes, bytes, bytes, float]:
    """PNG bytes of both images at one size (the smaller's, at most COMPARE_SIDE), of their amplified
    absolute difference, and the mean absolute difference (0-255)."""
    options = DecodeOptions.from_settings(resources.settings())
    a, b = load_member(path_a, key_a, options), load_member(path_b, key_b, options)
    diff, mean = pixel_difference(a, b, max_side=COMPARE_SIDE)
    size = diff.size
    return _png(a.convert("RGB").resize(size)), _png(b.convert("RGB").resize(size)), _png(diff), mean


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _zoomed(data: bytes, factor: float, focus: tuple[float, float]) -> bytes:
    return _png(zoom_crop(Image.open(io.BytesIO(data)), factor, focus)) if factor > 1 else data


def _compare_panel(c: Cluster, ck: str) -> None:
    """Two members side by side (canonical and the most doubtful member unless chosen otherwise),
    zoomed alike, their pixel difference and the labels they differ in."""
    names = [f"{n + 1}. {m.name}" + (" ★" if m.canonical else "") for n, m in enumerate(c.members)]
    pick = st.columns(4)
    canonical = next((n for n, m in enumerate(c.members) if m.canonical), 0)
    ia = pick[0].selectbox("A", range(len(c.members)), index=canonical, format_func=names.__getitem__,
                           key=f"dup-compare-a-{ck}")
    ib = pick[1].selectbox("B", range(len(c.members)), index=_most_doubtful(c), format_func=names.__getitem__,
                           key=f"dup-compare-b-{ck}")
    factor = pick[2].slider("Zoom", 1.0, 8.0, 1.0, 0.5, key=f"dup-zoom-{ck}")
    focus = pick[3].selectbox("Zoom on", list(FOCUS), key=f"dup-focus-{ck}")
    a, b = c.members[ia], c.members[ib]
    try:
        img_a, img_b, diff, mean = _pair(a.path, a.item_key, b.path, b.item_key)
    except DecodeError as exc:
        st.warning(f"Cannot compare: {exc}")
        return
    at = FOCUS[focus]
    cols = st.columns(3)
    cols[0].image(_zoomed(img_a, factor, at), caption=f"A: {a.name}", width="stretch")
    cols[1].image(_zoomed(img_b, factor, at), caption=f"B: {b.name}", width="stretch")
    cols[2].image(_zoomed(diff, factor, at), caption="|A − B| (grayscale, ×4)", width="stretch")
    st.markdown(f"mean absolute difference **{mean:.2f}** of 255"
                + (" — identical pixels" if mean == 0 else ""))
    rows = metadata_difference(a.payload, b.payload)
    if rows:
        st.dataframe(pd.DataFrame([{"field": r["field"], "A": _text(r["a"]), "B": _text(r["b"])} for r in rows]),
                     hide_index=True, width="stretch")
    else:
        st.caption("No label differs.")
    with st.expander("Full resolution"):
        full = st.columns(2)
        full[0].image(full_image(a.path, a.item_key, 4096), caption=f"A: {a.name}")
        full[1].image(full_image(b.path, b.item_key, 4096), caption=f"B: {b.name}")


def _text(value) -> str:
    """A table cell as text (labels mix numbers and words; a missing one shows as a dash)."""
    return "—" if value is None else str(value)
