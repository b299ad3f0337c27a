"""Shared pieces of the pages: the thumbnail grid, filter selectors and score labels."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import streamlit as st

from dashboard.images import thumbnail

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
                     container: Any = None, on_change: Callable | None = None) -> dict[str, Any]:
    """One selectbox per field, options labelled with their counts; returns the active filters."""
    target = container or st
    chosen: dict[str, Any] = {}
    for f in fields:
        key = f"{prefix}_{f}"
        values = list(counts.get(f, {}).keys())
        current = st.session_state.get(key, ANY)
        if current not in values and current != ANY:
            values.append(current)  # keep a selection whose count dropped to zero visible
        options = [ANY, *values]
        fc = counts.get(f, {})
        target.selectbox(
            f, options, key=key, on_change=on_change,
            format_func=lambda v, fc=fc: v if v == ANY else f"{v} ({fc.get(v, 0)})",
        )
        if st.session_state.get(key, ANY) != ANY:
            chosen[f] = st.session_state[key]
    return chosen


def score_caption(score: float) -> str:
    return f"score **{score:.3f}**"
