"""Settings of the segmentation steps: training the nucleus U-Net (:class:`SegTrainConfig`) and
the counting CNN (:class:`CountTrainConfig`), and running a model or the classical baseline over
a folder (:class:`SegmentRunConfig`, :class:`CountRunConfig`), and the image sets they are
trained and scored on (:class:`CellSetsConfig`).  Training presets live in
:mod:`assets_pkg.core.presets`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from ..config import LibConfig
from ..ml.config import StepTrainConfig
from ..presets import CELL_SETS_PRESETS, COUNT_TRAIN_PRESETS, SEG_TRAIN_PRESETS

if TYPE_CHECKING:  # the network modules import JAX: only when a config is used, not when flags are built
    from .unet import UNetConfig

__all__ = ["SegTrainConfig", "CountTrainConfig", "SegmentRunConfig", "CountRunConfig", "CellSetsConfig"]

#: Names of :data:`assets_pkg.core.segmentation.classical.CLASSICAL_PRESETS` (a test keeps them equal).
ClassicalPreset = Literal["bbbc039", "bbbc005_w1", "bbbc005_w2"]


class SegTrainConfig(StepTrainConfig):
    """Training of the segmentation U-Net (random square crops with flips, scale, intensity, blur
    and noise augmentation; AdamW with warm-up and cosine decay), model selection and early
    stopping on validation images held out of the training images, post-processing tuned on
    them, flip-averaged inference.

    ``preset`` ``default`` is these defaults; ``tiny`` is what the demo trains on a CPU in
    minutes (300 steps of 128² crops).  Explicit fields override the preset.
    """

    PRESETS = SEG_TRAIN_PRESETS

    preset: Literal["default", "tiny"] = Field(
        "default", description="default: the fields' defaults; tiny: 300 steps of 128 px crops (the demo).")
    steps: int = Field(1200, ge=1, description="Optimisation steps (the cosine schedule spans them).")
    valid_fraction: float = Field(
        0.15, ge=0, lt=1, description="Share of the training images held out (seeded draw, at least 2 images) for "
                                      "model selection, early stopping and the post-processing thresholds when no "
                                      "validation images are given (0: tune on training images, keep the last step).")
    eval_every: int = Field(100, ge=1, description="Steps between evaluations on the validation images.")
    early_stopping_patience: int = Field(
        4, ge=0, description="Stop after this many evaluations without a better validation F1 (0: never).")
    scale_jitter: float = Field(
        0.25, ge=0, lt=1, description="Crops are zoomed by a log-uniform factor in [1/(1+j), 1+j] (object size "
                                      "augmentation).")
    intensity_jitter: float = Field(
        0.3, ge=0, lt=1, description="Per crop: gain 1 + U(-j, j), offset U(-j/3, j/3) and gamma exp(U(-j, j)) on "
                                     "the normalised image.")
    blur_sigma: float = Field(
        1.0, ge=0, description="Half the crops get a Gaussian blur of sigma U(0, this), pixels (focus augmentation).")
    noise: float = Field(0.03, ge=0, description="Gaussian noise of sd U(0, this) on the normalised image.")
    contact_weight: float = Field(
        0.0, ge=0, description="Extra loss weight of pixels where two nuclei meet or nearly meet (within "
                               "contact_radius), so touching nuclei are split (0: every pixel weighs 1).")
    contact_radius: int = Field(3, ge=1, description="Half-side of the contact neighbourhood, pixels.")
    small_object_weight: float = Field(
        0.0, ge=0, description="Extra loss weight of objects smaller than a quarter of the field's median object "
                               "(fragments, micronuclei) and of a 2-pixel band around them (0: every pixel weighs 1).")
    markers: Literal["distance", "centre"] = Field(
        "distance", description="What seeds the watershed: the inner part of the predicted per-object distance, or "
                                "the peaks of a third output trained to detect object centres (a Gaussian of "
                                "centre_sigma at every object, a fragment's as high as a nucleus's).")
    centre_sigma: float = Field(2.0, gt=0, description="Width of the centre peaks (markers centre), pixels.")
    tta: bool = Field(True, description="Average the maps over the four flips at inference (4 forward passes).")
    depth: int = Field(3, ge=1, description="U-Net levels (UNetConfig.depth).")
    base_width: int = Field(16, ge=1, description="Channels of the first level (UNetConfig.base_width).")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Compute dtype (UNetConfig.dtype).")
    crop: int = Field(
        256, ge=16, description="Side of the square random crops trained on, pixels (smaller images are "
                                "reflect-padded).")
    batch_size: int = Field(4, ge=1, description="Crops per step.")
    tune_images: int = Field(
        8, ge=1, description="Training images the post-processing thresholds are picked on when there are no "
                             "validation images (valid_fraction 0).")
    tune_f1_tolerance: float = Field(
        0.002, ge=0, lt=1, description="Minimum object areas within this of the best tuning F1 (at its "
                                       "thresholds) are ties, decided by the lower mean count error per image "
                                       "(0: F1 alone).")
    seed: int = Field(0, description="Seeds the initialisation, the crops and the augmentation.")
    log_every: int = Field(25, ge=1, description="Steps between history rows and log lines.")

    @property
    def unet(self) -> UNetConfig:
        """The network's :class:`~assets_pkg.core.segmentation.unet.UNetConfig`."""
        from .unet import UNetConfig

        outputs = "foreground+distance+centre" if self.markers == "centre" else "foreground+distance"
        return UNetConfig(depth=self.depth, base_width=self.base_width, outputs=outputs, dtype=self.dtype)


