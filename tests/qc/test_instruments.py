"""Tests of the instrument registry (assets_pkg.core.qc.instruments)."""

from __future__ import annotations

from pathlib import Path

import pytest

from assets_pkg.core.errors import CellscapeError
from assets_pkg.core.qc.instruments import (
    REGISTRY_PATH,
    load_instrument_registry,
    normalize_registry,
)


def test_registry_loads_and_rejects_malformed(tmp_path: Path) -> None:
    reg = load_instrument_registry()
    assert {"dragonfly-63x", "opera-phenix-40x", "imagexpress-20x"} <= set(reg)
    assert reg["dragonfly-63x"]["pixel_size_um"] == [0.05, 0.3]
    bad = tmp_path / "instruments.yaml"
    bad.write_text("instruments:\n  scope:\n    pixel_size_um: [0.3]\n", encoding="utf-8")
    with pytest.raises(CellscapeError, match=r"instruments\.scope\.pixel_size_um"):
        load_instrument_registry(bad)


def test_registry_errors_name_the_file_and_entry(tmp_path: Path) -> None:
    with pytest.raises(CellscapeError, match="cannot read instrument registry") as e:
        load_instrument_registry(tmp_path / "nope.yaml")
    assert e.value.path == str(tmp_path / "nope.yaml")
    spec = {"pixel_size_um": [0.3, 0.1], "numerical_aperture": [1, 1], "excitation_nm": [1, 2],
            "emission_nm": [1, 2], "bit_depths": [16], "objectives": ["x"]}
    with pytest.raises(CellscapeError, match="low 0.3 > high 0.1") as e:
        normalize_registry({"scope": spec}, path="reg.yaml")
    assert e.value.field == "instruments.scope.pixel_size_um" and e.value.path == "reg.yaml"


def test_normalize_accepts_what_load_returns() -> None:
    reg = load_instrument_registry(REGISTRY_PATH)
    assert normalize_registry(reg) == reg
    assert normalize_registry({"instruments": reg}) == reg
