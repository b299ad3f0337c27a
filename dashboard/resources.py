"""Process-wide resources of the dashboard: settings, the Qdrant store, the recommender.

Qdrant's embedded mode locks its folder per process, so the app opens exactly
ONE client per (home, collection) with `st.cache_resource` and reuses it on every
rerun and every browser session; the model is cached the same way by
`recommender.models.cached_embedder`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import streamlit as st

from recommender.browse import Browser, collection_stamp
from recommender.catalog import Catalog
from recommender.errors import NotFoundError, RecommenderError, StoreLockedError
from recommender.settings import Settings, get_settings
from recommender.store import VectorStore, open_store

if TYPE_CHECKING:  # torch loads with the recommender: keep it off the Browse/Runs import path
    from recommender.recommend import Recommender


def settings() -> Settings:
    """Settings from RECOMMENDER_* (what `recommender dashboard` passes in), with the collection the
    analyst picked in the sidebar."""
    cfg = get_settings()
    chosen = st.session_state.get("collection")
    return cfg.with_overrides(collection=chosen) if chosen and chosen != cfg.collection else cfg


def collections() -> list[str]:
    """The collections of the data home (ingested ones, plus the configured one)."""
    cfg = get_settings()
    try:
        catalog = Catalog(cfg.catalog_path)
        try:
            known = catalog.collections()
        finally:
            catalog.close()
    except Exception:  # no catalog yet: only the configured collection
        known = []
    return list(dict.fromkeys([cfg.collection, *known]))


@st.cache_resource(show_spinner="Opening the vector store…")
def _store(home: str, collection: str, url: str | None) -> VectorStore:
    store = open_store(settings())
    store.prefetch()  # the dashboard lives long: warm the index files in the background
    return store


@st.cache_resource(show_spinner=False)
def _recommender(home: str, collection: str, url: str | None) -> "Recommender":
    from recommender.recommend import Recommender

    return Recommender(settings(), store=_store(home, collection, url))


def _key(cfg: Settings) -> tuple[str, str, str | None]:
    return str(cfg.home.resolve()), cfg.collection, cfg.qdrant_url


def store() -> VectorStore:
    """The cached store, or a clear message and a stopped page when it cannot be opened."""
    cfg = settings()
    try:
        return _store(*_key(cfg))
    except StoreLockedError as exc:
        st.error(
            f"**The vector store is busy.** {exc}\n\n"
            "An ingest (or another dashboard/API process) holds the embedded Qdrant folder. "
            "Wait for the ingest to finish and reload this page."
        )
        st.stop()
        raise  # unreachable: st.stop() raises


def recommender() -> "Recommender":
    """The cached recommender over the current collection (stops the page with a hint if it is empty)."""
    cfg = settings()
    s = store()
    if not s.exists():
        empty_collection(cfg)
    try:
        return _recommender(*_key(cfg))
    except NotFoundError:
        empty_collection(cfg)
        raise


def require_collection() -> VectorStore:
    """The store, after checking the collection exists (else an empty state that says how to ingest)."""
    s = store()
    if not s.exists() or s.count() == 0:
        empty_collection(settings())
    return s


def empty_collection(cfg: Settings) -> None:
    """Explain how to fill an empty or missing collection, then stop the page."""
    st.info(
        f"Collection **{cfg.collection}** under `{cfg.home}` has no items yet.\n\n"
        "Ingest a folder first, e.g.\n\n"
        f"```\nrecommender ingest samples/ --metadata samples/metadata.csv --home {cfg.home} --collection {cfg.collection}\n```"
    )
    st.stop()


@st.cache_resource(max_entries=4, show_spinner="Indexing labels…")
def _browser(home: str, collection: str, url: str | None, stamp: str) -> Browser:
    return Browser(_store(home, collection, url), settings())


def stamp() -> str:
    """Changes whenever the collection does: the key of every cached view."""
    return json.dumps(collection_stamp(store()), default=str)


def browser() -> Browser:
    """Filtered pages and facet counts over the current collection (rebuilt when it changes)."""
    require_collection()
    return _browser(*_key(settings()), stamp())


def show_error(exc: RecommenderError) -> None:
    """Expected errors are shown as one clear message, not a traceback."""
    st.error(str(exc))
