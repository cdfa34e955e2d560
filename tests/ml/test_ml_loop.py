"""The shared training loop: exact resume (mid-epoch, on an epoch's last step, after a time
budget, with a carried key and host RNG), keep-K checkpoints, and refusal of another run's
checkpoints.  A two-parameter linear model keeps every case at CPU seconds."""

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.training import train_state

from assets_pkg.core.errors import CellscapeError
from assets_pkg.core.ml.loop import (
    CheckpointPolicy,
    HostRngBatches,
    PlateauRule,
    TrainRun,
    train_loop,
)
from assets_pkg.core.ml.optim import plateau_optimizer

N, BATCH = 24, 6  # 4 steps per epoch
X = np.random.default_rng(0).normal(size=(N, 3)).astype(np.float32)
Y = (X @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3).astype(np.float32)


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(x)[:, 0]


def _state(lr=0.05, total=40):
    model = Linear()
    params = model.init(jax.random.PRNGKey(0), X[:2])["params"]
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=plateau_optimizer(lr, total))


@jax.jit
def _step(state, batch, key):
    x, y = batch
    noise = 0.01 * jax.random.normal(key, y.shape)  # the key matters: resume must reproduce it

    def loss_fn(p):
        return jnp.mean((state.apply_fn({"params": p}, x) - y - noise) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss}


class EpochBatches:
    """Order of epoch e is default_rng((1, e)): a pure function of the epoch."""

    def batches(self, epoch, start):
        order = np.random.default_rng((1, epoch)).permutation(N)
        for i in range(start, N // BATCH):
            idx = order[i * BATCH : (i + 1) * BATCH]
            yield X[idx], Y[idx]


def _evaluate(rule):
    def ev(state, epoch, step):
        loss = float(jnp.mean((state.apply_fn({"params": state.params}, X) - Y) ** 2))
        return {"learning_rate": rule.lr, "loss": loss}

    return ev


def _run(work, epochs=5, stop_patience=0, **kw):
    # patience 1 with a large min_delta cuts the learning rate after every evaluation: the
    # rule's state and the injected rate must survive a resume
    rule = PlateauRule("loss", 0.05, patience=1, factor=0.7, stop_patience=stop_patience, min_delta=10.0)
    kw.setdefault("checkpoint", CheckpointPolicy(every=3, keep=2))
    res = train_loop(_state(), _step, EpochBatches(), steps_per_epoch=N // BATCH, epochs=epochs,
                     key=jax.random.PRNGKey(7), run=TrainRun(work, **kw), identity={"run": "toy", "stop": stop_patience},
                     evaluate=_evaluate(rule), rules=[rule], log_every=2)
    res.plateau = rule.state_dict()  # the early-stopping state after the run
    return res


def _flat(params):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(params)])


def _same(a, b):
    assert a.step == b.step and a.stopped_by == b.stopped_by
    assert a.plateau == b.plateau
    np.testing.assert_array_equal(_flat(a.state.params), _flat(b.state.params))
    assert a.history == b.history
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a.train_log]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b.train_log]
    lr = float(a.state.opt_state.hyperparams["learning_rate"])
    assert lr == float(b.state.opt_state.hyperparams["learning_rate"]) and lr < 0.05


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("full"))


def test_resume_mid_epoch_equals_uninterrupted(full, tmp_path):
    killed = _run(tmp_path, stop_after_steps=7)  # last checkpoint at step 6, mid epoch 2
    assert killed.interrupted and killed.step == 7
    resumed = _run(tmp_path)
    assert resumed.resumed_from == 6
    _same(resumed, full)
    assert len(full.history) == 5 and full.stopped_by == "steps"


def test_checkpoint_on_an_epochs_last_step_keeps_its_evaluation(full, tmp_path):
    killed = _run(tmp_path, stop_after_steps=12, checkpoint=CheckpointPolicy(every=4, keep=3))
    assert killed.step == 12 and len(killed.history) == 2  # epoch 3's evaluation had not run
    resumed = _run(tmp_path, checkpoint=CheckpointPolicy(every=4, keep=3))
    assert resumed.resumed_from == 12
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4, 5]
    _same(resumed, full)


