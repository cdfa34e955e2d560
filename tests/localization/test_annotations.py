"""Tests of the annotation forms (assets_pkg.core.localization.annotations)."""

import pandas as pd
import pytest

from assets_pkg.core.imaging.plates import LOCALIZATIONS
from assets_pkg.core.localization.annotations import (
    annotations_from_rows,
    class_order,
    normalize_annotations,
    single_localization,
)
from assets_pkg.core.localization.inputs import AnalysisError


def test_normalize_annotations_forms():
    long = pd.DataFrame({"protein": ["p", "p", "q", "r"],
                         "localization": ["er", "golgi", "nucleolus_gc", "er"]})
    want = {"p": frozenset({"er", "golgi"}), "q": frozenset({"nucleolus_gc"}),
            "r": frozenset({"er"})}
    assert normalize_annotations(long) == want
    assert normalize_annotations({"p": "er;golgi", "q": ["nucleolus_gc"], "r": ("er",),
                                  "s": set()}) == want
    assert normalize_annotations(pd.Series({"p": "er; golgi", "q": "nucleolus_gc", "r": "er"})) == want
    assert single_localization(long).to_dict() == {"q": "nucleolus_gc", "r": "er"}
    with pytest.raises(AnalysisError, match="localization"):
        normalize_annotations(pd.DataFrame({"x": [1]}))


def test_class_order_follows_localizations_then_names():
    assert class_order(["zzz", LOCALIZATIONS[2], LOCALIZATIONS[0], "aaa", LOCALIZATIONS[2]]) == [
        LOCALIZATIONS[0], LOCALIZATIONS[2], "aaa", "zzz"]


def test_annotations_from_rows_skips_unannotated_proteins():
    rows = pd.DataFrame({"gene": ["A", "A", "B", "C"], "localization": ["er;golgi", "er;golgi", "", None]})
    assert annotations_from_rows(rows).to_dict() == {"A": frozenset({"er", "golgi"})}
