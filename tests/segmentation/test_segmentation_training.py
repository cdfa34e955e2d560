"""Training, saving and running the segmentation U-Net and counting CNN; the CLI contract; the
segmentation assets.  Small simulated images keep every case at CPU seconds."""

import dataclasses
import json
from pathlib import Path

import dagster as dg
import jax
import numpy as np
import pandas as pd
import pytest
import tifffile
from ui_checks import assert_ui_metadata

from assets_pkg.cli import main as cli
from assets_pkg.core.errors import CellscapeError
from assets_pkg.core.imaging.cellsim import CellSimParams, simulate_cells
from assets_pkg.core.ml.loop import CheckpointPolicy, TrainRun
from assets_pkg.core.segmentation.config import CountTrainConfig, SegTrainConfig
from assets_pkg.core.segmentation.datasets import CellSetError
from assets_pkg.core.segmentation.models import ModelFileError, load_model, save_model
from assets_pkg.core.segmentation.run import (
    cell_sets_table,
    count_folder,
    read_label_stack,
    segment_folder,
    write_label_stack,
)
from assets_pkg.core.segmentation.training import (
    median_diameter,
    train_counting,
    train_segmentation,
)
from assets_pkg.defs import imaging, qc, segmentation, store
from assets_pkg.defs.io import HANDLE_IO_MANAGER, HandleIOManager
from assets_pkg.defs.metadata import table_frame
from assets_pkg.defs.resources import CellscapeResource

SIZE = (96, 128)
SMALL = CellSimParams(nucleus_radius_px=7.0, cell_radius_px=14.0)


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """Six simulated fields (both stains) with exact masks, small sizes."""
    d = tmp_path_factory.mktemp("cells")
    table = simulate_cells(d, 6, seed=11, size=SIZE, counts=[4, 8, 12, 6, 10, 3], params=SMALL)
    return d, table


def _nuclei(table):
    from assets_pkg.core.imaging.io import read_image
    from assets_pkg.core.segmentation.datasets import load_mask

    nuc = table[table.stain == 1]
    return [read_image(p) for p in nuc.path], [load_mask(p) for p in nuc.mask_path], list(nuc.name)


@pytest.fixture(scope="module")
def seg_model(cells):
    _, table = cells
    images, labels, names = _nuclei(table)
    cfg = SegTrainConfig(depth=2, base_width=8, crop=64, batch_size=2, steps=40, log_every=10, tune_images=3)
    return train_segmentation(images, labels, cfg, names=names)


def test_segmentation_training_records_history_and_tunes_thresholds(seg_model):
    info = seg_model.info
    assert info["steps_done"] == 40 and len(info["history"]) == 4
    first, last = info["history"][0]["loss"], info["history"][-1]["loss"]
    assert np.isfinite(last) and last < first  # it learns something in 40 steps
    assert 0.3 <= seg_model.threshold <= 0.7 and 0.0 <= info["tuning"]["f1"] <= 1.0
    assert info["tuning"]["best_f1"] - SegTrainConfig().tune_f1_tolerance <= info["tuning"]["f1"] <= info["tuning"]["best_f1"]
    assert info["tuning"]["count_error"] >= 0.0
    assert seg_model.object_diameter_px == pytest.approx(2 * 7.0, rel=0.35)


def test_segmentation_training_checkpoints_and_resumes_exactly(cells, tmp_path):
    _, table = cells
    images, labels, names = _nuclei(table)
    cfg = SegTrainConfig(depth=2, base_width=8, crop=64, batch_size=2, steps=9, log_every=4, tune_images=2)
    run = TrainRun(work_dir=tmp_path, checkpoint=CheckpointPolicy(every=5, keep=2))
    full = train_segmentation(images, labels, cfg, names=names)
    killed = train_segmentation(images, labels, cfg, names=names, run=dataclasses.replace(run, stop_after_steps=7))
    # the last checkpoint, at step 5, falls inside a log interval
    assert killed.info["stopped_by"] == "interrupted" and killed.info["steps_done"] == 7
    resumed = train_segmentation(images, labels, cfg, names=names, run=run)
    assert resumed.info["steps_done"] == 9
    for a, b in zip(jax.tree_util.tree_leaves(resumed.params), jax.tree_util.tree_leaves(full.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in full.info["history"]]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.info["history"]] == strip
    # other data in the same work folder is refused, not resumed
    with pytest.raises(CellscapeError, match="another config"):
        train_segmentation(images[:2], labels[:2], cfg, run=run)
    path = save_model(resumed, tmp_path)  # the work folder becomes the model folder
    assert (path / "checkpoints").is_dir() and load_model(path).kind == "segmentation"


