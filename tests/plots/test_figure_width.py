"""Figures fit Dagster's metadata dialog: laid out within FIGURE_MAX_WIDTH_IN, and the inline
image of ``png_markdown`` at most METADATA_MAX_WIDTH_PX wide with its full-size file named."""

import base64
import io
import re

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from assets_pkg.core.errors import CellscapeError
from assets_pkg.core.localization.figures import plot_aligned_umaps
from assets_pkg.core.plots.fields import plot_field_nuclei, plot_frame_grid
from assets_pkg.core.plots.figures import (
    METADATA_MAX_WIDTH_PX,
    figure_bytes,
    fit_width,
    png_markdown,
    save_png,
)
from assets_pkg.core.plots.segmentation import plot_counts, plot_segmentation_overlays
from assets_pkg.core.plots.training import plot_reconstructions, plot_training_curves


def _size(png: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(png)) as im:
        return im.size


def _blank(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in))
    fig.subplots().plot([0, 1], [0, 1])
    return fig


def test_fit_width_scales_a_wide_png_down_keeping_its_aspect():
    wide = figure_bytes(_blank(16, 4), dpi=110)
    assert _size(wide) == (1760, 440)
    fitted = fit_width(wide)
    assert _size(fitted) == (METADATA_MAX_WIDTH_PX, 300)
    narrow = figure_bytes(_blank(6, 4), dpi=110)
    assert fit_width(narrow) is narrow  # fits already: the very bytes
    assert _size(fit_width(wide, 100)) == (100, 25)
    with pytest.raises(CellscapeError, match="max_width_px"):
        fit_width(wide, 0)


def test_png_markdown_embeds_the_fitted_image_and_names_the_full_size_file(tmp_path):
    path = save_png(_blank(16, 4), tmp_path / "wide.png")
    before = path.read_bytes()
    md = png_markdown(path, "curves")
    data = re.fullmatch(r"!\[curves\]\(data:image/png;base64,([^)]+)\)\n\nfull size \(1760 x 440 px\): `(.+)`", md)
    assert data, md[:80] + " ... " + md[-120:]
    assert _size(base64.b64decode(data.group(1))) == (1200, 300)
    assert data.group(2) == str(path) and path.read_bytes() == before  # the file keeps its full size
    (tmp_path / "not.png").write_text("text")
    with pytest.raises(CellscapeError, match="not.png"):
        png_markdown(tmp_path / "not.png")


# The figures the assets attach, at the sizes the assets draw them: each fits the dialog at
# save_png's 110 dpi by its layout (wide ones wrap into rows), not by being scaled down.
rng = np.random.default_rng(0)
_IMG = rng.random((120, 120))
_LAB = np.zeros((120, 120), int)
_LAB[20:50, 20:50] = 1
_FRAMES = rng.random((24, 100, 100, 3)).astype(np.float32)
_HISTORY = [{"epoch": e, "train_total": 1.0 / (e + 1), "valid_total": 1.1 / (e + 1), "valid_reconstruction": 0.5 / (e + 1),
             "valid_codebook": 0.1, "train_perplexity": 3.0 + e, "valid_perplexity": 3.5 + e} for e in range(4)]
_COORDS = rng.random((40, 2))
_LABELS = np.array(["nucleoplasm", "cytoplasm"] * 20)
FIGURES = {
    "field": lambda: plot_field_nuclei(_IMG, _LAB, np.array([[35, 35]]), None, _IMG, "plate01 A01 f00"),
    "frame_grid": lambda: plot_frame_grid(_FRAMES, ["GENE\nnucleoplasm, cytosol"] * 24, title="plate01"),
    "reconstructions": lambda: plot_reconstructions(_FRAMES[:8], _FRAMES[:8], ["GENE"] * 8, "model"),
    "curves": lambda: plot_training_curves(_HISTORY, "model"),
    "overlays": lambda: plot_segmentation_overlays([_IMG] * 3, [_LAB] * 3, {"unet": [_LAB] * 3, "classical": [_LAB] * 3},
                                                   ["a", "b", "c"], {"unet": [1.0] * 3, "classical": [0.5] * 3}),
    "counts": lambda: plot_counts([1, 2, 3], {"counting_cnn": [1, 2, 3], "unet_instances": [1, np.nan, 3],
                                              "classical_instances": [2, 2, 3]}, ["F1 w1", "F1 w2", "F1 w1"], "counts"),
    "aligned_umaps_3": lambda: plot_aligned_umaps([_COORDS] * 3, _LABELS, ["model", "ablation", "previous"]),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_each_figure_is_laid_out_to_fit_the_dialog(name):
    width, height = _size(figure_bytes(FIGURES[name](), dpi=110))
    assert width <= METADATA_MAX_WIDTH_PX, f"{name}: {width} px wide at 110 dpi"
    assert height >= 0.3 * width, f"{name}: {width}x{height} px, a strip"
