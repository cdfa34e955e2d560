"""The vector quantizer of the VQ-VAE: a learned codebook, nearest codes, straight-through.

It follows van den Oord et al. 2017 (codebook learned by gradient, straight-through
estimator) as in the Haiku and Sonnet VQ-VAE, and returns named outputs (:class:`VQOutput`:
quantized vectors, encoding indices, codebook and commitment losses, perplexity, code usage).
:func:`codebook_histogram` turns a frame's encoding indices into its code counts, the basis
of cytoself's feature spectra.  Pure functions of their inputs and variables (``jax.jit``
applies); the only variable is the ``params`` entry ``codebook``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

__all__ = ["VQOutput", "VectorQuantizer", "codebook_histogram"]


@struct.dataclass
class VQOutput:
    """What a :class:`VectorQuantizer` returns (a pytree; every field is a JAX array).

    Attributes
    ----------
    quantized : float32 array, same shape as the input
        Straight-through quantized vectors: the nearest codes in the forward pass, the
        identity in the backward pass (no gradient reaches the codebook through it).
    encoding_indices : int32 array
        Index of the nearest code for each vector: shape ``x.shape[:-1]`` without splits,
        ``x.shape[:-1] + (num_splits,)`` with splits.
    codebook_loss : float32 scalar
        ``mean((stop_gradient(x) - q) ** 2)``: moves the codes towards the encoder outputs.
    commitment_loss : float32 scalar
        ``commitment_cost * mean((x - stop_gradient(q)) ** 2)``: keeps the encoder close to
        its codes (already weighted).
    perplexity : float32 scalar
        ``exp(entropy)`` of the code usage over all vectors of the batch, in
        ``[1, num_embeddings]``.
    code_usage : float32 array, shape (num_embeddings,)
        Fraction of the batch's vectors assigned to each code (sums to 1).
    """

    quantized: jax.Array
    encoding_indices: jax.Array
    codebook_loss: jax.Array
    commitment_loss: jax.Array
    perplexity: jax.Array
    code_usage: jax.Array


class VectorQuantizer(nn.Module):
    """Vector quantization with a learned codebook and a straight-through estimator.

    The last axis of the input is the vector space; every other axis is a batch axis.  With
    ``num_splits > 1`` the last axis (length ``num_splits * embedding_dim``) is reshaped to
    ``(num_splits, embedding_dim)`` and every split is quantized with the same codebook.
    The nearest code is found by squared Euclidean distance in the expanded form
    ``||x||^2 - 2 x.E^T + ||E||^2`` (one matmul, float32 at highest precision).
    All computation is float32 whatever the input dtype.

    Attributes
    ----------
    num_embeddings : int
        Codes K in the codebook.
    embedding_dim : int
        Dimension of one code vector.
    commitment_cost : float
        Weight beta of the commitment loss.
    num_splits : int
        Groups per input vector sharing the codebook.

    Notes
    -----
    The codebook parameter ``codebook`` has shape (K, embedding_dim), initialized uniformly
    in ``+-sqrt(3 / embedding_dim)`` (variance scaling, unit scale, fan-in = embedding_dim).
    It receives gradient only from ``codebook_loss``.
    """

    num_embeddings: int
    embedding_dim: int
    commitment_cost: float = 0.25
    num_splits: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> VQOutput:
        """Quantize ``x`` of shape (..., num_splits * embedding_dim); see :class:`VQOutput`."""
        width = self.num_splits * self.embedding_dim
        if x.shape[-1] != width:
            raise ValueError(
                f"VectorQuantizer expects a last axis of {width} = num_splits "
                f"({self.num_splits}) x embedding_dim ({self.embedding_dim}); got shape {x.shape}"
            )
        codebook = self.param(
            "codebook",
            nn.initializers.variance_scaling(1.0, "fan_in", "uniform", in_axis=-1, out_axis=-2),
            (self.num_embeddings, self.embedding_dim),
            jnp.float32,
        )
        x = x.astype(jnp.float32)
        if self.num_splits > 1:
            index_shape = x.shape[:-1] + (self.num_splits,)
        else:
            index_shape = x.shape[:-1]
        flat = x.reshape(-1, self.embedding_dim)

        distances = (
            jnp.sum(flat**2, axis=1, keepdims=True)
            - 2.0 * jnp.matmul(flat, codebook.T, precision=jax.lax.Precision.HIGHEST)
            + jnp.sum(codebook**2, axis=1)[None, :]
        )
        indices = jnp.argmin(distances, axis=1).astype(jnp.int32)
        q = jnp.take(codebook, indices, axis=0).reshape(x.shape)

        codebook_loss = jnp.mean((jax.lax.stop_gradient(x) - q) ** 2)
        commitment_loss = self.commitment_cost * jnp.mean((x - jax.lax.stop_gradient(q)) ** 2)
        quantized = x + jax.lax.stop_gradient(q - x)

        counts = jnp.bincount(indices, length=self.num_embeddings).astype(jnp.float32)
        usage = counts / indices.shape[0]
        perplexity = jnp.exp(jnp.sum(jax.scipy.special.entr(usage)))
        return VQOutput(
            quantized=quantized,
            encoding_indices=indices.reshape(index_shape),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            perplexity=perplexity,
            code_usage=usage,
        )


def codebook_histogram(indices: jax.Array, num_embeddings: int) -> jax.Array:
    """Per-frame histogram of code usage (the basis of cytoself's feature spectra).

    Parameters
    ----------
    indices : int array, shape (N, ...)
        Code indices of each frame, e.g. ``VQOutput.encoding_indices`` of shape (N, 25, 25) or
        (N, 25, 25, num_splits).
    num_embeddings : int
        Codebook size K.

    Returns
    -------
    float32 array, shape (N, K)
        Count of each code over all positions (and splits) of each frame; rows sum to the
        number of indices per frame.
    """
    indices = jnp.asarray(indices).reshape(jnp.shape(indices)[0], -1).astype(jnp.int32)
    count = jax.vmap(lambda row: jnp.bincount(row, length=num_embeddings))
    return count(indices).astype(jnp.float32)
