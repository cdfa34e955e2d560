"""Data-parallel training over two JAX processes (``jax.distributed`` on CPU, gloo collectives)
equals one process training on the same global batches.

Two processes on localhost each hold one CPU device and read half of every batch of the tiny
VQ-VAE from a frame store; one process with one device trains on the same batches. The per-step
metrics (the loss curve), the per-epoch evaluations and the final parameters must agree within
``RTOL``/``ATOL``: the programs differ only in where the batch sums are split (two partial sums
and an all-reduce against one sum), so float32 rounding differs in the last bits and grows
slowly through the Adam steps; a wrong half, a missing all-reduce or a diverged replica differs
by 1e-2 or more. Observed on the 2-core CPU box (``-s`` prints them): the full run
(:func:`test_two_processes_fit_like_one_with_the_same_global_batch`, 6 steps, killed and
resumed) max abs 2.4e-7 / max rel 6.0e-7 over every step metric, 1.2e-7 / 5.7e-7 over the
evaluations, 3.7e-8 abs over the parameters.

The default run keeps the fast variant (the shared loop and jitted step for 3 steps, no
evaluation or files; 2 min on the 2-core box under a load of ~15, 34 CPU-seconds). The full
:func:`fit` run with resume and the model folder, and the ``cellscape train-distributed``
command on two processes, are ``slow`` (6 and 3 min there, mostly XLA compiling the model in
three processes).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "localization"))
from test_localization_training import TINY, synthetic_store  # noqa: E402

from assets_pkg.cli import main  # noqa: E402
from assets_pkg.core.localization.config import TrainConfig  # noqa: E402
from assets_pkg.core.localization.training import fit, load_checkpoint  # noqa: E402

#: Tolerances of the per-step metrics, evaluations and parameters (two processes against one).
RTOL, ATOL = 1e-4, 1e-5
#: Frames: 2 plates x 16, split 24 train / 8 valid; 3 steps per epoch, 2 epochs. The evaluation
#: batch of 11 makes the train split's batches 11 (odd: replicated, every process reads it
#: whole), 11 and 2 (split over the processes).
CFG = {**TINY, "epochs": 2, "checkpoint_every": 2, "eval_batch_size": 11}
KILL_AT = 3  # the distributed run is killed after step 3 and resumed from the checkpoint of step 2

WORKER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    rank, port, root, out, res = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
    from assets_pkg.core.ml import distributed
    distributed.initialize(f"127.0.0.1:{port}", 2, rank, timeout_s=120)
    import jax, numpy as np, pandas as pd
    from assets_pkg.core.localization.config import TrainConfig
    from assets_pkg.core.localization.training import fit
    from assets_pkg.core.store.frame_store import FrameStore
    cfg = TrainConfig(**json.loads(sys.argv[6]))
    store, splits = FrameStore(str(root)), pd.read_parquet(res / "splits.parquet")
    killed = fit(store, splits, cfg, out, resume=False, stop_after_steps=int(sys.argv[7]), log_every=1)
    assert killed.interrupted
    r = fit(store, splits, cfg, out, resume=True, log_every=1)
    params = jax.device_get(r.state.params)
    assert all(x.is_fully_replicated for x in jax.tree_util.tree_leaves(r.state.params))
    flat = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(params)])
    np.save(res / f"params{rank}.npy", flat)
    (res / f"run{rank}.json").write_text(json.dumps({
        "killed_log": killed.train_log, "train_log": r.train_log, "history": r.history.to_dict("records"),
        "step": r.step, "devices": [str(d) for d in jax.devices()], "processes": jax.process_count()}))
""")


FAST = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    rank, port, root, res = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    from assets_pkg.core.ml import distributed
    distributed.initialize(f"127.0.0.1:{port}", 2, rank, timeout_s=120)
    import numpy as np
    sys.path.insert(0, sys.argv[5])
    from test_distributed import loop_run
    from assets_pkg.core.ml.devices import Devices
    devices = Devices.all_processes()
    assert devices.processes == 2 and devices.count == 2
    train_log, params, reads = loop_run(root, res, devices)
    np.save(res / f"params{rank}.npy", params)
    (res / f"run{rank}.json").write_text(json.dumps({"train_log": train_log, "reads": reads}))
