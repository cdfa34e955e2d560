"""Settings shared by the step-based trainers (the U-Net and the counting CNN): AdamW with a
linear warm-up and a cosine decay over ``steps`` (:func:`assets_pkg.core.ml.optim.warmup_cosine_adamw`)
and an optional wall-time budget.  Each model's config adds its architecture and data fields."""

from __future__ import annotations

from pydantic import Field

from ..config import LibConfig

__all__ = ["StepTrainConfig"]


class StepTrainConfig(LibConfig):
    """Length, optimiser and time budget of a step-based training run."""

    steps: int = Field(1500, ge=1, description="Optimisation steps (the cosine schedule spans them).")
    learning_rate: float = Field(2e-3, gt=0, description="AdamW peak learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(50, ge=0, description="Linear warm-up steps.")
    max_minutes: float | None = Field(
        None, gt=0, description="Stop earlier when this much wall time is spent on steps (None: no limit).")
