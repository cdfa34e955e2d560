"""Input checks shared by the atlas modules (spectra, projection, scores and the atlas figures).

Every check raises :class:`AnalysisError` naming the offending argument.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import CellscapeError

__all__ = ["AnalysisError", "as_matrix", "as_spectra_frame"]


class AnalysisError(CellscapeError):
    """An analysis input is malformed (wrong shape, empty, inconsistent); the message names it."""


def as_matrix(x, name: str, min_rows: int = 1) -> np.ndarray:
    """``x`` as a finite 2-D float64 array with at least ``min_rows`` rows.

    Parameters
    ----------
    x : array-like, shape (N, D)
        Any numeric input.
    name : str
        The argument's name, reported as the error's field.
    min_rows : int
        Fewest rows accepted.

    Returns
    -------
    ndarray, shape (N, D), float64
        A new array unless ``x`` already is float64 (it is never modified).

    Raises
    ------
    AnalysisError
        Not 2-D, too few rows, or NaN / infinite values.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise AnalysisError(f"expected a 2-D array, got shape {a.shape}", field=name)
    if a.shape[0] < min_rows:
        raise AnalysisError(f"needs at least {min_rows} rows, got {a.shape[0]}", field=name)
    if not np.all(np.isfinite(a)):
        raise AnalysisError("contains NaN or infinite values", field=name)
    return a


def as_spectra_frame(spectra, name: str = "spectra") -> pd.DataFrame:
    """A copy of ``spectra`` as a table indexed by protein name.

    Parameters
    ----------
    spectra : pandas.DataFrame or array-like, shape (P, K)
        Spectra indexed by protein; a plain array is indexed ``0 .. P-1``.
    name : str
        The argument's name, reported as the error's field.

    Returns
    -------
    pandas.DataFrame, shape (P, K)
        Same values and columns, index converted to ``str``.

    Raises
    ------
    AnalysisError
        Not 2-D, non-finite values, or a protein named twice.
    """
    if isinstance(spectra, pd.DataFrame):
        df = spectra
    else:
        df = pd.DataFrame(as_matrix(spectra, name))
    as_matrix(df.to_numpy(), name)
    df = df.copy()
    df.index = df.index.map(str)
    if df.index.has_duplicates:
        dup = df.index[df.index.duplicated()].unique().tolist()[:5]
        raise AnalysisError(f"protein index has duplicates, e.g. {dup}", field=name)
    return df