""")


def loop_run(root: Path, res: Path, devices, steps: int = 3):
    """``steps`` steps of the shared loop and jitted VQ-VAE step on the train frames of the store
    at ``root``, parameters initialised from NumPy (no init compile); each process reads its rows
    of every batch. Returns the train log, the flat final parameters and the frames read per batch."""
    import pandas as pd

    from assets_pkg.core.localization.loader import FrameLoader
    from assets_pkg.core.localization.models import VQVAE, init_model
    from assets_pkg.core.localization.training import TrainState, jitted_train_step, make_optimizer
    from assets_pkg.core.ml.loop import train_loop
    from assets_pkg.core.store.frame_store import FrameStore

    cfg = TrainConfig(**CFG)
    store, splits = FrameStore(str(root)), pd.read_parquet(res / "splits.parquet")
    reads: list = []
    read_batch = store.read_batch
    store.read_batch = lambda pairs: (reads.append([[str(p), int(i)] for p, i in pairs]), read_batch(pairs))[1]
    loader = FrameLoader(store, splits[splits.split == "train"], cfg.batch_size, seed=cfg.seed, cache=False,
                         prefetch=0, put=devices.put_batch, part=devices.host_rows if devices.processes > 1 else None)
    model_cfg = cfg.vqvae_config(int(splits.label.max()) + 1)
    shapes = jax.eval_shape(lambda: init_model(model_cfg, jax.random.PRNGKey(0), np.zeros((1, 100, 100, 3), np.float32)))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda a: rng.normal(0, 0.1, a.shape).astype(a.dtype), shapes["params"])
    state = devices.replicate(TrainState.create(apply_fn=VQVAE(model_cfg).apply, params=params,
                                                tx=make_optimizer(cfg, steps)))

    class Batches:
        def batches(self, epoch, start):
            for b in loader.epoch(epoch, start):
                yield b.frames, b.labels

    out = train_loop(state, jitted_train_step(cfg.classification_weight, cfg.augment, devices), Batches(),
                     steps_per_epoch=steps, key=devices.replicate(jax.random.PRNGKey(cfg.seed)), log_every=1)
    return out.train_log, _flat(jax.device_get(out.state.params)), reads


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two(args_of, timeout: float = 420) -> list[str]:
    """Start the two processes ``args_of(rank)``; wait for both (killing both if one fails or
    the time runs out, since a survivor would wait for its peer); their outputs."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    procs = [subprocess.Popen(args_of(r), env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for r in range(2)]
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outs = [p.communicate()[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n\n".join(
        f"--- process {r} (rc {p.returncode}) ---\n{o[-3000:]}" for r, (p, o) in enumerate(zip(procs, outs, strict=True)))
    return outs


def _flat(params) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(params)])


def _diffs(what: str, a: np.ndarray, b: np.ndarray) -> str:
    """``what: max abs X, max rel Y`` of ``a`` against ``b`` (printed with ``pytest -s``)."""
    d = np.abs(a - b)
    return f"{what}: max abs {d.max():.3g}, max rel {(d / np.maximum(np.abs(b), 1e-12)).max():.3g}"


