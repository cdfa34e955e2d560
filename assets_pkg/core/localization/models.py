"""Cytoself-style VQ-VAE with a protein-classification head, in Flax linen.

The model reads nucleus-centred frames (see :mod:`assets_pkg.core.store.frames`): float32 arrays of
shape (N, H, W, 3), axis order (frame, y, x, channel), channels (protein, nucleus, signed
nuclear distance).  ``ModelConfig.input_channels`` picks the channels that are encoded and
reconstructed.  With 100x100 frames:

``frames (N,100,100,C) -> Encoder -> z (N,25,25,D) -> VectorQuantizer -> q (N,25,25,D)``
``q -> Decoder -> reconstruction (N,100,100,C)`` and ``q -> ClassificationHead -> logits``.

With ``two_level`` a second, coarse stage encodes ``z`` down to a (N,4,4,G) map quantized with
its own codebook; its quantized map is resized to 25x25 and concatenated with the local
quantized map before decoding, after cytoself's two-stage model (Kobayashi et al. 2022,
``royerlab/cytoself``).  With ``num_splits > 1`` the D channels of each local vector are cut
into ``num_splits`` groups of ``D // num_splits`` channels, each quantized with the same
codebook (cytoself's split quantization).

This module holds the configuration, the assembled :class:`VQVAE` and its objective; the
building blocks live in :mod:`.layers` and the vector quantizer (van den Oord et al. 2017, as
in the Haiku and Sonnet VQ-VAE) in :mod:`.quantizer`, both re-exported here.  Everything is a
pure function of its inputs and variables, so a training step can be wrapped in ``jax.jit``.
The only variable collection is ``params``; the only random stream is ``dropout`` (train mode).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from .layers import ClassificationHead, Decoder, Encoder, GlobalEncoder, ResidualBlock
from .quantizer import VectorQuantizer, VQOutput, codebook_histogram

__all__ = [
    "ModelConfig",
    "VQOutput",
    "ModelOutput",
    "ResidualBlock",
    "Encoder",
    "GlobalEncoder",
    "VectorQuantizer",
    "Decoder",
    "ClassificationHead",
    "VQVAE",
    "compute_losses",
    "codebook_histogram",
    "init_model",
    "model_presets",
    "parameter_count",
    "select_input_channels",
    "DISTANCE_CHANNEL",
    "DISTANCE_SCALE_PX",
]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of :class:`VQVAE`.

    Parameters
    ----------
    num_classes : int
        Number of protein classes predicted by the classification head.
    input_channels : tuple of int
        Frame channels fed to (and reconstructed by) the model, e.g. ``(0,)`` protein only,
        ``(0, 1)`` protein and nucleus, ``(0, 2)`` protein and signed nuclear distance.
    embedding_dim : int
        Channels D of the local (25x25) latent map.  Must be even and divisible by
        ``num_splits``.
    num_embeddings : int
        Codes in the local codebook.
    commitment_cost : float
        Weight beta of the commitment loss (both levels).
    num_splits : int
        Split quantization: each local vector is cut into ``num_splits`` groups of
        ``embedding_dim // num_splits`` channels, all quantized with one shared codebook.
    two_level : bool
        Add the coarse global level (4x4 map) with its own codebook.
    global_num_embeddings : int
        Codes in the global codebook.
    global_embedding_dim : int
        Channels of the global latent map (one code per 4x4 position).
    residual_hidden : int
        Hidden width inside the residual blocks.
    head_hidden : int
        Width of the hidden dense layers of the classification head.
    head_layers : int
        Number of hidden dense layers (Dense + ReLU + Dropout) of the head; 0 gives a linear
        classifier on the flattened quantized map.
    dropout : float
        Dropout rate in the head, in [0, 1).
    dtype : {"float32", "bfloat16"}
        Computation dtype of convolutions and dense layers.  Parameters, the quantizer,
        reconstructions, logits and all losses stay float32.
    """

    num_classes: int
    input_channels: tuple[int, ...] = (0,)
    embedding_dim: int = 64
    num_embeddings: int = 512
    commitment_cost: float = 0.25
    num_splits: int = 1
    two_level: bool = False
    global_num_embeddings: int = 512
    global_embedding_dim: int = 64
    residual_hidden: int = 32
    head_hidden: int = 1000
    head_layers: int = 2
    dropout: float = 0.45
    dtype: str = "float32"

    def __post_init__(self):
        # Lists (from YAML or JSON) become tuples so the config stays hashable.
        object.__setattr__(self, "input_channels", tuple(int(c) for c in self.input_channels))
        problems = []
        if self.num_classes < 1:
            problems.append(f"num_classes must be >= 1, got {self.num_classes}")
        if not self.input_channels:
            problems.append("input_channels must name at least one channel")
        if len(set(self.input_channels)) != len(self.input_channels) or min(
            self.input_channels, default=0
        ) < 0:
            problems.append(
                f"input_channels must be distinct non-negative indices, got {self.input_channels}"
            )
        if self.embedding_dim < 2 or self.embedding_dim % 2:
            problems.append(f"embedding_dim must be even and >= 2, got {self.embedding_dim}")
        if self.num_splits < 1 or self.embedding_dim % self.num_splits:
            problems.append(
                f"num_splits ({self.num_splits}) must be >= 1 and divide "
                f"embedding_dim ({self.embedding_dim})"
            )
        for name in ("num_embeddings", "global_num_embeddings", "global_embedding_dim",
                     "residual_hidden", "head_hidden"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.head_layers < 0:
            problems.append(f"head_layers must be >= 0, got {self.head_layers}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.commitment_cost < 0:
            problems.append(f"commitment_cost must be >= 0, got {self.commitment_cost}")
        if self.dtype not in _DTYPES:
            problems.append(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    @property
    def compute_dtype(self) -> Any:
        """The JAX dtype of convolutions and dense layers."""
        return _DTYPES[self.dtype]

    @property
    def code_dim(self) -> int:
        """Dimension of one local code vector, ``embedding_dim // num_splits``."""
        return self.embedding_dim // self.num_splits

    @classmethod
    def from_preset(cls, name: str, num_classes: int, **overrides: Any) -> ModelConfig:
        """Build a config from :func:`model_presets` ``[name]`` with optional overrides."""
        presets = model_presets()
        if name not in presets:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(presets)}")
        kwargs = {**presets[name], **overrides}
        return cls(num_classes=num_classes, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view (JSON-friendly) for checkpoints and metadata."""
        d = dataclasses.asdict(self)
        d["input_channels"] = list(self.input_channels)
        return d


def model_presets() -> dict[str, dict[str, Any]]:
    """Named :class:`ModelConfig` keyword sets (everything except ``num_classes``).

    Returns
    -------
    dict of str to dict
        ``"tiny"``: small widths, runs in seconds per step on a laptop CPU.
        ``"full"``: the VQ-VAE settings of the book chapter (D=64, 512 codes, beta=0.25,
        head of 2 x 1000 units, dropout 0.45).
        ``"cytoself"``: two-level model after cytoself (protein + nucleus channels,
        2048 local and 2048 global codes).
    """
    return {
        "tiny": dict(
            input_channels=(0,), embedding_dim=16, num_embeddings=64, commitment_cost=0.25,
            num_splits=1, two_level=False, residual_hidden=16, head_hidden=128, head_layers=1,
            dropout=0.1,
        ),
        "full": dict(
            input_channels=(0,), embedding_dim=64, num_embeddings=512, commitment_cost=0.25,
            num_splits=1, two_level=False, residual_hidden=32, head_hidden=1000, head_layers=2,
            dropout=0.45,
        ),
        "cytoself": dict(
            input_channels=(0, 1), embedding_dim=64, num_embeddings=2048, commitment_cost=0.25,
            num_splits=1, two_level=True, global_num_embeddings=2048, global_embedding_dim=64,
            residual_hidden=32, head_hidden=1000, head_layers=2, dropout=0.45,
        ),
    }


# --------------------------------------------------------------------------------------------
# Outputs


@struct.dataclass
class ModelOutput:
    """What :class:`VQVAE` returns (a pytree).

    Attributes
    ----------
    reconstruction : float32 array, shape (N, H, W, C_in)
        Decoded frames (linear output), C_in = ``len(config.input_channels)``.
    target : float32 array, shape (N, H, W, C_in)
        The selected input channels, what ``reconstruction`` is compared with.
    logits : float32 array, shape (N, num_classes)
        Unnormalized class scores of the head.
    vq : dict of str to VQOutput
        ``"local"`` (the (N, H/4, W/4) map) and, for two-level models, ``"global"`` (4x4).
    embedding : float32 array, shape (N, embedding_dim)
        Spatial mean of the continuous local encoder output, for later analysis.
    """

    reconstruction: jax.Array
    target: jax.Array
    logits: jax.Array
    vq: dict[str, VQOutput]
    embedding: jax.Array


# --------------------------------------------------------------------------------------------
# Inputs


#: Frame channel holding the signed distance to the nucleus boundary, in pixels (tens of pixels
#: across a 100x100 frame; ``FRAME_CHANNELS[2]`` of :mod:`assets_pkg.core.store.frames`, not imported
#: here to keep scikit-image out of the model's import; a test ties the two).
DISTANCE_CHANNEL = 2
#: The model sees that channel as ``tanh(distance / DISTANCE_SCALE_PX)``: in (-1, 1) like the
#: normalised intensities, steep across the boundary, flat far from it.  Fed raw, its range of
#: about -60..+25 dominates the reconstruction and codebook losses and the head learns nothing.
DISTANCE_SCALE_PX = 10.0


def select_input_channels(frames: jax.Array, input_channels: tuple[int, ...]) -> jax.Array:
    """The model's input channels of a batch of frames, as float32 (the distance channel squashed).

    Parameters
    ----------
    frames : array, shape (N, H, W, C)
        Frames, axis order (frame, y, x, channel).
    input_channels : tuple of int
        Channel indices to keep, in this order.

    Returns
    -------
    float32 array, shape (N, H, W, len(input_channels))
        The channels in the order asked; channel :data:`DISTANCE_CHANNEL` (signed distance,
        pixels) becomes ``tanh(d / DISTANCE_SCALE_PX)``, the others are unchanged.

    Raises
    ------
    ValueError
        If ``frames`` is not 4-D or lacks one of the channels.
    """
    if frames.ndim != 4:
        raise ValueError(f"frames must have shape (N, H, W, C); got shape {frames.shape}")
    if max(input_channels) >= frames.shape[-1]:
        raise ValueError(
            f"input_channels {tuple(input_channels)} need frames with more than "
            f"{max(input_channels)} channels; got shape {frames.shape}"
        )
    frames = jnp.asarray(frames)
    if tuple(input_channels) == tuple(range(frames.shape[-1])):
        picked = frames.astype(jnp.float32)
    else:
        picked = jnp.take(frames, jnp.asarray(input_channels), axis=-1).astype(jnp.float32)
    if DISTANCE_CHANNEL not in input_channels:
        return picked
    is_distance = jnp.asarray([c == DISTANCE_CHANNEL for c in input_channels])
    return jnp.where(is_distance, jnp.tanh(picked / DISTANCE_SCALE_PX), picked)


class VQVAE(nn.Module):
    """Cytoself-style VQ-VAE with a classification head.

    Attributes
    ----------
    config : ModelConfig
        Hyper-parameters.

    Notes
    -----
    Submodule (parameter) names: ``encoder``, ``vq_local``, ``global_encoder`` and
    ``vq_global`` (two-level only), ``decoder``, ``head``.  The codebooks are
    ``params["vq_local"]["codebook"]`` and ``params["vq_global"]["codebook"]``.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, frames: jax.Array, train: bool) -> ModelOutput:
        """Encode, quantize, decode and classify a batch of frames.

        Parameters
        ----------
        frames : array, shape (N, H, W, C)
            Frames, axis order (frame, y, x, channel), any float dtype; H and W divisible by 4
            (100x100 in Cellscape); C must contain every index of ``config.input_channels``.
        train : bool
            Train mode: dropout on (needs the ``dropout`` rng).  Nothing else differs.

        Returns
        -------
        ModelOutput
        """
        cfg = self.config
        dtype = cfg.compute_dtype
        target = select_input_channels(frames, cfg.input_channels)
        n, height, width, channels = target.shape
        if height % 4 or width % 4:
            raise ValueError(f"frame height and width must be divisible by 4; got {(height, width)}")

        z = Encoder(cfg.embedding_dim, cfg.residual_hidden, dtype=dtype, name="encoder")(target)
        local = VectorQuantizer(cfg.num_embeddings, cfg.code_dim, cfg.commitment_cost,
                                cfg.num_splits, name="vq_local")(z)
        levels = {"local": local}
        decoder_input = local.quantized
        if cfg.two_level:
            zg = GlobalEncoder(cfg.global_embedding_dim, cfg.residual_hidden, dtype=dtype,
                               name="global_encoder")(z)
            glob = VectorQuantizer(cfg.global_num_embeddings, cfg.global_embedding_dim,
                                   cfg.commitment_cost, 1, name="vq_global")(zg)
            levels["global"] = glob
            up = jax.image.resize(
                glob.quantized, (n, z.shape[1], z.shape[2], cfg.global_embedding_dim), "bilinear"
            )
            decoder_input = jnp.concatenate([decoder_input, up], axis=-1)

        reconstruction = Decoder(channels, cfg.embedding_dim, cfg.residual_hidden, dtype=dtype,
                                 name="decoder")(decoder_input)
        logits = ClassificationHead(cfg.num_classes, cfg.head_hidden, cfg.head_layers,
                                    cfg.dropout, dtype=dtype, name="head")(local.quantized, train)
        return ModelOutput(
            reconstruction=reconstruction,
            target=target,
            logits=logits,
            vq=levels,
            embedding=jnp.mean(z, axis=(1, 2)),
        )


# --------------------------------------------------------------------------------------------
# Losses and helpers


def compute_losses(
    output: ModelOutput, labels: jax.Array, classification_weight: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Training objective and metrics, shared by train and eval steps.

    ``total = reconstruction + codebook + commitment + classification_weight * classification``.
    ``classification_weight = 0`` is the no-classification ablation: the head still runs and
    its loss and accuracy are still reported.

    Parameters
    ----------
    output : ModelOutput
        Output of :class:`VQVAE`.
    labels : int array, shape (N,)
        Class index of every frame, in ``[0, num_classes)``.
    classification_weight : float or float32 scalar
        Weight of the classification loss (may be a traced value).

    Returns
    -------
    total : float32 scalar
    metrics : dict of str to float32 scalar
        ``total``, ``reconstruction`` (MSE between reconstruction and target), ``codebook``
        and ``commitment`` (summed over levels; commitment already weighted by beta),
        ``classification`` (mean softmax cross-entropy), ``accuracy``, ``perplexity`` (local
        level) and, for two-level models, ``perplexity_global``.
    """
    labels = jnp.asarray(labels)
    reconstruction = jnp.mean((output.reconstruction - output.target) ** 2)
    codebook = sum(v.codebook_loss for v in output.vq.values())
    commitment = sum(v.commitment_loss for v in output.vq.values())
    logits = output.logits.astype(jnp.float32)
    classification = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
    total = reconstruction + codebook + commitment + classification_weight * classification
    metrics = {
        "total": total,
        "reconstruction": reconstruction,
        "codebook": codebook,
        "commitment": commitment,
        "classification": classification,
        "accuracy": accuracy,
        "perplexity": output.vq["local"].perplexity,
    }
    if "global" in output.vq:
        metrics["perplexity_global"] = output.vq["global"].perplexity
    return total, metrics


def init_model(config: ModelConfig, rng: jax.Array, sample_frames: jax.Array) -> dict:
    """Initialize the variables of ``VQVAE(config)``.

    Parameters
    ----------
    config : ModelConfig
    rng : jax.Array
        PRNG key for the parameter initializers.  The initialization is jitted; a key made
        with ``jax.random.key(seed, impl="rbg")`` compiles several times faster on a CPU than
        the default threefry key (useful in tests).
    sample_frames : array, shape (N, H, W, C)
        Example batch fixing the input geometry (one frame is enough; values are unused).

    Returns
    -------
    dict
        ``{"params": ...}``, the only variable collection (no batch statistics).
    """
    init = jax.jit(VQVAE(config).init, static_argnames="train")
    variables = init({"params": rng}, jnp.asarray(sample_frames), train=False)
    return dict(variables)


def parameter_count(params: Mapping) -> int:
    """Total number of scalars in a parameter pytree (works on ``jax.eval_shape`` output)."""
    return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
