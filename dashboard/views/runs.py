"""Runs: the ingestion history from the catalog, with counts, throughput, duration and failures."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from dashboard import resources
from dashboard.widgets import table_exports
from recommender.runs import run_history


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def runs_frame(runs: list[dict]) -> pd.DataFrame:
    """One row per run with the report's counts flattened."""
    rows = []
    for r in runs:
        rep = r.get("report") or {}
        duration = rep.get("seconds") or ((r["finished_at"] - r["started_at"]) if r.get("finished_at") else None)
        rows.append({
            "started": _when(r.get("started_at")), "finished": _when(r.get("finished_at")),
            "status": r.get("status"), "source": r.get("source"),
            "model": r.get("model"), "scanned": rep.get("scanned"), "new": rep.get("new"),
            "unchanged": rep.get("unchanged"), "duplicate": rep.get("duplicate"), "failed": rep.get("failed"),
            "points": rep.get("points"), "images/s": rep.get("images_per_second"),
            "duration s": round(duration, 2) if duration is not None else None, "run_id": r.get("run_id"),
        })
    return pd.DataFrame(rows)


def ranking_line(report: dict) -> str | None:
    """What the run did to the ranking (the ingest's projection stage), in one sentence; None when it had none."""
    p = report.get("projection") or {}
    if not p:
        return None
    if "error" in p:
        return f"Ranking: learning the projection from **{p['label']}** failed; the previous ranking stays. {p['error']}"
    if "skipped" in p:
        return f"Ranking: plain cosine. {p['skipped']}"
    if p.get("refit") is False:
        return f"Ranking: the projection from **{p['label']}** was kept" + (f" ({p['why']})." if p.get("why") else ".")
    return (f"Ranking: projection learned from **{p['label']}** on {p['trained_on']} items (split {p['split']}), "
            f"blend weight {p['weight']}.")


def render() -> None:
    cfg = resources.settings()
    st.title("Ingestion runs")
    runs = run_history(cfg)
    if not runs:
        st.info(f"No ingestion runs recorded for collection **{cfg.collection}** in `{cfg.catalog_path}`. "
                f"Run `recommender ingest SOURCE --home {cfg.home} --collection {cfg.collection}`.")
        return
    df = runs_frame(runs)
    st.markdown(f"**{len(df)} runs** of collection **{cfg.collection}**")
    st.dataframe(df, hide_index=True, width="stretch")
    table_exports(df, f"runs-{cfg.collection}", "runs_export")
    labels = [f"{row['started']} — {row['status']} — {row['run_id']}" for _, row in df.iterrows()]
    choice = st.selectbox("Run details", labels, key="runs_choice")
    run = runs[labels.index(choice)]
    rep = run.get("report") or {}
    cols = st.columns(5)
    cols[0].metric("scanned", rep.get("scanned", "—"))
    cols[1].metric("new", rep.get("new", "—"))
    cols[2].metric("failed", rep.get("failed", "—"))
    cols[3].metric("images/s", rep.get("images_per_second", "—"))
    cols[4].metric("duration s", rep.get("seconds", "—"))
    if line := ranking_line(rep):
        st.markdown(line)
    if rep.get("templates"):
        sizes = ", ".join(f"{size} px ({share:.0%} of keypoints)" for size, share in rep["templates"].items())
        st.markdown(f"**Templates left out of matching**: {sizes}. Images of these sizes share text or a frame at "
                    "the same place (a slide deck, a viewer's window); their duplicates were judged on the rest of "
                    "each picture.")
    if rep.get("cut_outs"):
        st.markdown(f"**{rep['cut_outs']} pictures** were cut out of their frames (a template's page, a screen "
                    "capture's flat background) and searched as copies of what they show.")
    if rep.get("stage_seconds"):
        st.markdown("**Seconds per stage**")
        st.bar_chart(pd.Series(rep["stage_seconds"], name="seconds"))
    failures = rep.get("failures") or []
    st.markdown(f"**Failures ({len(failures)})**")
    if failures:
        failed = pd.DataFrame(failures, columns=["path", "reason"])
        failed.insert(0, "file", failed["path"].map(lambda p: str(p).rsplit("/", 1)[-1]))
        st.dataframe(failed, hide_index=True, width="stretch")
        table_exports(failed, f"failures-{run.get('run_id')}", "runs_failures_export")
    else:
        st.caption("No file failed in this run.")
