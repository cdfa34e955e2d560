"""Optimizers and learning-rate schedules of the project's models.

Two families are used, and kept apart on purpose because their numbers differ:

- :func:`plateau_optimizer` (the VQ-VAE): Adam or AdamW whose base learning rate is an
  injected hyper-parameter that :func:`set_learning_rate` can cut on a plateau, times a
  schedule factor (:func:`schedule_factor`: constant, or linear warm-up then cosine decay to
  10 %).
- :func:`warmup_cosine_adamw` (the U-Net and the counting CNN): AdamW with a linear warm-up
  from 0 and a cosine decay to ``end_fraction`` of the peak over a fixed number of steps.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import optax

from ..errors import CellscapeError

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")


def schedule_factor(schedule: str, total_steps: int, warmup_steps: int = 0) -> Callable:
    """The multiplier of the base learning rate at a step.

    Parameters
    ----------
    schedule : {"constant", "cosine"}
        ``cosine``: ``min(1, (step + 1) / warmup_steps)`` times a cosine from 1 down to 0.1
        over the steps after the warm-up.
    total_steps, warmup_steps : int
    """
    total_steps = max(1, total_steps)
    if schedule not in SCHEDULES:
        raise CellscapeError(f"unknown schedule {schedule!r}", field="schedule")

    def shape(step):
        if schedule == "cosine":
            warm = jnp.minimum(1.0, (step + 1) / max(1, warmup_steps)) if warmup_steps else 1.0
            frac = jnp.clip((step - warmup_steps) / max(1, total_steps - warmup_steps), 0.0, 1.0)
            return warm * (0.1 + 0.9 * 0.5 * (1 + jnp.cos(jnp.pi * frac)))
        return 1.0

    return shape


def plateau_optimizer(
    learning_rate: float,
    total_steps: int,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    schedule: str = "constant",
    warmup_steps: int = 0,
) -> optax.GradientTransformation:
    """Adam/AdamW times :func:`schedule_factor`, with ``learning_rate`` injected (see
    :func:`set_learning_rate`).

    Parameters
    ----------
    learning_rate : float
        Base rate.
    total_steps : int
        Steps the schedule spans.
    optimizer : {"adam", "adamw"}
    weight_decay : float
        Decoupled decay, AdamW only.
    schedule, warmup_steps
        See :func:`schedule_factor`.
    """
    shape = schedule_factor(schedule, total_steps, warmup_steps)
    if optimizer not in OPTIMIZERS:
        raise CellscapeError(f"unknown optimizer {optimizer!r}", field="optimizer")

    def build(learning_rate):
        if optimizer == "adam":
            core = optax.scale_by_adam()
        else:
            core = optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(weight_decay))
        return optax.chain(core, optax.scale_by_schedule(shape), optax.scale(-learning_rate))

    return optax.inject_hyperparams(build)(learning_rate=learning_rate)


def set_learning_rate(state, lr: float):
    """A copy of a train state whose injected base learning rate is ``lr`` (see
    :func:`plateau_optimizer`); the dtype and sharding of the stored rate are kept."""
    hp = dict(state.opt_state.hyperparams)
    old = hp["learning_rate"]
    # same dtype and placement (the devices of a data-parallel, possibly multi-process, mesh)
    hp["learning_rate"] = jnp.full_like(old, lr, device=getattr(old, "sharding", None))
    return state.replace(opt_state=state.opt_state._replace(hyperparams=hp))


def warmup_cosine_adamw(learning_rate: float, steps: int, warmup_steps: int, weight_decay: float,
                        end_fraction: float = 0.01) -> optax.GradientTransformation:
    """AdamW with a linear warm-up from 0 to ``learning_rate`` then a cosine decay to
    ``end_fraction * learning_rate`` at ``steps``.

    Parameters
    ----------
    learning_rate : float
        Peak rate.
    steps : int
        Steps the schedule spans (the warm-up is capped at ``steps - 1``).
    warmup_steps : int
    weight_decay : float
        Decoupled decay.
    end_fraction : float
    """
    warmup = max(0, min(warmup_steps, steps - 1))
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, max(steps, warmup + 1),
                                                  end_value=learning_rate * end_fraction)
    return optax.adamw(schedule, weight_decay=weight_decay)
