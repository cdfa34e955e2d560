"""Tests of the validation report (assets_pkg.core.qc.report), on hand-made failures."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from assets_pkg.core.qc.report import Failure, SuiteResult, ValidationReport, json_safe


def _report() -> ValidationReport:
    many = [f"A01_f{i:02d}_protein.tif" for i in range(4)]
    examples = [{"file_name": n, "line": i + 2, "operator": "", "detail": "provenance is empty"}
                for i, n in enumerate(many[:2])]
    failures = [
        Failure("provenance", "expect_column_values_to_not_be_null", "operator", "provenance is empty in 4 of 4 row(s)",
                many, examples),
        Failure("provenance", "expect_x", None, "table problem", [], []),
    ]
    return ValidationReport("/plates/p1", "p1", [SuiteResult("schema", True, 3), SuiteResult("provenance", False, 5, failures)])


def test_text_names_plate_file_suite_and_field() -> None:
    r = _report()
    lines = r.to_text().splitlines()
    assert lines[0] == "plate p1 (/plates/p1): FAILED; schema ok, provenance FAILED (2)"
    assert lines[1] == "p1/A01_f00_protein.tif: [provenance] field 'operator': provenance is empty"
    assert lines[3] == ("p1: [provenance] field 'operator': same problem in 2 more file(s): "
                        "A01_f02_protein.tif, A01_f03_protein.tif")
    assert lines[4] == "p1: [provenance] table problem"
    assert not r.success and len(r.failures) == 2


def test_suite_lookup_and_label() -> None:
    r = _report()
    assert r.suite("schema").success
    with pytest.raises(KeyError, match="geometry"):
        r.suite("geometry")
    assert ValidationReport("/plates/p2", None, []).label == "p2"


def test_dict_is_plain_json() -> None:
    d = _report().to_dict()
    assert json.loads(json.dumps(d)) == d and d["success"] is False
    assert json_safe({1: (np.int64(3), math.nan, pd.NA, np.float32(0.5))}) == {"1": [3, None, None, 0.5]}
