"""The post-processing tuning: thresholds by F1, the minimum object area of near-ties by the count error."""

from types import SimpleNamespace

import numpy as np
import pytest

from assets_pkg.core.segmentation.targets import seg_targets
from assets_pkg.core.segmentation.training import tune_postprocessing


def _squares(side: int, small: tuple[int, int] | None) -> np.ndarray:
    """20 nuclei of ``side`` px on a grid, plus a 4x4 px object at ``small`` (y, x)."""
    lab = np.zeros((120, 150), np.int32)
    for i in range(20):
        y, x = 5 + 28 * (i // 5), 5 + 28 * (i % 5)
        lab[y:y + side, x:x + side] = i + 1
    if small is not None:
        lab[small[0]:small[0] + 4, small[1]:small[1] + 4] = 21
    return lab


@pytest.fixture
def case():
    """Truth: 20 nuclei and one annotated fragment.  Prediction: the 20 nuclei and the fragment
    drawn 3 px off (IoU below 0.5).  Keeping small objects (min area 15) then costs a false
    positive but counts right; dropping them (40) scores the higher F1 and miscounts by one."""
    truth = _squares(12, (118 - 4, 140))
    pred = _squares(12, (118 - 4, 143))
    fg, dist = seg_targets(pred)
    model = SimpleNamespace(maps=lambda im: (fg, dist), threshold=None, marker_threshold=None, min_area=None)
    return model, [np.zeros(truth.shape, np.float32)], [truth]


def test_f1_alone_drops_the_fragment(case):
    model, images, labels = case
    t = tune_postprocessing(model, images, labels, (0.5,), (0.5,), (15, 40), f1_tolerance=0.0)
    assert (t["min_area"], model.min_area) == (40, 40)
    assert t["f1"] == pytest.approx(40 / 41) and t["count_error"] == 1.0 and t["best_f1"] == t["f1"]


def test_a_near_tie_goes_to_the_lower_count_error(case):
    model, images, labels = case
    t = tune_postprocessing(model, images, labels, (0.5,), (0.5,), (15, 40), f1_tolerance=0.03)
    assert (t["min_area"], model.min_area) == (15, 15)
    assert t["f1"] == pytest.approx(40 / 42) and t["count_error"] == 0.0 and t["best_f1"] == pytest.approx(40 / 41)


def test_a_larger_f1_gap_is_not_a_tie(case):
    model, images, labels = case
    t = tune_postprocessing(model, images, labels, (0.5,), (0.5,), (15, 40), f1_tolerance=0.02)
    assert t["min_area"] == 40


def test_negative_tolerance_is_refused(case):
    model, images, labels = case
    with pytest.raises(ValueError, match="f1_tolerance"):
        tune_postprocessing(model, images, labels, (0.5,), (0.5,), (15,), f1_tolerance=-0.1)


def test_the_thresholds_are_not_traded_for_the_count():
    """The fragment's foreground probability is 0.45: a foreground threshold of 0.4 keeps it
    (count right, F1 40/42), 0.5 drops it (F1 40/41).  Thresholds shape every outline, so only
    the minimum area may move for the count: 0.5 stays even with a wide tolerance."""
    truth = _squares(12, (118 - 4, 140))
    pred = _squares(12, (118 - 4, 143))
    fg, dist = seg_targets(pred)
    fg = np.where(pred == 21, 0.45, fg).astype(np.float32)
    model = SimpleNamespace(maps=lambda im: (fg, dist), threshold=None, marker_threshold=None, min_area=None)
    t = tune_postprocessing(model, [np.zeros(truth.shape, np.float32)], [truth], (0.4, 0.5), (0.5,), (0,),
                            f1_tolerance=0.03)
    assert (t["threshold"], t["count_error"]) == (0.5, 1.0) and t["f1"] == pytest.approx(40 / 41)
