"""The atlas steps' results survive their files exactly (assets_pkg.core.localization.atlas), so
an asset that loads its parent's files scores what a single in-memory chain scores."""

import numpy as np
import pandas as pd
import pytest
from spectra_factory import synthetic_embeddings

from assets_pkg.core.errors import CellscapeError
from assets_pkg.core.localization import atlas


@pytest.fixture(scope="module")
def emb():
    return synthetic_embeddings()


def test_spectra_round_trip_exactly(emb, tmp_path):
    spectra, counts = atlas.embedding_spectra(emb)
    path = atlas.save_spectra(spectra, counts, tmp_path / "m_spectra.parquet")
    got_spectra, got_counts = atlas.load_spectra(path)
    pd.testing.assert_frame_equal(got_spectra, spectra, check_exact=True)
    pd.testing.assert_series_equal(got_counts, counts, check_exact=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m_spectra.parquet"]
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(CellscapeError, match="not a spectra table"):
        atlas.load_spectra(tmp_path / "bad.parquet")


def test_code_clusters_round_trip_exactly(emb, tmp_path):
    spectra, _ = atlas.embedding_spectra(emb)
    used, clusters = atlas.cluster_used_codes("m", spectra, n_clusters=4)
    assert spectra.shape[1] - 1 not in used  # the unused code is left out
    got_used, got = atlas.load_code_clusters(atlas.save_code_clusters(used, clusters, tmp_path / "c.npz"))
    np.testing.assert_array_equal(got_used, used)
    for field in ("corr", "linkage", "labels", "leaf_order"):
        a, b = getattr(got, field), getattr(clusters, field)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert (got.method, got.n_clusters) == (clusters.method, clusters.n_clusters) == ("average", 4)


def test_projection_round_trip_and_frame_check(emb, tmp_path):
    coords = np.random.default_rng(0).normal(size=(len(emb.rows), 2)).astype(np.float32)
    path = atlas.save_projection(emb.rows, coords, tmp_path / "u.parquet")
    np.testing.assert_array_equal(atlas.load_projection(path, emb.rows), coords)
    with pytest.raises(CellscapeError, match="frame_id"):
        atlas.load_projection(path, emb.rows.iloc[::-1])


def test_model_atlas_from_files_equals_the_in_memory_chain(emb, tmp_path):
    coords = np.random.default_rng(1).normal(size=(len(emb.rows), 2)).astype(np.float32)
    spectra, counts = atlas.embedding_spectra(emb)
    used, clusters = atlas.cluster_used_codes("m", spectra, n_clusters=4)
    direct = atlas.model_atlas("m", emb, spectra, counts, used, clusters, coords, k=3)
    s2, c2 = atlas.load_spectra(atlas.save_spectra(spectra, counts, tmp_path / "s.parquet"))
    u2, cl2 = atlas.load_code_clusters(atlas.save_code_clusters(used, clusters, tmp_path / "c.npz"))
    xy = atlas.load_projection(atlas.save_projection(emb.rows, coords, tmp_path / "u.parquet"), emb.rows)
    loaded = atlas.model_atlas("m", emb, s2, c2, u2, cl2, xy, k=3)
    assert loaded.scores == direct.scores
    assert 0.0 <= direct.scores["knn_accuracy"] <= 1.0 and direct.scores["used_codes"] == len(used)
    pd.testing.assert_frame_equal(loaded.predictions, direct.predictions)
