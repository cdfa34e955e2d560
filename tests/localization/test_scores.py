"""Tests of the atlas scores (assets_pkg.core.localization.scores): clustering score, kNN
accuracy, predictions, protein clusters and ARI.

The hand-computed clustering score and the kNN / ARI toy answers are exact.
"""

import numpy as np
import pandas as pd
import pytest
from spectra_factory import planted_spectra

from assets_pkg.core.localization.annotations import single_localization
from assets_pkg.core.localization.inputs import AnalysisError
from assets_pkg.core.localization.scores import (
    adjusted_rand_index,
    clustering_score,
    knn_localization_accuracy,
    predict_localization,
    protein_clusters,
)


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
    spectra, _, group = planted_spectra(n_proteins=30)
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
    spectra, _, group = planted_spectra(n_proteins=45, seed=3)
    clusters = protein_clusters(spectra, n_clusters=3, seed=0)
    assert clusters.index.equals(spectra.index) and clusters.name == "cluster"
    assert set(clusters) == {1, 2, 3}
    ann = {p: f"class{g}" for p, g in zip(spectra.index, group, strict=True)}
    single = single_localization(ann)
    assert adjusted_rand_index(clusters.loc[single.index], single) == 1.0
