"""Dagster ``Config`` classes derived from the library's config models (one definition per step).

:func:`dagster_config` copies the fields, defaults and descriptions of a
:class:`~assets_pkg.core.config.LibConfig` into a ``dg.Config`` subclass (tuples become lists,
paths strings and optional ``Literal`` its values' type, as Dagster's config schema needs); ``.to_library()`` turns the run config
back into the library model, passing only the fields the run config set, so a ``preset``
chosen there fills the rest.  Fields that some preset sets are optional on the Dagster side with
default ``None`` ("the preset's value"): the launchpad scaffolds every field with its default,
and a concrete default there would silently override the preset a user picks.  Fields that only the asset uses (``extra``) are declared
beside and never reach the library model.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field, create_model
from pydantic.fields import FieldInfo

from ..core.config import LibConfig

__all__ = ["LibraryDerivedConfig", "dagster_config", "dagster_type"]


def dagster_type(annotation: Any) -> Any:
    """The annotation Dagster's config schema accepts for a library field's ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Path:
        return str
    if origin is tuple:
        inner = {a for a in args if a is not Ellipsis}
        return list[dagster_type(inner.pop())] if len(inner) == 1 else list[Any]
    if origin in (typing.Union, types.UnionType):
        # Dagster resolves a bare Literal but not an optional one: the values' type stands in
        # for it there, and the library model checks the value in to_library()
        mapped = tuple(type(typing.get_args(a)[0]) if typing.get_origin(a) is typing.Literal else dagster_type(a)
                       for a in args)
        return typing.Union[mapped]  # noqa: UP007 (a runtime-built union)
    return annotation


def _dagster_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value


class LibraryDerivedConfig(dg.Config):
    """Base of the derived configs: knows its library model and its asset-only fields."""

    library_model: ClassVar[type[LibConfig]]
    asset_fields: ClassVar[tuple[str, ...]] = ()
    preset_fields: ClassVar[tuple[str, ...]] = ()

    def to_library(self, **fixed: Any) -> LibConfig:
        """The library model of this run config: the fields the run config set (asset-only
        fields left out) and ``fixed`` on top."""
        given = {k: getattr(self, k) for k in self.model_fields_set if k not in self.asset_fields}
        given = {k: v for k, v in given.items() if not (v is None and k in self.preset_fields)}
        return self.library_model(**{**given, **fixed})


def dagster_config(
    model: type[LibConfig],
    name: str | None = None,
    *,
    exclude: tuple[str, ...] = (),
    extra: dict[str, tuple[Any, FieldInfo]] | None = None,
    doc: str | None = None,
) -> type[LibraryDerivedConfig]:
    """A ``dg.Config`` subclass with ``model``'s fields, defaults and descriptions.

    Parameters
    ----------
    model : type of LibConfig
        The library model the asset passes on.
    name : str, optional
        Class name (default: the model's name + ``"Config"`` unless it already ends so).
    exclude : tuple of str
        Library fields the asset sets itself (they are not offered, so none is ignored).
    extra : dict, optional
        Asset-only fields ``{name: (annotation, Field(default, description=...))}``; they are
        not passed to the library model.
    doc : str, optional
        Docstring (default: the model's).
    """
    unknown = set(exclude) - set(model.model_fields)
    if unknown:
        raise ValueError(f"exclude: {sorted(unknown)} are not fields of {model.__name__}")
    fields: dict[str, tuple[Any, FieldInfo]] = {}
    presets = model.PRESETS or {}
    preset_fields = set().union(*(set(v) for v in presets.values())) - {"preset"} if presets else set()
    for fname, info in model.model_fields.items():
        if fname in exclude:
            continue
        kw: dict[str, Any] = {"description": info.description}
        annotation = dagster_type(info.annotation)
        if fname in preset_fields:
            default_preset = model.model_fields["preset"].default
            value = presets.get(default_preset, {}).get(fname, info.get_default(call_default_factory=True))
            kw["description"] = (f"{info.description} Unset (null): the chosen preset's value "
                                 f"({_dagster_default(value)!r} with preset {default_preset!r}).")
            kw["default"] = None
            annotation = annotation | None
        elif info.default_factory is not None:
            kw["default_factory"] = info.default_factory
        elif not info.is_required():
            kw["default"] = _dagster_default(info.default)
        fields[fname] = (annotation, Field(**kw))
    clash = set(extra or {}) & set(fields)
    if clash:
        raise ValueError(f"extra: {sorted(clash)} are already fields of {model.__name__}")
    fields.update(extra or {})
    cls_name = name or (model.__name__ if model.__name__.endswith("Config") else f"{model.__name__}Config")
    cls = create_model(cls_name, __base__=LibraryDerivedConfig, __doc__=doc or model.__doc__,
                       __module__=__name__, **fields)
    cls.library_model = model
    cls.asset_fields = tuple(extra or ())
    cls.preset_fields = tuple(sorted(preset_fields - set(exclude)))
    return cls
