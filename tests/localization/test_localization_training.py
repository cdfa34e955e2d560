"""Training loop: one step lowers the loss, resume equals uninterrupted, sharded equals single."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from assets_pkg.core.localization.config import TrainConfig
from assets_pkg.core.localization.training import (
    create_state,
    eval_step,
    fit,
    load_checkpoint,
    predict,
    train_step,
)
from assets_pkg.core.store.config import SplitConfig
from assets_pkg.core.store.frame_store import FrameStore
from assets_pkg.core.store.splits import make_splits

REPO = Path(__file__).resolve().parents[2]


def synthetic_store(root: Path, n_plates=2, per_plate=40, n_proteins=4, seed=0) -> tuple[FrameStore, pd.DataFrame]:
    """Frames whose protein channel pattern depends on the protein, so the head can learn it."""
    rng = np.random.default_rng(seed)
    store = FrameStore(str(root))
    yy, xx = np.mgrid[0:100, 0:100]
    disc = ((yy - 50) ** 2 + (xx - 50) ** 2 < 20**2).astype(np.float32)
    for p in range(n_plates):
        prot = rng.integers(0, n_proteins, per_plate)
        frames = rng.normal(0, 0.05, (per_plate, 100, 100, 3)).astype(np.float32)
        for i, k in enumerate(prot):
            frames[i, ..., 0] += disc * (k + 1) / n_proteins if k % 2 == 0 else (1 - disc) * (k + 1) / n_proteins
            frames[i, ..., 1] += disc
        table = pd.DataFrame({
            "frame_index": np.arange(per_plate), "frame_id": [f"p{p}/A01/f{i % 4:02d}/n{i:04d}" for i in range(per_plate)],
            "plate_id": f"p{p}", "well": [f"A{k + 1:02d}" for k in prot], "field_id": np.arange(per_plate) % 4,
            "gene": [f"G{k}" for k in prot], "ensg_id": [f"ENSG{k:011d}" for k in prot],
            "localization": [("nucleoplasm", "membrane", "er", "golgi")[k % 4] for k in prot],
        })
        store.write_plate(f"p{p}", frames, table, {})
    splits = make_splits(store.catalog(), SplitConfig(0.75, 0.25, 0.0, "field", seed=0))
    return store, splits


TINY = dict(preset="tiny", batch_size=8, epochs=2, learning_rate=2e-3, checkpoint_every=3, seed=3,
            model={"embedding_dim": 8, "num_embeddings": 16, "residual_hidden": 8, "head_hidden": 16})


def test_one_training_step_lowers_the_loss(tmp_path):
    store, splits = synthetic_store(tmp_path / "s")
    cfg = TrainConfig(**TINY)
    rows = splits[splits.split == "train"].head(8)
    frames = store.read_batch(list(zip(rows.plate_id, rows.frame_index, strict=True)))
    labels = rows.label.to_numpy(np.int32)
    state = create_state(cfg.vqvae_config(int(splits.label.max()) + 1), cfg, frames, total_steps=10)
    before = float(eval_step(state, (frames, labels), 1.0)["total"])
    step = jax.jit(lambda s, b, r: train_step(s, b, r, 1.0, False))
    state, metrics = step(state, (frames, labels), jax.random.PRNGKey(0))
    after = float(eval_step(state, (frames, labels), 1.0)["total"])
    assert np.isfinite(float(metrics["total"]))
    assert after < before


def _params_flat(params) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(params)])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The store, its splits and an uninterrupted TINY run (folder ``a``), shared by the resume tests."""
    root = tmp_path_factory.mktemp("uninterrupted")
    store, splits = synthetic_store(root / "s")
    return root, store, splits, fit(store, splits, TrainConfig(**TINY), root / "a", resume=False)


