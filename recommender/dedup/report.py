"""Writers for a dedup result: Parquet + CSV tables, a JSON summary, one HTML page.

The HTML is self-contained (thumbnails embedded as base64 JPEG) so it can be
attached to a ticket or opened from an air-gapped workstation.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from PIL import Image

from recommender import payload as P
from recommender.decode import DecodeError, DecodeOptions, load_image
from recommender.dedup.cluster import CANONICAL_POLICY
from recommender.dedup.engine import DedupResult
from recommender.dedup.leakage import leakage_report
from recommender.dedup.stacks import STACK_WARNING, flagged_as_stack


def thumbnail_b64(path: str, size: int = 160) -> str | None:
    """Base64 JPEG thumbnail of an image file (None when it can't be decoded any more)."""
    try:
        img = load_image(path, DecodeOptions(draft_size=size))
    except DecodeError:
        return None
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _write_table(df: pd.DataFrame, base: Path) -> list[Path]:
    flat = df.copy()
    for col in flat.columns:  # dict/list columns -> JSON text, so Parquet and CSV agree
        if flat[col].map(lambda v: isinstance(v, (dict, list))).any():
            flat[col] = flat[col].map(lambda v: json.dumps(v, sort_keys=True))
    flat.to_parquet(base.with_suffix(".parquet"), index=False)
    flat.to_csv(base.with_suffix(".csv"), index=False)
    return [base.with_suffix(".parquet"), base.with_suffix(".csv")]


def render_html(result: DedupResult, max_clusters: int = 500, thumb: int = 160,
                leakage: Mapping[str, pd.DataFrame] | None = None) -> str:
    """One page: per cluster, members side by side, canonical outlined, tier on each."""
    s = result.summary()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Duplicate report</title><style>",
        "body{font-family:sans-serif;margin:1em}.c{border:1px solid #ccc;margin:.6em 0;padding:.4em}",
        ".m{display:inline-block;vertical-align:top;margin:.3em;width:%dpx;font-size:11px;word-break:break-all}" % thumb,
        ".m img{max-width:%dpx;max-height:%dpx;border:3px solid transparent}" % (thumb, thumb),
        ".w{color:#a00;font-weight:bold}.canon img{border-color:#2a2}.t{font-weight:bold}.exact{color:#a00}.copy{color:#c60}.near{color:#06c}",
        "</style></head><body>",
        f"<h1>Duplicate report</h1><p>{s['items']} items, {s['clusters']} clusters, "
        f"{s['redundant_items']} redundant items; clusters by tier: {html.escape(json.dumps(s['clusters_by_tier']))}; "
        f"failed: {len(s['failed'])}. Canonical member outlined in green, chosen by: "
        f"{html.escape(CANONICAL_POLICY)}.</p>",
    ]
    if "look_alike_groups" in s:
        parts.append(f"<p>Look-alikes (near tier, not the same picture, never counted as redundant): "
                     f"{s['look_alike_items']} items in {s['look_alike_groups']} groups, listed in look_alike_groups.csv.</p>")
    if leakage:
        for name, df in leakage.items():
            if name.endswith("_pairs") and len(df):
                parts.append(f"<h2>Leakage by {html.escape(name[:-6])}</h2>" + df.to_html(index=False))
    for k, c in enumerate(s["clusters_list"]):
        if k >= max_clusters:
            parts.append(f"<p>... {len(s['clusters_list']) - max_clusters} more clusters in clusters.csv</p>")
            break
        parts.append(f"<div class='c'><div>cluster <code>{html.escape(c[P.CLUSTER_ID])}</code> "
                     f"tier <span class='t {c[P.TIER]}'>{c[P.TIER]}</span>, {c['size']} members</div>")
        if flagged_as_stack(c[P.TIER], (m[P.PATH] for m in c["members"])):
            parts.append(f"<div class='w'>{html.escape(STACK_WARNING)}</div>")
        for m in c["members"]:
            b64 = thumbnail_b64(m[P.PATH], thumb)
            img = f"<img src='data:image/jpeg;base64,{b64}'>" if b64 else "<div>(unreadable)</div>"
            label = "canonical" if m[P.CANONICAL] else m[P.TIER]
            parts.append(f"<div class='m{' canon' if m[P.CANONICAL] else ''}'>{img}<div class='t {m[P.TIER]}'>"
                         f"{label}</div>{html.escape(m[P.PATH])}</div>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)


def write_reports(result: DedupResult, out_dir: str | Path, payloads: Mapping[str, Mapping[str, Any]] | None = None,
                  html_clusters: int = 500) -> dict[str, Any]:
    """Write clusters/pairs (Parquet + CSV), leakage tables, summary.json and report.html; return the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    files += _write_table(result.same_picture(), out / "clusters")
    if result.pictures is not None:  # the look-alike groups beside the same-picture clusters
        files += _write_table(result.members, out / "look_alike_groups")
    files += _write_table(result.pairs, out / "pairs")
    leak = leakage_report(result.same_picture(), payloads, items=result.items)
    for name, df in leak.items():
        files += _write_table(df, out / f"leakage_{name}")
    summary = result.summary()
    summary["leakage"] = {name: df.to_dict("records") for name, df in leak.items() if name.endswith("_pairs")}
    (out / "report.html").write_text(render_html(result, html_clusters, leakage=leak), encoding="utf-8")
    files.append(out / "report.html")
    summary["files"] = [str(f) for f in files + [out / "summary.json"]]
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return summary
