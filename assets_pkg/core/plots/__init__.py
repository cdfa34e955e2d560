"""Figures people would rather look at than read, one module per subject.

* :mod:`.figures` -- ``save_png`` (atomic PNG files), ``figure_bytes``, ``png_markdown``
  (inline images for Dagster metadata), ``stretch`` (display contrast), ``release``;
* :mod:`.fields` -- a field with its nuclei and crops, a grid of frames;
* :mod:`.training` -- reconstructions, training curves, loss history;
* :mod:`.segmentation` -- segmentation overlays, predicted vs true counts;
* :mod:`.atlas` -- code-correlation heatmap, spectra per class, UMAPs.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so importing or
drawing never selects or changes a matplotlib backend.  New code imports a function from the
module that defines it; the names below are re-exported so ``from assets_pkg.core import plots;
plots.save_png(...)`` keeps working for existing callers.
"""

from .atlas import plot_aligned_umaps, plot_code_correlation, plot_spectra_by_class, plot_umap
from .fields import plot_field_nuclei, plot_frame_grid
from .figures import figure_bytes, png_markdown, release, save_png, stretch
from .segmentation import plot_counts, plot_segmentation_overlays
from .training import plot_loss_history, plot_reconstructions, plot_training_curves

__all__ = [
    "figure_bytes",
    "plot_aligned_umaps",
    "plot_code_correlation",
    "plot_counts",
    "plot_field_nuclei",
    "plot_frame_grid",
    "plot_loss_history",
    "plot_reconstructions",
    "plot_segmentation_overlays",
    "plot_spectra_by_class",
    "plot_training_curves",
    "plot_umap",
    "png_markdown",
    "release",
    "save_png",
    "stretch",
]