def test_resume_reaches_the_same_parameters_as_an_uninterrupted_run(uninterrupted, tmp_path):
    root, store, splits, full = uninterrupted
    cfg = TrainConfig(**TINY)
    killed = fit(store, splits, cfg, tmp_path / "b", stop_after_steps=5)  # dies after step 5; last checkpoint 3
    assert killed.interrupted and killed.step == 5
    resumed = fit(store, splits, cfg, tmp_path / "b", resume=True)
    assert resumed.step == full.step
    np.testing.assert_array_equal(_params_flat(resumed.state.params), _params_flat(full.state.params))
    pd.testing.assert_frame_equal(resumed.history, full.history, check_exact=True)
    # the outputs a user reads, and the provenance every checkpoint records
    for name in ("model.json", "metrics.json", "history.csv"):
        assert (tmp_path / "b" / name).is_file()
    params, model_cfg, meta = load_checkpoint(tmp_path / "b")
    assert meta["kind"] == "vqvae" and meta["step"] == full.step
    assert meta["provenance"]["git_commit"] and meta["config"]["seed"] == 3
    assert "valid_total" in meta["metrics"] and model_cfg.num_embeddings == 16
    assert len(meta["history"]) == len(full.history)
    out = predict(params, model_cfg, store.read_frames("p0", [0, 1]), fields=("reconstruction", "indices"))
    assert out["reconstruction"].shape == (2, 100, 100, 1) and out["indices"].shape[:3] == (2, 25, 25)
    # the command-line report on this model, compared with the uninterrupted twin
    from assets_pkg.cli import main

    # the report scores the split the models trained on (stored, as the dataset_splits asset would)
    store.write_dataset_table("splits", splits, {"split_version": "fixture",
                                                 "config": SplitConfig(0.75, 0.25, 0.0, "field", seed=0).model_dump()})
    rc = main(["report", "--checkpoint", str(tmp_path / "b"), "--compare", f"twin={root / 'a'}",
               "--frames", str(root / "s"), "--out", str(tmp_path / "report"), "--n-clusters", "3",
               "--score-split", "valid"])  # this store has no test split
    assert rc == 0
    scores = json.loads((tmp_path / "report" / "scores.json").read_text())
    assert set(scores["scores"]) == {"b", "twin", "classical"} and scores["scores"]["b"]["proteins"] == 4
    assert scores["baselines"] == ["classical"] and len(scores["per_seed"]["b"]) == 3
    assert scores["provenance"]["models"]["b"]["checkpoint"] == str(tmp_path / "b")
    assert (tmp_path / "report" / "figures" / "aligned_umaps.png").is_file()


@pytest.mark.parametrize("kill", [7, pytest.param(8, marks=pytest.mark.slow)])
def test_resume_at_an_epoch_boundary_repeats_nothing_and_skips_nothing(uninterrupted, tmp_path, kill):
    # 61 train frames in batches of 8: 7 steps per epoch, a checkpoint every 7 steps lands on
    # each epoch's last step.  Killed right after that step (7: before epoch 1's evaluation;
    # 8: after it), the resumed run must give every history row, the plateau rule's state and
    # the parameters of the uninterrupted run, exactly.  (tests/ml covers every kill point
    # around a boundary on a toy model; 8 is slow here.)
    _, store, splits, full = uninterrupted
    cfg = TrainConfig(**{**TINY, "checkpoint_every": 7})  # the checkpoint policy changes no number
    killed = fit(store, splits, cfg, tmp_path / "m", stop_after_steps=kill)
    assert killed.interrupted and killed.step == kill and len(killed.history) == kill // 7 - (kill == 7)
    resumed = fit(store, splits, cfg, tmp_path / "m")
    assert resumed.step == full.step == 14
    assert resumed.history["epoch"].tolist() == [1, 2]
    pd.testing.assert_frame_equal(resumed.history, full.history, check_exact=True)
    assert pd.read_csv(tmp_path / "m" / "history.csv").equals(pd.read_csv(full.out_dir / "history.csv"))
    assert resumed.plateau == full.plateau and full.plateau["best"] == full.history["valid_total"].min()
    assert load_checkpoint(tmp_path / "m")[2]["plateau"] == full.plateau
    np.testing.assert_array_equal(_params_flat(resumed.state.params), _params_flat(full.state.params))
    assert resumed.stopped_early == full.stopped_early


def test_checkpoint_of_another_config_is_not_resumed(tmp_path):
    store, splits = synthetic_store(tmp_path / "s")
    fit(store, splits, TrainConfig(**TINY), tmp_path / "m", stop_after_steps=4)
    with pytest.raises(Exception, match="another config"):
        fit(store, splits, TrainConfig(**{**TINY, "learning_rate": 1e-4}), tmp_path / "m")
    # the same config on other frames (one train frame moved to valid) is not resumed either
    moved = splits.copy()
    moved.loc[moved.index[moved.split == "train"][0], "split"] = "valid"
    with pytest.raises(Exception, match="another config"):
        fit(store, moved, TrainConfig(**TINY), tmp_path / "m")
    # nor on the same frame ids whose pixels were rewritten (a new version of the plate)
    table = store.read_table("p0")
    store.write_plate("p0", store.read_frames("p0", np.arange(len(table))) * 2.0, table, {})
    with pytest.raises(Exception, match="another config"):
        fit(store, splits, TrainConfig(**TINY), tmp_path / "m")


