"""Tests of the VQ-VAE library layer (assets_pkg.core.localization: models, layers, quantizer).

Tolerances: float32 throughout; the quantizer is compared with an independent NumPy
reference (brute-force nearest codes by ``np.linalg.norm``) to ``atol = 1e-5`` / ``rtol = 1e-5``;
jitted and eager forward passes agree to ``atol = 1e-5``.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assets_pkg.core.localization.layers import (
    ClassificationHead,
    Decoder,
    Encoder,
    GlobalEncoder,
)
from assets_pkg.core.localization.models import (
    DISTANCE_CHANNEL,
    DISTANCE_SCALE_PX,
    VQVAE,
    ModelConfig,
    ModelOutput,
    compute_losses,
    init_model,
    model_presets,
    parameter_count,
    select_input_channels,
)
from assets_pkg.core.localization.quantizer import VectorQuantizer, VQOutput, codebook_histogram
from assets_pkg.core.store.frames import FRAME_CHANNELS

ATOL = 1e-5
RTOL = 1e-5
NUM_CLASSES = 5


def _key(seed):
    # rbg keys compile the jitted parameter initialization several times faster on a CPU.
    return jax.random.key(seed, impl="rbg")


def _frames(n=2, seed=0, size=100):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    cfg = ModelConfig.from_preset("tiny", num_classes=NUM_CLASSES)
    frames = _frames(3)
    variables = init_model(cfg, _key(0), frames[:1])
    labels = jnp.array([0, 3, 4])
    # one jitted apply shared by the tests, so each mode compiles once
    apply = jax.jit(VQVAE(cfg).apply, static_argnames="train")
    return cfg, variables, jnp.asarray(frames), labels, apply


# ------------------------------------------------------------------------------------------
# The quantizer against NumPy


def _numpy_vq(x, codebook, commitment_cost, num_splits):
    """Independent reference: brute-force nearest codes by explicit vector norms."""
    d = codebook.shape[1]
    flat = x.reshape(-1, d).astype(np.float64)
    cb = codebook.astype(np.float64)
    dist = np.linalg.norm(flat[:, None, :] - cb[None, :, :], axis=-1)
    idx = np.argmin(dist, axis=1)
    # The reference is only meaningful when the nearest code is not a near tie.
    two = np.sort(dist, axis=1)[:, :2]
    assert np.min(two[:, 1] - two[:, 0]) > 1e-4
    q = cb[idx].reshape(x.shape)
    mse = np.mean((x - q) ** 2)
    counts = np.bincount(idx, minlength=codebook.shape[0])
    p = counts[counts > 0] / idx.size
    perplexity = np.exp(-np.sum(p * np.log(p)))
    index_shape = x.shape[:-1] + ((num_splits,) if num_splits > 1 else ())
    return idx.reshape(index_shape), q, mse, commitment_cost * mse, perplexity


@pytest.mark.parametrize("num_splits", [1, 2])
def test_quantizer_matches_numpy_reference(num_splits):
    k, d = 12, 4
    vq = VectorQuantizer(num_embeddings=k, embedding_dim=d, commitment_cost=0.25,
                         num_splits=num_splits)
    x = np.random.default_rng(1).normal(size=(2, 5, 5, d * num_splits)).astype(np.float32)
    variables = vq.init(jax.random.key(2), x)
    codebook = np.asarray(variables["params"]["codebook"])
    assert codebook.shape == (k, d) and codebook.dtype == np.float32

    out = vq.apply(variables, x)
    idx, q, cb_loss, commit_loss, perplexity = _numpy_vq(x, codebook, 0.25, num_splits)

    assert isinstance(out, VQOutput)
    assert out.encoding_indices.dtype == jnp.int32
    assert out.encoding_indices.shape == idx.shape
    np.testing.assert_array_equal(np.asarray(out.encoding_indices), idx)
    np.testing.assert_allclose(np.asarray(out.quantized), q, atol=ATOL)
    np.testing.assert_allclose(float(out.codebook_loss), cb_loss, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(float(out.commitment_loss), commit_loss, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(float(out.perplexity), perplexity, rtol=RTOL)
    np.testing.assert_allclose(float(jnp.sum(out.code_usage)), 1.0, rtol=RTOL)


def test_quantizer_rejects_wrong_width():
    vq = VectorQuantizer(num_embeddings=8, embedding_dim=4, num_splits=2)
    with pytest.raises(ValueError, match="last axis of 8"):
        vq.init(jax.random.key(0), jnp.zeros((2, 4)))


def test_perplexity_bounds():
    k = 16
    vq = VectorQuantizer(num_embeddings=k, embedding_dim=3)
    x = jax.random.normal(jax.random.key(0), (4, 6, 6, 3))
    variables = vq.init(jax.random.key(1), x)
    p = float(vq.apply(variables, x).perplexity)
    assert 1.0 <= p <= k
    # every vector identical -> one code used -> perplexity exactly 1
    same = jnp.broadcast_to(jnp.array([0.3, -1.0, 2.0]), (4, 6, 6, 3))
    assert float(vq.apply(variables, same).perplexity) == 1.0


# ------------------------------------------------------------------------------------------
# Gradients


def test_straight_through_gradients(tiny):
    cfg, variables, frames, labels, _ = tiny
    model = VQVAE(cfg)

    def losses(params):
        out = model.apply({"params": params}, frames, train=False)
        metrics = compute_losses(out, labels, 1.0)[1]
        return metrics["reconstruction"], metrics["codebook"], metrics["classification"]

    @jax.jit
    def grads(params):
        return [jax.grad(lambda p, i=i: losses(p)[i])(params) for i in range(3)]

    g_recon, g_codebook, g_class = grads(variables["params"])
    enc = jax.tree_util.tree_leaves(g_recon["encoder"])
    assert all(np.all(np.isfinite(g)) for g in enc)
    # the encoder's first conv kernel (furthest from the quantizer) gets gradient
    for g in (g_recon, g_class):
        assert float(jnp.max(jnp.abs(g["encoder"]["Conv_0"]["kernel"]))) > 0
        # ... but the straight-through estimator passes none to the codebook
        np.testing.assert_array_equal(np.asarray(g["vq_local"]["codebook"]), 0.0)
    # the codebook learns from the codebook loss, which does not touch the decoder
    assert float(jnp.max(jnp.abs(g_codebook["vq_local"]["codebook"]))) > 0
    np.testing.assert_array_equal(np.asarray(g_codebook["decoder"]["output"]["kernel"]), 0.0)


# ------------------------------------------------------------------------------------------
# jit versus eager, train and eval


@pytest.mark.parametrize("train", [False, True])
def test_jit_matches_eager(tiny, train):
    cfg, variables, frames, labels, apply = tiny
    model = VQVAE(cfg)
    rngs = {"dropout": jax.random.key(7)}

    def forward(v, x, y):
        out = model.apply(v, x, train=train, rngs=rngs)
        return out, compute_losses(out, y, 1.0)[1]

    eager_out, eager_m = forward(variables, frames, labels)
    jit_out = apply(variables, frames, train=train, rngs=rngs)
    jit_m = jax.jit(compute_losses)(jit_out, labels, 1.0)[1]

    np.testing.assert_array_equal(
        np.asarray(eager_out.vq["local"].encoding_indices),
        np.asarray(jit_out.vq["local"].encoding_indices),
    )
    for a, b in zip(jax.tree_util.tree_leaves(eager_out), jax.tree_util.tree_leaves(jit_out),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=ATOL, rtol=RTOL)
    assert eager_m.keys() == jit_m.keys()
    for key in eager_m:
        np.testing.assert_allclose(float(eager_m[key]), float(jit_m[key]), atol=ATOL, rtol=RTOL)


def test_dropout_only_in_train_mode(tiny):
    _, variables, frames, _, apply = tiny
    e1 = apply(variables, frames, train=False, rngs={"dropout": jax.random.key(1)}).logits
    e2 = apply(variables, frames, train=False, rngs={"dropout": jax.random.key(2)}).logits
    np.testing.assert_array_equal(np.asarray(e1), np.asarray(e2))
    t1 = apply(variables, frames, train=True, rngs={"dropout": jax.random.key(1)}).logits
    t2 = apply(variables, frames, train=True, rngs={"dropout": jax.random.key(2)}).logits
    assert not np.allclose(np.asarray(t1), np.asarray(t2))


# ------------------------------------------------------------------------------------------
# Shapes


def test_encoder_decoder_shapes():
    # abstract evaluation: shapes and dtypes without compiling anything
    x = jax.ShapeDtypeStruct((2, 100, 100, 1), jnp.float32)
    key = jax.random.key(0)
    z, _ = jax.eval_shape(Encoder(embedding_dim=8, residual_hidden=4).init_with_output, key, x)
    assert z.shape == (2, 25, 25, 8) and z.dtype == jnp.float32
    y, _ = jax.eval_shape(Decoder(out_channels=2, width=8, residual_hidden=4).init_with_output,
                          key, z)
    assert y.shape == (2, 100, 100, 2) and y.dtype == jnp.float32
    zg, _ = jax.eval_shape(GlobalEncoder(embedding_dim=6, residual_hidden=4).init_with_output,
                           key, z)
    assert zg.shape == (2, 4, 4, 6)
    head = ClassificationHead(num_classes=3, hidden=4, layers=1, dropout=0.5)
    logits, _ = jax.eval_shape(lambda k, z: head.init_with_output(k, z, train=False), key, z)
    assert logits.shape == (2, 3)


def test_model_shapes_and_input_channels(tiny):
    cfg, variables, frames, _, apply = tiny
    out = apply(variables, frames, train=False)
    assert isinstance(out, ModelOutput)
    assert out.reconstruction.shape == (3, 100, 100, 1)
    assert out.logits.shape == (3, NUM_CLASSES)
    assert out.embedding.shape == (3, cfg.embedding_dim)
    assert set(out.vq) == {"local"}
    assert out.vq["local"].quantized.shape == (3, 25, 25, cfg.embedding_dim)
    assert out.vq["local"].encoding_indices.shape == (3, 25, 25)
    np.testing.assert_array_equal(np.asarray(out.target), np.asarray(frames[..., :1]))


def test_two_level_split_model_shapes():
    cfg = ModelConfig.from_preset(
        "tiny", num_classes=4, input_channels=(0, 2), two_level=True, num_splits=2,
        global_num_embeddings=32, global_embedding_dim=8,
    )
    frames = jnp.asarray(_frames(2, seed=3))
    variables = init_model(cfg, _key(0), frames)
    assert variables["params"]["vq_local"]["codebook"].shape == (64, 8)
    assert variables["params"]["vq_global"]["codebook"].shape == (32, 8)
    out = jax.jit(VQVAE(cfg).apply, static_argnames="train")(variables, frames, train=False)
    assert out.reconstruction.shape == (2, 100, 100, 2)
    expected = np.stack([frames[..., 0], np.tanh(frames[..., 2] / DISTANCE_SCALE_PX)], axis=-1)
    np.testing.assert_allclose(np.asarray(out.target), expected, rtol=1e-6, atol=1e-7)
    assert out.vq["local"].encoding_indices.shape == (2, 25, 25, 2)
    assert out.vq["global"].quantized.shape == (2, 4, 4, 8)
    assert out.vq["global"].encoding_indices.shape == (2, 4, 4)
    assert out.logits.shape == (2, 4)
    _, metrics = compute_losses(out, jnp.array([0, 1]), 1.0)
    assert 1.0 <= float(metrics["perplexity_global"]) <= 32
    assert 1.0 <= float(metrics["perplexity"]) <= 64


def test_distance_channel_is_squashed_to_the_intensity_range():
    # the stored channel 2 is a signed distance in pixels (about -60..+25 in a frame): fed raw it
    # dominated the losses and a world-scale model's head stayed at chance; the model sees tanh(d/10)
    assert FRAME_CHANNELS[DISTANCE_CHANNEL] == "distance"  # the store's channel order
    rng = np.random.default_rng(0)
    frames = rng.uniform(0, 1, size=(2, 8, 8, 3)).astype(np.float32)
    frames[..., 2] = rng.uniform(-60, 25, size=(2, 8, 8))
    for channels in ((0, 1, 2), (2, 0), (0, 2)):
        picked = np.asarray(select_input_channels(jnp.asarray(frames), channels))
        for i, c in enumerate(channels):
            want = np.tanh(frames[..., c] / DISTANCE_SCALE_PX) if c == DISTANCE_CHANNEL else frames[..., c]
            np.testing.assert_allclose(picked[..., i], want, rtol=1e-6, atol=1e-7)
        assert np.abs(picked).max() <= 1.0 + 1e-6
    # order and sign survive: inside (positive) stays above outside (negative), monotone in d
    d = jnp.asarray(np.linspace(-60, 25, 50, dtype=np.float32)).reshape(1, 5, 10, 1)
    squashed = np.asarray(select_input_channels(jnp.concatenate([d, d, d], axis=-1), (2,))).ravel()
    assert np.all(np.diff(squashed) > 0) and squashed[0] < 0 < squashed[-1]
    # without the distance channel nothing changes
    np.testing.assert_array_equal(np.asarray(select_input_channels(jnp.asarray(frames), (0, 1))), frames[..., :2])


def test_model_rejects_missing_channel():
    cfg = ModelConfig.from_preset("tiny", num_classes=2, input_channels=(0, 2))
    with pytest.raises(ValueError, match="input_channels"):
        jax.eval_shape(VQVAE(cfg).init, jax.random.key(0), jnp.zeros((1, 100, 100, 2)), False)


# ------------------------------------------------------------------------------------------
# Losses and helpers


def test_classification_weight_adds_exactly_the_weighted_term(tiny):
    _, variables, frames, labels, apply = tiny
    out = apply(variables, frames, train=False)
    t0, m0 = compute_losses(out, labels, 0.0)
    t1, m1 = compute_losses(out, labels, 1.0)
    t3, _ = compute_losses(out, labels, 3.0)
    np.testing.assert_allclose(float(t1 - t0), float(m1["classification"]), rtol=1e-6)
    np.testing.assert_allclose(float(t3 - t0), 3.0 * float(m1["classification"]), rtol=1e-5)
    np.testing.assert_allclose(
        float(t0), float(m0["reconstruction"] + m0["codebook"] + m0["commitment"]), rtol=1e-6
    )
    for key in ("reconstruction", "codebook", "commitment", "classification", "accuracy"):
        assert float(m0[key]) == float(m1[key])
    assert set(m0) == {"total", "reconstruction", "codebook", "commitment", "classification",
                       "accuracy", "perplexity"}
    # reconstruction is the plain MSE on the target, classification the mean softmax CE
    np.testing.assert_allclose(
        float(m0["reconstruction"]),
        np.mean((np.asarray(out.reconstruction) - np.asarray(frames[..., :1])) ** 2), rtol=RTOL,
    )
    logits = np.asarray(out.logits, dtype=np.float64)
    logp = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    ce = -np.mean(logp[np.arange(3), np.asarray(labels)])
    np.testing.assert_allclose(float(m0["classification"]), ce, rtol=RTOL)


def test_bfloat16_runs_with_float32_losses(tiny):
    _, _, frames, labels, _ = tiny
    cfg = ModelConfig.from_preset("tiny", num_classes=NUM_CLASSES, dtype="bfloat16")
    variables = init_model(cfg, _key(0), frames[:1])
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))
    apply = jax.jit(VQVAE(cfg).apply, static_argnames="train")
    out = apply(variables, frames, train=True, rngs={"dropout": jax.random.key(1)})
    assert out.reconstruction.dtype == jnp.float32 and out.logits.dtype == jnp.float32
    total, metrics = compute_losses(out, labels, 1.0)
    assert total.dtype == jnp.float32
    assert all(v.dtype == jnp.float32 and np.isfinite(float(v)) for v in metrics.values())


def test_codebook_histogram_matches_numpy():
    idx = np.random.default_rng(0).integers(0, 7, size=(3, 5, 5, 2)).astype(np.int32)
    hist = codebook_histogram(idx, 7)
    assert hist.shape == (3, 7) and hist.dtype == jnp.float32
    expected = np.stack([np.bincount(row.ravel(), minlength=7) for row in idx])
    np.testing.assert_array_equal(np.asarray(hist), expected)
    np.testing.assert_array_equal(np.asarray(hist).sum(axis=1), 50)


def test_presets_build_and_count_parameters():
    presets = model_presets()
    assert {"tiny", "full", "cytoself"} <= set(presets)
    assert presets["full"]["embedding_dim"] == 64 and presets["full"]["num_embeddings"] == 512
    assert presets["cytoself"]["two_level"] is True
    sample = jnp.zeros((1, 100, 100, 3))
    counts = {}
    for name in presets:
        cfg = ModelConfig.from_preset(name, num_classes=NUM_CLASSES)
        shapes = jax.eval_shape(lambda cfg=cfg: init_model(cfg, jax.random.key(0), sample))
        counts[name] = parameter_count(shapes["params"])
    assert counts["tiny"] < counts["full"] < counts["cytoself"]


def test_config_validation_and_roundtrip():
    with pytest.raises(ValueError, match="num_splits"):
        ModelConfig(num_classes=2, embedding_dim=16, num_splits=3)
    with pytest.raises(ValueError, match="dtype"):
        ModelConfig(num_classes=2, dtype="float16")
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.from_preset("huge", num_classes=2)
    cfg = ModelConfig(num_classes=2, input_channels=[0, 1])
    assert cfg.input_channels == (0, 1)
    hash(cfg)
    d = cfg.to_dict()
    assert ModelConfig(**d) == cfg
    assert dataclasses.replace(cfg, dtype="bfloat16").compute_dtype == jnp.bfloat16
