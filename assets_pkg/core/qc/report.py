"""What validation found: the report of a plate's suites, readable by people and machines.

:class:`ValidationReport` (one per plate) holds a :class:`SuiteResult` per suite, each holding
the :class:`Failure` of every expectation that failed, with the files and metadata column
concerned and up to :data:`MAX_EXAMPLES` offending rows.  :meth:`ValidationReport.to_text`
gives one line per problem naming the plate, the file, the suite and the field;
:meth:`ValidationReport.to_dict` the same as plain JSON types.  The per-field image defects
(:class:`~assets_pkg.core.qc.fields.FieldDefect`) sit beside the suites: those configured to
``block`` are also failures of the ``images`` suite; those set to ``exclude`` name the fields
ingest leaves out (:attr:`ValidationReport.excluded_fields`), with a warning line each.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .fields import FieldDefect

__all__ = ["MAX_EXAMPLES", "Failure", "SuiteResult", "ValidationReport", "json_safe"]

#: Offending rows kept as examples per failure.
MAX_EXAMPLES = 5


@dataclass
class Failure:
    """One failed expectation.

    Attributes
    ----------
    suite : str
        Suite name, one of :data:`~assets_pkg.core.qc.suites.SUITES`.
    expectation : str
        The Great Expectations expectation type that failed (for example
        ``expect_column_values_to_be_in_set``), or ``plate_readable`` when plate.json or
        metadata.csv could not be read.
    column : str or None
        The metadata column concerned, None for table-level failures.
    message : str
        What is wrong, in words.
    files : list of str
        The offending file names inside the plate folder (image files, or ``metadata.csv`` /
        ``plate.json``); ``metadata.csv line N`` for rows without a file name.
    examples : list of dict
        Up to :data:`MAX_EXAMPLES` offending rows: ``file_name``, the column's value, other
        values compared with it, and ``detail``, a one-line explanation of that row.
    """

    suite: str
    expectation: str
    column: str | None
    message: str
    files: list[str] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)


@dataclass
class SuiteResult:
    """Outcome of one suite on one plate.

    Attributes
    ----------
    name : str
        Suite name.
    success : bool
        True when every expectation of the suite held.
    evaluated : int
        Number of expectations evaluated (0 when the plate could not be read).
    failures : list of Failure
    """

    name: str
    success: bool
    evaluated: int
    failures: list[Failure] = field(default_factory=list)


@dataclass
class ValidationReport:
    """Outcome of :func:`~assets_pkg.core.qc.validate.validate_plate`.

    Attributes
    ----------
    plate_dir : str
        The plate folder validated.
    plate_id : str or None
        From plate.json; None when plate.json could not be read.
    suites : list of SuiteResult
        One per requested suite, in the order of :data:`~assets_pkg.core.qc.suites.SUITES`.
    errors : list of str
        Problems that stopped validation (unreadable plate.json or metadata.csv), each naming
        the file; when non-empty every suite has failed.
    defects : list of FieldDefect
        Per-field image defects found by the ``images`` suite, whatever their action.
    """

    plate_dir: str
    plate_id: str | None
    suites: list[SuiteResult]
    errors: list[str] = field(default_factory=list)
    defects: list[FieldDefect] = field(default_factory=list)

    @property
    def excluded_fields(self) -> list[tuple[str, int]]:
        """(well, field_id) of every field with a defect whose action is ``exclude``, sorted."""
        return sorted({(d.well, d.field_id) for d in self.defects if d.action == "exclude"})

    def excluded_table(self) -> list[dict]:
        """One dict per excluded field: ``well``, ``field_id``, ``defects`` (kinds) and ``files``."""
        out = []
        for well, fid in self.excluded_fields:
            mine = [d for d in self.defects if (d.well, d.field_id) == (well, fid) and d.action == "exclude"]
            out.append({"well": well, "field_id": fid, "defects": sorted({d.kind for d in mine}),
                        "files": sorted({d.file_name for d in mine}), "details": [d.detail for d in mine]})
        return out

    @property
    def success(self) -> bool:
        """True when there is no error and every suite passed."""
        return not self.errors and all(s.success for s in self.suites)

    @property
    def failures(self) -> list[Failure]:
        """The failures of all suites, in suite order."""
        return [f for s in self.suites for f in s.failures]

    def suite(self, name: str) -> SuiteResult:
        """The result of the suite called ``name``.

        Raises
        ------
        KeyError
            When that suite was not run.
        """
        for s in self.suites:
            if s.name == name:
                return s
        raise KeyError(f"suite {name!r} was not run; ran {[s.name for s in self.suites]}")

    @property
    def label(self) -> str:
        """The plate id, or the folder name when plate.json could not be read."""
        return self.plate_id or Path(self.plate_dir).name

    def to_text(self) -> str:
        """A human-readable report: a summary line, then one line per problem.

        Each problem line names the plate and file, the suite and the field, for example
        ``plate01/A01_f00_protein.tif: [provenance] field 'pixel_size_um': 2.5 outside
        dragonfly-63x bounds [0.05, 0.3]``.  Failures touching many files list up to
        :data:`MAX_EXAMPLES` of them with details and count the rest.
        """
        label = self.label
        states = ", ".join(
            f"{s.name} {'ok' if s.success else f'FAILED ({len(s.failures)})'}" for s in self.suites
        )
        lines = [f"plate {label} ({self.plate_dir}): {'passed' if self.success else 'FAILED'}; {states}"]
        lines += [f"{label}: error: {e}" for e in self.errors]
        for f in self.failures:
            lines += _failure_lines(label, f)
        for d in self.defects:
            if d.action == "block":
                continue  # a failure of the images suite, listed above
            then = f"field {d.well} f{d.field_id:02d} excluded from ingest" if d.action == "exclude" else "kept"
            lines.append(f"{label}/{d.file_name}: WARNING [images] field '{d.measure}': {d.detail}; {then}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The report as plain JSON-serialisable types."""
        return json_safe(
            {
                "plate_dir": self.plate_dir,
                "plate_id": self.plate_id,
                "success": self.success,
                "errors": list(self.errors),
                "suites": [asdict(s) | {"failures": [asdict(f) for f in s.failures]} for s in self.suites],
                "defects": [d.to_dict() for d in self.defects],
                "excluded_fields": self.excluded_table(),
            }
        )


