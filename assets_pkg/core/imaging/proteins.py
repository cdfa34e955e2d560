"""Protein panels: which tagged proteins a simulated (or real) screen holds, and where they live.

A panel is read from an OpenCell-format annotation table, one row per (protein, annotation):

=================  =====================================================================
column             meaning
=================  =====================================================================
``ensg_id``        Ensembl gene id, ``ENSG`` followed by 11 digits
``target_name``    gene symbol of the tagged protein
``annotation_name``  one of :data:`assets_pkg.core.imaging.plates.LOCALIZATIONS`
``annotation_grade`` 3 = prominent, 2 = clear, 1 = weak
=================  =====================================================================

The package ships a default panel (``core/data/default_panel.csv``) of 85 well-known human
proteins covering every localization class; the annotations of those in OpenCell are
OpenCell's own, copied verbatim.  :func:`balanced_panel` draws a larger panel from a whole
annotation table (e.g. OpenCell's 1,310 proteins), spread evenly over the localization classes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CellscapeError
from .plates import LOCALIZATIONS, Localization, WellInfo

#: Columns an annotation table must have.
PANEL_COLUMNS: tuple[str, ...] = ("ensg_id", "target_name", "annotation_name", "annotation_grade")

#: At most this many localizations are kept per protein (highest grade first).
MAX_LOCALIZATIONS = 3

_ENSG_RE = re.compile(r"^ENSG\d{11}$")


class PanelError(CellscapeError):
    """A protein panel table is malformed; the message names the file and the field."""


def default_panel_path() -> Path:
    """Path of the packaged default panel CSV."""
    return Path(str(resources.files("assets_pkg.core") / "data" / "default_panel.csv"))


def load_panel(path_or_df: str | Path | pd.DataFrame | None = None) -> list[WellInfo]:
    """Read a protein panel from an OpenCell-format annotation table.

    Parameters
    ----------
    path_or_df : path-like or pandas.DataFrame, optional
        A CSV file or a DataFrame with the columns :data:`PANEL_COLUMNS`, several rows per
        protein.  ``None`` reads the packaged default panel (:func:`default_panel_path`).

    Returns
    -------
    list of WellInfo
        One entry per protein (grouped by ``ensg_id``), in order of first appearance in the
        table.  Each keeps at most :data:`MAX_LOCALIZATIONS` localizations, sorted by grade
        (highest first), ties in the order of :data:`~assets_pkg.core.imaging.plates.LOCALIZATIONS`;
        a localization listed twice keeps its highest grade.

    Raises
    ------
    PanelError
        When the file is missing or unreadable, a column is missing, or a value is invalid:
        an empty or non-``ENSG`` id (field ``ensg_id``), an empty or inconsistent gene name
        (``target_name``), a name outside the vocabulary (``annotation_name``), or a grade
        other than 1, 2 or 3 (``annotation_grade``).  The message names the file (or
        ``<DataFrame>``), the field and the offending rows.
    """
    if path_or_df is None:
        path_or_df = default_panel_path()
    if isinstance(path_or_df, pd.DataFrame):
        where = "<DataFrame>"
        df = path_or_df.astype(str).copy()
    else:
        where = str(path_or_df)
        p = Path(path_or_df)
        if not p.is_file():
            raise PanelError("panel file does not exist", path=where)
        try:
            df = pd.read_csv(p, dtype=str, keep_default_na=False, encoding="utf-8")
        except UnicodeDecodeError as e:
            raise PanelError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=where) from e
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise PanelError(f"not a readable CSV: {e}", path=where) from e

    df.columns = [str(c).strip() for c in df.columns]
    for col in PANEL_COLUMNS:
        if col not in df.columns:
            raise PanelError(
                f"required column is missing (have {list(df.columns)})", path=where, field=col
            )
    df = df[list(PANEL_COLUMNS)].apply(lambda s: s.str.strip())
    if len(df) == 0:
        raise PanelError("panel lists no protein", path=where)

    def bad(mask: pd.Series, field: str, what: str) -> None:
        if mask.any():
            rows = [int(i) + 2 for i in df.index[mask][:5]]  # CSV line numbers (header = 1)
            vals = sorted(set(df.loc[mask, field].tolist()))[:5]
            raise PanelError(f"{what}: {vals} (CSV lines {rows})", path=where, field=field)

    bad(~df["ensg_id"].str.match(_ENSG_RE), "ensg_id", "not an Ensembl gene id (ENSG + 11 digits)")
    bad(df["target_name"] == "", "target_name", "empty gene name")
    bad(
        ~df["annotation_name"].isin(LOCALIZATIONS),
        "annotation_name",
        f"unknown localization (known: {', '.join(LOCALIZATIONS)})",
    )
    bad(
        ~df["annotation_grade"].isin(["1", "2", "3"]), "annotation_grade", "grade must be 1, 2 or 3"
    )

    names = df.groupby("ensg_id", sort=False)["target_name"].nunique()
    if (names > 1).any():
        ensg = names.index[names > 1][0]
        genes = sorted(set(df.loc[df["ensg_id"] == ensg, "target_name"]))
        raise PanelError(
            f"{ensg} is listed under several names {genes}", path=where, field="target_name"
        )

    order = {name: i for i, name in enumerate(LOCALIZATIONS)}
    panel: list[WellInfo] = []
    for ensg, rows in df.groupby("ensg_id", sort=False):
        best: dict[str, int] = {}
        for name, grade in zip(rows["annotation_name"], rows["annotation_grade"], strict=True):
            best[name] = max(best.get(name, 0), int(grade))
        locs = sorted(best.items(), key=lambda kv: (-kv[1], order[kv[0]]))[:MAX_LOCALIZATIONS]
        panel.append(
            WellInfo(
                gene=str(rows["target_name"].iloc[0]),
                ensg_id=str(ensg),
                localizations=tuple(Localization(n, g) for n, g in locs),
            )
        )
    return panel


def panel_to_frame(panel: list[WellInfo]) -> pd.DataFrame:
    """The inverse of :func:`load_panel`: one row per (protein, localization)."""
    rows = [(w.ensg_id, w.gene, loc.name, loc.grade) for w in panel for loc in w.localizations]
    return pd.DataFrame(rows, columns=list(PANEL_COLUMNS))


def balanced_panel(annotations: str | Path | pd.DataFrame, n: int, seed: int,
                   prefer_single: bool = True) -> pd.DataFrame:
    """Choose ``n`` proteins of an annotation table, spread evenly over their main localization.

    Each protein's main class is its first localization as :func:`load_panel` orders them
    (highest grade, ties in :data:`~assets_pkg.core.imaging.plates.LOCALIZATIONS` order).  The
    classes take turns, in ``LOCALIZATIONS`` order, each giving its next protein until ``n`` are
    chosen; a class with no protein left is skipped.  Within a class the proteins are shuffled
    with ``seed`` and, with ``prefer_single``, those with exactly one localization come first
    (the atlas scores its clustering score and ARI on single-localization proteins).

    Parameters
    ----------
    annotations : path-like or pandas.DataFrame
        An OpenCell-format annotation table (:data:`PANEL_COLUMNS`), validated by :func:`load_panel`.
    n : int
        Proteins to choose, at least 1.
    seed : int
        Seeds the order within each class.
    prefer_single : bool
        Single-localization proteins of a class before its multi-localization ones.

    Returns
    -------
    pandas.DataFrame
        The chosen proteins' rows (:func:`panel_to_frame`: columns :data:`PANEL_COLUMNS`, at most
        :data:`MAX_LOCALIZATIONS` per protein), proteins in the order they were chosen; a valid
        ``proteins`` argument of the simulator and of :func:`load_panel`.

    Raises
    ------
    PanelError
        When the table is invalid (see :func:`load_panel`) or holds fewer than ``n`` proteins
        (field ``ensg_id``).
    """
    if n < 1:
        raise PanelError(f"n must be at least 1, got {n}", field="n")
    panel = load_panel(annotations)
    where = "<DataFrame>" if isinstance(annotations, pd.DataFrame) else str(annotations)
    if len(panel) < n:
        raise PanelError(f"the table lists {len(panel)} proteins, fewer than the {n} asked for",
                         path=where, field="ensg_id")
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[WellInfo]] = defaultdict(list)
    for info in panel:
        by_class[info.localizations[0].name].append(info)
    queues = {}
    for name in LOCALIZATIONS:
        members = by_class.get(name, [])
        order = rng.permutation(len(members))
        shuffled = [members[i] for i in order]
        if prefer_single:
            shuffled.sort(key=lambda w: len(w.localizations) != 1)  # stable: keeps the shuffle within each group
        queues[name] = shuffled
    chosen: list[WellInfo] = []
    while len(chosen) < n:
        for name in LOCALIZATIONS:
            if queues[name] and len(chosen) < n:
                chosen.append(queues[name].pop(0))
    return panel_to_frame(chosen)
