"""Every preset of the project, in one place.

A preset is a named set of field values of one step's configuration model; the model's
``preset`` field selects it and explicit fields override it (see
:class:`assets_pkg.core.config.LibConfig`).  ``default`` is the library's defaults; ``tiny``
is what the demo and the Dagster jobs run on a laptop CPU in minutes.  The VQ-VAE model
sizes of the same names live in :func:`assets_pkg.core.localization.models.model_presets`.
"""

from __future__ import annotations

__all__ = ["TRAIN_PRESETS", "SEG_TRAIN_PRESETS", "COUNT_TRAIN_PRESETS", "CELL_SETS_PRESETS"]

#: VQ-VAE training (:class:`~assets_pkg.core.localization.config.TrainConfig`); the model part
#: comes from ``models.model_presets()`` under the same name.
TRAIN_PRESETS: dict[str, dict] = {
    "tiny": dict(batch_size=32, epochs=4, learning_rate=2e-3, checkpoint_every=100),
    "full": dict(batch_size=256, epochs=100, learning_rate=1e-3, checkpoint_every=200, plateau_patience=4,
                 early_stopping_patience=10),
    "cytoself": dict(batch_size=256, epochs=100, learning_rate=1e-3, checkpoint_every=200, plateau_patience=4,
                     early_stopping_patience=10),
}

#: Nucleus U-Net training (:class:`~assets_pkg.core.segmentation.config.SegTrainConfig`).
SEG_TRAIN_PRESETS: dict[str, dict] = {
    "default": {},
    "tiny": dict(steps=300, crop=128),
}

#: Counting CNN training (:class:`~assets_pkg.core.segmentation.config.CountTrainConfig`).
COUNT_TRAIN_PRESETS: dict[str, dict] = {
    "default": {},
    "tiny": dict(steps=600),
}

#: Cell image sets (:class:`~assets_pkg.core.segmentation.config.CellSetsConfig`): how many and
#: how large the simulated fields are when no folder is given.
CELL_SETS_PRESETS: dict[str, dict] = {
    "default": {},
    "tiny": dict(simulated_fields=18, simulated_size=(256, 320)),
}
