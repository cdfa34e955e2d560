"""Nucleus segmentation U-Net and the counting regression CNN, in Flax linen.

The U-Net reads one-channel images of any size (N, H, W, C), axis order (image, y, x,
channel); it reflect-pads H and W up to a multiple of ``2**depth`` and crops its output back.
It predicts two or three maps per pixel (``UNetConfig.outputs``); the training targets are
built by :mod:`assets_pkg.core.segmentation.targets`:

- channel 0: a foreground logit;
- channel 1: a logit whose sigmoid regresses the distance to the nearest boundary, normalised
  to [0, 1] within each instance (1 at the instance's centre), see ``targets.seg_targets``;
- channel 2 (``"foreground+distance+centre"`` only): a logit whose sigmoid regresses a Gaussian
  of fixed width around each instance's centre (``targets.centre_targets``), a detection map in
  which a fragment of ten pixels peaks as high as a large nucleus.

:func:`instances_from_unet_maps` turns the maps into instances by a distance watershed
(:func:`assets_pkg.core.segmentation.classical.instances_from_maps` with ``kind="distance"``),
seeded by the distance interiors, or by the centre peaks when the network predicts them.

:class:`CountingCNN` is the regression CNN of the book: strided convolutions, global pooling
and dense layers to one scalar, the number of cells, trained with an L2 loss (:func:`count_loss`).

Everything here apart from the instance functions is a pure function of its inputs and
variables, so the training steps can be wrapped in ``jax.jit``.  The only variable collection
is ``params`` (GroupNorm keeps no batch statistics).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.scipy.special import entr

from . import classical

__all__ = [
    "UNetConfig",
    "ConvBlock",
    "UNet",
    "CountingCNN",
    "pad_to_multiple",
    "crop_to",
    "normalize_image",
    "seg_loss",
    "augment_maps",
    "create_seg_state",
    "seg_train_step",
    "predict_maps",
    "predict_instances",
    "instances_from_unet_maps",
    "count_loss",
    "create_count_state",
    "count_train_step",
]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_OUTPUTS = {"foreground+distance": 2, "foreground+distance+centre": 3}


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of :class:`UNet`.

    Parameters
    ----------
    depth : int
        Number of 2x down-samplings; images are padded to a multiple of ``2**depth``.
    base_width : int
        Channels of the first level; level ``i`` has ``base_width * 2**i``.
    in_channels : int
        Image channels.
    outputs : {"foreground+distance", "foreground+distance+centre"}
        What the network predicts (see the module docstring).
    dtype : {"float32", "bfloat16"}
        Computation dtype; parameters and outputs stay float32.
    """

    depth: int = 4
    base_width: int = 32
    in_channels: int = 1
    outputs: str = "foreground+distance"
    dtype: str = "float32"

    def __post_init__(self):
        if self.depth < 1 or self.base_width < 1 or self.in_channels < 1:
            raise ValueError(f"depth, base_width and in_channels must be >= 1, got {self}")
        if self.outputs not in _OUTPUTS:
            raise ValueError(f"outputs must be one of {sorted(_OUTPUTS)}, got {self.outputs!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")

    @property
    def out_channels(self) -> int:
        """Output channels of the network."""
        return _OUTPUTS[self.outputs]

    @property
    def multiple(self) -> int:
        """Image sides are padded to a multiple of this."""
        return 2**self.depth


