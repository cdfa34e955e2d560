"""Settings of the store steps: nucleus detection, frame cropping (together: ingest) and splits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..config import LibConfig

__all__ = ["NucleusConfig", "FrameConfig", "IngestParams", "SplitConfig"]


class NucleusConfig(LibConfig):
    """How nuclei are found on a field's Hoechst channel (what :func:`detect_plate_nuclei` needs)."""

    nucleus_diameter_um: float = Field(
        15.0, gt=0, description="Expected nucleus diameter in µm; sets the detector's smoothing and peak spacing "
                                "(HEK293 nuclei measured on the real OpenCell fields).")
    detect_um_per_px: float | None = Field(
        0.4, gt=0, description="Pixel size in µm at which nuclei are detected: finer fields are downsampled (block "
                               "mean, as for frames) first and the labels mapped back; 0.4 µm is the frame scale, "
                               "so ingest detects on the frames' own pixels (None, or a size at or below the "
                               "plate's pixel size: full resolution).")


class FrameConfig(LibConfig):
    """How nucleus-centred frames are cut from a field (what :func:`crop_plate_frames` needs)."""

    crop_size: int = Field(100, ge=8, description="Side of a frame in pixels, after downsampling.")
    target_um_per_px: float = Field(
        0.4, gt=0, description="Pixel size of the frames in µm; the downsampling factor is this over the plate's "
                               "pixel size (0.4 µm: 100 px = 40 µm, about three HEK293 cells, as in cytoself).")
    downsample: float | None = Field(
        None, gt=0, description="Explicit downsampling factor overriding target_um_per_px (None: derived).")

    def factor(self, pixel_size_um: float) -> float:
        """Downsampling factor for a plate of ``pixel_size_um`` µm pixels."""
        from .frames import default_downsample  # scikit-image: only when used

        if self.downsample is not None:
            return float(self.downsample)
        return float(default_downsample(pixel_size_um, self.target_um_per_px))


class IngestParams(NucleusConfig, FrameConfig):
    """Both halves of ingest, for the one-shot paths (``cellscape ingest``/``import``, the
    ``ingest`` section of params.yaml): an instance is both a :class:`NucleusConfig` and a
    :class:`FrameConfig`, so it passes to either step."""


class SplitConfig(LibConfig):
    """How the frame catalog is split into train / valid / test."""

    train: float = Field(0.8, ge=0, description="Fraction of groups (fields or proteins) in train.")
    valid: float = Field(0.1, ge=0, description="Fraction of groups in valid.")
    test: float = Field(0.1, ge=0, description="Fraction of groups in test; the three sum to 1.")
    exclusive_by: Literal["field", "protein"] = Field(
        "field", description="The unit that never straddles two splits: field splits each protein's fields of "
                             "view (every protein in train); protein tests unseen proteins.")
    n_proteins: int | None = Field(
        None, ge=1, description="Keep only this many proteins, chosen at random with seed (None: all).")
    max_frames_per_protein: int | None = Field(
        None, ge=1, description="Cap each protein's frames (random subsample with seed) to balance classes.")
    seed: int = Field(0, description="Seed of every random choice of the split.")

    def __init__(self, *args, **kwargs):
        # positional (train, valid, test, exclusive_by) as when this was a dataclass
        names = ("train", "valid", "test", "exclusive_by", "n_proteins", "max_frames_per_protein", "seed")
        if len(args) > len(names):
            raise TypeError(f"SplitConfig takes at most {len(names)} positional arguments")
        super().__init__(**dict(zip(names, args, strict=False)), **kwargs)

    @model_validator(mode="after")
    def _fractions_sum_to_one(self):
        fr = (self.train, self.valid, self.test)
        if abs(sum(fr) - 1.0) > 1e-8 + 1e-5:  # numpy.isclose's tolerance, as before
            raise ValueError(f"train, valid, test: split fractions must sum to 1, got {fr}")
        return self
