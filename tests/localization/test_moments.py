"""The latent-moment read-out of a trained encoder (assets_pkg.core.localization.moments) and its
way through the atlas: embedded beside the histograms, saved and loaded, scored standardised."""

import jax
import numpy as np
import pandas as pd
import pytest

from assets_pkg.core.errors import CellscapeError
from assets_pkg.core.localization import atlas
from assets_pkg.core.localization.config import ScoreConfig
from assets_pkg.core.localization.models import ModelConfig, init_model
from assets_pkg.core.localization.moments import (
    latent_moments,
    moment_names,
    moments_fn,
    standardised_on_train,
)
from assets_pkg.core.store.frame_store import FrameStore


@pytest.fixture(scope="module")
def tiny():
    cfg = ModelConfig.from_preset("tiny", num_classes=3, input_channels=(0, 1))
    frames = np.random.default_rng(0).normal(size=(4, 100, 100, 3)).astype(np.float32)
    params = init_model(cfg, jax.random.key(0, impl="rbg"), frames[:1])["params"]
    return cfg, params, frames


def test_latent_moments_are_the_mean_std_and_upper_second_moments():
    z = np.random.default_rng(1).normal(size=(2, 5, 6, 3)).astype(np.float32)
    got = np.asarray(latent_moments(z))
    flat = z.reshape(2, 30, 3).astype(np.float64)
    iu, ju = np.triu_indices(3)
    gram = np.einsum("nsc,nsd->ncd", flat, flat) / 30
    want = np.concatenate([flat.mean(1), flat.std(1), gram[:, iu, ju]], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    names = moment_names(3)
    assert got.shape == (2, len(names)) == (2, 12)
    assert names[:2] == ["mean_0", "mean_1"] and names[6] == "m2_0_0" and names[-1] == "m2_2_2"


def test_symmetrised_moments_do_not_change_when_the_frame_turns_or_flips(tiny):
    cfg, params, frames = tiny
    turned = np.ascontiguousarray(np.rot90(frames, 1, axes=(1, 2)))
    flipped = np.ascontiguousarray(frames[:, ::-1])
    sym = moments_fn(cfg)
    a = np.asarray(sym(params, frames))
    assert a.shape == (4, 2 * 16 + 16 * 17 // 2) and np.isfinite(a).all()
    np.testing.assert_allclose(np.asarray(sym(params, turned)), a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(sym(params, flipped)), a, rtol=1e-4, atol=1e-5)
    # without the 8 symmetries a random encoder does see the turn
    plain = moments_fn(cfg, symmetries=False)
    assert not np.allclose(np.asarray(plain(params, turned)), np.asarray(plain(params, frames)), rtol=1e-4, atol=1e-5)


def test_standardised_on_train_uses_the_train_frames_only():
    rows = pd.DataFrame({"split": ["train", "train", "train", "test"]})
    x = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [100.0, 7.0]])
    z = standardised_on_train("m", rows, x)
    np.testing.assert_allclose(z[:3].mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(z[:3, 0].std(), 1, atol=1e-6)
    assert z[3, 1] == pytest.approx(2.0)  # a constant train feature keeps scale 1
    with pytest.raises(CellscapeError, match="no train frames") as e:
        standardised_on_train("m", rows.assign(split="test"), x)
    assert e.value.field == "split"


def test_frame_embeddings_carry_the_moments_through_save_load_and_scoring(tiny, tmp_path):
    cfg, params, _ = tiny
    rng = np.random.default_rng(2)
    n = 24
    store = FrameStore(str(tmp_path / "store"))
    table = pd.DataFrame({
        "frame_index": np.arange(n), "frame_id": [f"p0/A01/f{i % 4:02d}/n{i:04d}" for i in range(n)],
        "plate_id": "p0", "well": "A01", "field_id": np.arange(n) % 4, "gene": [f"G{i % 6}" for i in range(n)],
        "ensg_id": [f"ENSG{i % 6:011d}" for i in range(n)],
        "localization": [("nucleoplasm", "er")[i % 2] for i in range(n)],
    })
    store.write_plate("p0", rng.normal(size=(n, 100, 100, 3)).astype(np.float32), table, {})
    rows = table.assign(split=np.where(np.arange(n) < 12, "train", "test"))

    emb = atlas.frame_embeddings(params, cfg, store, rows.iloc[::-1], batch_size=5, moments=True)
    want = np.asarray(moments_fn(cfg)(params, store.read_batch(rows.iloc[::-1][["plate_id", "frame_index"]])))
    assert emb.moments.dtype == np.float32
    np.testing.assert_allclose(emb.moments, want, rtol=1e-5, atol=1e-6)
    without = atlas.frame_embeddings(params, cfg, store, rows, batch_size=8)
    assert without.moments is None

    back = atlas.load_embeddings(atlas.save_embeddings(emb, tmp_path / "emb", "m"), "m")
    np.testing.assert_array_equal(back.moments, emb.moments)

    scored = atlas.scored_matrix("m", back, "moments")
    np.testing.assert_allclose(scored[(back.rows["split"] == "train").to_numpy()].mean(0), 0, atol=1e-4)
    np.testing.assert_array_equal(atlas.scored_matrix("m", back, "pooled"), back.pooled)
    with pytest.raises(CellscapeError, match="moments were not embedded") as e:
        atlas.scored_matrix("m", without, "moments")
    assert e.value.field == "moments"
    assert ScoreConfig(embedding="moments").embedding == "moments"