def pad_to_multiple(x, multiple: int):
    """Reflect-pad the H and W axes of ``x`` (..., H, W, C) at the bottom/right to a multiple.

    Parameters
    ----------
    x : array, shape (..., H, W, C)
    multiple : int

    Returns
    -------
    array, shape (..., H', W', C)
        ``H'`` and ``W'`` are the smallest multiples of ``multiple`` >= ``H`` and ``W``; the
        original image is ``x[..., :H, :W, :]`` (see :func:`crop_to`).
    """
    h, w = x.shape[-3], x.shape[-2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    widths = [(0, 0)] * (x.ndim - 3) + [(0, ph), (0, pw), (0, 0)]
    mode = "reflect" if h > 1 and w > 1 else "edge"
    xp = jnp if isinstance(x, jax.Array) else np
    return xp.pad(x, widths, mode=mode)


def crop_to(x, shape: tuple[int, int]):
    """Crop the H and W axes of ``x`` (..., H', W', C) back to ``shape = (H, W)``."""
    h, w = shape
    return x[..., :h, :w, :]


def _groups(features: int, max_groups: int = 8) -> int:
    return math.gcd(features, max_groups)


class ConvBlock(nn.Module):
    """Two (3x3 conv, GroupNorm, swish) layers."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        for _ in range(2):
            x = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype)(x)
            x = nn.GroupNorm(num_groups=_groups(self.features), dtype=self.dtype)(x)
            x = nn.swish(x)
        return x


class UNet(nn.Module):
    """U-Net: conv blocks, max-pool down, bilinear up with skip concatenation.

    ``__call__(x, train)`` maps (N, H, W, in_channels) images of any H, W to
    (N, H, W, out_channels) float32 logits (see the module docstring).  ``train`` is accepted
    for a uniform interface; the network has no train-only behaviour.
    """

    config: UNetConfig

    @nn.compact
    def __call__(self, x, train: bool = False):
        cfg = self.config
        dtype = _DTYPES[cfg.dtype]
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels:
            raise ValueError(f"expected (N, H, W, {cfg.in_channels}) input, got {x.shape}")
        size = x.shape[1:3]
        x = pad_to_multiple(jnp.asarray(x, jnp.float32), cfg.multiple).astype(dtype)
        skips = []
        for level in range(cfg.depth):
            x = ConvBlock(cfg.base_width * 2**level, dtype=dtype, name=f"down_{level}")(x)
            skips.append(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = ConvBlock(cfg.base_width * 2**cfg.depth, dtype=dtype, name="bottom")(x)
        for level in reversed(range(cfg.depth)):
            skip = skips[level]
            x = jax.image.resize(x, (x.shape[0], *skip.shape[1:3], x.shape[-1]), "bilinear")
            x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
            x = ConvBlock(cfg.base_width * 2**level, dtype=dtype, name=f"up_{level}")(x)
        x = nn.Conv(cfg.out_channels, (1, 1), dtype=dtype, name="head")(x)
        return crop_to(x.astype(jnp.float32), size)


class CountingCNN(nn.Module):
    """Regression CNN for cell counts: strided convs, global mean pool, dense -> 1 scalar.

    ``__call__(x (N, H, W, C), train)`` returns (N,) float32 predicted counts.  The final
    bias starts at ``count_offset`` (e.g. the mean count of the training set).
    """

    widths: tuple[int, ...] = (16, 32, 64, 64, 128)
    dense: int = 64
    count_offset: float = 0.0
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x, train: bool = False):
        dtype = _DTYPES[self.dtype]
        x = jnp.asarray(x, jnp.float32).astype(dtype)
        for i, width in enumerate(self.widths):
            x = nn.Conv(width, (3, 3), strides=(2, 2), padding="SAME", dtype=dtype, name=f"conv_{i}")(x)
            x = nn.GroupNorm(num_groups=_groups(width), dtype=dtype)(x)
            x = nn.relu(x)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.relu(nn.Dense(self.dense, dtype=dtype)(x))
        bias_init = nn.initializers.constant(self.count_offset)
        x = nn.Dense(1, dtype=dtype, bias_init=bias_init, name="out")(x)
        return x[:, 0].astype(jnp.float32)


# ----------------------------------------------------------------------------- input, loss


def normalize_image(image, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Percentile-normalise an image (any dtype) to float32, ``low`` -> 0 and ``high`` -> 1."""
    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, [low, high])
    return ((img - lo) / max(float(hi - lo), 1e-6)).astype(np.float32)


#: Extra weight of a centre-target pixel per unit of target in the centre loss (see :func:`seg_loss`).
CENTRE_PEAK_WEIGHT = 9.0


