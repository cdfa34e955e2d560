"""Fast ingest: frame-scale detection, worker processes, frames streamed into the store."""

import numpy as np
import pandas as pd
import pytest

from assets_pkg.core.errors import StoreError
from assets_pkg.core.imaging.plates import read_plate
from assets_pkg.core.imaging.simulator import render_field, simulate_plates
from assets_pkg.core.segmentation.metrics import match_instances
from assets_pkg.core.store.config import IngestParams, NucleusConfig
from assets_pkg.core.store.frame_store import FrameStore
from assets_pkg.core.store.frames import downsample_image, upsample_labels
from assets_pkg.core.store.ingest import (
    crop_plate_frames,
    detect_field_nuclei,
    detect_plate_nuclei,
    ingest_plate,
)
from assets_pkg.core.store.layout import ChunkLayout


@pytest.fixture(scope="module")
def plate_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("plates")
    return simulate_plates(root, 1, seed=7, wells=2, fields_per_well=2, field_size=384)[0]


def test_ingest_frames_do_not_depend_on_workers_and_equal_the_step_functions(plate_dir, tmp_path):
    params = IngestParams()
    got = {}
    for w in (1, 2):
        store = FrameStore(str(tmp_path / f"w{w}"))
        res = ingest_plate(plate_dir, store, params, workers=w)
        table = store.read_table(res.plate_id)
        got[w] = (store.read_frames(res.plate_id, np.arange(len(table))), table, res)
    (f1, t1, r1), (f2, t2, r2) = got[1], got[2]
    assert len(t1) > 10 and r1.n_nuclei == r2.n_nuclei >= len(t1)
    np.testing.assert_array_equal(f1, f2)
    pd.testing.assert_frame_equal(t1, t2)
    # the Dagster path (nuclei_masks, then plate_frames) cuts the same frames
    plate = read_plate(plate_dir)
    frames, table = crop_plate_frames(plate, detect_plate_nuclei(plate, params), params)
    np.testing.assert_array_equal(f1, frames)
    pd.testing.assert_frame_equal(t1.drop(columns="plate_id"), table.drop(columns="plate_id"), check_like=True)


def test_frame_scale_detection_agrees_with_full_resolution():
    """Detecting at 0.4 µm (block mean of 0.2 µm fields) finds the nuclei full resolution finds."""
    full_params = NucleusConfig(detect_um_per_px=None)
    tp = fp = fn = 0
    f1 = {"frame": [], "full": []}
    for seed in range(3):
        f = render_field(("nucleoplasm",), seed=seed, field_size=512)
        small, centres, factor = detect_field_nuclei(f.nucleus, 0.2)
        assert factor == 2.0 and small.shape == (256, 256)
        full, full_centres, one = detect_field_nuclei(f.nucleus, 0.2, full_params)
        assert one == 1.0 and full.shape == f.nucleus.shape
        up = upsample_labels(small, factor, f.nucleus.shape)
        m = match_instances(up, full)
        tp, fp, fn = tp + m["tp"], fp + m["fp"], fn + m["fn"]
        for k, lab in (("frame", up), ("full", full)):
            g = match_instances(lab, f.nucleus_labels)
            f1[k].append((g["tp"], g["fp"], g["fn"]))
        # centres in full-resolution pixels, inside their own nucleus
        iy, ix = np.rint(centres[["centre_y", "centre_x"]].to_numpy()).astype(int).T
        assert (up[iy, ix] == centres["label"].to_numpy()).all()
    agreement = 2 * tp / (2 * tp + fp + fn)
    assert agreement >= 0.9, agreement

    def score(rows):
        a, b, c = np.sum(rows, axis=0)
        return 2 * a / (2 * a + b + c)

    assert score(f1["frame"]) >= score(f1["full"]) - 0.03, (score(f1["frame"]), score(f1["full"]))


def test_upsampled_labels_downsample_to_the_same_mask():
    rng = np.random.default_rng(0)
    small = (rng.random((20, 30)) > 0.5).astype(np.int32) * rng.integers(1, 5, (20, 30))
    up = upsample_labels(small, 2.0, (41, 61))  # odd sizes: the dropped row/column repeat their neighbour
    assert up.shape == (41, 61) and up.dtype == np.int32
    np.testing.assert_array_equal(downsample_image((up > 0).astype(np.float32), 2.0) >= 0.5, small > 0)


def test_write_plate_stream_writes_batches_across_shards(tmp_path):
    store = FrameStore(str(tmp_path / "s"), layout=ChunkLayout(chunk_frames=1, shard_frames=4))
    rng = np.random.default_rng(1)
    sizes = [3, 0, 6, 1, 5]
    batches = [(rng.random((n, 8, 8, 3)).astype(np.float32),
                pd.DataFrame({"frame_id": [f"p/{i}/{k}" for k in range(n)]})) for i, n in enumerate(sizes)]
    man = store.write_plate_stream("plate01", iter(batches), (8, 8, 3), {"why": "test"})
    assert man["n_frames"] == sum(sizes) and man["shape"] == [sum(sizes), 8, 8, 3]
    table = store.read_table("plate01")
    assert table["frame_index"].tolist() == list(range(sum(sizes)))
    np.testing.assert_array_equal(store.read_frames("plate01", np.arange(sum(sizes))),
                                  np.concatenate([b[0] for b in batches]))
    assert store.open_array("plate01").shape[0] == sum(sizes)
    # an empty stream is an empty plate
    assert store.write_plate_stream("plate02", iter([]), (8, 8, 3))["n_frames"] == 0

    def broken():
        yield batches[2]
        raise RuntimeError("reader died")

    with pytest.raises(RuntimeError):
        store.write_plate_stream("plate03", broken(), (8, 8, 3))
    assert "plate03" not in store.plate_ids()
    with pytest.raises(StoreError, match="frames of shape"):
        store.write_plate_stream("plate04", iter([(np.zeros((2, 4, 4, 3)), pd.DataFrame({"a": [1, 2]}))]), (8, 8, 3))
