"""The atlas figures (assets_pkg.core.localization.figures) draw what they promise."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from spectra_factory import planted_spectra

from assets_pkg.core.localization.figures import (
    plot_aligned_umaps,
    plot_code_correlation,
    plot_spectra_by_class,
    plot_umap,
)
from assets_pkg.core.localization.spectra import cluster_codes


def test_figures_draw_without_pyplot():
    spectra, _, group = planted_spectra()
    cc = cluster_codes(spectra, n_clusters=3)
    fig = plot_code_correlation(cc)
    assert isinstance(fig, Figure) and fig.canvas.manager is None  # not registered with pyplot
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"I", "II", "III"} <= texts

    classes = pd.Series({p: ["er", "golgi", "nucleolus_gc"][g]
                         for p, g in zip(spectra.index, group, strict=True)})
    fig = plot_spectra_by_class(spectra, classes, cc)
    assert len([ax for ax in fig.axes if ax.get_ylabel()]) == 3

    rng = np.random.default_rng(0)
    coords = rng.normal(size=(50, 2))
    labels = np.array(["er", "golgi"] * 25)
    single = np.arange(50) % 3 != 0
    fig = plot_umap(coords, labels, single, title="test")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["others", "er", "golgi"]
    fig = plot_aligned_umaps([coords, coords + 1], labels, ["a", "b"], single)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
