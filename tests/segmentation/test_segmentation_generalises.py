"""What makes the segmentation defaults generalise: validation images held out of training,
model selection and early stopping on them, augmentation, flip-averaged inference, and the
well-grouped folds of the cross-validation benchmark."""

import dataclasses

import jax
import numpy as np
import pytest

from assets_pkg.core.imaging.cellsim import CellSimParams, simulate_cells
from assets_pkg.core.ml.loop import CheckpointPolicy, TrainRun
from assets_pkg.core.segmentation.config import SegTrainConfig
from assets_pkg.core.segmentation.datasets import bbbc039_well, group_folds
from assets_pkg.core.segmentation.models import SegmentationModel
from assets_pkg.core.segmentation.targets import contact_weights, seg_targets, small_object_weights
from assets_pkg.core.segmentation.training import (
    augmented_crop,
    loss_weights,
    split_validation,
    train_segmentation,
)
from assets_pkg.core.segmentation.unet import UNetConfig, create_seg_state


def test_split_validation_holds_out_a_seeded_disjoint_share():
    train, valid = split_validation(120, 0.15, seed=0)
    assert len(valid) == 18 and len(train) == 102
    assert set(train).isdisjoint(valid) and set(train) | set(valid) == set(range(120))
    again = split_validation(120, 0.15, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train, valid), strict=True))
    assert not np.array_equal(split_validation(120, 0.15, seed=1)[1], valid)
    assert len(split_validation(6, 0.15, 0)[1]) == 2  # at least two validation images
    assert len(split_validation(3, 0.15, 0)[1]) == 0 and len(split_validation(50, 0.0, 0)[1]) == 0


def test_group_folds_keep_wells_together_and_balance_the_folds():
    names = [f"IXMtest_{w}_s{s}_w1X" for w, n in (("A01", 2), ("A02", 1), ("B03", 2), ("C04", 1), ("D05", 1),
                                                   ("E06", 2), ("F07", 1), ("G08", 1)) for s in range(n)]
    wells = [bbbc039_well(n) for n in names]
    assert wells[:3] == ["A01", "A01", "A02"]
    folds = group_folds(wells, k=3, seed=0)
    assert set(folds) == {0, 1, 2}
    for w in set(wells):
        assert len({f for f, x in zip(folds, wells, strict=True) if x == w}) == 1
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 2
    np.testing.assert_array_equal(group_folds(wells, 3, seed=0), folds)
    with pytest.raises(ValueError, match="k must be"):
        group_folds(wells, k=9)


def test_augmented_crop_is_seeded_sized_and_keeps_the_foreground_binary():
    rng = np.random.default_rng(0)
    labels = np.zeros((80, 90), int)
    labels[10:30, 10:30], labels[40:70, 50:80] = 1, 2
    image = labels.astype(np.float32) * 0.4 + rng.normal(0, 0.01, labels.shape).astype(np.float32)
    fg, dist = seg_targets(labels)
    cfg = SegTrainConfig(crop=48)
    a = augmented_crop(np.random.default_rng(3), image, fg, dist, cfg)
    b = augmented_crop(np.random.default_rng(3), image, fg, dist, cfg)
    for x, y in zip(a, b, strict=True):
        assert x.shape == (48, 48) and x.dtype == np.float32
        np.testing.assert_array_equal(x, y)
    assert set(np.unique(a[1])) <= {0.0, 1.0}
    # no augmentation: the crop is a window of the inputs
    plain = SegTrainConfig(crop=48, scale_jitter=0, intensity_jitter=0, blur_sigma=0, noise=0)
    im, f, d = augmented_crop(np.random.default_rng(5), image, fg, dist, plain)
    hits = [(y, x) for y in range(80 - 47) for x in range(90 - 47) if np.array_equal(image[y:y + 48, x:x + 48], im)]
    assert len(hits) == 1
    (y, x), = hits
    np.testing.assert_array_equal(f, fg[y:y + 48, x:x + 48])
    # intensity augmentation changes the image, not the targets' window
    jittered = SegTrainConfig(crop=48, scale_jitter=0, blur_sigma=0, noise=0)
    im_j, f_j, _ = augmented_crop(np.random.default_rng(5), image, fg, dist, jittered)
    assert not np.allclose(im_j, im) and np.array_equal(f_j, f)
    # pixel weights are cut from the same window, and stay piecewise constant when zoomed
    weight = contact_weights(labels, 5.0)
    *same, w = augmented_crop(np.random.default_rng(5), image, fg, dist, plain, weight)
    np.testing.assert_array_equal(same[0], im)
    np.testing.assert_array_equal(w, weight[y:y + 48, x:x + 48])
    *_, wz = augmented_crop(np.random.default_rng(3), image, fg, dist, cfg, weight)
    assert wz.shape == (48, 48) and set(np.unique(wz)) <= {1.0, 6.0}


