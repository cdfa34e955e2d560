"""Settings of the simulators: OpenCell-like plates (:class:`SimulatePlatesConfig`, the
``simulate`` section of params.yaml) and SIMCEP-like cell fields (:class:`SimulateCellsConfig`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..config import LibConfig

__all__ = ["SimulatePlatesConfig", "SimulateCellsConfig"]


class SimulatePlatesConfig(LibConfig):
    """What :func:`~assets_pkg.core.imaging.simulator.simulate_plates` writes (besides where)."""

    plates: int = Field(1, ge=1, description="Number of plates.")
    seed: int = Field(description="Seeds everything: panel order, layouts, patterns, noise, defects.")
    proteins: Path | None = Field(
        None, description="OpenCell-format annotation CSV of the panel (None: the built-in panel).")
    wells: int = Field(8, ge=1, description="Wells per plate, one protein each.")
    fields_per_well: int = Field(2, ge=1, description="Fields imaged per well.")
    field_size: int = Field(512, ge=64, description="Side of each square field in pixels (0.2 µm each).")
    defects: bool = Field(False, description="Inject out-of-focus, saturated, debris and blank-channel defects (defects.csv).")
    defect_rate: float = Field(0.1, ge=0, le=1, description="Probability that a field has a defect.")
    prefix: str = Field("plate", min_length=1, description="Plate id prefix (plate01, plate02, ...).")


class SimulateCellsConfig(LibConfig):
    """What :func:`~assets_pkg.core.imaging.cellsim.simulate_cells` writes (besides where)."""

    images: int = Field(ge=1, description="Simulated fields (each gives both stains).")
    seed: int = Field(description="Root seed; field i uses its own spawned seed alone.")
    count: int | None = Field(
        None, ge=0, description="Cells per field (None: drawn from BBBC005's counts).")
    blur: tuple[int, ...] = Field((1, 23, 48), min_length=1, description="Focus blur indices, used in turn.")
    size: tuple[int, int] = Field((520, 696), description="(height, width) of a field in pixels (BBBC005's).")
    overwrite: bool = Field(False, description="Replace files already there (otherwise an existing file is an error).")
