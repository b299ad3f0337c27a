"""Thumbnails and full images for the grids, cached per (path, item, size).

Only the images on screen are ever read, so a 50k-item collection costs no
more than a 50-item one per page. Pixels come from `recommender.decode`, the
decode path ingest uses, so a thumbnail shows what was embedded: EXIF
orientation, mode conversion, the pixel limit, DICOM frames and NIfTI slices.
"""

from __future__ import annotations

import io
from pathlib import Path

import streamlit as st
from PIL import Image, ImageDraw

from recommender.decode import DecodeError, DecodeOptions, decode_file, load_image
from recommender.settings import get_settings


def _placeholder(size: int, text: str) -> bytes:
    img = Image.new("RGB", (size, size), (235, 235, 235))
    ImageDraw.Draw(img).text((8, size // 2 - 6), text[:24], fill=(120, 120, 120))
    return _jpeg(img)


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _options(size: int | None) -> DecodeOptions:
    """Ingest's limits; big JPEGs decode at a reduced DCT scale that still covers the thumbnail."""
    return DecodeOptions.from_settings(get_settings(), draft_size=size)


@st.cache_resource(max_entries=4, show_spinner=False)
def _volume_items(path: str) -> dict[str, Image.Image]:
    """Every slice/frame of a volume, decoded once (a page of slices would otherwise decode it per slice)."""
    return {item.key: item.image for item in decode_file(Path(path), options=_options(None))}


def _open(path: str, item_key: str, size: int) -> Image.Image:
    """The item's image: the file itself, or the matching slice/frame of a volume."""
    if "#" in item_key and item_key != path:
        img = _volume_items(path).get(item_key)
        if img is None:
            raise DecodeError(path, f"has no item {item_key!r}; re-ingest the file")
        return img.copy()
    return load_image(path, _options(size))


@st.cache_data(max_entries=4000, show_spinner=False)
def thumbnail(path: str, item_key: str = "", size: int = 160) -> bytes:
    """JPEG bytes of a square-bounded thumbnail (a grey placeholder naming the problem when the
    file is gone or no longer decodes)."""
    try:
        img = _open(path, item_key, size)
    except DecodeError as exc:
        return _placeholder(size, "missing file" if not Path(path).exists() else exc.reason)
    img.thumbnail((size, size))
    return _jpeg(img)


@st.cache_data(max_entries=64, show_spinner=False)
def full_image(path: str, item_key: str = "", max_side: int = 900) -> bytes:
    """The detail view's image, bounded so a huge scan does not stall the browser."""
    return thumbnail(path, item_key, max_side)