def _failure_lines(label: str, f: Failure) -> list[str]:
    field_part = f"field '{f.column}': " if f.column else ""
    if f.examples:
        lines = []
        names = [ex.get("file_name") for ex in f.examples]
        for ex in f.examples:
            where = ex.get("file_name") or f"metadata.csv line {ex.get('line')}"
            if ex.get("file_name") and names.count(ex["file_name"]) > 1 and "line" in ex:
                where += f" (metadata.csv line {ex['line']})"
            lines.append(f"{label}/{where}: [{f.suite}] {field_part}{ex.get('detail') or f.message}")
        rest = f.files[len(f.examples) :]
        if rest:
            shown = ", ".join(rest[:20]) + (", ..." if len(rest) > 20 else "")
            lines.append(f"{label}: [{f.suite}] {field_part}same problem in {len(rest)} more file(s): {shown}")
        return lines
    if f.files:
        return [f"{label}/{name}: [{f.suite}] {field_part}{f.message}" for name in f.files]
    return [f"{label}: [{f.suite}] {field_part}{f.message}"]


def json_safe(x: Any) -> Any:
    """``x`` with every value made JSON-serialisable.

    Mappings become dicts with string keys, tuples lists, NumPy scalars Python numbers, NaN,
    infinities and pandas' missing values None, and anything else unknown its ``str``.
    """
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, bool | int | float | str):
        return x
    if x is pd.NA or x is pd.NaT:
        return None
    return str(x)

