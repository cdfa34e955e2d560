"""BBBC005 file naming: ``<well>_C<count>_F<blur>_s<site>_w<stain>.<ext>``.

The Broad Bioimage Benchmark Collection's BBBC005 set (simulated with SIMCEP) names each
image by its plate well, true cell count, focus blur index, site and stain, for example
``A05_C18_F1_s01_w2.TIF``.  The plate column follows from the count
(:data:`BBBC005_COUNTS`) and the row from the blur (:data:`BBBC005_BLURS`).  The cell simulator
(:mod:`assets_pkg.core.imaging.cellsim`) writes these names and the cell-set readers
(:mod:`assets_pkg.core.segmentation.datasets`) parse them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import CellSetError

__all__ = ["BBBC005_COUNTS", "BBBC005_BLURS", "parse_bbbc005_name", "bbbc005_well", "bbbc005_name"]

#: Cells per image of BBBC005 plate columns 1..24.
BBBC005_COUNTS: tuple[int, ...] = (
    1, 5, 10, 14, 18, 23, 27, 31, 35, 40, 44, 48,
    53, 57, 61, 66, 70, 74, 78, 83, 87, 91, 96, 100,
)  # fmt: skip

#: Focus blur index F of BBBC005 plate rows A..P.
BBBC005_BLURS: tuple[int, ...] = (1, 4, 7, 10, 14, 17, 20, 23, 26, 29, 32, 35, 39, 42, 45, 48)

_ROWS = "ABCDEFGHIJKLMNOP"
_BBBC005_RE = re.compile(
    r"^(?P<well>(?P<row>[A-Pa-p])(?P<col>\d{1,2}))_C(?P<count>\d+)_F(?P<blur>\d+)"
    r"_s(?P<site>\d+)_w(?P<stain>\d+)$"
)


def parse_bbbc005_name(name: str | Path) -> dict:
    """Parse a BBBC005-style file name.

    Parameters
    ----------
    name : str or Path
        File name or path, for example ``"A05_C18_F1_s01_w2.TIF"``.

    Returns
    -------
    dict
        ``well`` (str, e.g. ``"A05"``), ``row`` (str), ``column`` (int), ``count`` (int, true
        number of cells), ``blur`` (int, focus blur index F), ``site`` (int), ``stain`` (int).

    Raises
    ------
    CellSetError
        When the stem does not follow the pattern (field ``file_name``).
    """
    stem = Path(str(name)).stem
    m = _BBBC005_RE.match(stem)
    if m is None:
        raise CellSetError(
            "not a BBBC005-style name '<well>_C<count>_F<blur>_s<site>_w<stain>'",
            path=name,
            field="file_name",
        )
    return {
        "well": m["well"].upper(),
        "row": m["row"].upper(),
        "column": int(m["col"]),
        "count": int(m["count"]),
        "blur": int(m["blur"]),
        "site": int(m["site"]),
        "stain": int(m["stain"]),
    }


def bbbc005_well(count: int, blur: int) -> str:
    """The BBBC005 well of a (count, blur) pair: row from the blur, column from the count.

    Values outside :data:`BBBC005_COUNTS` / :data:`BBBC005_BLURS` take the nearest entry's
    row or column (the name still carries the exact count and blur).
    """
    col = int(np.argmin(np.abs(np.asarray(BBBC005_COUNTS) - int(count)))) + 1
    row = _ROWS[int(np.argmin(np.abs(np.asarray(BBBC005_BLURS) - int(blur))))]
    return f"{row}{col:02d}"


def bbbc005_name(count: int, blur: int, site: int, stain: int, suffix: str = ".TIF") -> str:
    """BBBC005-style file name, e.g. ``bbbc005_name(18, 1, 1, 2) == "A05_C18_F1_s01_w2.TIF"``."""
    return f"{bbbc005_well(count, blur)}_C{int(count)}_F{int(blur)}_s{int(site):02d}_w{int(stain)}{suffix}"
