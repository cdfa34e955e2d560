"""Tests of the UMAP projections (assets_pkg.core.localization.projection); one module fixture,
so numba compiles once."""

import numpy as np
import pytest

from assets_pkg.core.localization.inputs import AnalysisError
from assets_pkg.core.localization.projection import aligned_umap, umap_projection
from assets_pkg.core.localization.scores import clustering_score


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(4)
    centres = rng.normal(0, 8, size=(3, 6))
    labels = np.repeat(np.array(["er", "golgi", "nucleolus_gc"]), 40)
    x = centres[np.repeat(np.arange(3), 40)] + rng.normal(0, 1, size=(120, 6))
    return x, labels


def test_umap_projection_is_deterministic_and_separates_blobs(blobs):
    x, labels = blobs
    a = umap_projection(x, seed=7, n_neighbors=10)
    b = umap_projection(x, seed=7, n_neighbors=10)
    assert a.shape == (120, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    score, per = clustering_score(a, labels)
    assert score > 1.0 and len(per) == 3


def test_aligned_umap_panels_are_comparable(blobs):
    x, labels = blobs
    rng = np.random.default_rng(5)
    y = np.hstack([x, rng.normal(0, 0.05, size=(120, 2))])  # another "model": 8 dims
    out = aligned_umap([x, y], seed=3, n_neighbors=10)
    assert len(out) == 2 and all(o.shape == (120, 2) and o.dtype == np.float32 for o in out)
    # identity relations: the same item lands in about the same place in both panels
    spread = np.linalg.norm(out[0] - out[0].mean(axis=0), axis=1).mean()
    shift = np.linalg.norm(out[0] - out[1], axis=1).mean()
    assert shift < 0.25 * spread
    with pytest.raises(AnalysisError, match="same items"):
        aligned_umap([x, x[:50]], seed=0)
