"""What the assets attach for the UI: tables as typed Dagster tables (floats rounded, rows capped
with a note), figures through the one helper that fits them to the metadata dialog."""

import ast
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from ui_checks import assert_ui_metadata

from assets_pkg.core.plots.figures import save_png
from assets_pkg.defs.metadata import figure_metadata, table_frame, table_metadata

DEFS = Path(__file__).resolve().parents[2] / "assets_pkg" / "defs"


def test_table_metadata_types_columns_rounds_floats_and_keeps_the_frame():
    df = pd.DataFrame({"split": ["train", "valid"], "frames": np.array([120, 30], np.int64),
                       "loss": [12.345678, 0.000123456], "ok": [True, False], "note": [None, "x"],
                       "when": pd.to_datetime(["2026-01-05T09:00:00Z", "2026-01-05T09:02:00Z"]),
                       "nan": [np.nan, 1.5]})
    before = df.copy()
    value = table_metadata(df)
    assert isinstance(value, dg.TableMetadataValue)
    assert [(c.name, c.type) for c in value.schema.columns] == [
        ("split", "string"), ("frames", "int"), ("loss", "float"), ("ok", "bool"), ("note", "string"),
        ("when", "datetime"), ("nan", "float")]
    rows = [r.data for r in value.records]
    assert rows[0] == {"split": "train", "frames": 120, "loss": 12.3457, "ok": True, "note": None,
                       "when": "2026-01-05T09:00:00+00:00", "nan": None}
    assert rows[1]["loss"] == 0.0001235  # below 1: significant digits, a small loss stays visible
    assert all(type(v) in (str, int, float, bool, type(None)) for r in rows for v in r.values())
    pd.testing.assert_frame_equal(df, before)
    # the index as first column(s), when asked
    per_plate = df.set_index("split")[["frames"]]
    assert [c.name for c in table_metadata(per_plate, index=True).schema.columns] == ["split", "frames"]


def test_table_metadata_caps_rows_with_a_note_in_the_table_and_the_schema():
    df = pd.DataFrame({"epoch": np.arange(75), "loss": np.linspace(1, 0, 75)})
    value = table_metadata(df, max_rows=10)
    assert len(value.records) == 11
    assert value.records[-1].data == {"epoch": "... 65 more rows (first 10 of 75 rows shown)", "loss": None}
    assert value.schema.constraints.other == ["first 10 of 75 rows"]
    frame = table_frame(value)
    assert list(frame.columns) == ["epoch", "loss"] and len(frame) == 11
    assert not table_metadata(df.head(10), max_rows=10).schema.constraints.other


def test_figure_metadata_gives_the_fitted_figure_and_its_full_size_file(tmp_path):
    fig = Figure(figsize=(16, 4))
    fig.subplots().plot([0, 1])
    png = save_png(fig, tmp_path / "wide.png")
    md = figure_metadata("curves", png)
    assert set(md) == {"curves", "curves_path"} and md["curves_path"].value == str(png)
    assert assert_ui_metadata(md) == 1


def _calls(tree: ast.AST, name: str) -> list[int]:
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
            and ((isinstance(n.func, ast.Name) and n.func.id == name)
                 or (isinstance(n.func, ast.Attribute) and n.func.attr == name))]


def test_assets_attach_figures_and_tables_through_the_helpers():
    """Outside defs/metadata.py no asset module embeds an image, builds Markdown from a table or a
    Dagster table by hand, and each saved figure is attached with figure_metadata."""
    bad = []
    for p in sorted(DEFS.rglob("*.py")):
        if p.name == "metadata.py":
            continue
        src = p.read_text(encoding="utf-8")
        tree = ast.parse(src)
        rel = p.relative_to(DEFS.parent)
        for name in ("png_markdown", "to_markdown", "table", "TableRecord", "b64encode"):
            bad += [f"{rel}:{line}: {name}()" for line in _calls(tree, name)]
        if re.search(r"data:image", src):
            bad.append(f"{rel}: an inline image")
        saved, attached = len(_calls(tree, "save_png")), len(_calls(tree, "figure_metadata"))
        if attached < saved:
            bad.append(f"{rel}: {saved} figures saved, {attached} attached with figure_metadata")
    assert not bad, "\n".join(bad)
