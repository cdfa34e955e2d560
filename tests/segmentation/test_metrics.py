"""Segmentation metrics on small hand-made label images with answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assets_pkg.core.segmentation import metrics as sm


def boxes(shape, *rects):
    """Label image with rectangle k+1 = (y0, y1, x0, x1) painted in order."""
    lab = np.zeros(shape, np.int32)
    for k, (y0, y1, x0, x1) in enumerate(rects):
        lab[y0:y1, x0:x1] = k + 1
    return lab


def test_pixel_metrics_known_values():
    true = np.zeros((4, 5), bool)
    true[0:2, 0:2] = True  # 4 px
    pred = np.zeros((4, 5), bool)
    pred[0:2, 1:3] = True  # 4 px, 2 shared
    # agreement: 20 px minus 4 disagreeing (2 only-true + 2 only-pred)
    assert sm.pixel_accuracy(pred, true) == pytest.approx(16 / 20)
    assert sm.foreground_iou(pred, true) == pytest.approx(2 / 6)
    assert sm.dice(pred, true) == pytest.approx(2 * 2 / 8)
    # label images count as foreground where > 0
    assert sm.foreground_iou(pred.astype(np.int32) * 7, true.astype(np.uint16) * 3) == pytest.approx(
        2 / 6
    )


def test_pixel_metrics_empty_and_shape_errors():
    z = np.zeros((3, 3), np.int32)
    assert sm.foreground_iou(z, z) == 1.0 and sm.dice(z, z) == 1.0 and sm.pixel_accuracy(z, z) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        sm.dice(z, np.zeros((3, 4)))


def test_iou_matrix_from_joint_histogram():
    true = boxes((10, 10), (0, 4, 0, 4), (6, 10, 6, 10))  # two 16 px squares
    pred = np.zeros((10, 10), np.int32)
    pred[0:4, 0:2] = 5  # 8 px inside true 1 -> IoU 8/16
    pred[6:10, 6:10] = 9  # exact copy of true 2
    pred[0:1, 8:10] = 2  # 2 px in the background
    iou = sm.iou_matrix(pred, true)
    # rows: labels 2, 5, 9; columns: labels 1, 2
    np.testing.assert_allclose(iou, [[0, 0], [0.5, 0], [0, 1.0]])
    tab = sm.overlap_table(pred, true)
    np.testing.assert_array_equal(tab["pred_ids"], [2, 5, 9])
    np.testing.assert_array_equal(tab["pred_area"], [2, 8, 16])
    np.testing.assert_array_equal(tab["true_area"], [16, 16])


def test_match_instances_counts_and_threshold():
    true = boxes((10, 10), (0, 4, 0, 4), (6, 10, 6, 10))
    pred = np.zeros((10, 10), np.int32)
    pred[0:4, 0:2] = 5  # IoU 0.5 with true 1
    pred[6:10, 6:10] = 9  # IoU 1 with true 2
    pred[0:1, 8:10] = 2  # unmatched
    m = sm.match_instances(pred, true, iou_threshold=0.5)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 0)
    assert m["f1"] == pytest.approx(2 * 2 / (3 + 2))
    assert m["precision_tp_over_all"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 1.0
    np.testing.assert_allclose(sorted(m["matched_ious"]), [0.5, 1.0])
    assert sorted(map(tuple, m["pairs"].tolist())) == [(5, 1), (9, 2)]
    m = sm.match_instances(pred, true, iou_threshold=0.6)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 2, 1)
    assert m["precision_tp_over_all"] == pytest.approx(1 / 4)


def test_matching_is_one_to_one():
    true = boxes((4, 12), (0, 4, 0, 6), (0, 4, 6, 12))  # 24 px each
    pred = boxes((4, 12), (0, 4, 0, 4), (0, 4, 4, 9))  # 16 px, 20 px
    # pred1-true1: 16/24; pred2-true1: 8/36; pred2-true2: 12/32
    np.testing.assert_allclose(sm.iou_matrix(pred, true), [[16 / 24, 0], [8 / 36, 12 / 32]])
    m = sm.match_instances(pred, true, iou_threshold=0.3)
    assert m["tp"] == 2
    m = sm.match_instances(pred, true, iou_threshold=0.5)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 1)


def test_assignment_maximises_pairs_above_threshold_first():
    # Summed IoU alone would pick (0, 0) and leave (1, 1) below the threshold: one pair.
    iou = np.array([[0.9, 0.35], [0.35, 0.0]])
    rows, cols = sm._match(iou, 0.3)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 1), (1, 0)]
    rows, cols = sm._match(iou, 0.5)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 0)]


def test_empty_images():
    z = np.zeros((5, 5), np.int32)
    one = boxes((5, 5), (1, 3, 1, 3))
    m = sm.match_instances(z, z)
    assert (m["tp"], m["fp"], m["fn"], m["f1"]) == (0, 0, 0, 1.0)
    m = sm.match_instances(z, one)
    assert (m["tp"], m["fp"], m["fn"], m["f1"], m["precision_tp_over_all"]) == (0, 0, 1, 0.0, 0.0)
    m = sm.match_instances(one, z)
    assert (m["fp"], m["f1"]) == (1, 0.0)
    assert np.isnan(m["mean_matched_iou"])


def test_average_precision_over_thresholds():
    true = boxes((10, 10), (0, 4, 0, 4), (6, 10, 6, 10))
    pred = np.zeros((10, 10), np.int32)
    pred[0:4, 0:3] = 1  # IoU 12/16 = 0.75 with true 1
    pred[6:10, 6:10] = 2  # IoU 1
    # thresholds 0.50..0.75 (6 values): 2/2; 0.80..0.95 (4 values): 1/3
    expected = (6 * 1.0 + 4 * (1 / 3)) / 10
    assert sm.average_precision_over_thresholds(pred, true) == pytest.approx(expected)
    np.testing.assert_allclose(sm.precision_curve(pred, true, [0.5, 0.8]), [1.0, 1 / 3])


def test_merge_and_split():
    true = boxes((8, 20), (0, 8, 0, 5), (0, 8, 5, 10), (0, 8, 12, 20))
    pred = np.zeros((8, 20), np.int32)
    pred[0:8, 0:10] = 1  # covers true 1 and 2 entirely: one merge of two
    pred[0:8, 12:16] = 2  # true 3 cut in two halves
    pred[0:8, 16:20] = 3
    r = sm.merges_and_splits(pred, true)
    assert r == {"merges": 1, "merged_true": 2, "splits": 1, "split_pred": 2}
    # a sliver touching a neighbour is not a merge
    pred2 = boxes((8, 20), (0, 8, 0, 6), (0, 8, 6, 10), (0, 8, 12, 20))
    assert sm.merges_and_splits(pred2, true) == {
        "merges": 0,
        "merged_true": 0,
        "splits": 0,
        "split_pred": 0,
    }
    # a prediction holding all of true 1 but only 40 % of true 2 is no merge
    pred3 = pred.copy()
    pred3[0:8, 0:10] = 0
    pred3[0:8, 0:7] = 1  # true 1 fully, true 2 at 2/5
    assert sm.merges_and_splits(pred3, true, min_overlap=0.5)["merges"] == 0
    assert sm.merges_and_splits(pred3, true, min_overlap=0.4)["merges"] == 1


def test_score_segmentation_bundle():
    true = boxes((10, 10), (0, 4, 0, 4), (6, 10, 6, 10))
    s = sm.score_segmentation(true.copy(), true)
    assert s["f1"] == 1.0 and s["ap_50_95"] == 1.0 and s["pixel_accuracy"] == 1.0
    assert s["merges"] == 0 and s["splits"] == 0 and s["n_true"] == 2
    assert all(np.isscalar(v) for v in s.values())


def test_count_metrics_known_values():
    m = sm.count_metrics([2, 4, 9], [1, 5, 6])  # errors +1, -1, +3
    assert m["n"] == 3
    assert m["mae"] == pytest.approx(5 / 3)
    assert m["rmse"] == pytest.approx(np.sqrt(11 / 3))
    assert m["bias"] == pytest.approx(1.0)
    # SS_tot of 1, 5, 6 around 4: 9 + 1 + 4 = 14
    assert m["r2"] == pytest.approx(1 - 11 / 14)
    assert np.isnan(sm.count_metrics([1, 2], [3, 3])["r2"])


def test_count_metrics_by_groups():
    df = pd.DataFrame(
        {
            "blur": [1, 1, 48, 48],
            "stain": [1, 1, 1, 1],
            "count": [10, 20, 10, 20],
            "pred_count": [10, 20, 8, 14],
        }
    )
    out = sm.count_metrics_by(df, by=["blur", "stain"])
    assert list(out.columns) == ["blur", "stain", "n", "mae", "rmse", "r2", "bias"]
    assert out.iloc[0]["mae"] == 0.0
    assert out.iloc[1]["mae"] == pytest.approx(4.0) and out.iloc[1]["bias"] == pytest.approx(-4.0)
    assert out.iloc[2]["blur"] == "all" and out.iloc[2]["n"] == 4
    with pytest.raises(ValueError, match="lacks"):
        sm.count_metrics_by(df, by="site")


def test_summarise_scores_pools_objects_not_images():
    rows = pd.DataFrame({
        "method": ["a", "a", "b"],
        "tp": [9, 1, 4], "fp": [1, 0, 0], "fn": [0, 3, 0],
        "f1": [0.9, 0.4, 1.0], "ap_50_95": [0.5, 0.3, 0.7],
        "merges": [1, 2, 0], "splits": [0, 1, 0], "seconds": [0.5, 1.5, 2.0],
    })
    out = sm.summarise_scores(rows).set_index("method")
    # pooled: 2*10 / (2*10 + 1 + 3) = 20/24, not the mean of the per-image F1s (0.65)
    assert out.loc["a", "f1_iou50"] == pytest.approx(20 / 24)
    assert out.loc["a", "f1_mean_per_image"] == pytest.approx(0.65)
    assert out.loc["a", "mean_ap_50_95"] == pytest.approx(0.4)
    assert (out.loc["a", "merges"], out.loc["a", "splits"], out.loc["a", "images"]) == (3, 1, 2)
    assert out.loc["a", "images_per_s"] == pytest.approx(1.0)
    assert out.loc["b", "f1_iou50"] == 1.0
    whole = sm.summarise_scores(rows, by=None)
    assert whole.loc[0, "images"] == 3 and whole.loc[0, "f1_iou50"] == pytest.approx(28 / 32)


def _cv_frame():
    # fold 0: errors (blur 1, w1) +2, (blur 1, w2) -1, (blur 48, w1) +3; fold 1: (48, w2) -4, (1, w1) 0
    return pd.DataFrame({
        "fold": [0, 0, 0, 1, 1],
        "blur": [1, 1, 48, 48, 1],
        "stain": [1, 2, 1, 2, 1],
        "count": [10, 20, 30, 40, 50],
        "cnn": [12, 19, 33, 36, 50],
        "base": [10, 20, 30, 40, 40],
    })


def test_fold_count_errors_per_fold_and_level():
    err = sm.fold_count_errors(_cv_frame(), {"CNN": "cnn", "baseline": "base"}, by=("blur", "stain", ("blur", "stain")))
    assert list(err.columns) == ["method", "fold", "grouping", "level", "n", "mae", "rmse", "r2", "bias"]
    cnn0 = err[(err.method == "CNN") & (err.fold == 0)].set_index(["grouping", "level"])
    assert cnn0.loc[("all", "all"), "n"] == 3 and cnn0.loc[("all", "all"), "mae"] == pytest.approx(2.0)
    assert cnn0.loc[("blur", "1"), "mae"] == pytest.approx(1.5) and cnn0.loc[("blur", "1"), "bias"] == 0.5
    assert cnn0.loc[("blur", "48"), "mae"] == pytest.approx(3.0)
    assert cnn0.loc[("stain", "1"), "mae"] == pytest.approx(2.5) and cnn0.loc[("stain", "2"), "mae"] == 1.0
    assert cnn0.loc[("blur/stain", "48/1"), "n"] == 1 and cnn0.loc[("blur/stain", "1/2"), "bias"] == -1.0
    # each fold is scored on its own rows only: fold 1's (48, w2) error does not reach fold 0's w2
    cnn1 = err[(err.method == "CNN") & (err.fold == 1)].set_index(["grouping", "level"])
    assert cnn1.loc[("all", "all"), "mae"] == pytest.approx(2.0) and cnn1.loc[("stain", "2"), "mae"] == 4.0
    assert cnn1.loc[("blur", "1"), "mae"] == 0.0 and ("blur", "1") in cnn1.index
    base1 = err[(err.method == "baseline") & (err.fold == 1)].set_index(["grouping", "level"])
    assert base1.loc[("blur", "1"), "mae"] == 10.0 and base1.loc[("blur", "48"), "mae"] == 0.0
    # levels sort by value, not as text: 1 before 48 and 9 before 10
    assert list(cnn0.index[:3]) == [("all", "all"), ("blur", "1"), ("blur", "48")]
    nine = _cv_frame().assign(blur=[9, 9, 10, 10, 9])
    e9 = sm.fold_count_errors(nine, {"CNN": "cnn"}, by=("blur",))
    assert list(e9[e9.fold == 0].level) == ["all", "9", "10"]
    with pytest.raises(ValueError, match="lacks"):
        sm.fold_count_errors(_cv_frame(), {"CNN": "pred"})


def test_summarise_folds_mean_sd_and_pooled():
    err = sm.fold_count_errors(_cv_frame(), {"CNN": "cnn"}, by=("stain",))
    s = sm.summarise_folds(err).set_index(["grouping", "level"])
    row = s.loc[("all", "all")]
    # fold MAEs 2.0 (3 images) and 2.0 (2 images)
    assert row["folds"] == 2 and row["n"] == 5 and row["mean"] == 2.0 and row["sd"] == 0.0
    w2 = s.loc[("stain", "2")]  # fold MAEs 1 and 4, one image each
    assert w2["mean"] == 2.5 and w2["sd"] == pytest.approx(np.std([1, 4], ddof=1))
    w1 = s.loc[("stain", "1")]  # fold 0: |+2|, |+3| -> 2.5 (2 images); fold 1: 0 (1 image)
    assert w1["mean"] == pytest.approx(1.25) and w1["pooled"] == pytest.approx(5 / 3)
    assert (w1["min"], w1["max"]) == (0.0, 2.5)
    rm = sm.summarise_folds(err, "rmse").set_index(["grouping", "level"]).loc[("all", "all")]
    assert rm["pooled"] == pytest.approx(np.sqrt((4 + 1 + 9 + 16 + 0) / 5))
    with pytest.raises(ValueError, match="metric"):
        sm.summarise_folds(err, "f1")
