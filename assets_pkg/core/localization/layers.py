"""Building blocks of the VQ-VAE (Flax linen), after the Haiku and Sonnet VQ-VAE.

:class:`Encoder` (frames to the local latent map, /4), :class:`GlobalEncoder` (local map to
the coarse 4x4 map of a two-level model) and :class:`Decoder` (quantized map back to frames,
x4), built around :class:`ResidualBlock`; :class:`ClassificationHead` (an MLP on the
flattened quantized map).  Arrays are (N, H, W, C), axis order (frame, y, x, channel); every
block computes in its ``dtype`` and returns float32.  :class:`~.models.VQVAE` assembles them.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "GLOBAL_MAP_SIZE",
    "ClassificationHead",
    "Decoder",
    "Encoder",
    "GlobalEncoder",
    "ResidualBlock",
]

#: Side of the coarse (global) map of a two-level model.
GLOBAL_MAP_SIZE = 4


def _num_groups(channels: int) -> int:
    """GroupNorm groups: the largest of 32, 16, ... that divides ``channels``."""
    return math.gcd(channels, 32)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: GroupNorm, swish, conv 3x3, swish, conv 1x1, skip.

    Attributes
    ----------
    hidden : int
        Width of the inner 3x3 convolution.
    dtype : dtype
        Computation dtype (parameters stay float32).
    """

    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to ``x`` of shape (N, H, W, C); returns the same shape."""
        channels = x.shape[-1]
        h = nn.GroupNorm(num_groups=_num_groups(channels), dtype=self.dtype)(x)
        h = nn.swish(h)
        h = nn.Conv(self.hidden, (3, 3), padding="SAME", dtype=self.dtype)(h)
        h = nn.swish(h)
        h = nn.Conv(channels, (1, 1), dtype=self.dtype)(h)
        return x + h


class Encoder(nn.Module):
    """Local encoder: (N, H, W, C) frames to an (N, H/4, W/4, embedding_dim) latent map.

    Conv 4x4 stride 2 (embedding_dim // 2) + ReLU, conv 4x4 stride 2 (embedding_dim) + ReLU,
    conv 3x3, two residual blocks, swish, and a linear 1x1 projection (pre-quantization).
    Padding 1 on each side makes the strided convolutions halve even sizes exactly
    (100 -> 50 -> 25).

    Attributes
    ----------
    embedding_dim : int
        Output channels D.
    residual_hidden : int
        Hidden width of the residual blocks.
    dtype : dtype
        Computation dtype.  The output is cast to float32.
    """

    embedding_dim: int
    residual_hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Encode ``x`` (N, H, W, C), H and W divisible by 4; returns float32 (N, H/4, W/4, D)."""
        pad = ((1, 1), (1, 1))
        h = nn.Conv(self.embedding_dim // 2, (4, 4), strides=(2, 2), padding=pad,
                    dtype=self.dtype)(x)
        h = nn.relu(h)
        h = nn.Conv(self.embedding_dim, (4, 4), strides=(2, 2), padding=pad, dtype=self.dtype)(h)
        h = nn.relu(h)
        h = nn.Conv(self.embedding_dim, (3, 3), padding="SAME", dtype=self.dtype)(h)
        h = ResidualBlock(self.residual_hidden, dtype=self.dtype)(h)
        h = ResidualBlock(self.residual_hidden, dtype=self.dtype)(h)
        h = nn.swish(h)
        h = nn.Conv(self.embedding_dim, (1, 1), dtype=self.dtype, name="pre_quantization")(h)
        return h.astype(jnp.float32)


class GlobalEncoder(nn.Module):
    """Coarse encoder of a two-level model: local latent map to a (N, 4, 4, G) map.

    Three conv 3x3 stride 2 (SAME) + ReLU layers (25 -> 13 -> 7 -> 4), a residual block,
    swish and a linear 1x1 projection.  Inputs of other sizes are resized to 4x4 at the end.

    Attributes
    ----------
    embedding_dim : int
        Output channels G.
    residual_hidden : int
        Hidden width of the residual block.
    dtype : dtype
        Computation dtype.  The output is cast to float32.
    """

    embedding_dim: int
    residual_hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        """Encode the local map ``z`` (N, h, w, D); returns float32 (N, 4, 4, G)."""
        h = z
        for _ in range(3):
            h = nn.Conv(self.embedding_dim, (3, 3), strides=(2, 2), padding="SAME",
                        dtype=self.dtype)(h)
            h = nn.relu(h)
        if h.shape[1:3] != (GLOBAL_MAP_SIZE, GLOBAL_MAP_SIZE):
            h = jax.image.resize(
                h, (h.shape[0], GLOBAL_MAP_SIZE, GLOBAL_MAP_SIZE, h.shape[-1]), "linear"
            )
        h = ResidualBlock(self.residual_hidden, dtype=self.dtype)(h)
        h = nn.swish(h)
        h = nn.Conv(self.embedding_dim, (1, 1), dtype=self.dtype, name="pre_quantization")(h)
        return h.astype(jnp.float32)


class Decoder(nn.Module):
    """Decoder: (N, h, w, D') quantized map to (N, 4h, 4w, out_channels) frames.

    Conv 3x3 to ``width``, two residual blocks, swish, then twice [bilinear resize x2,
    conv 3x3 (``width // 2``), ReLU], and a final linear conv 3x3 to ``out_channels``.

    Attributes
    ----------
    out_channels : int
        Reconstructed channels.
    width : int
        Channels of the 25x25 stage (the local embedding_dim).
    residual_hidden : int
        Hidden width of the residual blocks.
    dtype : dtype
        Computation dtype.  The output is cast to float32.
    """

    out_channels: int
    width: int
    residual_hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, q: jax.Array) -> jax.Array:
        """Decode ``q`` (N, h, w, D'); returns float32 (N, 4h, 4w, out_channels)."""
        h = nn.Conv(self.width, (3, 3), padding="SAME", dtype=self.dtype)(q)
        h = ResidualBlock(self.residual_hidden, dtype=self.dtype)(h)
        h = ResidualBlock(self.residual_hidden, dtype=self.dtype)(h)
        h = nn.swish(h)
        for _ in range(2):
            n, hh, ww, c = h.shape
            h = jax.image.resize(h, (n, 2 * hh, 2 * ww, c), "bilinear")
            h = nn.Conv(max(self.width // 2, 1), (3, 3), padding="SAME", dtype=self.dtype)(h)
            h = nn.relu(h)
        h = nn.Conv(self.out_channels, (3, 3), padding="SAME", dtype=self.dtype,
                    name="output")(h)
        return h.astype(jnp.float32)


class ClassificationHead(nn.Module):
    """MLP on the flattened quantized map: ``layers`` x [Dense, ReLU, Dropout], Dense.

    Attributes
    ----------
    num_classes : int
        Output classes.
    hidden : int
        Width of the hidden layers.
    layers : int
        Number of hidden layers.
    dropout : float
        Dropout rate after every hidden layer (train mode only; uses the ``dropout`` rng).
    dtype : dtype
        Computation dtype.  Logits are cast to float32.
    """

    num_classes: int
    hidden: int
    layers: int
    dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, q: jax.Array, train: bool) -> jax.Array:
        """Logits (N, num_classes), float32, for a map ``q`` of shape (N, ...)."""
        h = q.reshape(q.shape[0], -1)
        for _ in range(self.layers):
            h = nn.Dense(self.hidden, dtype=self.dtype)(h)
            h = nn.relu(h)
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return nn.Dense(self.num_classes, dtype=self.dtype)(h).astype(jnp.float32)
