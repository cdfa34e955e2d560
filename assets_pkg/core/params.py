"""``params.yaml``: each section is the settings of one step, validated by that step's model.

DVC stages read the same sections (``${ingest.crop_size}`` ...) and pass them to ``cellscape``
flags, which are derived from the same models, so a key here that is not a field is an error
before anything runs.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .config import LibConfig
from .imaging.config import SimulatePlatesConfig
from .localization.config import TrainConfig
from .store.config import IngestParams

__all__ = ["PARAMS_SECTIONS", "load_params"]

#: params.yaml section -> the model that validates it (and the command that uses it).
PARAMS_SECTIONS: dict[str, type[LibConfig]] = {
    "simulate": SimulatePlatesConfig,  # cellscape simulate-plates (scripts/data)
    "ingest": IngestParams,  # cellscape ingest (dvc stage ingest)
    "train": TrainConfig,  # cellscape train (dvc stage train)
}


def load_params(path: str | Path = "params.yaml") -> dict[str, LibConfig]:
    """Every section of ``path`` as its validated model.

    Raises
    ------
    ValueError
        For a section with no model, or a key that is not a field (pydantic's error names it).
    """
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    unknown = sorted(set(data) - set(PARAMS_SECTIONS))
    if unknown:
        raise ValueError(f"{path}: sections {unknown} have no config model; known: {sorted(PARAMS_SECTIONS)}")
    return {name: PARAMS_SECTIONS[name](**(values or {})) for name, values in data.items()}
