"""Tests of the localization-atlas analysis layer (assets_pkg.core.localization.analysis).

Tolerances: float64 throughout; the Pearson matrix equals ``numpy.corrcoef`` to
``atol = 1e-12``; the hand-computed clustering score and the kNN / ARI toy answers are exact.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy.cluster.hierarchy import dendrogram  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from assets_pkg.core.localization.analysis import (  # noqa: E402
    AnalysisError,
    CodeClusters,
    adjusted_rand_index,
    aligned_umap,
    cluster_codes,
    clustering_score,
    knn_localization_accuracy,
    normalize_annotations,
    pearson_matrix,
    plot_aligned_umaps,
    plot_code_correlation,
    plot_spectra_by_class,
    plot_umap,
    predict_localization,
    protein_clusters,
    protein_spectra,
    roman,
    single_localization,
    umap_projection,
)


def _planted_spectra(seed=0, n_proteins=60, group_sizes=(10, 7, 13), noise=0.02):
    """Spectra whose codes co-vary in planted groups across proteins.

    Each protein has one activity per code group; a code's value is its group's activity
    times a fixed code weight, plus a little noise.  Codes are shuffled so the groups are not
    contiguous.  Returns (spectra DataFrame, planted code labels, protein group of each row).
    """
    rng = np.random.default_rng(seed)
    k = sum(group_sizes)
    planted = np.repeat(np.arange(len(group_sizes)), group_sizes)
    perm = rng.permutation(k)
    planted = planted[perm]
    # three protein groups, each dominated by one code group
    protein_group = np.arange(n_proteins) % len(group_sizes)
    activity = rng.lognormal(0.0, 0.3, size=(n_proteins, len(group_sizes)))
    activity[np.arange(n_proteins), protein_group] *= 8.0
    weights = rng.uniform(0.5, 1.5, size=k)
    x = activity[:, planted] * weights + noise * rng.random((n_proteins, k))
    x /= x.sum(axis=1, keepdims=True)
    names = [f"P{i:03d}" for i in range(n_proteins)]
    return pd.DataFrame(x, index=pd.Index(names, name="protein")), planted, protein_group


# --------------------------------------------------------------------------------------------
# spectra
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Pearson matrix and code clusters
# --------------------------------------------------------------------------------------------


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
    spectra, planted, _ = _planted_spectra()
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
    spectra, _, _ = _planted_spectra()
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
    spectra, _, _ = _planted_spectra()
    with pytest.raises(AnalysisError, match="n_clusters"):
        cluster_codes(spectra, n_clusters=0)


# --------------------------------------------------------------------------------------------
# clustering score
# --------------------------------------------------------------------------------------------


def test_clustering_score_hand_computed():
    # class A around (0, 4): median centre (0, 4), distances 0, 1, 1, 1 -> size 1
    # class B around (4, 0): median centre (4, 0), distances 0, 1, 1 -> size 1
    # centres [[0, 4], [4, 0]] -> np.std([0, 4, 4, 0]) = 2; median size 1 -> score 2
    coords = np.array([[0, 4], [1, 4], [0, 5], [-1, 4],
                       [4, 0], [4, 1], [4, -1],
                       [100, 100]], dtype=float)
    labels = ["A"] * 4 + ["B"] * 3 + ["others"]
    score, per = clustering_score(coords, labels)
    assert score == 2.0
    assert list(per.index) == ["A", "B"]
    assert per["n"].tolist() == [4, 3]
    np.testing.assert_array_equal(per[["centre_x", "centre_y"]].to_numpy(), [[0, 4], [4, 0]])
    np.testing.assert_array_equal(per["size"].to_numpy(), [1.0, 1.0])
    # a third, wider class: sizes [1, 1, 3] keep the median 1; centres add (4, 4)
    coords3 = np.vstack([coords, [[4, 1], [4, 7], [7, 4], [1, 4]]])
    score3, per3 = clustering_score(coords3, labels + ["C"] * 4)
    centres = np.array([[0, 4], [4, 0], [4, 4]], dtype=float)
    assert per3.loc["C", "size"] == 3.0
    assert score3 == pytest.approx(np.std(centres) / 1.0, abs=1e-15)


# --------------------------------------------------------------------------------------------
# kNN accuracy, predictions, ARI
# --------------------------------------------------------------------------------------------


def _line_spectra():
    # proteins on a line (2 columns so it is a matrix), euclidean distances are exact
    pos = {"a1": 0.0, "a2": 1.0, "a3": 2.0, "b1": 10.0, "b2": 11.0, "b3": 12.0, "q1": 0.5, "q2": 6.0}
    return pd.DataFrame({0: list(pos.values()), 1: 0.0}, index=list(pos))


def test_knn_accuracy_toy_known_answer():
    spectra = _line_spectra()
    ann = {"a1": {"A"}, "a2": "A;C", "a3": {"B"}, "b1": {"B"}, "b2": ["B"], "b3": {"B"}}
    acc, per = knn_localization_accuracy(spectra, ann, k=2, metric="euclidean")
    # a1: a2 (A,C), a3 (B) -> A1 B1 C1, tie -> closest supporter a2 -> A (listed before C): correct
    # a2: a1, a3 at equal distance (table order) -> A1 B1 -> A (a1 closer in order): correct
    # a3 (annotated B): a2, a1 -> A2: wrong.  b1: b2, b3 -> B; b2: b1, b3; b3: b2, b1 -> correct
    assert acc == 5 / 6
    per = per.set_index("protein")
    assert per["correct"].to_dict() == {"a1": True, "a2": True, "a3": False, "b1": True,
                                        "b2": True, "b3": True}
    assert per.loc["a3", "predicted"] == "A" and per.loc["a3", "votes"] == 2
    assert per.loc["a1", "neighbours"] == "a2;a3"
    assert per.loc["a2", "annotated"] == "A;C"
    assert "q1" not in per.index


def test_knn_accuracy_correlation_metric_on_planted_groups():
    spectra, _, group = _planted_spectra(n_proteins=30)
    ann = {p: {f"class{g}"} for p, g in zip(spectra.index, group, strict=True)}
    acc, per = knn_localization_accuracy(spectra, ann, k=5)
    assert acc == 1.0 and len(per) == 30


def test_predict_localization_toy():
    spectra = _line_spectra()
    ann = {"a1": {"A"}, "a2": {"A"}, "a3": {"A"}, "b1": {"B"}, "b2": {"B"}, "b3": {"B"}}
    pred = predict_localization(spectra, ann, ["q1", "q2", "a1"], k=2, metric="euclidean")
    assert list(pred.columns) == ["protein", "predicted", "confidence", "neighbours"]
    pred = pred.set_index("protein")
    assert pred.loc["q1", "predicted"] == "A" and pred.loc["q1", "confidence"] == 1.0
    assert pred.loc["q1", "neighbours"] == "a1;a2"
    # q2 = 6 is 4 from a3 and from b1: one vote each, a3 first in table order
    assert pred.loc["q2", "predicted"] == "A;B" and pred.loc["q2", "confidence"] == 0.5
    assert pred.loc["q2", "neighbours"] == "a3;b1"
    # an annotated query is never its own neighbour
    assert pred.loc["a1", "neighbours"] == "a2;a3"
    with pytest.raises(AnalysisError, match="not in spectra"):
        predict_localization(spectra, ann, ["zz"])


def test_adjusted_rand_index_known_values():
    assert adjusted_rand_index([1, 1, 2, 2], ["x", "x", "y", "y"]) == 1.0
    # hand computed: sum C(n_ij,2) = 1, rows 2, cols 1, n = 4 -> (1 - 1/3) / (3/2 - 1/3) = 4/7
    assert adjusted_rand_index([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(4 / 7, abs=1e-12)


def test_protein_clusters_recover_planted_protein_groups():
    spectra, _, group = _planted_spectra(n_proteins=45, seed=3)
    clusters = protein_clusters(spectra, n_clusters=3, seed=0)
    assert clusters.index.equals(spectra.index) and clusters.name == "cluster"
    assert set(clusters) == {1, 2, 3}
    ann = {p: f"class{g}" for p, g in zip(spectra.index, group, strict=True)}
    single = single_localization(ann)
    assert adjusted_rand_index(clusters.loc[single.index], single) == 1.0


def test_normalize_annotations_forms():
    long = pd.DataFrame({"protein": ["p", "p", "q", "r"],
                         "localization": ["er", "golgi", "nucleolus_gc", "er"]})
    want = {"p": frozenset({"er", "golgi"}), "q": frozenset({"nucleolus_gc"}),
            "r": frozenset({"er"})}
    assert normalize_annotations(long) == want
    assert normalize_annotations({"p": "er;golgi", "q": ["nucleolus_gc"], "r": ("er",),
                                  "s": set()}) == want
    assert normalize_annotations(pd.Series({"p": "er; golgi", "q": "nucleolus_gc", "r": "er"})) == want
    assert single_localization(long).to_dict() == {"q": "nucleolus_gc", "r": "er"}
    with pytest.raises(AnalysisError, match="localization"):
        normalize_annotations(pd.DataFrame({"x": [1]}))


# --------------------------------------------------------------------------------------------
# UMAP (one module fixture: numba compiles once)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(4)
    centres = rng.normal(0, 8, size=(3, 6))
    labels = np.repeat(np.array(["er", "golgi", "nucleolus_gc"]), 40)
    x = centres[np.repeat(np.arange(3), 40)] + rng.normal(0, 1, size=(120, 6))
    return x, labels


def test_umap_projection_is_deterministic_and_separates_blobs(blobs):
    x, labels = blobs
    a = umap_projection(x, seed=7, n_neighbors=10)
    b = umap_projection(x, seed=7, n_neighbors=10)
    assert a.shape == (120, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    score, per = clustering_score(a, labels)
    assert score > 1.0 and len(per) == 3


def test_aligned_umap_panels_are_comparable(blobs):
    x, labels = blobs
    rng = np.random.default_rng(5)
    y = np.hstack([x, rng.normal(0, 0.05, size=(120, 2))])  # another "model": 8 dims
    out = aligned_umap([x, y], seed=3, n_neighbors=10)
    assert len(out) == 2 and all(o.shape == (120, 2) and o.dtype == np.float32 for o in out)
    # identity relations: the same item lands in about the same place in both panels
    spread = np.linalg.norm(out[0] - out[0].mean(axis=0), axis=1).mean()
    shift = np.linalg.norm(out[0] - out[1], axis=1).mean()
    assert shift < 0.25 * spread
    with pytest.raises(AnalysisError, match="same items"):
        aligned_umap([x, x[:50]], seed=0)


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


def test_roman():
    assert [roman(i) for i in (1, 2, 3, 4, 9, 14, 40)] == ["I", "II", "III", "IV", "IX", "XIV", "XL"]


def test_figures_draw():
    spectra, _, group = _planted_spectra()
    cc = cluster_codes(spectra, n_clusters=3)
    fig = plot_code_correlation(cc)
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"I", "II", "III"} <= texts
    plt.close(fig)

    classes = pd.Series({p: ["er", "golgi", "nucleolus_gc"][g]
                         for p, g in zip(spectra.index, group, strict=True)})
    fig = plot_spectra_by_class(spectra, classes, cc)
    assert len([ax for ax in fig.axes if ax.get_ylabel()]) == 3
    plt.close(fig)

    rng = np.random.default_rng(0)
    coords = rng.normal(size=(50, 2))
    labels = np.array(["er", "golgi"] * 25)
    single = np.arange(50) % 3 != 0
    fig = plot_umap(coords, labels, single, title="test")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["others", "er", "golgi"]
    plt.close(fig)
    fig = plot_aligned_umaps([coords, coords + 1], labels, ["a", "b"], single)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    plt.close(fig)
