"""Settings of the localization steps: VQ-VAE training (:class:`TrainConfig` and its presets, values
in :data:`assets_pkg.core.presets.TRAIN_PRESETS`) and the atlas built from a trained model, one
model per step (:class:`EmbeddingConfig`, :class:`CodeClusterConfig`, :class:`ProjectionConfig`,
:class:`ScoreConfig`) and their union for the one-call report (:class:`AtlasConfig`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ..config import LibConfig
from ..errors import CellscapeError
from ..presets import TRAIN_PRESETS

if TYPE_CHECKING:  # the model module imports JAX: only when a config is used, not when flags are built
    from .models import ModelConfig

__all__ = [
    "TrainConfig", "TRAIN_PRESETS", "train_config_from_preset",
    "EmbeddingConfig", "CodeClusterConfig", "ProjectionConfig", "ScoreConfig", "AtlasConfig",
]


class TrainConfig(LibConfig):
    """Everything a VQ-VAE training run depends on besides the data.

    ``preset`` selects both the training settings (:data:`~assets_pkg.core.presets.TRAIN_PRESETS`)
    and the model size (:func:`~assets_pkg.core.localization.models.model_presets`) of that
    name; explicit fields override the preset.  The field defaults are the ``tiny`` preset's.
    """

    PRESETS = TRAIN_PRESETS

    preset: Literal["tiny", "full", "cytoself"] = Field(
        "tiny", description="Training settings and model size: tiny (laptop CPU in minutes), full (the book's "
                            "settings, GPU), cytoself (two-level, 2048 codes); explicit fields override it.")
    model: dict[str, Any] = Field(
        default_factory=dict, description="ModelConfig fields overriding the preset's model size "
                                          "(num_classes is set from the data).")
    batch_size: int = Field(32, ge=1, description="Global batch, split over the local devices.")
    epochs: int = Field(4, ge=1, description="Passes over the train split.")
    learning_rate: float = Field(2e-3, gt=0, description="Peak learning rate.")
    optimizer: Literal["adam", "adamw"] = Field("adam", description="Optimizer.")
    weight_decay: float = Field(1e-4, ge=0, description="Weight decay (adamw only).")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="Learning-rate schedule; cosine decays to 10 % over all steps after the warm-up.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    classification_weight: float = Field(
        1.0, ge=0, description="Weight of the protein-ID loss; 0 trains the ablation without the head.")
    augment: bool = Field(True, description="Random 90-degree rotations and flips per frame.")
    eval_every: int = Field(1, ge=1, description="Evaluate train and valid every this many epochs (and after the last).")
    plateau_patience: int = Field(
        3, ge=0, description="Evaluations without a better valid loss before the learning rate drops (0: off).")
    plateau_factor: float = Field(0.5, gt=0, le=1, description="Factor the learning rate is multiplied by on a plateau.")
    early_stopping_patience: int = Field(
        0, ge=0, description="Stop after this many evaluations without improvement (0: off).")
    checkpoint_every: int = Field(100, ge=1, description="Save a checkpoint every this many steps (and at the end).")
    keep_checkpoints: int = Field(3, ge=1, description="Keep the newest this many checkpoints.")
    compute_dtype: Literal["float32", "bfloat16"] = Field("float32", description="Compute dtype of the network.")
    seed: int = Field(0, description="Seed of the initialisation, the data order and the augmentation.")
    eval_batch_size: int | None = Field(None, ge=1, description="Evaluation batch (None: batch_size).")

    def vqvae_config(self, num_classes: int) -> ModelConfig:
        """The :class:`ModelConfig` of the preset's model size with ``model`` on top."""
        from .models import ModelConfig, model_presets

        presets = model_presets()
        if self.preset not in presets:
            raise CellscapeError(f"unknown preset {self.preset!r}; choose one of {sorted(presets)}", field="preset")
        kw = dict(presets[self.preset])
        kw.update({k: tuple(v) if isinstance(v, list) else v for k, v in self.model.items()})
        kw["num_classes"] = int(num_classes)
        kw["dtype"] = self.compute_dtype
        return ModelConfig(**kw)


