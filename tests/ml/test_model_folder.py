"""The model folder: round trip, atomic replace, refusal of other folders, clear read errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import assets_pkg.core.ml.model_folder as mf

PARAMS = {"dense": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3), "bias": np.ones(3, np.float32)}}


def _record(**kw):
    return {"kind": "toy", "architecture": {"width": 3}, "config": {"lr": 0.1}, "provenance": {"git_commit": "x"},
            "history": [{"step": 1, "loss": 1.0}], "metrics": {"loss": np.float32(0.5)}, **kw}


def test_round_trip(tmp_path):
    path = mf.save(tmp_path / "m", PARAMS, _record())
    rec = mf.read_record(path, kind="toy")
    assert rec["format"] == mf.FORMAT and rec["metrics"] == {"loss": 0.5} and rec["history"][0]["step"] == 1
    abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), PARAMS)
    got = mf.load_params(path, rec, abstract)
    np.testing.assert_array_equal(np.asarray(got["dense"]["kernel"]), PARAMS["dense"]["kernel"])
    got = mf.load_params(path, rec)  # as saved, without a target
    np.testing.assert_array_equal(np.asarray(got["dense"]["bias"]), PARAMS["dense"]["bias"])
    # a replacement leaves one parameter folder, the new one
    mf.save(path, {"dense": {"kernel": PARAMS["dense"]["kernel"] * 2, "bias": PARAMS["dense"]["bias"]}}, _record())
    rec2 = mf.read_record(path)
    assert rec2["params"] != rec["params"] and [p.name for p in path.iterdir() if p.name.startswith("params")] == [
        rec2["params"]]
    assert float(mf.load_params(path, rec2)["dense"]["kernel"][0, 1]) == 2.0


def test_failed_save_keeps_the_previous_model(tmp_path, monkeypatch):
    path = mf.save(tmp_path / "m", PARAMS, _record())
    before = (path / mf.MODEL_FILE).read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(mf, "write_record", boom)
    with pytest.raises(OSError, match="disk full"):
        mf.save(path, PARAMS, _record(kind="toy2"))
    assert (path / mf.MODEL_FILE).read_bytes() == before
    assert sorted(p.name for p in path.iterdir()) == sorted([mf.MODEL_FILE, json.loads(before)["params"]])
    rec = mf.read_record(path)
    assert float(mf.load_params(path, rec)["dense"]["kernel"][1, 2]) == 5.0


def test_refuses_a_folder_that_is_not_a_model_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("x")
    with pytest.raises(mf.ModelFileError, match="not a model folder"):
        mf.save(tmp_path / "data", PARAMS, _record())
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["keep.txt"]
    # a training run's work folder (checkpoints only) may receive its model
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    mf.save(tmp_path / "run", PARAMS, _record())
    assert (tmp_path / "run" / "checkpoints").is_dir()


def test_read_errors_name_the_problem(tmp_path):
    with pytest.raises(mf.ModelFileError, match="no model.json"):
        mf.read_record(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(mf.ModelFileError, match="unreadable"):
        mf.read_record(tmp_path)
    (tmp_path / "model.json").write_text('{"format": 1, "kind": "toy"}')
    with pytest.raises(mf.ModelFileError, match="format"):
        mf.read_record(tmp_path)
    path = mf.save(tmp_path / "m", PARAMS, _record())
    with pytest.raises(mf.ModelFileError, match="expected a vqvae model"):
        mf.read_record(path, kind="vqvae")
    wrong = {"dense": {"kernel": jax.ShapeDtypeStruct((4, 4), jnp.float32), "bias": jax.ShapeDtypeStruct((3,), jnp.float32)}}
    with pytest.raises(mf.ModelFileError, match="cannot restore"):
        mf.load_params(path, mf.read_record(path), wrong)
    with pytest.raises(ValueError, match="needs"):
        mf.save(tmp_path / "n", PARAMS, {"kind": "toy"})
