"""The instrument registry: which microscopes exist and what each can record.

The registry is a YAML file (default :data:`REGISTRY_PATH`, shipped with the package) mapping
instrument names to their optics and detector: ``[low, high]`` bounds for each of
:data:`BOUNDED_FIELDS`, the bit depths and objectives available and the longest exposure.  The
provenance suite (:mod:`assets_pkg.core.qc.rules`) checks every metadata row against the spec
of the instrument it names.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import CellscapeError

__all__ = ["REGISTRY_PATH", "BOUNDED_FIELDS", "load_instrument_registry", "normalize_registry"]

#: The instrument registry shipped with the package.
REGISTRY_PATH = Path(str(resources.files("assets_pkg.core") / "data" / "instruments.yaml"))

#: Per-instrument [low, high] bounds checked against the metadata column of the same name.
BOUNDED_FIELDS: tuple[str, ...] = ("pixel_size_um", "numerical_aperture", "excitation_nm", "emission_nm")


def load_instrument_registry(path: str | Path | None = None) -> dict:
    """Read and check the instrument registry.

    Parameters
    ----------
    path : path-like, optional
        A YAML file with an ``instruments`` mapping; default :data:`REGISTRY_PATH`.

    Returns
    -------
    dict
        Instrument name to its spec: ``pixel_size_um``, ``numerical_aperture``,
        ``excitation_nm`` and ``emission_nm`` as ``[low, high]`` floats, ``bit_depths`` (list
        of int), ``objectives`` (list of str), ``max_exposure_ms`` (float or None) and
        ``description``.

    Raises
    ------
    CellscapeError
        Naming the file and the entry when the registry is missing or malformed.
    """
    import yaml

    p = Path(path) if path is not None else REGISTRY_PATH
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise CellscapeError(f"cannot read instrument registry ({e.strerror})", path=p) from e
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise CellscapeError(f"not a readable YAML file: {e}", path=p) from e
    return normalize_registry(data, p)


def normalize_registry(data: Any, path: str | Path | None = None) -> dict:
    """Check an instrument registry already loaded and bring it to the form of :func:`load_instrument_registry`.

    Parameters
    ----------
    data : mapping
        Instrument name to spec, or a mapping with an ``instruments`` key holding that.
    path : path-like, optional
        The file it came from, named in errors.

    Returns
    -------
    dict
        As :func:`load_instrument_registry` returns.

    Raises
    ------
    CellscapeError
        Naming the entry (``instruments.<name>.<key>``) that is malformed.
    """
    if isinstance(data, Mapping) and "instruments" in data:
        data = data["instruments"]
    if not isinstance(data, Mapping) or not data:
        raise CellscapeError("must map instrument names to specs", path=path, field="instruments")
    out = {}
    for name, spec in data.items():
        where = f"instruments.{name}"
        if not isinstance(spec, Mapping):
            raise CellscapeError("must be a mapping", path=path, field=where)
        entry: dict[str, Any] = {"description": str(spec.get("description", ""))}
        for key in BOUNDED_FIELDS:
            pair = spec.get(key)
            try:
                lo, hi = (float(v) for v in pair)
            except (TypeError, ValueError) as e:
                raise CellscapeError(
                    f"expected [low, high] numbers, got {pair!r}", path=path, field=f"{where}.{key}"
                ) from e
            if not lo <= hi:
                raise CellscapeError(f"low {lo} > high {hi}", path=path, field=f"{where}.{key}")
            entry[key] = [lo, hi]
        try:
            entry["bit_depths"] = [int(b) for b in spec["bit_depths"]]
            entry["objectives"] = [str(o) for o in spec["objectives"]]
            mx = spec.get("max_exposure_ms")
            entry["max_exposure_ms"] = None if mx is None else float(mx)
        except (KeyError, TypeError, ValueError) as e:
            raise CellscapeError(
                f"needs bit_depths, objectives (lists) and numeric max_exposure_ms: {e!r}",
                path=path,
                field=where,
            ) from e
        out[str(name)] = entry
    return out