def test_two_processes_step_like_one_and_read_half_of_each_batch(tmp_path):
    store, splits = synthetic_store(tmp_path / "s", per_plate=16)
    res = tmp_path / "results"
    res.mkdir()
    splits.to_parquet(res / "splits.parquet")
    port = _free_port()
    _run_two(lambda r: [sys.executable, "-c", FAST, str(r), str(port), str(tmp_path / "s"), str(res),
                        str(Path(__file__).resolve().parent)])
    runs = [json.loads((res / f"run{r}.json").read_text()) for r in range(2)]
    from assets_pkg.core.ml.devices import Devices

    ref_log, ref_params, ref_reads = loop_run(tmp_path / "s", res, Devices.local())
    # each process read its half of every global batch, nothing else
    assert len(ref_reads) == 3 and all(len(b) == 8 for b in ref_reads)
    for r, run in enumerate(runs):
        assert run["reads"] == [b[4 * r: 4 * r + 4] for b in ref_reads]
    keys = [k for k in ref_log[0] if k not in ("step", "seconds")]
    single = np.array([[row[k] for k in keys] for row in ref_log])
    for r in range(2):
        dist = np.array([[row[k] for k in keys] for row in runs[r]["train_log"]])
        print(_diffs(f"process {r} step metrics", dist, single))
        np.testing.assert_allclose(dist, single, rtol=RTOL, atol=ATOL)
        p = np.load(res / f"params{r}.npy")
        print(_diffs(f"process {r} parameters", p, ref_params))
        np.testing.assert_allclose(p, ref_params, rtol=0, atol=10 * ATOL)
    np.testing.assert_array_equal(np.load(res / "params1.npy"), np.load(res / "params0.npy"))


@pytest.mark.slow
def test_two_processes_fit_like_one_with_the_same_global_batch(tmp_path):
    store, splits = synthetic_store(tmp_path / "s", per_plate=16)
    res = tmp_path / "results"
    res.mkdir()
    splits.to_parquet(res / "splits.parquet")
    assert (splits.split == "train").sum() == 24 and (splits.split == "valid").sum() == 8
    out0, out1 = tmp_path / "dist", tmp_path / "rank1-sees-no-files"
    port = _free_port()
    _run_two(lambda r: [sys.executable, "-c", WORKER, str(r), str(port), str(tmp_path / "s"), str(out0 if r == 0 else out1),
                        str(res), json.dumps(CFG), str(KILL_AT)])
    runs = [json.loads((res / f"run{r}.json").read_text()) for r in range(2)]
    assert runs[0]["processes"] == 2 and len(runs[0]["devices"]) == 2

    ref = fit(store, splits, TrainConfig(**CFG), tmp_path / "single", resume=False, log_every=1)
    assert ref.step == runs[0]["step"] == 6 and len(ref.train_log) == 6

    # the resumed runs continued from process 0's checkpoint of step 2: its train-log rows,
    # seconds included, reached process 1 (which has no files) by broadcast
    for run in runs:
        assert run["train_log"][:2] == runs[0]["killed_log"][:2]
    assert runs[1]["killed_log"][0]["seconds"] != runs[0]["killed_log"][0]["seconds"]

    # every process got the same numbers
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in runs[1]["train_log"]] == \
        [{k: v for k, v in row.items() if k != "seconds"} for row in runs[0]["train_log"]]
    assert runs[0]["history"] == runs[1]["history"]
    np.testing.assert_array_equal(np.load(res / "params1.npy"), np.load(res / "params0.npy"))

    # the loss curve (every step metric), the evaluations and the parameters equal one process's
    keys = [k for k in ref.train_log[0] if k not in ("step", "seconds")]
    dist = np.array([[row[k] for k in keys] for row in runs[0]["train_log"]])
    single = np.array([[row[k] for k in keys] for row in ref.train_log])
    print(_diffs("step metrics", dist, single))
    np.testing.assert_allclose(dist, single, rtol=RTOL, atol=ATOL)
    hist_keys = [k for k in ref.history.columns if k not in ("epoch", "step", "learning_rate")]
    h_dist = np.array([[row[k] for k in hist_keys] for row in runs[0]["history"]])
    h_single = ref.history[hist_keys].to_numpy()
    print(_diffs("evaluations", h_dist, h_single))
    np.testing.assert_allclose(h_dist, h_single, rtol=RTOL, atol=ATOL)
    p_dist, p_single = np.load(res / "params0.npy"), _flat(ref.state.params)
    print(_diffs("parameters", p_dist, p_single))
    np.testing.assert_allclose(p_dist, p_single, rtol=0, atol=10 * ATOL)

    # process 0 alone wrote: the model folder is whole and loads in a single process
    assert not out1.exists()
    params, _, record = load_checkpoint(out0)
    np.testing.assert_array_equal(_flat(params), p_dist)
    assert record["step"] == 6 and record["provenance"]["devices"] == "2 processes x 1 x cpu:cpu"
    assert (out0 / "history.csv").is_file() and (out0 / "metrics.json").is_file()
    assert sorted(p.name for p in (out0 / "checkpoints").iterdir()) == ["2", "4", "6"]  # keep_checkpoints 3


