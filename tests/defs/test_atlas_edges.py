"""The atlas assets downstream of frame_embeddings pass their results along the edges: each
takes its parents' JSON handles, and the report scores exactly the spectra, clusters and
projection its parents stored (no trained model needed: the embeddings are synthetic)."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from spectra_factory import synthetic_embeddings

from assets_pkg.core.localization import atlas
from assets_pkg.definitions import defs
from assets_pkg.defs.io import HANDLE_IO_MANAGER, HandleIOManager
from assets_pkg.defs.localization import atlas as atlas_defs
from assets_pkg.defs.resources import CellscapeResource

ASSETS = [atlas_defs.frame_embeddings, atlas_defs.protein_spectra, atlas_defs.feature_spectrum_clusters,
          atlas_defs.umap_projection, atlas_defs.localization_report]
CONFIG = {"ops": {"feature_spectrum_clusters": {"config": {"n_clusters": 3}},
                  "umap_projection": {"config": {"n_neighbors": 5}},
                  "localization_report": {"config": {"k": 2, "baseline": False}}}}  # no frames in a store


@pytest.fixture
def given_embeddings(tmp_path):
    """Two "models" embedded by an earlier run: files and the frame_embeddings handle."""
    out = tmp_path / "artifacts" / "atlas" / "earlier0"
    embs = {"m1": synthetic_embeddings(seed=0), "m2": synthetic_embeddings(seed=1)}
    for name, emb in embs.items():
        atlas.save_embeddings(emb, out, name)
    handle = {"run_id": "earlier-run", "path": str(out), "split": "all", "frames": len(embs["m1"].rows),
              "dataset_md5": "abc.dir",
              "models": {n: {"checkpoint": f"/models/{n}", "step": 7, "dataset_md5": "abc.dir"} for n in embs}}
    handles = tmp_path / "handles"
    handles.mkdir()
    (handles / "frame_embeddings.json").write_text(json.dumps(handle))
    resources = {"cellscape": CellscapeResource(root=str(tmp_path)), HANDLE_IO_MANAGER: HandleIOManager(base_dir=str(handles))}
    return embs, handle, handles, resources


def test_the_report_uses_its_parents_spectra_clusters_and_projection(given_embeddings):
    embs, handle, handles, resources = given_embeddings
    with dg.instance_for_test() as instance:
        res = dg.materialize(list(defs.assets), selection=ASSETS[1:], instance=instance, resources=resources, run_config=CONFIG)
        assert res.success
        run8 = res.run_id[:8]
        report = json.loads((handles / "localization_report.json").read_text())
        clusters = json.loads((handles / "feature_spectrum_clusters.json").read_text())
        umap = json.loads((handles / "umap_projection.json").read_text())
        spectra = json.loads((handles / "protein_spectra.json").read_text())
        assert report["n_clusters"] == clusters["n_clusters"] == 3  # the clusters' own count
        assert report["runs"] == {"frame_embeddings": "earlier-run", "protein_spectra": res.run_id,
                                  "feature_spectrum_clusters": res.run_id, "umap_projection": res.run_id}
        assert report["embeddings"] == handle and clusters["spectra_run_id"] == spectra["run_id"]
        assert Path(report["path"]).parent.name == run8 and Path(spectra["files"]["m1"]).parent.name == run8

        scores = json.loads(Path(report["scores"]).read_text())
        assert scores["provenance"]["models"] == handle["models"]
        assert scores["provenance"]["n_clusters"] == 3 and scores["seed"] == 0
        # the same numbers from the library chain over the parents' files
        for name, emb in embs.items():
            s, c = atlas.load_spectra(spectra["files"][name])
            used, cc = atlas.load_code_clusters(clusters["files"][name])
            assert cc.n_clusters == 3 and cc.labels.max() <= 3
            xy = atlas.load_projection(umap["files"][name], emb.rows)
            want = atlas.model_atlas(name, emb, s, c, used, cc, xy, k=2).scores
            assert scores["scores"][name] == pytest.approx(want, nan_ok=True)
            with np.load(Path(report["path"]) / f"{name}_matrices.npz", allow_pickle=False) as z:
                np.testing.assert_array_equal(z["leaf_order"], cc.leaf_order)

        # spectra made again in a later run: the stored clusters no longer describe them
        assert dg.materialize(list(defs.assets), selection=[atlas_defs.protein_spectra], instance=instance,
                              resources=resources).success
        res = dg.materialize(list(defs.assets), selection=[atlas_defs.localization_report], instance=instance,
                             resources=resources, raise_on_error=False)
        assert not res.success
        assert "materialize feature_spectrum_clusters again" in str(res.failure_data_for_node("localization_report").error)