def seg_loss(outputs, fg, dist, weight=None, centre=None) -> tuple[jax.Array, dict]:
    """BCE of the foreground plus MSE of the normalised distance inside the foreground, both
    weighted per pixel by ``weight`` when given, plus, with ``centre``, the soft-target BCE of
    the centre map.

    The centre BCE is a mean weighted by ``1 + CENTRE_PEAK_WEIGHT * centre``: on BBBC039 at
    sigma 2 the peaks (target above 0.5, 0.7 % of the pixels) carry about 5 % of the term
    instead of 0.7 %.  A weight that depends on the target only leaves the per-pixel optimum
    at the target.

    Parameters
    ----------
    outputs : array, shape (N, H, W, 2) or (N, H, W, 3)
        :class:`UNet` logits (three channels with ``centre``).
    fg, dist : array, shape (N, H, W)
        Targets from ``targets.seg_targets``.
    weight : array, shape (N, H, W), optional
        Pixel weights (``targets.contact_weights``); None weighs every pixel 1.
    centre : array, shape (N, H, W), optional
        Target from ``targets.centre_targets``.

    Returns
    -------
    (loss, metrics)
        Scalar loss and a dict with ``loss``, ``bce``, ``distance_mse`` and, with ``centre``,
        ``centre_bce``.
    """
    fg = jnp.asarray(fg, jnp.float32)
    dist = jnp.asarray(dist, jnp.float32)
    w = jnp.ones_like(fg) if weight is None else jnp.asarray(weight, jnp.float32)
    bce = jnp.sum(optax.sigmoid_binary_cross_entropy(outputs[..., 0], fg) * w) / jnp.sum(w)
    err = (jax.nn.sigmoid(outputs[..., 1]) - dist) ** 2
    mse = jnp.sum(err * fg * w) / jnp.maximum(jnp.sum(fg * w), 1.0)
    loss = bce + mse
    metrics = {"bce": bce, "distance_mse": mse}
    if centre is not None:
        centre = jnp.asarray(centre, jnp.float32)
        cw = 1.0 + CENTRE_PEAK_WEIGHT * centre
        # minus the target's own entropy: 0 at the optimum, same gradient
        entropy = entr(centre) + entr(1.0 - centre)
        excess = optax.sigmoid_binary_cross_entropy(outputs[..., 2], centre) - entropy
        metrics["centre_bce"] = jnp.sum(excess * cw) / jnp.sum(cw)
        loss = loss + metrics["centre_bce"]
    return loss, {"loss": loss, **metrics}



def augment_maps(x: jax.Array, rng: jax.Array) -> jax.Array:
    """Random symmetry per image of (N, H, W, C) maps (image and targets stacked on C).

    Square images get one of the 8 symmetries (90-degree rotations and flips); others one of
    the 4 that keep the shape (flips and 180-degree rotation).
    """
    n = x.shape[0]
    variants = [x, x[:, ::-1], x[:, :, ::-1], x[:, ::-1, ::-1]]
    if x.shape[1] == x.shape[2]:
        variants += [jnp.rot90(v, 1, axes=(1, 2)) for v in variants]
    k = jax.random.randint(rng, (n,), 0, len(variants))
    return jnp.stack(variants)[k, jnp.arange(n)]


class TrainState(train_state.TrainState):
    """Flax TrainState (params, optimizer state, step)."""


def create_seg_state(
    config: UNetConfig,
    rng: jax.Array,
    sample_shape: tuple[int, int] = (64, 64),
    learning_rate: float = 1e-3,
    tx: optax.GradientTransformation | None = None,
) -> TrainState:
    """A fresh U-Net TrainState, parameters initialised from ``rng``; ``tx`` (default Adam at
    ``learning_rate``) is the optimiser."""
    model = UNet(config)
    x = jnp.zeros((1, *sample_shape, config.in_channels), jnp.float32)
    params = jax.jit(model.init)(rng, x)["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx or optax.adam(learning_rate))


def seg_train_step(state: TrainState, batch: tuple, rng: jax.Array, do_augment: bool = True):
    """One optimisation step of the U-Net; pure (jit it with ``do_augment`` static).

    Parameters
    ----------
    state : TrainState
    batch : (images, fg, dist), (images, fg, dist, weight) or (images, fg, dist, weight, centre)
        images (N, H, W, C) float32 (normalised, see :func:`normalize_image`); fg and dist
        (N, H, W) float32 from ``targets.seg_targets``; weight (N, H, W) float32 pixel weights
        (``targets.contact_weights``); centre (N, H, W) float32 from ``targets.centre_targets``,
        for a three-output network.
    rng : jax.Array
        Key for the augmentation.

    Returns
    -------
    (TrainState, dict)
        The updated state and the batch's metrics (see :func:`seg_loss`).
    """
    images, targets = batch[0], list(batch[1:])
    c = images.shape[-1]
    if do_augment:
        stacked = jnp.concatenate([images, *(t[..., None] for t in targets)], axis=-1)
        stacked = augment_maps(stacked, rng)
        images, targets = stacked[..., :c], [stacked[..., c + i] for i in range(len(targets))]

    def loss_fn(params):
        out = state.apply_fn({"params": params}, images, train=True)
        return seg_loss(out, *targets)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), metrics


