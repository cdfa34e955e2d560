"""The base of every step's configuration model (one per room, in its ``config.py``).

A step's settings are written once, as a frozen pydantic model whose fields carry their
default and a description.  The Dagster ``Config`` of the asset
(:mod:`assets_pkg.defs.config`), the ``cellscape`` flags (:mod:`assets_pkg.cli`) and the
``params.yaml`` sections are derived from, or validated by, that model.

A model with a ``preset`` field names its presets in ``PRESETS`` (values in
:mod:`assets_pkg.core.presets`): the preset's values fill the fields not given explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["LibConfig"]


class LibConfig(BaseModel):
    """Frozen, strict (unknown keys are errors) settings of one step.

    Subclasses with a ``preset`` field set ``PRESETS`` to ``{name: {field: value}}``; the
    chosen preset fills every field the caller did not give, and an unknown name is an error
    that names the field ``preset``.  Updates are copies: ``cfg.model_copy(update={...})``
    (which does not re-validate) or ``type(cfg)(**{**cfg.model_dump(), ...})`` (which does).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]] | None] = None

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if cls.PRESETS is None or not isinstance(data, Mapping):
            return data
        name = data.get("preset", cls.model_fields["preset"].default)
        if name not in cls.PRESETS:
            raise ValueError(f"preset: unknown preset {name!r} for {cls.__name__}; choose one of {sorted(cls.PRESETS)}")
        return {**cls.PRESETS[name], **data}