def test_segment_returns_labels_of_the_image_shape_and_rescales(seg_model, cells):
    _, table = cells
    images, _, _ = _nuclei(table)
    lab = seg_model.segment(images[0])
    assert lab.shape == images[0].shape and lab.dtype == np.int32 and lab.min() == 0
    # asking for nuclei twice the size resizes the image down and the labels back up
    big = seg_model.segment(images[0], object_diameter_px=2 * seg_model.object_diameter_px)
    assert big.shape == images[0].shape
    assert np.array_equal(np.unique(big), np.arange(big.max() + 1))


def test_median_diameter_of_discs():
    lab = np.zeros((50, 50), int)
    yy, xx = np.mgrid[:50, :50]
    lab[(yy - 12) ** 2 + (xx - 12) ** 2 <= 25] = 1
    lab[(yy - 35) ** 2 + (xx - 35) ** 2 <= 25] = 2
    assert median_diameter([lab]) == pytest.approx(10.0, abs=0.6)
    assert median_diameter([np.zeros((4, 4), int)]) is None


def test_save_load_roundtrip_gives_identical_predictions(seg_model, cells, tmp_path):
    _, table = cells
    images, _, _ = _nuclei(table)
    path = save_model(seg_model, tmp_path / "m")
    back = load_model(path, kind="segmentation")
    assert back.threshold == seg_model.threshold and back.min_area == seg_model.min_area
    assert np.array_equal(back.segment(images[1]), seg_model.segment(images[1]))
    rec = json.loads((path / "model.json").read_text())
    assert rec["kind"] == "segmentation" and rec["metrics"]["steps_done"] == 40 and rec["step"] == 40
    assert rec["config"]["steps"] == 40 and len(rec["history"]) == 4 and rec["provenance"]["data"]["hash"]
    assert back.info["tuning"] == seg_model.info["tuning"] and back.info["history"] == seg_model.info["history"]
    with pytest.raises(ModelFileError, match="expected a counting model"):
        load_model(path, kind="counting")


def test_failed_save_keeps_the_previous_model(seg_model, tmp_path, monkeypatch):
    path = save_model(seg_model, tmp_path / "m")
    before = (path / "model.json").read_bytes()

    import assets_pkg.core.ml.model_folder as mf

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mf, "write_record", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_model(seg_model, path)
    assert (path / "model.json").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert len([p for p in path.iterdir() if p.name.startswith("params")]) == 1
    assert load_model(path).threshold == seg_model.threshold