class CountTrainConfig(StepTrainConfig):
    """Training of the counting CNN on whole images resized to ``input_shape``.

    ``preset`` ``default`` is these defaults; ``tiny`` is what the demo trains (600 steps).
    """

    PRESETS = COUNT_TRAIN_PRESETS

    preset: Literal["default", "tiny"] = Field(
        "default", description="default: the fields' defaults; tiny: 600 steps (the demo).")
    input_shape: tuple[int, int] = Field(
        (256, 344), description="(height, width) in pixels every image is resized to before the network, at "
                                "training and prediction alike.")
    widths: tuple[int, ...] = Field(
        (16, 32, 64, 64, 128), min_length=1, description="Channels of the convolution blocks (CountingCNN.widths).")
    dense: int = Field(64, ge=1, description="Units of the dense layer (CountingCNN.dense).")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Compute dtype (CountingCNN.dtype).")
    batch_size: int = Field(8, ge=1, description="Images per step.")
    intensity_jitter: float = Field(
        0.2, ge=0, lt=1, description="Training images are multiplied by 1 + U(-j, j).")
    seed: int = Field(0, description="Seeds the initialisation, the batches and the jitter.")
    log_every: int = Field(50, ge=1, description="Steps between history rows and log lines.")

    @field_validator("input_shape")
    @classmethod
    def _input_shape_at_least_8(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 8:
            raise ValueError(f"input_shape must be (height, width) >= 8, got {v}")
        return v


class SegmentRunConfig(LibConfig):
    """Segmenting a folder of images with a trained U-Net or the classical baseline."""

    model: Path | None = Field(None, description="U-Net model folder (None: the classical baseline).")
    classical_preset: ClassicalPreset | None = Field(
        None, description="Classical parameter preset when no model is given (None: its defaults).")
    nucleus_diameter: float | None = Field(
        None, gt=0, description="Typical nucleus diameter in these images, pixels (the U-Net rescales to its "
                                "training size; None: as trained).")


class CountRunConfig(SegmentRunConfig):
    """Counting the cells of a folder of images: a counting or U-Net model, or classical instances."""

    model: Path | None = Field(
        None, description="Counting or U-Net model folder (None: classical instances).")


class CellSetsConfig(LibConfig):
    """The segmentation and counting image sets (:func:`~assets_pkg.core.segmentation.run.cell_sets_table`):
    folders of real images, or simulated SIMCEP-like fields for those not given.

    ``preset`` ``default`` is these defaults; ``tiny`` simulates 18 fields of 256 x 320 (the demo).
    """

    PRESETS = CELL_SETS_PRESETS

    preset: Literal["default", "tiny"] = Field(
        "default", description="default: the fields' defaults; tiny: 18 simulated fields of 256 x 320 (the demo).")
    segmentation_images: Path | None = Field(
        None, description="Folder of segmentation images (None: simulated nucleus-stain fields).")
    segmentation_masks: Path | None = Field(
        None, description="Their instance masks, paired by stem (BBBC039-style PNGs or label TIFFs).")
    counting_images: Path | None = Field(
        None, description="Folder of BBBC005-style counting images, _C<count>_ in the names (None: simulated).")
    simulated_fields: int = Field(24, ge=1, description="Simulated fields when a folder is not given.")
    simulated_size: tuple[int, int] = Field(
        (520, 696), description="(height, width) of a simulated field in pixels (BBBC005's).")
    seed: int = Field(0, description="Seed of the simulation.")
    train_fraction: float = Field(
        2 / 3, gt=0, lt=1, description="Segmentation: the first round(fraction * n) images by name train.")
