"""Classical localization features (assets_pkg.core.localization.classical): known answers on
hand-made frames, texture equal to scikit-image's, and the baseline scored like a model."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from skimage.feature import graycomatrix, graycoprops

from assets_pkg.core.localization import classical as cl
from assets_pkg.core.localization.atlas import report_baselines
from assets_pkg.core.localization.config import ScoreConfig
from assets_pkg.core.store.frame_store import FrameStore
from assets_pkg.core.store.frames import signed_distance

PROPS = ("contrast", "dissimilarity", "homogeneity", "ASM", "energy", "correlation")


def _frames(protein: np.ndarray, nucleus_mask: np.ndarray) -> np.ndarray:
    """One frame per protein image (N, H, W), all with the same nucleus."""
    n = len(protein)
    nuc = np.broadcast_to(nucleus_mask.astype(np.float32), protein.shape)
    dist = np.broadcast_to(signed_distance(nucleus_mask).astype(np.float32), protein.shape)
    return np.stack([protein.astype(np.float32), nuc, dist], axis=-1).reshape(n, *nucleus_mask.shape, 3)


def _disc(size=40, r=10):
    yy, xx = np.mgrid[:size, :size]
    return (yy - size // 2) ** 2 + (xx - size // 2) ** 2 < r**2


def test_glcm_and_haralick_properties_equal_scikit_image():
    rng = np.random.default_rng(0)
    q = rng.integers(0, 8, (3, 21, 17))
    q[2] = 3  # constant: correlation's special case
    p = cl.glcm(q, 8, distances=(1, 2, 4), angles=cl.GLCM_ANGLES)
    props = cl.glcm_props(p, PROPS)
    for n in range(len(q)):
        ref = graycomatrix(q[n].astype(np.uint8), [1, 2, 4], list(cl.GLCM_ANGLES), levels=8, symmetric=True,
                           normed=True)
        np.testing.assert_allclose(p[n], ref, rtol=0, atol=1e-15)
        for i, prop in enumerate(PROPS):
            np.testing.assert_allclose(props[n, i], graycoprops(ref, prop), rtol=1e-12, atol=1e-12)


def test_nuclear_and_cytoplasmic_proteins_read_as_such():
    mask = _disc()
    inside, outside = mask.astype(float), (~mask).astype(float)
    frames = _frames(np.stack([inside, outside]), mask)
    before = frames.copy()
    f = pd.DataFrame(cl.classical_features(frames), columns=cl.feature_names())
    np.testing.assert_array_equal(frames, before)  # inputs are never modified
    assert f["overlap_inside"].tolist() == pytest.approx([1.0, 0.0])
    assert f["overlap_pearson"].tolist() == pytest.approx([1.0, -1.0])
    # radial profile: the nuclear protein is enriched inside (bins > 0) and absent outside
    inner = [c for c in f.columns if c.startswith("radial_0_") or c.startswith("radial_2_")
             or c.startswith("radial_4_") or c.startswith("radial_8_")]
    outer = [c for c in f.columns if c.startswith("radial_") and c not in inner]
    assert (f.loc[0, outer] == 0).all() and (f.loc[0, inner] > 1).all()
    assert (f.loc[1, inner] == 0).all()


def test_granularity_removes_a_spot_at_its_size_and_moments_match_scipy():
    img = np.zeros((2, 32, 32))
    img[0, 10, 10] = 1.0  # one pixel: gone after the first (3x3) opening
    img[1, 10:15, 10:15] = 1.0  # a 5x5 square: survives 3x3 and 5x5, gone at 7x7
    f = pd.DataFrame(cl.classical_features(_frames(img, _disc(32, 6))), columns=cl.feature_names())
    gran = f[[f"granularity_r{r}" for r in cl.GRANULARITY_RADII]].to_numpy()
    np.testing.assert_allclose(gran[0], [1, 0, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(gran[1], [0, 0, 1, 0, 0, 0], atol=1e-6)
    for n in range(2):
        v = img[n].ravel()
        assert f.loc[n, "moment_skewness"] == pytest.approx(stats.skew(v), rel=1e-4)
        assert f.loc[n, "moment_kurtosis"] == pytest.approx(stats.kurtosis(v), rel=1e-4)
        assert f.loc[n, "moment_std"] == pytest.approx(v.std(), rel=1e-5)


def test_blank_frames_give_finite_features_and_the_scaler_standardises():
    x = cl.classical_features(np.zeros((3, 20, 20, 3), np.float32))
    assert x.shape == (3, len(cl.feature_names())) and np.isfinite(x).all()
    rng = np.random.default_rng(0)
    train = np.c_[rng.normal(5, 2, 200), np.full(200, 7.0)]
    s = cl.FeatureScaler.fit(train)
    z = s.transform(train)
    np.testing.assert_allclose(z[:, 0].mean(), 0, atol=1e-6)
    np.testing.assert_allclose(z[:, 0].std(), 1, atol=1e-6)
    assert s.scale[1] == 1.0 and (z[:, 1] == 0).all()  # a constant feature is not blown up


def _store(root, n_proteins=6, per_protein=8, seed=0):
    """Proteins alternately nuclear and cytoplasmic; per protein 5 train, 1 valid, 2 test frames."""
    rng = np.random.default_rng(seed)
    mask = _disc(100, 18)
    base = np.where(mask, 1.0, 0.0)
    frames, rows = [], []
    for p in range(n_proteins):
        nuclear = p % 2 == 0
        for i in range(per_protein):
            prot = (base if nuclear else 1 - base) * rng.uniform(0.5, 1.5) + rng.normal(0, 0.05, mask.shape)
            frames.append(prot)
            rows.append({"gene": f"G{p}", "ensg_id": f"ENSG{p:011d}", "well": f"A{p + 1:02d}", "field_id": i,
                         "localization": "nucleoplasm" if nuclear else "cytoplasmic"})
    table = pd.DataFrame(rows)
    table["split"] = np.tile(["train"] * 5 + ["valid", "test", "test"], n_proteins)
    table["frame_index"] = np.arange(len(table))
    table["frame_id"] = [f"p0/{w}/f{i:02d}" for w, i in zip(table.well, table.field_id, strict=True)]
    table["plate_id"] = "p0"
    store = FrameStore(str(root))
    store.write_plate("p0", _frames(np.stack(frames), mask), table.drop(columns="split"), {})
    return store, table


def test_the_baseline_is_scored_like_a_model_on_the_test_frames(tmp_path):
    store, rows = _store(tmp_path / "s")
    cfg = ScoreConfig(seeds=(0, 1, 2), umap_neighbors=4, k=2, bootstrap=100, frame_fraction=1.0)
    feats, fps = cl.frame_features(store, rows.iloc[::-1], batch_size=5)  # any order, batches of 5
    assert feats.shape == (len(rows), len(cl.feature_names())) and fps > 0
    direct = cl.classical_features(store.read_batch(rows.iloc[::-1]))
    np.testing.assert_allclose(feats.to_numpy(), direct, rtol=1e-6, atol=1e-6)
    (ev,) = report_baselines(store, rows, cfg, batch_size=16, log=lambda _: None)
    assert ev.name == "classical" and ev.scores["frames"] == 12 and set(ev.coord_rows["split"]) == {"test"}
    assert ev.scores["frame_knn_accuracy"] == 1.0 and ev.scores["protein_knn_accuracy"] == 1.0
    assert ev.scores["features"] == len(cl.feature_names())
    assert list(ev.per_seed["seed"]) == [0, 1, 2]
    # standardised with the train frames: the exported raw features of train frames give mean 0 there
    table = ev.tables["features"]
    assert set(table["split"]) == {"train", "test"} and len(table) == 42
    assert report_baselines(store, rows, cfg.model_copy(update={"baseline": False})) == []