def test_save_refuses_to_replace_a_non_model_folder(seg_model, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("x")
    with pytest.raises(ModelFileError, match="not a model folder"):
        save_model(seg_model, tmp_path / "data")
    assert (tmp_path / "data" / "keep.txt").read_text() == "x"


def test_load_model_errors_name_the_file(tmp_path):
    with pytest.raises(ModelFileError, match="no model.json"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text('{"format": 2, "kind": "weird"}')
    with pytest.raises(ModelFileError, match="kind"):
        load_model(tmp_path)


def test_counting_training_fits_counts_and_roundtrips(cells, tmp_path):
    from assets_pkg.core.imaging.io import read_image

    _, table = cells
    images = [read_image(p) for p in table.path]
    cfg = CountTrainConfig(input_shape=(48, 64), widths=(8, 16, 16), dense=16, steps=150, batch_size=6,
                           log_every=50, learning_rate=3e-3)
    model = train_counting(images, table["count"], cfg)
    spread = float(np.mean(np.abs(table["count"] - table["count"].mean())))
    assert model.info["train_mae"] < spread  # beats predicting the mean
    path = save_model(model, tmp_path / "c")
    back = load_model(path, kind="counting")
    assert back.count(images[0]) == pytest.approx(model.count(images[0]), rel=1e-6)
    with pytest.raises(ValueError, match="one count per image"):
        train_counting(images, [1, 2], cfg)


def test_label_stack_roundtrip(tmp_path):
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    b = np.ones((5, 2), np.int32) * 7
    shape = write_label_stack(tmp_path / "l.zarr", [a, b])
    assert shape == (2, 5, 4)
    got = read_label_stack(tmp_path / "l.zarr")
    assert got.dtype == np.uint16 and np.array_equal(got[0, :3, :4], a) and np.array_equal(got[1, :5, :2], b)
    assert got[0, 3:].sum() == 0


# ----------------------------------------------------------------------------- CLI contract
def test_cli_segment_writes_one_uint16_tiff_per_input(cells, seg_model, tmp_path):
    d, table = cells
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    # one 8-bit PNG and one 16-bit TIFF with an upper-case suffix
    from skimage import io

    from assets_pkg.core.imaging.io import read_image

    src = read_image(table.path.iloc[0])
    io.imsave(imgs / "a.png", (src / max(src.max(), 1) * 255).astype(np.uint8), check_contrast=False)
    tifffile.imwrite(imgs / "b.TIF", (src.astype(np.uint16) * 200))
    before = {p.name: p.read_bytes() for p in imgs.iterdir()}
    model_dir = save_model(seg_model, tmp_path / "model")
    assert cli(["segment", str(imgs), "--out", str(tmp_path / "out"), "--model", str(model_dir)]) == 0
    assert cli(["segment", str(imgs), "--out", str(tmp_path / "out0")]) == 0
    for out in ("out", "out0"):
        files = sorted(p.name for p in (tmp_path / out).iterdir())
        assert files == ["a.tif", "b.tif"]
        lab = tifffile.imread(tmp_path / out / "b.tif")
        assert lab.dtype == np.uint16 and lab.shape == src.shape
    assert {p.name: p.read_bytes() for p in imgs.iterdir()} == before  # inputs untouched


def test_cli_segment_and_count_refuse_bad_input(cells, tmp_path, capsys):
    d, table = cells
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(["segment", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no image" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.tif").write_bytes(b"not a tiff")
    assert cli(["count", str(bad), "--out", str(tmp_path / "c.csv")]) == 2
    assert "broken.tif" in capsys.readouterr().err
    assert not (tmp_path / "c.csv").exists()
    assert cli(["segment", str(d), "--out", str(d)]) == 2


def test_cli_train_counting_and_count_write_image_count_csv(cells, tmp_path):
    d, table = cells
    assert cli(["train-counting", "--images", str(d), "--out", str(tmp_path / "cnt"), "--steps", "20",
                "--input-size", "48", "64"]) == 0
    assert cli(["count", str(d), "--out", str(tmp_path / "counts.csv"), "--model", str(tmp_path / "cnt")]) == 0
    got = pd.read_csv(tmp_path / "counts.csv")
    assert list(got.columns) == ["image", "count"] and len(got) == len(table)
    assert set(got.image) == {Path(p).name for p in table.path}
    assert (got["count"] >= 0).all()
    # classical instances without a model
    assert cli(["count", str(d), "--out", str(tmp_path / "c0.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "c0.csv")) == len(table)


def test_cli_train_segmentation_reads_label_tiffs(cells, tmp_path):
    d, table = cells
    imgs, masks = tmp_path / "i", tmp_path / "m"
    imgs.mkdir()
    masks.mkdir()
    for r in table[table.stain == 1].itertuples():
        (imgs / Path(r.path).name).write_bytes(Path(r.path).read_bytes())
        (masks / Path(r.mask_path).name).write_bytes(Path(r.mask_path).read_bytes())
    out = tmp_path / "seg"
    assert cli(["train-segmentation", "--images", str(imgs), "--masks", str(masks), "--out", str(out),
                "--steps", "5", "--crop", "64", "--depth", "2", "--width", "8"]) == 0
    assert load_model(out).kind == "segmentation"
    assert cli(["simulate-cells", "--out", str(tmp_path / "sim"), "--images", "1", "--seed", "2",
                "--size", "96", "128", "--count", "3"]) == 0
    assert len(list((tmp_path / "sim" / "masks").iterdir())) == 2


def test_count_folder_with_a_segmentation_model_counts_instances(cells, seg_model):
    d, table = cells
    got = count_folder(d, seg_model)
    assert got.method.iloc[0] == "unet-instances" and len(got) == len(table)
    from assets_pkg.core.imaging.io import read_image

    first = sorted(table.path)[0]
    assert got.set_index("image").loc[Path(first).name, "count"] == seg_model.segment(read_image(first)).max()


def test_segment_folder_refuses_colliding_stems(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(d / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(CellSetError, match="share the stem"):
        segment_folder(d, tmp_path / "o")


def test_cell_sets_table_simulated_and_splits(tmp_path):
    t = cell_sets_table(simulated_dir=tmp_path / "sim", simulated_fields=6, simulated_size=SIZE, seed=1)
    seg, cnt = t[t.set == "segmentation"], t[t.set == "counting"]
    # blur levels cycle 1, 23, 48: the two F48 fields stay out of the segmentation set
    assert len(seg) == 4 and (seg.stain == 1).all() and (seg.blur <= 23).all() and seg.mask_path.notna().all()
    assert (seg.split == "train").sum() == 3
    assert len(cnt) == 12 and set(cnt.split) == {"train", "test"}
    # a second call reuses the simulated folder (no re-simulation, same table)
    t2 = cell_sets_table(simulated_dir=tmp_path / "sim", simulated_fields=6, simulated_size=SIZE, seed=1)
    pd.testing.assert_frame_equal(t, t2)
    assert [p.name for p in tmp_path.iterdir()] == ["sim"]  # no temporary folder left
    # a folder that does not hold what was asked for is an error, not silently reused
    with pytest.raises(CellSetError, match="expected 14"):
        cell_sets_table(simulated_dir=tmp_path / "sim", simulated_fields=7, simulated_size=SIZE, seed=1)


# ----------------------------------------------------------------------------- assets
def test_segmentation_job_materializes_and_nuclei_masks_can_use_the_unet(tmp_path):
    root = tmp_path / "project"
    res = CellscapeResource(root=str(root))
    run_config = {"ops": {
        "cell_image_sets": {"config": {"simulated_fields": 6, "simulated_size": [96, 128]}},
        "segmentation_model": {"config": {"depth": 2, "base_width": 8, "crop": 64, "steps": 10}},
        "counting_model": {"config": {"input_shape": [48, 64], "steps": 10}},
        "segmentation_results": {"config": {"overlay_images": 2}},
    }}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [segmentation.cell_image_sets, segmentation.segmentation_model, segmentation.counting_model,
             segmentation.segmentation_results],
            instance=instance, resources={"cellscape": res}, run_config=run_config)
        assert result.success
        md = result.asset_materializations_for_node("segmentation_results")[0].metadata
        assert {"unet_f1", "classical_f1", "counting_cnn_mae", "classical_instances_mae", "unet_instances_mae",
                "overlays",
                "counts_figure", "labels_unet", "labels_classical"} <= set(md)
        figures = sum(assert_ui_metadata(m.materialization.metadata) for m in result.get_asset_materialization_events())
        assert figures == 4  # two loss curves, overlays, counts
        assert set(table_frame(md["count_metrics"])["method"]) >= {"counting_cnn", "classical_instances"}
        stack = read_label_stack(md["labels_unet"].value)
        assert stack.shape[0] == 1 and stack.dtype == np.uint16  # 1 test image of the 4 at blur <= 23
        scores = pd.read_parquet(Path(md["path"].value) / "segmentation_scores.parquet")
        assert set(scores.method) == {"unet", "classical"} and len(scores) == 2
        counts = pd.read_parquet(Path(md["path"].value) / "counts.parquet")
        assert counts.loc[counts.stain == 1, "unet_instances"].notna().all()
        assert counts.loc[counts.stain == 2, "unet_instances"].isna().all()
        ckpt = result.asset_materializations_for_node("segmentation_model")[0].metadata["checkpoint_dir"].value
        assert (Path(ckpt) / "model.json").is_file()

        # the plate branch's nuclei_masks with the U-Net just trained
        from assets_pkg.core.imaging.simulator import simulate_plates

        simulate_plates(root / "data" / "plates", n_plates=1, seed=5, wells=1, fields_per_well=1, field_size=256)
        instance.add_dynamic_partitions("plates", ["plate01"])
        r2 = dg.materialize(
            [imaging.plate_images, qc.plate_metadata, qc.plate_metadata_suites, store.nuclei_masks],
            partition_key="plate01", instance=instance, resources={"cellscape": res, HANDLE_IO_MANAGER: HandleIOManager()},
            run_config={"ops": {"nuclei_masks": {"config": {"nucleus_segmenter": "unet"}}}})
        assert r2.success
        nm = r2.asset_materializations_for_node("nuclei_masks")[0].metadata
        assert nm["detector"].value.startswith("unet:")


DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.mark.skipif(not (DATA / "bbbc039" / "masks").is_dir(), reason=f"BBBC039 data not found at {DATA}")
def test_cli_trains_on_bbbc039_png_masks_and_segments_16bit_tiffs(tmp_path):
    imgs, masks = tmp_path / "images", tmp_path / "masks"
    imgs.mkdir()
    masks.mkdir()
    for p in sorted((DATA / "bbbc039" / "images").iterdir())[:2]:
        (imgs / p.name).symlink_to(p)
        (masks / f"{p.stem}.png").symlink_to(DATA / "bbbc039" / "masks" / f"{p.stem}.png")
    out = tmp_path / "model"
    assert cli(["train-segmentation", "--images", str(imgs), "--masks", str(masks), "--out", str(out),
                "--steps", "3", "--crop", "64", "--depth", "2", "--width", "8"]) == 0
    rec = json.loads((out / "model.json").read_text())
    assert rec["provenance"]["data"]["n_images"] == 2 and 10 < rec["postprocessing"]["object_diameter_px"] < 40
    assert cli(["segment", str(imgs), "--out", str(tmp_path / "labels"), "--model", str(out)]) == 0
    lab = tifffile.imread(tmp_path / "labels" / f"{sorted(imgs.iterdir())[0].stem}.tif")
    assert lab.dtype == np.uint16 and lab.shape == (520, 696)


@pytest.mark.skipif(not (DATA / "bbbc005").is_dir(), reason=f"BBBC005 data not found at {DATA}")
def test_cli_count_reads_bbbc005_8bit_names(tmp_path):
    src = sorted((DATA / "bbbc005").glob("*_w1.TIF"))[:3]
    d = tmp_path / "b5"
    d.mkdir()
    for p in src:
        (d / p.name).symlink_to(p)
    assert cli(["count", str(d), "--out", str(tmp_path / "c.csv"), "--preset", "bbbc005_w1"]) == 0
    got = pd.read_csv(tmp_path / "c.csv")
    truth = {p.name: int(p.name.split("_C")[1].split("_")[0]) for p in src}
    assert set(got.image) == set(truth)
    # the classical count is good on in-focus nuclei images (w1, F1): within 2 cells
    for r in got.itertuples():
        if "_F1_" in r.image:
            assert abs(r.count - truth[r.image]) <= 2
