"""Thumbnails and full images for the grids, cached per (path, item, size).

Only the images on screen are ever read, so a 50k-item collection costs no
more than a 50-item one per page.
"""

from __future__ import annotations

import io
from pathlib import Path

import streamlit as st
from PIL import Image, ImageDraw

from recommender.decode import decode_file
from recommender.settings import get_settings


def _placeholder(size: int, text: str) -> bytes:
    img = Image.new("RGB", (size, size), (235, 235, 235))
    ImageDraw.Draw(img).text((8, size // 2 - 6), text[:24], fill=(120, 120, 120))
    return _jpeg(img)


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@st.cache_resource(max_entries=4, show_spinner=False)
def _volume_items(path: str) -> dict[str, Image.Image]:
    """Every slice/frame of a volume, decoded once (a page of slices would otherwise decode it per slice)."""
    return {item.key: item.image for item in decode_file(Path(path), get_settings().max_image_pixels)}


def _open(path: str, item_key: str) -> Image.Image:
    """The item's image: the file itself, or the matching slice/frame of a volume."""
    if item_key and item_key != path and "#" in item_key:
        img = _volume_items(path).get(item_key)
        if img is None:
            raise FileNotFoundError(item_key)
        return img
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB") if img.mode not in ("RGB", "L") else img.copy()


@st.cache_data(max_entries=4000, show_spinner=False)
def thumbnail(path: str, item_key: str = "", size: int = 160) -> bytes:
    """JPEG bytes of a square-bounded thumbnail (a grey placeholder when the file is gone)."""
    try:
        img = _open(path, item_key)
    except Exception:
        return _placeholder(size, "missing file")
    img.thumbnail((size, size))
    return _jpeg(img)


@st.cache_data(max_entries=64, show_spinner=False)
def full_image(path: str, item_key: str = "", max_side: int = 900) -> bytes:
    """The detail view's image, bounded so a huge scan does not stall the browser."""
    return thumbnail(path, item_key, max_side)
