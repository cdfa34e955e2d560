"""Tests of feature spectra and code clusters (assets_pkg.core.localization.spectra).

Tolerances: float64 throughout; the Pearson matrix equals ``numpy.corrcoef`` to ``atol = 1e-12``;
the planted code groups are recovered exactly (ARI 1).
"""

import numpy as np
import pytest
from scipy.cluster.hierarchy import dendrogram
from sklearn.metrics import adjusted_rand_score
from spectra_factory import planted_spectra

from assets_pkg.core.localization.inputs import AnalysisError
from assets_pkg.core.localization.spectra import (
    CodeClusters,
    cluster_codes,
    pearson_matrix,
    protein_spectra,
    roman,
)


def test_protein_spectra_means_normalized_and_counts():
    h = np.array([[2, 0, 2], [0, 4, 0], [1, 1, 2], [3, 1, 0]], dtype=np.float32)
    proteins = ["B", "A", "B", "A"]
    spectra, counts = protein_spectra(h, proteins)
    assert list(spectra.index) == ["A", "B"]
    assert spectra.index.name == "protein"
    assert list(spectra.columns) == [0, 1, 2]
    np.testing.assert_allclose(spectra.loc["A"], [3 / 8, 5 / 8, 0.0])
    np.testing.assert_allclose(spectra.loc["B"], [3 / 8, 1 / 8, 4 / 8])
    np.testing.assert_allclose(spectra.sum(axis=1), 1.0)
    assert counts.to_dict() == {"A": 2, "B": 2}
    assert counts.name == "n_frames"


def test_protein_spectra_rejects_bad_input():
    with pytest.raises(AnalysisError, match="proteins"):
        protein_spectra(np.ones((3, 4)), ["a", "b"])
    with pytest.raises(AnalysisError, match="non-negative"):
        protein_spectra(-np.ones((2, 4)), ["a", "b"])


@pytest.mark.parametrize("chunk_rows", [8192, 7])
def test_pearson_matrix_matches_corrcoef(chunk_rows):
    rng = np.random.default_rng(1)
    x = rng.random((30, 12)) ** 3
    got = pearson_matrix(x, chunk_rows=chunk_rows)
    np.testing.assert_allclose(got, np.corrcoef(x, rowvar=False), atol=1e-12)
    assert got.shape == (12, 12)
    np.testing.assert_array_equal(got, got.T)


def test_pearson_matrix_constant_columns_are_zero_not_nan():
    rng = np.random.default_rng(2)
    x = rng.random((20, 6))
    x[:, 2] = 0.3
    x[:, 4] = 0.0
    got = pearson_matrix(x)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(np.diag(got), 1.0)
    for c in (2, 4):
        off = np.delete(got[c], c)
        np.testing.assert_array_equal(off, 0.0)
    keep = [0, 1, 3, 5]
    np.testing.assert_allclose(got[np.ix_(keep, keep)], np.corrcoef(x[:, keep], rowvar=False),
                               atol=1e-12)


def test_cluster_codes_recovers_planted_groups():
    spectra, planted, _ = planted_spectra()
    cc = cluster_codes(spectra, n_clusters=3)
    assert isinstance(cc, CodeClusters)
    k = spectra.shape[1]
    assert cc.corr.shape == (k, k) and cc.linkage.shape == (k - 1, 4)
    assert cc.labels.shape == (k,) and set(cc.labels) == {1, 2, 3}
    assert adjusted_rand_score(planted, cc.labels) == 1.0
    np.testing.assert_array_equal(cc.leaf_order, dendrogram(cc.linkage, no_plot=True)["leaves"])
    # every cluster is one run along the leaf order
    runs = cc.segments()
    assert len(runs) == 3 and sorted(r[2] for r in runs) == [1, 2, 3]
    assert runs[0][0] == 0 and runs[-1][1] == k


def test_reorder_maps_new_histograms_into_the_spectrum_order():
    spectra, _, _ = planted_spectra()
    cc = cluster_codes(spectra, n_clusters=3)
    h = np.arange(2 * spectra.shape[1]).reshape(2, -1)
    np.testing.assert_array_equal(cc.reorder(h), h[:, cc.leaf_order])
    np.testing.assert_array_equal(cc.reorder(h[0]), h[0, cc.leaf_order])
    df = cc.reorder(spectra)
    assert list(df.columns) == list(cc.leaf_order)
    np.testing.assert_array_equal(df.to_numpy(), spectra.to_numpy()[:, cc.leaf_order])
    with pytest.raises(AnalysisError, match="codes"):
        cc.reorder(np.ones((2, 3)))


def test_cluster_codes_rejects_bad_n_clusters():
    spectra, _, _ = planted_spectra()
    with pytest.raises(AnalysisError, match="n_clusters"):
        cluster_codes(spectra, n_clusters=0)


def test_roman():
    assert [roman(i) for i in (1, 2, 3, 4, 9, 14, 40)] == ["I", "II", "III", "IV", "IX", "XIV", "XL"]