def train_config_from_preset(preset: str, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` with the preset's settings and the non-None ``overrides`` on top."""
    if preset not in TRAIN_PRESETS:
        raise CellscapeError(f"unknown preset {preset!r}; choose one of {sorted(TRAIN_PRESETS)}", field="preset")
    return TrainConfig(preset=preset, **{k: v for k, v in overrides.items() if v is not None})


class EmbeddingConfig(LibConfig):
    """Which frames each trained model embeds, and in what batches."""

    split: Literal["all", "train", "valid", "test"] = Field(
        "all", description="Frames to embed: one split of the dataset, or all of them.")
    batch_size: int = Field(256, ge=1, description="Frames per forward pass.")
    moments: bool = Field(
        False, description="Also compute every frame's latent moments (mean, standard deviation and second moments "
                           "of the local encoder map, averaged over the 8 rotations and flips; 8 encoder passes a "
                           "frame), exported with the embeddings and scored with embedding 'moments'.")


class CodeClusterConfig(LibConfig):
    """Clustering of the codebook entries by the Pearson correlation of their use across proteins."""

    n_clusters: int = Field(16, ge=2, description="Code clusters (fcluster maxclust over average linkage).")


class ProjectionConfig(LibConfig):
    """The UMAP picture of the frame histograms (aligned across models when several are compared;
    drawn and exported, never scored: each model's scores use its own UMAP, see :class:`ScoreConfig`)."""

    seed: int = Field(0, description="Random state of the UMAP picture (recorded with the projection).")
    n_neighbors: int = Field(15, ge=2, description="Neighbourhood size of the UMAP picture.")


class ScoreConfig(LibConfig):
    """How each model is scored on its own: which frames, which seeds, kNN neighbours, the
    bootstrap of the protein kNN accuracy and whether the classical-feature baseline is scored beside.

    A model's scores depend on its own embeddings of the ``score_split`` frames only (never on the
    other models of a report, nor on the aligned UMAP, which is a picture); see
    :func:`~assets_pkg.core.localization.evaluation.score_embedding`.
    """

    k: int = Field(5, ge=1, description="Nearest annotated proteins (or frames of other proteins) voting per "
                                        "protein (or frame): kNN accuracies and predictions.")
    score_split: Literal["all", "train", "valid", "test", "heldout"] = Field(
        "test", description="Frames the scores are computed on: test (frames no model trained on), heldout (valid "
                            "and test), another split of the embedded frames, or all (training frames included).")
    knn_reference: Literal["score_split", "train"] = Field(
        "score_split", description="Frames whose proteins vote in the kNN accuracies: those of the scored split "
                                   "themselves, or the train split's (a larger atlas to match the scored frames "
                                   "against; a protein never votes for itself either way).")
    seeds: tuple[int, ...] = Field(
        (0, 1, 2), min_length=1, description="One scoring per seed (the UMAP random state and the frame subsample); "
                                             "the report gives the mean, std, min and max over them.")
    frame_fraction: float = Field(
        0.8, gt=0, le=1, description="Share of every protein's frames each seed scores (a seeded subsample; "
                                     "1 scores all frames, and only the UMAP then varies with the seed).")
    umap_neighbors: int = Field(15, ge=2, description="Neighbourhood size of each model's own UMAP (clustering score).")
    metric: Literal["correlation", "euclidean", "cosine"] = Field(
        "correlation", description="Distance between embeddings (frames) and between mean embeddings (proteins) "
                                   "of the kNN accuracies and ARI clusters.")
    embedding: Literal["histograms", "pooled", "moments"] = Field(
        "histograms", description="What a model's frame embedding is: codebook-usage histograms (feature spectra), "
                                  "the pooled encoder output, or the latent moments standardised on the train "
                                  "frames (needs them embedded: EmbeddingConfig.moments).")
    bootstrap: int = Field(1000, ge=1, description="Bootstrap resamples of proteins for the protein kNN accuracy's "
                                                   "confidence interval.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Coverage of that confidence interval.")
    baseline: bool = Field(True, description="Score the classical-feature baseline (radial profile, nucleus overlap, "
                                             "texture, granularity, moments) beside the models.")


class AtlasConfig(EmbeddingConfig, CodeClusterConfig, ProjectionConfig, ScoreConfig):
    """Every setting of the atlas in one model, for ``cellscape report`` (the Dagster assets take
    the step models one each)."""
