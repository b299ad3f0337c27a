"""What decoding produces and how it is configured: `Item`, `DecodeOptions`, `DecodeError`.

A module of its own so that the raster decoder (`decode.py`) and the DICOM/NIfTI
readers (`medical.py`) share these types without importing each other; callers
import them from `recommender.decode`, the one decode entry point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from recommender.errors import RecommenderError

if TYPE_CHECKING:
    from recommender.settings import Settings

DEFAULT_MAX_DECODED_BYTES = 256 * 2**20  # the Settings default too: a 10,000 x 10,000 1-bit PNG (500 MB decoded) is refused


class DecodeError(RecommenderError):
    """A file that can't become an item; `reason` is shown to the user (the CLI exits 65: bad input data)."""

    exit_code = 65

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class DecodeLimitError(DecodeError):
    """A file refused before decoding because it would exceed a limit (pixels, decoded bytes).

    Its own class so the API can answer 413 (too large) rather than 415 (not an image)."""


@dataclass
class Item:
    """One embeddable image: a plain image file, or one slice/frame of a volume."""

    key: str  # stable identity within a collection: the file path, plus '#<index>' for slices
    path: str  # absolute source file path
    content_hash: str  # sha256 of the item's content (file bytes, plus ':<index>' for slices)
    image: Image.Image  # RGB ("L" with DecodeOptions.grey)
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DecodeOptions:
    """How files are decoded; built from Settings by the pipeline.

    draft_size: smallest short side the model resizes to; JPEGs at least
    twice that are decoded at a reduced DCT scale (1/2, 1/4, 1/8) that still
    covers it, so the model never sees an upsampled image. (Letting the draft
    go below the resize size, down to the crop, was measured and refused:
    genre precision@10 on art-louvre fell from 0.892 to 0.883.) None = full size.

    max_decoded_bytes: refuse a file whose decode would hold more bytes than this (its
    pixels in the mode PIL decodes to plus the RGB conversion), counted from the header
    before any pixel is decoded: a few-KB 1-bit PNG can expand to hundreds of MB.

    grey: for local-feature verification, which works on luminance: a JPEG's Y
    channel as stored (what OpenCV's grayscale decode gives) rather than luma
    recomputed from upsampled RGB, which differs at colour edges.
    """

    max_pixels: int = 100_000_000
    draft_size: int | None = None
    volume_axis: int = 2
    volume_min_foreground: float = 0.01
    grey: bool = False  # luminance ("L") instead of RGB; JPEGs decode their stored luma, no colour round trip
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES  # see decode.decoded_bytes; Settings.max_decoded_bytes
    pseudonymize_key: str | None = None  # DICOM PatientID stored as an HMAC pseudonym under this key

    @classmethod
    def from_settings(cls, settings: "Settings", draft_size: int | None = None) -> "DecodeOptions":
        """Ingest's options: the settings' limits, and JPEG drafts at `draft_size` (the model's
        decode size) when `settings.jpeg_draft` is on."""
        return cls(max_pixels=settings.max_image_pixels, max_decoded_bytes=settings.max_decoded_bytes,
                   draft_size=draft_size if settings.jpeg_draft else None,
                   volume_axis=settings.volume_axis, volume_min_foreground=settings.volume_min_foreground,
                   pseudonymize_key=settings.pseudonymize_key)