@functools.partial(jax.jit, static_argnums=1)
def forward_maps(params, config: UNetConfig, x):
    """Jitted evaluation-mode pass: ``x`` (N, H, W, 1) float32 normalised images to the foreground
    probability, the normalised distance map and, for a three-output network, the centre map,
    each (N, H, W) float32."""
    out = jax.nn.sigmoid(UNet(config).apply({"params": params}, x, train=False))
    return tuple(out[..., i] for i in range(config.out_channels))


@functools.partial(jax.jit, static_argnums=1)
def forward_maps_flipped(params, config: UNetConfig, x):
    """:func:`forward_maps` averaged over the four flips of ``x`` (N, H, W, 1) that keep its shape
    (identity, vertical, horizontal, both), each map flipped back before the mean: test-time
    augmentation with the symmetries the network was trained with, in one batched pass."""
    views = jnp.concatenate([x, x[:, ::-1], x[:, :, ::-1], x[:, ::-1, ::-1]])
    n = x.shape[0]

    def unflip(m):
        return (m[:n] + m[n : 2 * n, ::-1] + m[2 * n : 3 * n, :, ::-1] + m[3 * n :, ::-1, ::-1]) / 4.0

    return tuple(unflip(m) for m in forward_maps(params, config, views))


def predict_maps(params, config: UNetConfig, image, tta: bool = False) -> tuple[np.ndarray, ...]:
    """Foreground probability, normalised distance and (three-output networks) centre maps, each
    (H, W) float32, of one image.

    ``image`` is (H, W) or (H, W, C), raw intensities; it is percentile-normalised here.  With
    ``tta`` the maps are the mean over the four flips (:func:`forward_maps_flipped`), which
    costs four forward passes and makes them equivariant to those flips.
    """
    img = normalize_image(image)
    if img.ndim == 2:
        img = img[..., None]
    maps = (forward_maps_flipped if tta else forward_maps)(params, config, jnp.asarray(img[None]))
    return tuple(np.asarray(m[0]) for m in maps)


def predict_instances(
    params,
    config: UNetConfig,
    image,
    threshold: float = 0.5,
    marker_threshold: float = 0.5,
    min_area: int = 0,
    tta: bool = False,
) -> np.ndarray:
    """Instance labels (H, W) int32 of one image: U-Net maps (flip-averaged with ``tta``), then a
    distance watershed.

    See :func:`assets_pkg.core.segmentation.classical.instances_from_maps` for the thresholds.
    """
    return instances_from_unet_maps(predict_maps(params, config, image, tta=tta), threshold, marker_threshold,
                                    min_area)


def instances_from_unet_maps(maps, threshold: float, marker_threshold: float, min_area: int) -> np.ndarray:
    """Instance labels (H, W) int32 from the maps of :func:`predict_maps`: a watershed of the
    distance inside ``foreground > threshold``, seeded where the centre map (three maps) or the
    distance (two maps) is ``>= marker_threshold``, objects below ``min_area`` pixels dropped.
    """
    fg, dist, *rest = maps
    return classical.instances_from_maps(fg, dist, threshold, kind="distance", marker_threshold=marker_threshold,
                                         min_area=min_area, centre=rest[0] if rest else None)


# ----------------------------------------------------------------------------- counting


def count_loss(pred, true) -> jax.Array:
    """Mean squared error (L2) between predicted and true counts."""
    return jnp.mean((jnp.asarray(pred, jnp.float32) - jnp.asarray(true, jnp.float32)) ** 2)


def create_count_state(
    model: CountingCNN,
    rng: jax.Array,
    sample_shape: tuple[int, int, int] = (64, 64, 1),
    learning_rate: float = 1e-3,
    tx: optax.GradientTransformation | None = None,
) -> TrainState:
    """A fresh CountingCNN TrainState; ``tx`` (default Adam at ``learning_rate``) is the optimiser."""
    params = jax.jit(model.init)(rng, jnp.zeros((1, *sample_shape), jnp.float32))["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx or optax.adam(learning_rate))


def count_train_step(state: TrainState, batch: tuple, rng: jax.Array, do_augment: bool = True):
    """One optimisation step of the counting CNN; pure (jit with ``do_augment`` static).

    ``batch = (images (N, H, W, C) float32, counts (N,))``; returns ``(state, {"loss": ...})``.
    """
    images, counts = batch
    if do_augment:
        images = augment_maps(images, rng)

    def loss_fn(params):
        return count_loss(state.apply_fn({"params": params}, images, train=True), counts)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss}
