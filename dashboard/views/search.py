"""Search: free-text queries (models with a text tower, e.g. CLIP) and query by uploaded image."""

from __future__ import annotations

import streamlit as st

from dashboard import resources
from dashboard.nav import goto
from dashboard.widgets import grid, label_line, ranking_note, score_caption
from recommender import payload as P
from recommender.decode import DecodeError
from recommender.errors import RecommenderError


def _cards(results, fields):
    return [{
        "id": r.id, "path": r.path, "item_key": r.payload.get(P.ITEM_KEY, ""),
        "caption": f"{score_caption(r.score)}  \n{label_line(r.payload, fields)}",
    } for r in results]


def _show(results, fields, key: str) -> None:
    st.markdown(f"**{len(results)} results**{ranking_note(results)}")
    grid(_cards(results, fields), columns=6, key=key,
         stacked=True, actions=[("similar", "Similar", lambda c: goto("Similar", sim_item=c["id"]),
                   "Find items similar to this one")])


def render() -> None:
    resources.require_collection()
    rec = resources.recommender()
    fields = resources.browser().fields()
    st.title("Search")
    k = st.slider("Results (k)", 4, 48, 12, step=4, key="search_k")
    text_tab, image_tab = st.tabs(["Text", "Image"])

    with text_tab:
        try:
            embedder = rec.embedder()
        except RecommenderError as exc:
            resources.show_error(exc)
            embedder = None
        if embedder is not None and not embedder.supports_text:
            st.info(
                f"Text search is not available: this collection was built with **{rec.model_name}**, "
                "an image-only model with no text tower. Ingest into a collection with a CLIP model "
                "(e.g. `--model clip:ViT-B-32:laion2b_s34b_b79k`) to search by text."
            )
        elif embedder is not None:
            query = st.text_input("Describe what you are looking for", key="search_text",
                                  placeholder="a still life with fruit")
            if query.strip():
                try:
                    _show(rec.similar_to_text(query.strip(), k), fields, "search-text")
                except RecommenderError as exc:
                    resources.show_error(exc)

    with image_tab:
        upload = st.file_uploader("Query image (need not be in the collection)",
                                  type=["jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp", "gif"],
                                  key="search_upload")
        if upload is not None:
            try:
                image = rec.decode_image(upload.getvalue(), upload.name)
            except DecodeError as exc:
                st.error(f"Could not use '{upload.name}' as a query: {exc.reason}")
                return
            except RecommenderError as exc:  # the collection's model can't be loaded here
                resources.show_error(exc)
                return
            left, right = st.columns([1, 5])
            left.image(image, caption=upload.name, width="stretch")
            with right:
                try:
                    _show(rec.similar_to_image(image, k), fields, "search-image")
                except RecommenderError as exc:
                    resources.show_error(exc)