SHARDED = textwrap.dedent("""
    import sys, numpy as np, jax
    sys.path.insert(0, {tests!r})
    from test_localization_training import synthetic_store, TINY
    from pathlib import Path
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from assets_pkg.core.localization.config import TrainConfig
    from assets_pkg.core.localization.training import create_state, train_step
    from assets_pkg.core.ml.devices import Devices
    assert jax.local_device_count() == 4, jax.local_devices()
    store, splits = synthetic_store(Path({root!r}))
    cfg = TrainConfig(**TINY)
    rows = splits[splits.split == "train"].head(8)
    frames = store.read_batch(list(zip(rows.plate_id, rows.frame_index)))
    labels = rows.label.to_numpy(np.int32)
    out = {{}}
    for n in (1, 4):
        mesh = Mesh(np.array(jax.local_devices()[:n]), ("data",))
        dev = Devices(mesh, NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))
        state = jax.device_put(create_state(cfg.vqvae_config(int(splits.label.max()) + 1), cfg, frames, 10), dev.replicated)
        step = jax.jit(lambda s, b, r: train_step(s, b, r, 1.0, True))
        losses = []
        for i in range(3):
            state, m = step(state, dev.put_batch(frames, labels), jax.random.PRNGKey(i))
            losses.append(float(m["total"]))
        out[n] = losses
        print(n, len(state.params["encoder"]) if "encoder" in state.params else "", losses)
    np.testing.assert_allclose(out[4], out[1], rtol=1e-4)
    print("SHARDED_OK")
""")


def test_data_parallel_over_four_devices_matches_one_device(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    script = SHARDED.format(tests=str(Path(__file__).resolve().parent), root=str(tmp_path / "s"))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert "SHARDED_OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_cli_train_records_and_pins_the_versions_it_read_and_report_reads_them_back(tmp_path):
    """Lineage by version id on the command line: the model records the splits' store version, every
    plate version and the md5 those plates were ingested under (not the repository around the working
    directory), pins them; after a re-split and a re-ingested plate, `report` still reads the split and
    the plate versions the model trained on, and `gc` keeps them."""
    from assets_pkg.cli import main

    store, _ = synthetic_store(tmp_path / "s", per_plate=24)
    for pid in ("p0", "p1"):  # as if ingested from pinned data
        frames = store.read_frames(pid, np.arange(24))
        store.write_plate(pid, frames, store.read_table(pid), {"dataset_md5": "abc.dir"})
    config = SplitConfig(0.75, 0.25, 0.0, "field", seed=0)
    man = store.write_dataset_table("splits", make_splits(store.catalog(), config),
                                    {"split_version": "sv1", "config": config.model_dump()})
    plates = {p: store.read_manifest(p)["version"] for p in ("p0", "p1")}
    tiny = ["--preset", "tiny", "--batch-size", "8", "--epochs", "1", "--seed", "3"]
    assert main(["train", "--frames", str(tmp_path / "s"), "--out", str(tmp_path / "m"), *tiny]) == 0
    prov = json.loads((tmp_path / "m" / "model.json").read_text())["provenance"]
    assert prov["splits_store_version"] == man["version"] and prov["split_version"] == "sv1"
    assert prov["plates"] == plates and prov["dataset_md5"] == "abc.dir"
    pin = [p for n, p in store.pins().items() if n.startswith("cli-model-")]
    assert len(pin) == 1 and pin[0]["refs"]["plates"] == plates

    # re-split (another seed) and re-ingest p0: the report still scores the model's own split and versions
    other = SplitConfig(0.5, 0.5, 0.0, "field", seed=9)
    store.write_dataset_table("splits", make_splits(store.catalog(), other), {"split_version": "sv2", "config": other.model_dump()})
    store.write_plate("p0", store.read_frames("p0", np.arange(24)) * 0.5, store.read_table("p0"), {})
    assert main(["gc", str(tmp_path / "s"), "--grace-hours", "0"]) == 0
    assert main(["report", "--checkpoint", str(tmp_path / "m"), "--frames", str(tmp_path / "s"),
                 "--out", str(tmp_path / "r"), "--n-clusters", "3", "--score-split", "valid", "--no-baseline"]) == 0
    scores = json.loads((tmp_path / "r" / "scores.json").read_text())
    assert scores["provenance"]["splits_store_version"] == man["version"]
    assert scores["provenance"]["plates"] == plates
