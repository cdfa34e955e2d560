"""Tests of the centre-detection output of the U-Net (``markers="centre"``): its target, loss,
watershed seeds, training and model folder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage as ndi

from assets_pkg.core.imaging.cellsim import CellSimParams, simulate_cells
from assets_pkg.core.segmentation.classical import instances_from_maps
from assets_pkg.core.segmentation.config import SegTrainConfig
from assets_pkg.core.segmentation.metrics import match_instances
from assets_pkg.core.segmentation.models import SegmentationModel, load_model, save_model
from assets_pkg.core.segmentation.targets import centre_targets, seg_targets
from assets_pkg.core.segmentation.training import augmented_crop, train_segmentation
from assets_pkg.core.segmentation.unet import (
    UNetConfig,
    create_seg_state,
    predict_instances,
    seg_loss,
    seg_train_step,
)

CENTRE = UNetConfig(depth=2, base_width=8, outputs="foreground+distance+centre")


def _nucleus_and_fragment() -> np.ndarray:
    """A disc of radius 9 (255 px) with a 3x3 fragment touching its right side."""
    yy, xx = np.mgrid[:36, :44]
    labels = np.zeros((36, 44), np.int32)
    labels[(yy - 18) ** 2 + (xx - 16) ** 2 <= 81] = 1
    labels[17:20, 26:29] = 2
    return labels


def _logit(p):
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def test_centre_target_peaks_at_one_for_a_fragment_as_for_a_nucleus():
    labels = _nucleus_and_fragment()
    heat = centre_targets(labels, 2.0)
    assert heat.shape == labels.shape and heat.dtype == np.float32
    assert heat[18, 16] == 1.0 and heat[18, 27] == 1.0
    # exactly two peaks, one per object, and a Gaussian of sigma 2 around each
    peaks, n = ndi.label(heat > 0.9)
    assert n == 2 and (heat == 1.0).sum() == 2
    assert heat[18, 20] == pytest.approx(np.exp(-16 / 8), rel=1e-5)
    # the per-object normalised distance peaks on one pixel of the fragment; the centre peak is
    # as wide for both objects
    blobs, n = ndi.label(heat > 0.5)
    assert n == 2 and np.bincount(blobs.ravel())[1:].tolist() == [21, 21]


def test_centre_target_of_a_ring_peaks_inside_it_and_of_nothing_is_zero():
    yy, xx = np.mgrid[:40, :40]
    r2 = (yy - 20) ** 2 + (xx - 20) ** 2
    ring = ((r2 <= 15**2) & (r2 >= 9**2)).astype(np.int32)  # its centroid is in the hole
    heat = centre_targets(ring, 2.0)
    (py, px), = np.argwhere(heat == 1.0)
    assert ring[py, px] == 1
    assert not centre_targets(np.zeros((8, 9), np.int32), 2.0).any()
    with pytest.raises(ValueError, match="sigma"):
        centre_targets(ring, 0.0)


def test_centre_loss_is_zero_at_the_target_and_grows_with_the_error():
    labels = _nucleus_and_fragment()
    fg, dist = seg_targets(labels)
    heat = centre_targets(labels, 2.0)
    good = np.stack([_logit(fg) * 3, _logit(dist), _logit(heat)], -1)[None]
    missed = good.copy()
    missed[0, labels == 2, 2] = -9.0  # the fragment's centre not detected
    args = (fg[None], dist[None], np.ones_like(fg)[None])
    lg, mg = seg_loss(jnp.asarray(good), *args, heat[None])
    lm, mm = seg_loss(jnp.asarray(missed), *args, heat[None])
    assert set(mg) == {"loss", "bce", "distance_mse", "centre_bce"}
    assert float(mg["centre_bce"]) < 1e-3 < float(mm["centre_bce"])
    assert float(lm) - float(lg) == pytest.approx(float(mm["centre_bce"]) - float(mg["centre_bce"]), rel=1e-4)
    # two outputs, no centre: the loss is the foreground and distance terms alone
    bad = missed.copy()
    bad[..., 1] *= -1
    two, m2 = seg_loss(jnp.asarray(bad[..., :2]), *args)
    three, m3 = seg_loss(jnp.asarray(bad), *args, heat[None])
    assert "centre_bce" not in m2 and float(two) > 0.01
    assert float(two) == pytest.approx(float(three) - float(m3["centre_bce"]), rel=1e-5)


def test_centre_peaks_split_what_the_distance_interior_merges():
    truth = _nucleus_and_fragment()
    fg, _ = seg_targets(truth)
    # a distance map that sees one object (the fragment's peak smoothed away, as a network does)
    _, merged = seg_targets((truth > 0).astype(np.int32))
    one = instances_from_maps(fg, merged, 0.5, marker_threshold=0.4)
    assert one.max() == 1
    two = instances_from_maps(fg, merged, 0.5, marker_threshold=0.4, centre=centre_targets(truth, 2.0))
    m = match_instances(two, truth, 0.5)
    assert two.max() == 2 and m["tp"] == 2 and m["fp"] == m["fn"] == 0
    with pytest.raises(ValueError, match="distance watershed only"):
        instances_from_maps(fg, merged, kind="boundary", centre=merged)
    with pytest.raises(ValueError, match="one shape"):
        instances_from_maps(fg, merged, centre=merged[:5])


def test_a_three_output_unet_trains_predicts_three_maps_and_round_trips(tmp_path):
    labels = _nucleus_and_fragment()
    fg, dist = seg_targets(labels)
    heat = centre_targets(labels, 2.0)
    image = (fg * 0.8 + 0.1 + np.random.default_rng(0).normal(0, 0.05, fg.shape)).astype(np.float32)
    state = create_seg_state(CENTRE, jax.random.PRNGKey(0), labels.shape, learning_rate=1e-2)
    batch = tuple(jnp.asarray(a)[None] for a in (image[..., None], fg, dist, np.ones_like(fg), heat))
    step = jax.jit(seg_train_step, static_argnames="do_augment")
    forward = jax.jit(state.apply_fn)

    def centre_term(params):
        return float(seg_loss(forward({"params": params}, batch[0]), *batch[1:])[1]["centre_bce"])

    before = centre_term(state.params)
    rng = jax.random.PRNGKey(1)
    for _ in range(15):
        rng, sub = jax.random.split(rng)
        state, metrics = step(state, batch, sub)
    assert "centre_bce" in metrics and centre_term(state.params) < 0.8 * before

    model = SegmentationModel(config=CENTRE, params=state.params, tta=True, marker_threshold=0.3)
    maps = model.maps(image)
    assert len(maps) == 3 and all(m.shape == labels.shape and m.dtype == np.float32 for m in maps)
    np.testing.assert_allclose(model.maps(image[:, ::-1])[2], maps[2][:, ::-1], atol=1e-5)  # flip-averaged too
    seg = model.segment(image)
    assert seg.shape == labels.shape and seg.dtype == np.int32
    np.testing.assert_array_equal(seg, predict_instances(state.params, CENTRE, image, 0.5, 0.3, tta=True))
    back = load_model(save_model(model, tmp_path / "m"), kind="segmentation")
    assert back.config == CENTRE
    np.testing.assert_array_equal(back.segment(image), seg)


def test_augmented_crop_carries_the_centre_target_with_the_window():
    labels = np.zeros((80, 90), np.int32)
    labels[10:30, 10:30], labels[40:70, 50:80] = 1, 2
    fg, dist = seg_targets(labels)
    heat = centre_targets(labels, 2.0)
    image = fg * 0.5 + np.linspace(0, 0.1, fg.size, dtype=np.float32).reshape(fg.shape)  # every window differs
    plain = SegTrainConfig(crop=48, scale_jitter=0, intensity_jitter=0, blur_sigma=0, noise=0)
    im, f, d, w, c = augmented_crop(np.random.default_rng(5), image, fg, dist, plain, np.ones_like(fg), heat)
    (y, x), = [(y, x) for y in range(33) for x in range(43) if np.array_equal(image[y:y + 48, x:x + 48], im)]
    np.testing.assert_array_equal(c, heat[y:y + 48, x:x + 48])
    zoomed = augmented_crop(np.random.default_rng(3), image, fg, dist, SegTrainConfig(crop=48), None, heat)
    # no weights given: ones in their slot, so the centre stays fifth (seg_train_step's order)
    assert len(zoomed) == 5 and (zoomed[3] == 1).all()
    assert zoomed[4].shape == (48, 48) and 0 <= zoomed[4].min() <= zoomed[4].max() <= 1


def test_training_with_centre_markers_builds_a_three_output_model(tmp_path):
    table = simulate_cells(tmp_path, 4, seed=3, size=(96, 128), counts=[6, 10, 8, 4],
                           params=CellSimParams(nucleus_radius_px=7.0, cell_radius_px=14.0))
    from assets_pkg.core.imaging.io import read_image
    from assets_pkg.core.segmentation.datasets import load_mask

    nuc = table[table.stain == 1]
    images, labels = [read_image(p) for p in nuc.path], [load_mask(p) for p in nuc.mask_path]
    cfg = SegTrainConfig(markers="centre", depth=2, base_width=8, crop=64, batch_size=2, steps=6, eval_every=3,
                         log_every=3, early_stopping_patience=0)
    assert cfg.unet.out_channels == 3 and SegTrainConfig().unet.out_channels == 2
    model = train_segmentation(images, labels, cfg)
    assert model.config.outputs == "foreground+distance+centre"
    assert all("centre_bce" in row for row in model.info["history"])
    assert model.info["tuning"]["marker_threshold"] in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    assert len(model.maps(images[0])) == 3
