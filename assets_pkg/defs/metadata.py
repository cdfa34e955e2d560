"""Metadata the Dagster UI shows well: figures that fit its metadata dialog, with the full-size
file beside them, and tables as typed Dagster tables rather than Markdown.

Every asset attaches its figures through :func:`figure_metadata` and its tables through
:func:`table_metadata`; Markdown stays for prose.
"""

from __future__ import annotations

import math
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from ..core.plots.figures import png_markdown

__all__ = ["figure_metadata", "table_frame", "table_metadata"]


def figure_metadata(name: str, png: str | Path, alt: str | None = None) -> dict[str, dg.MetadataValue]:
    """``{name: the figure inline, fitted to the dialog; name_path: the full-size PNG file}``."""
    return {
        name: dg.MetadataValue.md(png_markdown(png, alt or name)),
        f"{name}_path": dg.MetadataValue.path(str(png)),
    }


def _column_type(s: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(s):
        return "bool"
    if pd.api.types.is_integer_dtype(s):
        return "int"
    if pd.api.types.is_float_dtype(s):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    return "string"


def _cell(v, kind: str, digits: int):
    """A JSON-safe table cell: None for missing, floats to ``digits`` decimals (significant digits
    below 1, so small losses keep their value), numpy scalars as Python ones."""
    if v is None or (not isinstance(v, str | bytes) and np.ndim(v) == 0 and pd.isna(v)):
        return None
    if kind == "bool":
        return bool(v)
    if kind == "int":
        return int(v)
    if kind == "float":
        f = float(v)
        if not math.isfinite(f):
            return str(f)
        return round(f, digits) if abs(f) >= 1 else float(f"{f:.{digits}g}")
    if kind == "datetime":
        return pd.Timestamp(v).isoformat()
    return str(v)


def table_metadata(df: pd.DataFrame, max_rows: int = 50, digits: int = 4, index: bool = False) -> dg.TableMetadataValue:
    """A DataFrame as a Dagster table: one typed column per DataFrame column, floats rounded,
    at most ``max_rows`` rows.

    Parameters
    ----------
    df : pandas.DataFrame
        Left unchanged.
    max_rows : int
        Rows shown; when the frame is longer the first ``max_rows`` are kept, and a last row
        says how many more there are (its first cell holds the note, the others are empty;
        the UI shows records, not the schema) as does the schema (``constraints.other``).
    digits : int
        Decimals of floats of magnitude 1 or more; significant digits below 1.
    index : bool
        Whether the index becomes the first column(s).
    """
    frame = df.reset_index() if index else df
    shown = frame.head(max_rows)
    kinds = {str(c): _column_type(frame[c]) for c in frame.columns}
    records = [
        dg.TableRecord({str(c): _cell(v, kinds[str(c)], digits) for c, v in zip(frame.columns, row, strict=True)})
        for row in shown.itertuples(index=False, name=None)
    ]
    note = [f"first {len(shown)} of {len(frame)} rows"] if len(frame) > len(shown) else []
    if note and len(frame.columns):
        first, *rest = (str(c) for c in frame.columns)
        more = f"... {len(frame) - len(shown)} more rows ({note[0]} shown)"
        records.append(dg.TableRecord({first: more, **dict.fromkeys(rest)}))
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, kind) for name, kind in kinds.items()],
        constraints=dg.TableConstraints(other=note) if note else None,
    )
    return dg.MetadataValue.table(records, schema=schema)


def table_frame(value: dg.TableMetadataValue) -> pd.DataFrame:
    """The rows of a table made by :func:`table_metadata` (a note row included), columns in schema order."""
    columns = [c.name for c in value.schema.columns] if value.schema else None
    return pd.DataFrame([r.data for r in value.records], columns=columns)