@pytest.mark.parametrize("stop_patience", [0, 3])
@pytest.mark.parametrize("kill", [4, 5, 16])
def test_a_run_killed_around_an_epoch_boundary_resumes_exactly(tmp_path, kill, stop_patience):
    # checkpoints every 4 steps = every epoch's last step; killed right after step 4 (before
    # epoch 1's evaluation), after step 5 (after it: the resume repeats it from the step-4
    # checkpoint) or after step 16 (where stop_patience 3 stops early): every history row, the
    # rule's state (best, bad evaluations, learning rate) and the parameters match
    full = _run(None, stop_patience=stop_patience)
    assert (full.stopped_by, full.step) == (("steps", 20) if stop_patience == 0 else ("early stopping", 16))
    policy = CheckpointPolicy(every=4, keep=2)
    killed = _run(tmp_path, stop_patience=stop_patience, stop_after_steps=kill, checkpoint=policy)
    assert killed.interrupted and len(killed.history) == (kill - 1) // 4
    resumed = _run(tmp_path, stop_patience=stop_patience, checkpoint=policy)
    assert resumed.resumed_from == kill // 4 * 4
    assert [r["epoch"] for r in resumed.history] == [r["epoch"] for r in full.history]
    _same(resumed, full)


def test_keep_k_keeps_the_newest_checkpoints(full, tmp_path):
    import orbax.checkpoint as ocp

    _run(tmp_path, checkpoint=CheckpointPolicy(every=2, keep=2))
    mngr = ocp.CheckpointManager((tmp_path / "checkpoints").resolve())
    assert sorted(mngr.all_steps()) == [18, 20]
    mngr.close()


def test_time_budget_stops_checkpoints_and_resumes(full, tmp_path):
    stopped = _run(tmp_path, max_minutes=0.0)
    assert stopped.stopped_by == "time budget" and stopped.step == 1
    resumed = _run(tmp_path)
    assert resumed.resumed_from == 1
    _same(resumed, full)


def test_early_stopping_is_kept_over_a_resume(tmp_path):
    def run():
        rule = PlateauRule("loss", 0.05, patience=0, stop_patience=2, min_delta=10.0)
        return train_loop(_state(), _step, EpochBatches(), steps_per_epoch=N // BATCH, epochs=5,
                          key=jax.random.PRNGKey(7), run=TrainRun(tmp_path), identity={"run": "early"},
                          evaluate=_evaluate(rule), rules=[rule])

    first = run()
    assert first.stopped_by == "early stopping" and first.step == 12 and len(first.history) == 3
    again = run()  # resumes from the final checkpoint and trains no further
    assert again.stopped_by == "early stopping" and again.step == 12 and again.history == first.history


def test_another_runs_checkpoint_is_refused(tmp_path):
    _run(tmp_path, stop_after_steps=3)
    rule = PlateauRule("loss", 0.05)
    with pytest.raises(CellscapeError, match="another config"):
        train_loop(_state(), _step, EpochBatches(), steps_per_epoch=4, epochs=5, key=jax.random.PRNGKey(7),
                   run=TrainRun(tmp_path), identity={"run": "other"}, evaluate=_evaluate(rule), rules=[rule])


def _host_run(work: Path | None, **kw):
    def make(rng):
        idx = rng.integers(0, N, BATCH)
        return X[idx], Y[idx]

    return train_loop(_state(), _step, HostRngBatches(make, seed=3), steps_per_epoch=11, epochs=1,
                      key=jax.random.PRNGKey(5), key_mode="split", log_every=4,
                      run=TrainRun(work, CheckpointPolicy(every=5, keep=1), **kw))


def test_split_keys_and_host_rng_resume_exactly(tmp_path):
    full = _host_run(None)
    assert [r["step"] for r in full.train_log] == [4, 8, 11]
    killed = _host_run(tmp_path, stop_after_steps=6)  # checkpoint at 5 holds half a log interval
    assert killed.step == 6
    resumed = _host_run(tmp_path)
    assert resumed.resumed_from == 5
    np.testing.assert_array_equal(_flat(resumed.state.params), _flat(full.state.params))
    assert [r["loss"] for r in resumed.train_log] == [r["loss"] for r in full.train_log]


def test_non_finite_loss_stops_with_an_error():
    def make(rng):
        return X[:BATCH], np.full(BATCH, np.nan, np.float32)

    with pytest.raises(FloatingPointError, match="not finite"):
        train_loop(_state(), _step, HostRngBatches(make, 0), steps_per_epoch=4, key=jax.random.PRNGKey(0),
                   key_mode="split", log_every=2)
