"""Localization annotations: the accepted forms, single-localization proteins, class order.

Annotations (``annotations`` arguments across the atlas) may be given as

* a mapping ``protein -> classes`` where classes is a set/list/tuple of class names or a
  single string (``';'``-separated names allowed), or
* a pandas Series with the same meaning, or
* a long pandas DataFrame with a ``protein`` column and a ``localization`` column (one row
  per protein and class; ``target_name`` / ``annotation_name`` as in the OpenCell panel
  tables are accepted as well).

Proteins with an empty set of classes count as unannotated.  See :func:`normalize_annotations`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from ..imaging.plates import LOCALIZATIONS
from .inputs import AnalysisError

__all__ = ["annotations_from_rows", "class_order", "normalize_annotations", "single_localization"]


def _split_classes(value) -> frozenset[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return frozenset()
    if isinstance(value, str):
        parts = value.split(";")
    elif isinstance(value, Iterable):
        parts = list(value)
    else:
        raise AnalysisError(f"classes must be a string or an iterable of strings, got {value!r}",
                            field="annotations")
    return frozenset(str(p).strip() for p in parts if str(p).strip())


def normalize_annotations(annotations) -> dict[str, frozenset[str]]:
    """Annotations as a ``dict`` protein -> frozenset of class names (empty sets dropped).

    Parameters
    ----------
    annotations : Mapping, pandas.Series or pandas.DataFrame
        ``protein -> classes`` (a set/list/tuple of names or one ``';'``-separated string), or a
        long table with columns ``protein`` and ``localization`` (or ``target_name`` and
        ``annotation_name``), one row per protein and class.

    Returns
    -------
    dict of str to frozenset of str
        Keys are ``str(protein)``; proteins without any class are left out.
    """
    if isinstance(annotations, pd.DataFrame):
        for pcol, ccol in (("protein", "localization"), ("target_name", "annotation_name")):
            if pcol in annotations.columns and ccol in annotations.columns:
                break
        else:
            raise AnalysisError(
                "an annotation table needs the columns 'protein' and 'localization' "
                f"(or 'target_name' and 'annotation_name'); got {list(annotations.columns)}",
                field="annotations")
        sub = annotations[[pcol, ccol]].dropna()
        out: dict[str, set[str]] = {}
        for p, c in zip(sub[pcol].astype(str), sub[ccol].astype(str), strict=True):
            out.setdefault(p, set()).update(_split_classes(c))
        return {p: frozenset(c) for p, c in out.items() if c}
    if isinstance(annotations, pd.Series):
        annotations = annotations.to_dict()
    if not isinstance(annotations, Mapping):
        raise AnalysisError(f"unsupported annotations type {type(annotations).__name__}",
                            field="annotations")
    norm = {str(p): _split_classes(c) for p, c in annotations.items()}
    return {p: c for p, c in norm.items() if c}


def single_localization(annotations) -> pd.Series:
    """The class of every protein annotated with exactly one localization.

    Parameters
    ----------
    annotations : see :func:`normalize_annotations`

    Returns
    -------
    pandas.Series of str
        Indexed by protein (sorted), named ``"localization"``.
    """
    ann = normalize_annotations(annotations)
    single = {p: next(iter(c)) for p, c in sorted(ann.items()) if len(c) == 1}
    s = pd.Series(single, dtype=object, name="localization")
    s.index.name = "protein"
    return s


def class_order(classes: Iterable[str]) -> list[str]:
    """Classes in the order of LOCALIZATIONS, unknown ones after, alphabetically.

    Parameters
    ----------
    classes : iterable of str
        Class names (repeats allowed).

    Returns
    -------
    list of str
        Each distinct class once.
    """
    rank = {c: i for i, c in enumerate(LOCALIZATIONS)}
    return sorted(set(classes), key=lambda c: (rank.get(c, len(rank)), c))


def annotations_from_rows(rows: pd.DataFrame) -> pd.Series:
    """Protein -> set of annotated classes, from the frame table's ``localization`` column
    (empty for unannotated proteins, which are left out)."""
    per = rows.groupby("gene")["localization"].first().fillna("").astype(str)
    per = per[per.str.len() > 0]
    return per.map(lambda s: frozenset(x for x in s.split(";") if x))
