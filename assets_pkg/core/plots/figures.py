"""Shared figure plumbing: PNG files written atomically, PNG bytes, inline Markdown for Dagster
metadata, and the display contrast stretch.

The figure functions of this package build :class:`matplotlib.figure.Figure` objects directly,
never through pyplot: no backend is selected at import or when drawing (a notebook's backend is
left alone) and no figure is kept in pyplot's registry, so nothing leaks.  ``fig.savefig`` renders
with the Agg canvas matplotlib attaches for PNG output.
"""

from __future__ import annotations

import base64
import io
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = ["figure_bytes", "png_markdown", "release", "save_png", "stretch"]


def stretch(img: np.ndarray, lo: float = 1.0, hi: float = 99.8) -> np.ndarray:
    """Percentile contrast stretch to [0, 1], for display only.

    Parameters
    ----------
    img : ndarray, any shape, any numeric dtype
    lo, hi : float
        Percentiles (0..100) mapped to 0 and 1.

    Returns
    -------
    ndarray, same shape, float32, values in [0, 1]
    """
    a = np.asarray(img, dtype=np.float32)
    p0, p1 = np.percentile(a, [lo, hi])
    return np.clip((a - p0) / max(p1 - p0, 1e-6), 0, 1)


def release(fig: Figure) -> None:
    """Close ``fig`` in pyplot when pyplot manages it (a figure a caller made with pyplot).

    Figures of this package are not registered with pyplot and need no closing; pyplot is
    never imported here, so a user's backend stays as it is.
    """
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)


def save_png(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure as PNG atomically (temporary file, then rename).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        A figure of this package, or one made with pyplot (then closed in pyplot, see
        :func:`release`).
    path : str or Path
        The PNG file; its folder is created.
    dpi : int
        Dots per inch (the pixel size is ``figsize * dpi``).

    Returns
    -------
    Path
        ``path``, readable by everyone (mode 0644).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=dpi)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; figures are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        release(fig)
    return path


def png_markdown(path: str | Path, alt: str = "figure") -> str:
    """Markdown that embeds a PNG file inline (data URI), for Dagster metadata."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{data})"


def figure_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """PNG bytes of a figure (a pyplot figure is closed afterwards, see :func:`release`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    release(fig)
    return buf.getvalue()
