"""Shared figure plumbing: PNG files written atomically, PNG bytes, inline Markdown for Dagster
metadata, and the display contrast stretch.

The rule for figures shown in Dagster metadata lives here, in :func:`png_markdown`: the image
embedded in the Markdown is at most :data:`METADATA_MAX_WIDTH_PX` wide (Dagster's metadata
dialog shows that much without cutting the right side off), scaled down with its aspect kept
when the file is wider, and the Markdown names the full-size file beside it.  Figures are laid
out to fit :data:`FIGURE_MAX_WIDTH_IN` at the default dpi (wide multi-panel figures wrap into
rows), so the scaling is a safety net rather than a way to shrink text.

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

from ..errors import CellscapeError

__all__ = [
    "FIGURE_MAX_WIDTH_IN",
    "METADATA_MAX_WIDTH_PX",
    "figure_bytes",
    "fit_width",
    "png_markdown",
    "release",
    "save_png",
    "stretch",
]

#: The widest image (pixels) Dagster's metadata dialog shows whole.
METADATA_MAX_WIDTH_PX = 1200
#: The widest figure (inches) of this package: 1188 px at :func:`save_png`'s default 110 dpi.
FIGURE_MAX_WIDTH_IN = 10.8


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


def fit_width(png: bytes, max_width_px: int = METADATA_MAX_WIDTH_PX) -> bytes:
    """A PNG no wider than ``max_width_px``: ``png`` itself when it fits, else scaled down.

    Parameters
    ----------
    png : bytes
        A PNG file's bytes.
    max_width_px : int
        The widest result, in pixels (at least 1).

    Returns
    -------
    bytes
        PNG bytes; a scaled image keeps the aspect ratio (height rounded to the nearest pixel,
        at least 1) and is resampled with a Lanczos filter.
    """
    from PIL import Image

    if max_width_px < 1:
        raise CellscapeError(f"must be at least 1, got {max_width_px}", field="max_width_px")
    with Image.open(io.BytesIO(png)) as im:
        width, height = im.size
        if width <= max_width_px:
            return png
        size = (max_width_px, max(1, round(height * max_width_px / width)))
        buf = io.BytesIO()
        im.resize(size, Image.Resampling.LANCZOS).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png_markdown(path: str | Path, alt: str = "figure", max_width_px: int = METADATA_MAX_WIDTH_PX) -> str:
    """Markdown for Dagster metadata: the PNG inline, fitted to the dialog, and its full-size file.

    Parameters
    ----------
    path : str or Path
        A PNG file (left as it is).
    alt : str
        Alternative text of the image.
    max_width_px : int
        The widest inline image (see :func:`fit_width`); the file keeps its full size.

    Returns
    -------
    str
        ``![alt](data:image/png;base64,...)`` and, on the next paragraph, the file's path and
        pixel size.
    """
    from PIL import Image

    path = Path(path)
    raw = path.read_bytes()
    try:
        with Image.open(io.BytesIO(raw)) as im:
            width, height = im.size
    except OSError as e:  # PIL's UnidentifiedImageError is an OSError
        raise CellscapeError(f"not a readable image ({e})", path=path) from e
    data = base64.b64encode(fit_width(raw, max_width_px)).decode("ascii")
    return f"![{alt}](data:image/png;base64,{data})\n\nfull size ({width} x {height} px): `{path}`"


def figure_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """PNG bytes of a figure (a pyplot figure is closed afterwards, see :func:`release`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    release(fig)
    return buf.getvalue()
