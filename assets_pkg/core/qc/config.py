"""Settings of plate checking: read limits, and per-field image quality (what is a defect, and what
to do with a field that has one)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config import LibConfig
from ..imaging.io import DEFAULT_LIMITS, ImageLimits
from ..imaging.plates import MetadataLimits

__all__ = ["DEFECT_KINDS", "DefectAction", "PlateQCConfig"]

#: The per-field image defects looked for, in the order they are reported.
DEFECT_KINDS: tuple[str, ...] = ("blank", "saturated", "out_of_focus", "debris")

#: What a defect does: ``exclude`` the field from ingest (recorded, with a warning), ``block``
#: the plate (the ``images`` suite fails), or ``warn`` only.
DefectAction = Literal["exclude", "block", "warn"]

_ACTION_HELP = ("exclude: ingest skips the field and records it (a warning); block: validation fails; "
                "warn: reported only.")


class PlateQCConfig(LibConfig):
    """How a plate folder is checked before ingest, besides its metadata rules.

    Read limits protect the reader from hostile files (checked before parsing or decoding);
    the image quality fields say what a blank, saturated, out-of-focus or debris field is and
    what happens to a field that has one (:mod:`assets_pkg.core.qc.fields`).
    """

    metadata_max_bytes: int = Field(
        MetadataLimits().max_bytes, ge=1, description="Largest metadata.csv read, in bytes (checked with stat before "
                                                      "reading).")
    metadata_max_rows: int = Field(
        MetadataLimits().max_rows, ge=1, description="Most data lines of metadata.csv (counted before parsing).")
    image_max_pixels: int = Field(
        DEFAULT_LIMITS.max_plane_pixels, ge=1, description="Most pixels per image plane, as the TIFF/PNG header "
                                                           "declares them (checked before decoding).")

    blank: DefectAction = Field("exclude", description="Blank channel (no signal above the camera noise). "
                                + _ACTION_HELP)
    saturated: DefectAction = Field("exclude", description="Saturated channel (too many pixels at the bit depth's "
                                    "maximum). " + _ACTION_HELP)
    out_of_focus: DefectAction = Field("exclude", description="Out-of-focus field (fine detail far below the "
                                       "plate's other fields). " + _ACTION_HELP)
    debris: DefectAction = Field("exclude", description="Debris (a bright object longer than a nucleus, far "
                                 "above the field's own bright structures). " + _ACTION_HELP)

    blank_snr: float = Field(
        5.0, ge=0, description="A channel is blank when its brightest structure (99.9th percentile of a 2-16 px "
                               "band-pass) is below this many times the camera noise (pure noise gives 1).")
    saturated_fraction: float = Field(
        0.01, gt=0, le=1, description="A channel is saturated when more than this fraction of its pixels sit at "
                                      "2**bit_depth - 1 (the dtype's maximum when bit_depth is unusable).")
    focus_ratio: float = Field(
        0.25, gt=0, le=1, description="A field is out of focus when its fine-detail energy (1-2 px band over 4-16 "
                                      "px band, noise removed) is below this fraction of the plate's median.")
    focus_channel: Literal["nucleus", "protein"] = Field(
        "nucleus", description="Channel judged for focus (the Hoechst channel looks alike across wells; the "
                               "protein channel differs by protein).")
    focus_min_fields: int = Field(
        3, ge=2, description="Focus is judged only on plates with at least this many usable fields.")
    debris_contrast: float = Field(
        3.0, gt=0, description="Debris pixels are brighter than background + this many times the field's "
                               "bright level (median over 4 x 4 tiles of each tile's 99th percentile above "
                               "background, or the foreground's 90th percentile where cells are sparse).")
    debris_nuclei: float = Field(
        1.25, gt=0, description="Debris is a connected object of such pixels at least this many nucleus diameters "
                               "long (bounding-box diagonal).")
    nucleus_diameter_um: float = Field(
        15.0, gt=0, description="Nucleus diameter in µm that sizes debris (with the plate's pixel_size_um).")

    def action(self, kind: str) -> str:
        """The action configured for a defect ``kind`` (one of :data:`DEFECT_KINDS`)."""
        if kind not in DEFECT_KINDS:
            raise ValueError(f"unknown defect kind {kind!r}; expected one of {DEFECT_KINDS}")
        return getattr(self, kind)

    def metadata_limits(self) -> MetadataLimits:
        """The metadata.csv limits of this config."""
        return MetadataLimits(max_bytes=self.metadata_max_bytes, max_rows=self.metadata_max_rows)

    def image_limits(self) -> ImageLimits:
        """The image decoding limits of this config."""
        return ImageLimits(max_plane_pixels=self.image_max_pixels, max_bytes=DEFAULT_LIMITS.max_bytes)
