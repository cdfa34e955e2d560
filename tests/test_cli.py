"""The ``cellscape`` command line: simulate-plates, validate and ingest, run in-process through
:func:`assets_pkg.cli.main` (plus one subprocess call of the installed console script)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plate_factory import edit_plate_json, set_value, tree_state

from assets_pkg.cli import main
from assets_pkg.core.errors import CellscapeError
from assets_pkg.core.store.frame_store import FrameStore

#: Small plates: 2 wells x 1 field of 384 px, enough for a few frames per field.
SMALL = ["--wells", "2", "--fields-per-well", "1", "--field-size", "384"]
BROKEN_FILE = "A01_f00_protein.tif"


def _simulate(out: Path, plates: int = 2, seed: int = 11) -> int:
    return main(["simulate-plates", "--out", str(out), "--plates", str(plates), "--seed", str(seed), *SMALL])


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    """Two simulated plates (plate01, plate02), written once per module; copy before editing."""
    out = tmp_path_factory.mktemp("sim") / "plates"
    assert _simulate(out) == 0
    return out


@pytest.fixture
def good(simulated, tmp_path) -> Path:
    dst = tmp_path / "plates" / "plate01"
    shutil.copytree(simulated / "plate01", dst)
    return dst


@pytest.fixture
def bad(simulated, tmp_path) -> Path:
    """plate02 with one field's pixel size outside the instrument's bounds."""
    dst = tmp_path / "plates" / "plate02"
    shutil.copytree(simulated / "plate02", dst)
    set_value(dst, BROKEN_FILE, "pixel_size_um", 9.0)
    return dst


def test_console_script_help():
    exe = Path(sys.executable).parent / "cellscape"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for cmd in ("simulate-plates", "validate", "ingest", "pipeline", "simulate-cells", "train-segmentation",
                "segment", "train-counting", "count"):
        assert cmd in r.stdout


def test_simulate_plates_is_byte_reproducible(tmp_path, capsys):
    assert _simulate(tmp_path / "a") == 0
    out = capsys.readouterr().out
    assert out.split() == [str(tmp_path / "a" / "plate01"), str(tmp_path / "a" / "plate02")]
    assert _simulate(tmp_path / "b") == 0
    a, b = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert sorted(a) == sorted(b)
    assert {"plate01/metadata.csv", "plate01/plate.json", "plate02/A02_f00_nucleus.tif"} <= set(a)
    assert len([k for k in a if k.endswith(".tif")]) == 2 * 2 * 2  # plates x fields x channels
    assert a == b
    # Another seed gives other pixels.
    assert _simulate(tmp_path / "c", seed=12) == 0
    c = _hashes(tmp_path / "c")
    assert c["plate01/A01_f00_nucleus.tif"] != a["plate01/A01_f00_nucleus.tif"]


def test_simulate_plates_refuses_to_overwrite(tmp_path, capsys):
    assert _simulate(tmp_path / "a", plates=1) == 0
    before = tree_state(tmp_path / "a")
    capsys.readouterr()
    assert _simulate(tmp_path / "a", plates=1) != 0
    err = capsys.readouterr().err
    assert "plate01" in err and "exists" in err
    assert tree_state(tmp_path / "a") == before


def test_validate_good_plate(good, capsys):
    before = tree_state(good)
    assert main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert "plate01" in out and "passed" in out
    assert tree_state(good) == before


def test_validate_broken_field_names_file_and_field(good, bad, capsys):
    before = tree_state(bad)
    assert main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out
    lines = [line for line in out.splitlines() if BROKEN_FILE in line]
    assert lines, out
    assert any("pixel_size_um" in line and "9" in line for line in lines), out
    assert tree_state(bad) == before  # read-only

    # Several plates: one failing fails the command, the good one is still reported as passed.
    assert main(["validate", str(good), str(bad), "--json"]) == 1
    reports = json.loads(capsys.readouterr().out)
    assert [(r["plate_id"], r["success"]) for r in reports] == [("plate01", True), ("plate02", False)]
    assert tree_state(bad) == before


def _snapshot(store: FrameStore, plate_id: str):
    man = store.read_manifest(plate_id)
    table = store.read_table(plate_id)
    frames = store.read_frames(plate_id, np.arange(man["n_frames"]))
    return man, table, frames


def test_ingest_good_then_refuse_bad(good, bad, tmp_path, capsys):
    root = tmp_path / "store"
    assert main(["ingest", str(good), "--store", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("plate01: 2 fields")
    store = FrameStore(root)
    assert store.plate_ids() == ["plate01"]
    man, table, frames = _snapshot(store, "plate01")
    assert man["n_frames"] > 0
    assert frames.shape == (man["n_frames"], 100, 100, 3) and frames.dtype == np.float32
    assert np.isfinite(frames).all() and frames.std() > 0
    assert (table["plate_id"] == "plate01").all() and len(table) == man["n_frames"]
    assert set(table["well"]) <= {"A01", "A02"}
    assert man["provenance"]["source_digest"]
    assert set(store.read_catalog()["plate_id"]) == {"plate01"}

    bad_before = tree_state(bad)
    assert main(["ingest", str(bad), "--store", str(root)]) == 1
    cap = capsys.readouterr()
    assert "REFUSED" in cap.err and str(bad) in cap.err
    assert any(BROKEN_FILE in line and "pixel_size_um" in line for line in cap.err.splitlines()), cap.err
    assert "plate02:" not in cap.out

    store = FrameStore(root)
    assert store.plate_ids() == ["plate01"]
    man2, table2, frames2 = _snapshot(store, "plate01")
    assert man2 == man
    pd.testing.assert_frame_equal(table2, table)
    np.testing.assert_array_equal(frames2, frames)
    assert not any("plate02" in str(p) for p in root.rglob("*"))
    assert set(store.read_catalog()["plate_id"]) == {"plate01"}
    assert tree_state(bad) == bad_before


def test_ingest_mixed_plates_writes_good_refuses_bad(good, bad, tmp_path, capsys):
    root = tmp_path / "store"
    assert main(["ingest", str(bad), str(good), "--store", str(root)]) == 1
    cap = capsys.readouterr()
    assert "REFUSED" in cap.err and "plate02" in cap.err
    assert "plate01:" in cap.out
    store = FrameStore(root)
    assert store.plate_ids() == ["plate01"]
    assert set(store.read_catalog()["plate_id"]) == {"plate01"}


@pytest.mark.parametrize("kind", ["memory", "file_url", "json_spec"])
def test_ingest_store_root_is_a_url(kind, good, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a URL taken for a relative path would land here
    folder = tmp_path / "url_store"
    spec = {
        "memory": "memory://",
        "file_url": f"file://{folder}",
        "json_spec": json.dumps({"driver": "file", "path": str(folder)}),
    }[kind]
    assert main(["ingest", str(good), "--store", spec]) == 0
    out = capsys.readouterr().out
    assert "plate01: 2 fields" in out
    assert "catalog:" in out and "from 1 plates" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["plates"] + ([] if kind == "memory" else ["url_store"])
    )
    if kind != "memory":
        store = FrameStore(folder)
        assert store.plate_ids() == ["plate01"]
        n = int(re.search(r"^catalog: (\d+) frames from 1 plates$", out, re.M).group(1))
        assert store.read_manifest("plate01")["n_frames"] == n > 0
        assert len(store.read_catalog()) == n


def test_bad_plate_id_is_refused_and_nothing_written(good, tmp_path, capsys):
    edit_plate_json(good, lambda info: info.update(plate_id="../evil"))
    before = tree_state(tmp_path)

    assert main(["validate", str(good)]) == 1
    out = capsys.readouterr().out
    assert "plate.json" in out and "plate_id" in out and "../evil" in out

    root = tmp_path / "store"
    rc = main(["ingest", str(good), "--store", str(root)])
    cap = capsys.readouterr()
    assert rc != 0
    assert "plate.json" in cap.err and "plate_id" in cap.err and "../evil" in cap.err
    assert "invalid plate id" in cap.err
    assert FrameStore(root).plate_ids() == []
    assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()
    assert tree_state(tmp_path) == before


# ----------------------------------------------------------------------------- splits for train / report
def _small_store(root: Path) -> FrameStore:
    """One plate: 4 proteins x 4 fields x 2 frames of 20x20 px, and its catalog."""
    n = 32
    store = FrameStore(str(root))
    table = pd.DataFrame({
        "frame_id": [f"p/A{i // 8:02d}/f{(i // 2) % 4:02d}/n{i % 2:04d}" for i in range(n)],
        "well": [f"A{i // 8:02d}" for i in range(n)], "field_id": [(i // 2) % 4 for i in range(n)],
        "gene": [f"G{i // 8}" for i in range(n)], "ensg_id": [f"ENSG{i // 8:011d}" for i in range(n)],
    })
    store.write_plate("p", np.zeros((n, 20, 20, 3), np.float32), table)
    store.write_catalog(store.catalog())
    return store


def _damage(store_dir: Path, name: str) -> None:
    """Overwrite the parquet file of a dataset table, so that its checksum no longer matches."""
    manifest = json.loads((store_dir / name / "manifest.json").read_text())
    (store_dir / manifest["table_path"]).write_bytes(b"not the table the manifest names")


def test_a_damaged_splits_table_fails_train_and_report_instead_of_a_new_split(tmp_path, capsys):
    from assets_pkg.core.store.config import SplitConfig
    from assets_pkg.core.store.splits import make_splits

    store = _small_store(tmp_path / "s")
    store.write_dataset_table("splits", make_splits(store.read_catalog(), SplitConfig(0.5, 0.25, 0.25, seed=1)),
                              {"config": SplitConfig(0.5, 0.25, 0.25, seed=1).model_dump()})
    _damage(tmp_path / "s", "splits")
    for argv in (["train", "--frames", str(tmp_path / "s"), "--out", str(tmp_path / "m"), "--preset", "tiny"],
                 ["report", "--checkpoint", str(tmp_path / "m"), "--frames", str(tmp_path / "s"),
                  "--out", str(tmp_path / "r")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "splits.parquet" in err and "checksum differs from the manifest" in err and "made one here" not in err
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists()


def test_splits_are_made_only_when_the_store_holds_none_and_stderr_says_so(tmp_path, capsys):
    from assets_pkg.cli import store_splits
    from assets_pkg.core.errors import StoreError
    from assets_pkg.core.store.config import SplitConfig
    from assets_pkg.core.store.splits import make_splits, split_version

    store = _small_store(tmp_path / "s")
    splits, version = store_splits(store, "field", seed=3)
    made = make_splits(store.read_catalog(), SplitConfig(exclusive_by="field", seed=3))
    pd.testing.assert_frame_equal(splits, made)
    assert version == split_version(made, SplitConfig(exclusive_by="field", seed=3))
    out = capsys.readouterr()
    assert "the store holds no splits table; made one here from the store's catalog, field-exclusive" in out.err
    assert "made one here" not in out.out
    # a split made here that fails its check is refused (one field per protein: valid stays empty)
    one_field = _small_store(tmp_path / "one")
    cat = one_field.read_catalog().assign(field_id=0)
    one_field.write_catalog(cat)
    with pytest.raises(CellscapeError, match="made here is unusable: valid is empty"):
        store_splits(one_field, "field", seed=0)
    # a stored table is used as it is, and refused when it fails the check recorded with it
    config = SplitConfig(0.5, 0.5, 0.0, "field", seed=0)
    one_field.write_dataset_table("splits", make_splits(cat, config), {"split_version": "v1", "config": config.model_dump()})
    with pytest.raises(CellscapeError, match=r"splits table \(version v1\) failed its check: valid is empty"):
        store_splits(one_field, "field", seed=0)
    # a damaged catalog is an error too, not a reason to rebuild it from the plates
    _damage(tmp_path / "s", "catalog")
    with pytest.raises(StoreError, match="checksum"):
        store_splits(store, "field", seed=0)


@pytest.fixture(scope="module")
def defective(tmp_path_factory) -> Path:
    """A simulated plate whose defects (seed 56, 3 wells x 3 fields) are 2 blank fields (nucleus and
    protein), 2 saturated and 1 out of focus; 4 fields are good."""
    out = tmp_path_factory.mktemp("defective")
    rc = main(["simulate-plates", "--out", str(out), "--plates", "1", "--seed", "56", "--wells", "3",
               "--fields-per-well", "3", "--field-size", "256", "--defects", "--defect-rate", "0.7"])
    assert rc == 0
    return out / "plate01"


def test_ingest_excludes_defective_fields_with_a_warning(defective, tmp_path, capsys):
    plate = tmp_path / "plates" / "plate01"
    shutil.copytree(defective, plate)
    before = tree_state(plate)
    root = tmp_path / "store"
    assert main(["ingest", str(plate), "--store", str(root)]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("plate01: 4 fields")
    assert "WARNING plate01: 5 field(s) excluded for image defects" in cap.err
    for line in ("plate01 A01 f00 (saturated): A01_f00_protein.tif", "plate01 A01 f01 (out_of_focus): A01_f01_nucleus.tif",
                 "plate01 A02 f00 (blank): A02_f00_nucleus.tif: blank nucleus channel",
                 "plate01 A02 f01 (saturated): A02_f01_nucleus.tif",
                 "plate01 A02 f02 (blank): A02_f02_protein.tif: blank protein channel"):
        assert line in cap.err, cap.err
    store = FrameStore(root)
    table = store.read_table("plate01")
    kept = set(zip(table["well"], table["field_id"], strict=True))
    assert kept and kept <= {("A01", 2), ("A03", 0), ("A03", 1), ("A03", 2)}
    excluded = store.read_manifest("plate01")["provenance"]["excluded_fields"]
    assert [(x["well"], x["field_id"], x["defects"]) for x in excluded] == [
        ("A01", 0, ["saturated"]), ("A01", 1, ["out_of_focus"]), ("A02", 0, ["blank"]), ("A02", 1, ["saturated"]),
        ("A02", 2, ["blank"])]
    assert tree_state(plate) == before

    # the same defects set to block: validation fails naming the files and the field, nothing stored
    root2 = tmp_path / "store2"
    assert main(["ingest", str(plate), "--store", str(root2), "--blank", "block"]) == 1
    err = capsys.readouterr().err
    assert "REFUSED" in err and "plate01/A02_f00_nucleus.tif: [images] field 'signal_snr': blank nucleus" in err
    assert not root2.exists() or FrameStore(root2).plate_ids() == []
    assert main(["validate", str(plate), "--blank", "block"]) == 1
    assert "images FAILED (1)" in capsys.readouterr().out
    assert tree_state(plate) == before
