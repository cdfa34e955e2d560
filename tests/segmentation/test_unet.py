"""Tests of the segmentation U-Net and the counting CNN (tiny configs, CPU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assets_pkg.core.segmentation import unet
from assets_pkg.core.segmentation.targets import contact_weights, seg_targets, small_object_weights
from assets_pkg.core.segmentation.unet import (
    CountingCNN,
    UNet,
    UNetConfig,
    create_count_state,
    create_seg_state,
    crop_to,
    pad_to_multiple,
    predict_instances,
    seg_loss,
)

TINY = UNetConfig(depth=2, base_width=8)
H, W = 40, 52


def _key(seed: int) -> jax.Array:
    # The "rbg" generator compiles much faster on CPU than threefry, which keeps the tests short.
    return jax.random.key(seed, impl="rbg")


def _discs(shape=(H, W), centres=((12, 14), (26, 36)), radius=7) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    return labels


@pytest.fixture(scope="module")
def disc_batch():
    labels = _discs()
    fg, dist = seg_targets(labels)
    rng = np.random.default_rng(0)
    image = (fg * 0.8 + 0.1 + rng.normal(0, 0.05, fg.shape)).astype(np.float32)
    return labels, image, fg, dist


@pytest.mark.parametrize("shape", [(37, 51), (40, 52), (1, 5), (16, 16)])
def test_pad_crop_round_trip(shape):
    x = np.random.default_rng(1).normal(size=(2, *shape, 3)).astype(np.float32)
    padded = pad_to_multiple(x, 8)
    assert padded.shape[1] % 8 == 0 and padded.shape[2] % 8 == 0
    assert padded.shape[1] - shape[0] < 8 and padded.shape[2] - shape[1] < 8
    np.testing.assert_array_equal(crop_to(padded, shape), x)
    # Reflect padding: the first padded row mirrors the row before the last one.
    if shape[0] > 1 and padded.shape[1] > shape[0]:
        np.testing.assert_array_equal(padded[:, shape[0], : shape[1]], x[:, shape[0] - 2])
    jp = pad_to_multiple(jnp.asarray(x), 8)
    np.testing.assert_allclose(np.asarray(jp), padded)


def test_config_validation():
    with pytest.raises(ValueError):
        UNetConfig(dtype="float16")
    with pytest.raises(ValueError):
        UNetConfig(outputs="boundary")
    assert UNetConfig().depth == 4 and UNetConfig().base_width == 32


def test_unet_output_shape_odd_sizes():
    x = jnp.ones((2, 37, 51, 1))
    params = jax.jit(UNet(TINY).init)(_key(0), x)["params"]
    for dtype in ("float32", "bfloat16"):
        model = UNet(UNetConfig(depth=2, base_width=8, dtype=dtype))
        out = jax.jit(model.apply)({"params": params}, x)
        assert out.shape == (2, 37, 51, 2)
        assert out.dtype == jnp.float32
        assert np.isfinite(np.asarray(out)).all()


def test_seg_targets_two_discs(disc_batch):
    labels, _, fg, dist = disc_batch
    assert fg.dtype == np.float32 and dist.dtype == np.float32
    np.testing.assert_array_equal(fg, (labels > 0).astype(np.float32))
    assert (dist[labels == 0] == 0).all()
    assert (dist[labels > 0] > 0).all() and dist.max() == 1.0
    for i, (cy, cx) in enumerate(((12, 14), (26, 36)), start=1):
        assert dist[cy, cx] == pytest.approx(1.0)
        assert dist[labels == i].max() == pytest.approx(1.0)
        assert (dist[labels == i] < 1.0).sum() == (labels == i).sum() - 1


def test_seg_targets_touching_instances():
    labels = np.zeros((9, 12), np.int32)
    labels[2:7, 1:6] = 3
    labels[2:7, 6:11] = 8
    fg, dist = seg_targets(labels)
    assert fg.sum() == 50
    # The line where the two instances touch is a boundary: distance 0 there, peak 1 inside.
    assert (dist[2:7, 5] == 0).all() and (dist[2:7, 6] == 0).all()
    assert dist[labels == 3].max() == 1.0 and dist[labels == 8].max() == 1.0


def test_contact_weights_mark_where_nuclei_meet():
    labels = np.zeros((20, 24), np.int32)
    labels[2:8, 2:8] = 1
    labels[2:8, 8:14] = 2  # touches 1 along column 7/8
    labels[2:8, 16:20] = 5  # a 2-pixel background gap from 2
    labels[13:18, 2:7] = 4  # alone
    w = contact_weights(labels, 4.0, radius=2)
    assert w.dtype == np.float32 and set(np.unique(w)) == {1.0, 5.0}
    # Both sides of the touching line and the narrow gap are contact pixels ...
    assert (w[2:8, 6:10] == 5).all() and (w[4, 14:16] == 5).all()
    # ... the far side of a nucleus, an isolated nucleus and open background are not.
    assert w[4, 2] == 1 and (w[13:18, 2:7] == 1).all() and w[11, 22] == 1
    assert (contact_weights(labels, 0.0) == 1).all()


def test_small_object_weights_mark_fragments_and_their_rim():
    labels = np.zeros((40, 48), np.int32)
    labels[2:22, 2:22] = 1  # 400 px
    labels[25:37, 2:14] = 2  # 144 px
    labels[2:22, 26:40] = 3  # 280 px: median 280
    labels[30:33, 30:33] = 7  # 9 px fragment, far from the others
    labels[10:13, 22:25] = 9  # 9 px fragment touching nucleus 1
    w = small_object_weights(labels, 5.0, radius=2)
    assert w.dtype == np.float32 and set(np.unique(w)) == {1.0, 6.0}
    # The fragments and a 2-pixel band around them weigh 6, on both sides of where one meets nucleus 1 ...
    assert (w[28:35, 28:35] == 6).all() and (w[8:15, 20:27] == 6).all()
    # ... the nuclei (none below a quarter of the median) and open background weigh 1.
    assert w[10, 10] == 1 and w[30, 8] == 1 and w[12, 33] == 1 and w[38, 46] == 1
    assert (small_object_weights(labels, 0.0) == 1).all()
    assert (small_object_weights(np.zeros((5, 5), np.int32), 5.0) == 1).all()


def test_weighted_seg_loss_counts_contact_pixels_more(disc_batch):
    _, _, fg, dist = disc_batch
    out = np.zeros((1, *fg.shape, 2), np.float32)
    ones = np.ones_like(fg)[None]
    plain, _ = seg_loss(jnp.asarray(out), fg[None], dist[None])
    weighted_ones, _ = seg_loss(jnp.asarray(out), fg[None], dist[None], ones)
    np.testing.assert_allclose(float(plain), float(weighted_ones), rtol=1e-6)
    # An error only on the heavily weighted pixels costs more with the weights than without.
    good = np.stack([np.where(fg > 0, 9.0, -9.0), np.zeros_like(fg)], -1)[None].astype(np.float32)
    bad = good.copy()
    region = np.zeros_like(fg, bool)
    region[10:14, 10:18] = True
    bad[0, region, 0] *= -1
    heavy = np.where(region, 10.0, 1.0).astype(np.float32)[None]
    d_plain = float(seg_loss(jnp.asarray(bad), fg[None], dist[None])[0]) - float(
        seg_loss(jnp.asarray(good), fg[None], dist[None])[0])
    d_heavy = float(seg_loss(jnp.asarray(bad), fg[None], dist[None], heavy)[0]) - float(
        seg_loss(jnp.asarray(good), fg[None], dist[None], heavy)[0])
    assert d_heavy > 3 * d_plain > 0


def test_seg_loss_perfect_vs_wrong(disc_batch):
    _, _, fg, dist = disc_batch
    logit = lambda p: np.log(np.clip(p, 1e-4, 1 - 1e-4) / (1 - np.clip(p, 1e-4, 1 - 1e-4)))  # noqa: E731
    good = np.stack([logit(fg) * 3, logit(dist)], -1)[None]
    bad = -good
    lg, mg = seg_loss(jnp.asarray(good), fg[None], dist[None])
    lb, _ = seg_loss(jnp.asarray(bad), fg[None], dist[None])
    assert float(lg) < 0.01 < float(lb)
    assert set(mg) == {"loss", "bce", "distance_mse"}


def test_train_steps_lower_loss_and_predict(disc_batch):
    labels, image, fg, dist = disc_batch
    state = create_seg_state(TINY, _key(0), (H, W), learning_rate=1e-2)
    forward = jax.jit(state.apply_fn)
    batch = (jnp.asarray(image)[None, ..., None], jnp.asarray(fg)[None], jnp.asarray(dist)[None])
    step = jax.jit(unet.seg_train_step, static_argnames="do_augment")

    def eval_loss(params):
        return float(seg_loss(forward({"params": params}, batch[0]), fg[None], dist[None])[0])

    before = eval_loss(state.params)
    rng = _key(1)
    for _ in range(15):
        rng, sub = jax.random.split(rng)
        state, metrics = step(state, batch, sub)
        assert np.isfinite(float(metrics["loss"]))
    after = eval_loss(state.params)
    assert after < 0.8 * before
    # A batch with pixel weights (contact_weights) trains through the same step.
    weighted = (*batch, jnp.asarray(contact_weights(labels, 5.0))[None])
    state, metrics = step(state, weighted, rng)
    assert np.isfinite(float(metrics["loss"]))

    pred = predict_instances(state.params, TINY, image * 1000)
    assert pred.shape == (H, W) and pred.dtype == np.int32
    assert pred.min() >= 0


def test_augment_maps_square_and_not():
    rng = _key(3)
    x = jnp.arange(2 * 4 * 4 * 2, dtype=jnp.float32).reshape(2, 4, 4, 2)
    y = unet.augment_maps(x, rng)
    assert y.shape == x.shape
    np.testing.assert_allclose(np.sort(np.asarray(y).ravel()), np.sort(np.asarray(x).ravel()))
    z = unet.augment_maps(jnp.ones((3, 4, 6, 1)), rng)
    assert z.shape == (3, 4, 6, 1)


def test_counting_cnn_shape_and_step():
    rng = np.random.default_rng(0)
    counts = np.array([1, 2, 4, 6], np.float32)
    images = np.zeros((4, 32, 32, 1), np.float32)
    for i, n in enumerate(counts.astype(int)):
        for _ in range(n):
            y, x = rng.integers(3, 29, size=2)
            images[i, y - 2 : y + 3, x - 2 : x + 3, 0] = 1.0
    model = CountingCNN(widths=(8, 16, 16), dense=16, count_offset=float(counts.mean()))
    state = create_count_state(model, _key(0), (32, 32, 1), learning_rate=3e-3)
    forward = jax.jit(state.apply_fn)
    out = forward({"params": state.params}, jnp.asarray(images))
    assert out.shape == (4,) and out.dtype == jnp.float32
    batch = (jnp.asarray(images), jnp.asarray(counts))
    step = jax.jit(unet.count_train_step, static_argnames="do_augment")
    before = float(unet.count_loss(out, counts))
    key = _key(1)
    for _ in range(20):
        key, sub = jax.random.split(key)
        state, metrics = step(state, batch, sub)
    after = float(unet.count_loss(forward({"params": state.params}, batch[0]), counts))
    assert after < before
