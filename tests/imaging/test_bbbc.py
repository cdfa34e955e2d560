"""BBBC005 file naming (assets_pkg.core.imaging.bbbc)."""

from __future__ import annotations

from pathlib import Path

import pytest

from assets_pkg.core.errors import CellSetError
from assets_pkg.core.imaging import bbbc


def test_parse_bbbc005_name():
    info = bbbc.parse_bbbc005_name("A05_C18_F1_s01_w2.TIF")
    assert info == {
        "well": "A05",
        "row": "A",
        "column": 5,
        "count": 18,
        "blur": 1,
        "site": 1,
        "stain": 2,
    }
    assert bbbc.parse_bbbc005_name(Path("/x/P24_C100_F48_s25_w1.tif"))["count"] == 100
    with pytest.raises(CellSetError, match="BBBC005-style") as e:
        bbbc.parse_bbbc005_name("IXMtest_A02_s1_w1.tif")
    assert e.value.path == "IXMtest_A02_s1_w1.tif" and e.value.field == "file_name"


def test_bbbc005_well_and_name_round_trip():
    assert bbbc.bbbc005_well(18, 1) == "A05"
    assert bbbc.bbbc005_well(100, 48) == "P24"
    assert bbbc.bbbc005_name(18, 23, 3, 1) == "H05_C18_F23_s03_w1.TIF"
    for count, blur in [(1, 1), (57, 23), (100, 48)]:
        info = bbbc.parse_bbbc005_name(bbbc.bbbc005_name(count, blur, 7, 2))
        assert info["count"] == count and info["blur"] == blur
        assert bbbc.BBBC005_COUNTS[info["column"] - 1] == count
        assert bbbc.BBBC005_BLURS["ABCDEFGHIJKLMNOP".index(info["row"])] == blur