def test_flip_averaged_maps_are_flip_equivariant():
    cfg = UNetConfig(depth=2, base_width=4)
    params = create_seg_state(cfg, jax.random.PRNGKey(0), (32, 32)).params
    image = np.random.default_rng(1).random((40, 56)).astype(np.float32)
    plain = SegmentationModel(config=cfg, params=params)
    flipped = SegmentationModel(config=cfg, params=params, tta=True)
    for flip in (np.s_[::-1, :], np.s_[:, ::-1]):
        fg, dist = flipped.maps(image)
        fg_f, dist_f = flipped.maps(image[flip])
        np.testing.assert_allclose(fg_f, fg[flip], atol=1e-5)
        np.testing.assert_allclose(dist_f, dist[flip], atol=1e-5)
    # an untrained network alone is not equivariant: the test would see a missing average
    assert not np.allclose(plain.maps(image[::-1])[0], plain.maps(image)[0][::-1], atol=1e-5)
    assert plain.record()["postprocessing"]["tta"] is False


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory):
    from assets_pkg.core.imaging.io import read_image
    from assets_pkg.core.segmentation.datasets import load_mask

    d = tmp_path_factory.mktemp("nuclei")
    table = simulate_cells(d, 6, seed=5, size=(96, 128), counts=[4, 8, 12, 6, 10, 3],
                           params=CellSimParams(nucleus_radius_px=7.0, cell_radius_px=14.0))
    nuc = table[table.stain == 1]
    return [read_image(p) for p in nuc.path], [load_mask(p) for p in nuc.mask_path], list(nuc.name)


def test_training_selects_on_held_out_images_and_a_resumed_run_selects_the_same(nuclei, tmp_path):
    images, labels, names = nuclei
    cfg = SegTrainConfig(depth=2, base_width=8, crop=64, batch_size=2, steps=12, eval_every=4, log_every=4,
                         early_stopping_patience=0)
    full = train_segmentation(images, labels, cfg, names=names)
    held = full.info["data"]["held_out"]
    assert len(held) == 2 and set(held) <= set(names) and full.info["data"]["n_train"] == len(names) - 2
    assert full.info["tuning"]["on"] == "held-out training" and full.info["tuning"]["images"] == 2
    evals = full.info["evaluations"]
    assert [e["step"] for e in evals] == [4, 8, 12]
    best = max(evals, key=lambda e: (e["valid_f1"], e["step"]))
    assert full.info["selection"] == {"step": best["step"], "valid_f1": best["valid_f1"]}
    assert full.tta is True

    run = TrainRun(work_dir=tmp_path, checkpoint=CheckpointPolicy(every=5, keep=2))
    killed = train_segmentation(images, labels, cfg, names=names, run=dataclasses.replace(run, stop_after_steps=10))
    assert killed.info["stopped_by"] == "interrupted"
    resumed = train_segmentation(images, labels, cfg, names=names, run=run)
    assert resumed.info["selection"] == full.info["selection"]
    for a, b in zip(jax.tree_util.tree_leaves(resumed.params), jax.tree_util.tree_leaves(full.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_training_stops_early_when_validation_stops_improving(nuclei):
    images, labels, names = nuclei
    # a learning rate of ~0 leaves the validation F1 where it is: no evaluation improves on the first
    cfg = SegTrainConfig(depth=2, base_width=8, crop=64, batch_size=2, steps=40, eval_every=4, log_every=4,
                         learning_rate=1e-12, early_stopping_patience=2)
    model = train_segmentation(images, labels, cfg, names=names)
    assert model.info["stopped_by"] == "early stopping"
    assert [e["step"] for e in model.info["evaluations"]] == [4, 8, 12]
    assert model.info["selection"]["step"] == 12  # ties go to the later step


def test_loss_weights_add_the_contact_and_small_object_terms():
    labels = np.zeros((30, 40), np.int32)
    labels[2:14, 2:14] = 1
    labels[2:14, 14:26] = 2  # touches 1
    labels[20:23, 30:33] = 3  # a fragment
    labels[18:28, 2:12] = 4
    both = loss_weights(labels, SegTrainConfig(contact_weight=4.0, small_object_weight=10.0))
    expected = contact_weights(labels, 4.0, 3) + small_object_weights(labels, 10.0) - 1
    np.testing.assert_array_equal(both, expected)
    assert both.max() == 11.0 and both[8, 13] == 5.0 and both[21, 31] == 11.0 and both[8, 5] == 1.0
    assert (loss_weights(labels, SegTrainConfig()) == 1).all()
