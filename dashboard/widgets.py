"""Shared pieces of the pages: the thumbnail grid, filter selectors and score labels."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from typing import Any, Callable, Sequence

import pandas as pd
import streamlit as st

from dashboard.images import thumbnail
from recommender import payload as P

ANY = "(any)"


def label_line(payload: dict[str, Any], fields: Sequence[str]) -> str:
    """Short ' · '-joined label values shown under a thumbnail."""
    return " · ".join(str(payload[f]) for f in fields if payload.get(f) not in (None, ""))


def grid(cards: Sequence[dict[str, Any]], columns: int = 6, actions: Sequence[tuple[str, str, Callable, str]] = (),
         key: str = "grid", stacked: bool = False) -> None:
    """Thumbnail cards in rows; each card: image, caption lines, and buttons.

    `cards` hold id, path, item_key, caption (markdown); `actions` are (name, label, callback(card), help),
    and each button's key is `<key>-<name>-<id>` (CSS class `st-key-<key>-<name>-<id>` in the page).
    `stacked` puts buttons one per line (text labels), otherwise side by side (icon labels).
    """
    for start in range(0, len(cards), columns):
        cols = st.columns(columns)
        for col, card in zip(cols, cards[start:start + columns]):
            with col.container(border=True):
                st.image(thumbnail(card["path"], card.get("item_key", "")), width="stretch")
                st.markdown(card["caption"])
                if actions:
                    bcols = [st.container() for _ in actions] if stacked else st.columns(len(actions), gap="small")
                    for bcol, (name, label, cb, help_) in zip(bcols, actions):
                        bcol.button(label, key=f"{key}-{name}-{card['id']}", help=help_, on_click=cb,
                                    args=(card,), width="stretch")


def filter_selectors(fields: Sequence[str], counts: dict[str, dict[Any, int]], prefix: str,
                     container: Any = None, on_change: Callable | None = None) -> dict[str, list[Any]]:
    """One multi-select per field (any of the chosen values), options labelled with their counts;
    returns the active filters."""
    target = container or st
    chosen: dict[str, list[Any]] = {}
    for f in fields:
        key = f"{prefix}_{f}"
        fc = counts.get(f, {})
        current = [v for v in st.session_state.get(key) or [] if v is not None]
        options = list(dict.fromkeys([*fc.keys(), *current]))  # a selection whose count dropped to zero stays
        target.multiselect(f, options, key=key, on_change=on_change, placeholder="any",
                           format_func=lambda v, fc=fc: f"{v} ({fc.get(v, 0)})")
        if st.session_state.get(key):
            chosen[f] = list(st.session_state[key])
    return chosen


def _number(value: float, integer: bool) -> float | int:
    return int(value) if integer else float(value)


def range_selectors(ranges: dict[str, tuple[float, float]], prefix: str, container: Any = None,
                    on_change: Callable | None = None) -> dict[str, dict[str, float]]:
    """A range slider per numeric field and a date range per time field; a range narrows the
    filter only once moved off the field's full extent. Returns {field: {gte, lte}} filters."""
    target = container or st
    chosen: dict[str, dict[str, float]] = {}
    for f, (lo, hi) in ranges.items():
        key = f"{prefix}_range_{f}"
        if f in P.TIME_FIELDS:
            first, last = (datetime.fromtimestamp(t).date() for t in (lo, hi))
            picked = target.date_input(f"{f} (local dates)", (first, last), min_value=first, max_value=last,
                                       key=key, on_change=on_change)
            if isinstance(picked, (list, tuple)) and len(picked) == 2 and tuple(picked) != (first, last):
                start = datetime.combine(picked[0], datetime.min.time()).timestamp()
                end = datetime.combine(picked[1] + timedelta(days=1), datetime.min.time()).timestamp()
                chosen[f] = {"gte": start, "lt": end}
            continue
        integer = P.FIELDS.get(f) is not None and P.FIELDS[f].type == "integer"
        bounds = (_number(lo, integer), _number(hi, integer))
        picked = target.slider(f, bounds[0], bounds[1], bounds, key=key, on_change=on_change)
        if tuple(picked) != bounds:
            chosen[f] = {"gte": float(picked[0]), "lte": float(picked[1])}
    return chosen


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """Parquet bytes of a table, mixed-type columns as text (what a notebook reads back unchanged)."""
    buf = io.BytesIO()
    df.astype({c: "string" for c in df.columns if df[c].dtype == object}).to_parquet(buf, index=False)
    return buf.getvalue()


EAGER_ROWS = 5_000  # tables this small are written on each run (a few ms), not on click


def table_exports(df: pd.DataFrame | Callable[[], pd.DataFrame], name: str, key: str, container: Any = None,
                  what: str = "") -> None:
    """CSV and Parquet downloads of a table (what a spreadsheet and a notebook read); keys `<key>_csv`
    and `<key>_parquet`. Pass a function to build a large table only when a button is clicked.

    A table of at most `EAGER_ROWS` rows already in hand is written at once: a deferred download
    (bytes made on click) depends on the script run that registered it, and a click landing as a
    run ends (a lasso on the map reruns the page) could leave the button waiting in a busy browser."""
    target = container or st
    a, b = target.columns(2)
    label = f"Export {what} " if what else "Export "
    if callable(df) or len(df) > EAGER_ROWS:
        build = df if callable(df) else (lambda: df)
        csv: Any = lambda: build().to_csv(index=False).encode()
        parquet: Any = lambda: parquet_bytes(build())
    else:
        csv, parquet = df.to_csv(index=False).encode(), parquet_bytes(df)
    a.download_button(f"{label}(CSV)", csv, file_name=f"{name}.csv", mime="text/csv", key=f"{key}_csv",
                      width="stretch")
    b.download_button(f"{label}(Parquet)", parquet, file_name=f"{name}.parquet",
                      mime="application/vnd.apache.parquet", key=f"{key}_parquet", width="stretch")


def local_time(t: Any) -> str:
    """Unix seconds as a local, readable time (what people read in tables and captions)."""
    try:
        return datetime.fromtimestamp(float(t)).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def score_caption(score: float) -> str:
    return f"score **{score:.3f}**"


def ranking_note(results) -> str:
    """How the scores were made, when not by plain cosine: the supervised projection names its label."""
    fitted = next((r.reason.get("projection") for r in results if r.reason.get("projection")), None)
    if not fitted:
        return ""
    return (f" — ranked with the projection learned from **{fitted['label']}** "
            f"(score = {1 - fitted['weight']:g} cosine + {fitted['weight']:g} projected cosine)")
