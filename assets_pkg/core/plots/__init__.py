"""Figures people would rather look at than read, one module per subject.

* :mod:`.figures` -- ``save_png`` (atomic PNG files), ``figure_bytes``, ``png_markdown``
  (inline images for Dagster metadata), ``stretch`` (display contrast), ``release``;
* :mod:`.fields` -- a field with its nuclei and crops, a grid of frames;
* :mod:`.training` -- reconstructions, training curves, loss history;
* :mod:`.segmentation` -- segmentation overlays, predicted vs true counts;

The atlas figures (code correlation, spectra per class, UMAPs) draw the localization room's types
and live there: :mod:`assets_pkg.core.localization.figures`.  This package imports no domain room.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so importing or
drawing never selects or changes a matplotlib backend.  New code imports a function from the
module that defines it; the names below are re-exported so ``from assets_pkg.core import plots;
plots.save_png(...)`` keeps working for existing callers.
"""

from .fields import plot_field_nuclei, plot_frame_grid
from .figures import figure_bytes, png_markdown, release, save_png, stretch
from .segmentation import plot_counts, plot_segmentation_overlays
from .training import plot_loss_history, plot_reconstructions, plot_training_curves

__all__ = [
    "figure_bytes",
    "plot_counts",
    "plot_field_nuclei",
    "plot_frame_grid",
    "plot_loss_history",
    "plot_reconstructions",
    "plot_segmentation_overlays",
    "plot_training_curves",
    "png_markdown",
    "release",
    "save_png",
    "stretch",
]