def test_loader_reads_only_its_part_of_each_batch_and_caches_it(tmp_path):
    from assets_pkg.core.localization.loader import FrameLoader
    from assets_pkg.core.ml.devices import Devices
    from assets_pkg.core.store.frame_store import FrameStore

    store, splits = synthetic_store(tmp_path / "s", per_plate=16)
    rows = splits[splits.split == "train"]
    whole = FrameLoader(store, rows, 8, seed=5, cache=False, prefetch=0)
    reads, puts = [], []
    counted = FrameStore(str(tmp_path / "s"))
    read_batch = counted.read_batch
    counted.read_batch = lambda pairs: (reads.append(len(pairs)), read_batch(pairs))[1]
    half = FrameLoader(counted, rows, 8, seed=5, cache=True, prefetch=2, part=lambda n: slice(n // 2, n),
                       put=lambda f, lab, size: (puts.append(size), (f, lab))[1])
    assert reads == []  # the cache fills as rows are first read
    for epoch in (0, 1):
        for a, b in zip(whole.epoch(epoch), half.epoch(epoch), strict=True):
            assert b.size == 8 and b.frames.shape[0] == 4
            np.testing.assert_array_equal(b.frames, a.frames[4:])
            np.testing.assert_array_equal(b.labels, a.labels[4:])
    assert puts == [8] * 6
    assert sum(reads) == len(np.unique(np.concatenate([whole.order(e).reshape(3, 8)[:, 4:] for e in (0, 1)])))
    # one process: a batch is all its rows; put_batch places it as before
    dev = Devices.all_processes()
    assert dev.processes == 1 and dev.host_rows(8) == slice(0, 8) and dev.host_rows(7) == slice(0, 7)
    frames, labels = dev.put_batch(np.zeros((8, 2), np.float32), np.arange(8))
    assert frames.shape == (8, 2) and labels.sharding == dev.data


@pytest.mark.parametrize("flags, field", [
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"], "coordinator"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"], "process_id"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "0", "--process-id", "0"], "num_processes"),
])
def test_train_distributed_refuses_bad_process_flags(tmp_path, capsys, flags, field):
    rc = main(["train-distributed", *flags, "--frames", str(tmp_path / "s"), "--out", str(tmp_path / "m")])
    assert rc == 2
    assert f"field '{field}'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_train_distributed_command_on_two_processes(tmp_path):
    synthetic_store(tmp_path / "s", per_plate=16)
    port = _free_port()
    outs = _run_two(lambda r: [
        sys.executable, "-m", "assets_pkg.cli", "train-distributed", "--coordinator", f"127.0.0.1:{port}",
        "--num-processes", "2", "--process-id", str(r), "--frames", str(tmp_path / "s"),
        "--out", str(tmp_path / ("model" if r == 0 else "rank1-sees-no-files")),
        "--preset", "tiny", "--batch-size", "8", "--epochs", "1", "--seed", "3", "--log-every", "1"])
    record = json.loads((tmp_path / "model" / "model.json").read_text())
    assert record["step"] == record["provenance"]["n_train"] // 8 > 0
    assert record["provenance"]["devices"] == "2 processes x 1 x cpu:cpu"
    assert (tmp_path / "model" / "figures" / "reconstructions.png").is_file()
    assert not (tmp_path / "rank1-sees-no-files").exists()
    assert "model: " in outs[0] and "model: " not in outs[1]
