"""One source of configuration per step: the library models, and what is derived from them
(Dagster configs, cellscape flags, params.yaml) agree field by field."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from assets_pkg.cli import build_parser, config_from_args
from assets_pkg.core.config import LibConfig
from assets_pkg.core.imaging.config import SimulateCellsConfig, SimulatePlatesConfig
from assets_pkg.core.localization.config import (
    AtlasConfig,
    CodeClusterConfig,
    EmbeddingConfig,
    ProjectionConfig,
    ScoreConfig,
    TrainConfig,
    train_config_from_preset,
)
from assets_pkg.core.params import PARAMS_SECTIONS, load_params
from assets_pkg.core.segmentation.config import (
    CellSetsConfig,
    CountRunConfig,
    CountTrainConfig,
    SegmentRunConfig,
    SegTrainConfig,
)
from assets_pkg.core.store.config import FrameConfig, IngestParams, NucleusConfig, SplitConfig
from assets_pkg.defs import imaging, qc, segmentation, store
from assets_pkg.defs.config import LibraryDerivedConfig, dagster_config
from assets_pkg.defs.localization import atlas, model

REPO = Path(__file__).resolve().parents[1]

LIBRARY_MODELS = [NucleusConfig, FrameConfig, IngestParams, SplitConfig, TrainConfig, SegTrainConfig,
                  CountTrainConfig, SegmentRunConfig, CountRunConfig, CellSetsConfig, SimulatePlatesConfig,
                  SimulateCellsConfig]

#: asset -> (library model it passes on, library fields the asset sets itself, asset-only fields)
DERIVED = {
    "nuclei_masks": (NucleusConfig, set(), {"nucleus_segmenter", "segmentation_model"}),
    "plate_frames": (FrameConfig, set(), set()),
    "dataset_splits": (SplitConfig, set(), set()),
    "localization_model": (TrainConfig, set(), set()),
    "localization_model_ablation": (TrainConfig, {"classification_weight"}, set()),
    "segmentation_model": (SegTrainConfig, {"log_every"}, set()),
    "counting_model": (CountTrainConfig, {"log_every"}, set()),
    "cell_image_sets": (CellSetsConfig, set(), set()),
    "frame_embeddings": (EmbeddingConfig, set(), set()),
    "feature_spectrum_clusters": (CodeClusterConfig, set(), set()),
    "umap_projection": (ProjectionConfig, set(), set()),
    "localization_report": (ScoreConfig, set(), set()),
}
#: configs of what has no library step (yet): written in the Dagster layer alone.
DAGSTER_ONLY = {"dataset_version", "segmentation_results"}

#: cellscape subcommand -> (library model, required flags, fields without a flag)
COMMANDS = {
    "simulate-plates": (SimulatePlatesConfig, ["--out", "x", "--seed", "1"], set()),
    "simulate-cells": (SimulateCellsConfig, ["--out", "x", "--images", "2", "--seed", "1"], set()),
    "ingest": (IngestParams, ["p", "--store", "s"], set()),
    "import": (IngestParams, ["f", "--format", "images", "--store", "s", "--plate-id", "p"], set()),
    "train": (TrainConfig, ["--frames", "f", "--out", "o"], {"model"}),
    "train-distributed": (TrainConfig, ["--coordinator", "h:1", "--num-processes", "2", "--process-id", "0",
                                        "--frames", "f", "--out", "o"], {"model"}),
    "train-segmentation": (SegTrainConfig, ["--images", "i", "--masks", "m", "--out", "o"], set()),
    "train-counting": (CountTrainConfig, ["--images", "i", "--out", "o"], set()),
    "segment": (SegmentRunConfig, ["i", "--out", "o"], set()),
    "count": (CountRunConfig, ["i", "--out", "o"], set()),
    "report": (AtlasConfig, ["--checkpoint", "c", "--frames", "f", "--out", "o"], set()),
}


def _config_class(asset) -> type:
    fn = asset.op.compute_fn.decorated_fn
    return inspect.signature(fn).parameters["config"].annotation


def _assets_with_config():
    out = {}
    for module in (imaging, qc, store, model, atlas, segmentation):
        for value in vars(module).values():
            if hasattr(value, "op") and hasattr(value.op, "compute_fn"):
                fn = getattr(value.op.compute_fn, "decorated_fn", None)
                if fn is not None and "config" in inspect.signature(fn).parameters:
                    out[value.key.to_user_string()] = value
    return out


# ----------------------------------------------------------------------------- library models
@pytest.mark.parametrize("cls", LIBRARY_MODELS, ids=lambda c: c.__name__)
def test_library_models_are_frozen_strict_and_described(cls):
    assert issubclass(cls, LibConfig) and cls.model_config["frozen"] and cls.model_config["extra"] == "forbid"
    for name, info in cls.model_fields.items():
        assert info.description, f"{cls.__name__}.{name} has no description"
    if cls.PRESETS is not None:
        for preset, values in cls.PRESETS.items():
            assert set(values) <= set(cls.model_fields), f"{cls.__name__} preset {preset} sets a non-field"


def test_unknown_field_and_unknown_preset_are_errors_naming_the_field():
    with pytest.raises(ValidationError, match="stepz"):
        SegTrainConfig(stepz=3)
    for cls in (SegTrainConfig, CountTrainConfig, TrainConfig):
        with pytest.raises(ValidationError, match="preset"):
            cls(preset="huge")
    with pytest.raises(ValidationError, match="crop"):
        SegTrainConfig(crop=8)
    with pytest.raises(ValidationError, match="train, valid, test"):
        SplitConfig(0.5, 0.2, 0.2)


def test_presets_fill_what_is_not_given_and_explicit_fields_win():
    assert SegTrainConfig().steps == 1200 and SegTrainConfig().crop == 256
    assert (SegTrainConfig(preset="tiny").steps, SegTrainConfig(preset="tiny").crop) == (300, 128)
    assert SegTrainConfig(preset="tiny", steps=7).steps == 7
    assert CountTrainConfig().steps == 1500 and CountTrainConfig(preset="tiny").steps == 600
    assert TrainConfig(preset="full", epochs=3).epochs == 3


def test_tiny_presets_are_what_the_dagster_assets_trained_before():
    """The demo's numbers stay the same: preset tiny reproduces the old Dagster defaults."""
    old_unet = dict(depth=3, base_width=16, crop=128, batch_size=4, steps=300, learning_rate=2e-3,
                    max_minutes=None, seed=0)
    assert SegTrainConfig(preset="tiny").model_dump(include=set(old_unet)) == old_unet
    old_count = dict(input_shape=(256, 344), batch_size=8, steps=600, learning_rate=2e-3, max_minutes=None, seed=0)
    assert CountTrainConfig(preset="tiny").model_dump(include=set(old_count)) == old_count
    old_sets = dict(segmentation_images=None, segmentation_masks=None, counting_images=None, simulated_fields=18,
                    simulated_size=(256, 320), seed=0, train_fraction=2 / 3)
    assert CellSetsConfig(preset="tiny").model_dump(exclude={"preset"}) == old_sets


def test_vqvae_presets_are_unchanged():
    """Every training setting of every preset as it was when the presets were applied by hand."""
    base = dict(model={}, optimizer="adam", weight_decay=1e-4, schedule="constant", warmup_steps=0,
                classification_weight=1.0, augment=True, eval_every=1, plateau_patience=3, plateau_factor=0.5,
                early_stopping_patience=0, checkpoint_every=200, keep_checkpoints=3, compute_dtype="float32",
                seed=0, eval_batch_size=None)
    old = {
        "tiny": dict(batch_size=32, epochs=4, learning_rate=2e-3, checkpoint_every=100),
        "full": dict(batch_size=256, epochs=100, learning_rate=1e-3, plateau_patience=4, early_stopping_patience=10),
        "cytoself": dict(batch_size=256, epochs=100, learning_rate=1e-3, plateau_patience=4,
                         early_stopping_patience=10),
    }
    for preset, values in old.items():
        assert train_config_from_preset(preset).model_dump() == {**base, **values, "preset": preset}
        assert TrainConfig(preset=preset).model_dump() == {**base, **values, "preset": preset}


def test_classical_preset_choices_match_the_classical_presets():
    import typing

    from assets_pkg.core.segmentation.classical import CLASSICAL_PRESETS

    ann = SegmentRunConfig.model_fields["classical_preset"].annotation
    literal = next(a for a in typing.get_args(ann) if a is not type(None))
    assert set(typing.get_args(literal)) == set(CLASSICAL_PRESETS)


# ----------------------------------------------------------------------------- Dagster
def test_every_asset_config_is_derived_from_the_library_model_it_passes_on():
    assets = _assets_with_config()
    assert set(assets) == set(DERIVED) | DAGSTER_ONLY
    for name, (lib, fixed, asset_only) in DERIVED.items():
        cls = _config_class(assets[name])
        assert issubclass(cls, LibraryDerivedConfig) and cls.library_model is lib, name
        # every library field is offered except those the asset sets itself; nothing else but the
        # asset-only fields, which the asset reads (so no field is accepted and ignored)
        assert set(cls.model_fields) == (set(lib.model_fields) - fixed) | asset_only, name
        assert set(cls.asset_fields) == asset_only, name
        for field, info in cls.model_fields.items():
            if field in asset_only:
                continue
            lib_info = lib.model_fields[field]
            assert info.description.startswith(lib_info.description), (name, field)
            lib_default = lib_info.get_default(call_default_factory=True)
            default = info.get_default(call_default_factory=True)
            if field in cls.preset_fields:  # null = the chosen preset's value
                assert default is None and "preset" in info.description, (name, field)
                continue
            assert default == (list(lib_default) if isinstance(lib_default, tuple) else lib_default), (name, field)
        # the Dagster defaults give the library defaults
        assert cls().to_library(**{f: lib.model_fields[f].default for f in fixed}) == lib()


def test_a_scaffolded_run_config_keeps_the_chosen_preset():
    """The launchpad scaffolds every field with its default; choosing a preset there must still
    give the preset's values, not the scaffolded defaults."""
    for cls in (model.ModelTrainingConfig, segmentation.SegmentationTrainingConfig,
                segmentation.CountingTrainingConfig):
        scaffold = {f: info.get_default(call_default_factory=True) for f, info in cls.model_fields.items()}
        assert all(scaffold[f] is None for f in cls.preset_fields) and cls.preset_fields, cls.__name__
    full = model.ModelTrainingConfig(**{**{f: i.get_default() for f, i in model.ModelTrainingConfig.model_fields.items()},
                                        "preset": "full"}).to_library()
    assert (full.epochs, full.batch_size, full.learning_rate) == (100, 256, 1e-3)
    tiny = segmentation.SegmentationTrainingConfig(
        **{**{f: i.get_default() for f, i in segmentation.SegmentationTrainingConfig.model_fields.items()},
           "preset": "tiny"}).to_library()
    assert (tiny.steps, tiny.crop) == (300, 128)
    assert segmentation.SegmentationTrainingConfig(preset="tiny", steps=40).to_library().steps == 40


def test_derived_config_passes_only_what_the_run_config_set():
    cfg = segmentation.SegmentationTrainingConfig(preset="tiny")
    assert cfg.to_library().steps == 300  # the preset's, not the Dagster default 1500
    cfg = segmentation.CountingTrainingConfig(input_shape=[48, 64])
    assert cfg.to_library().input_shape == (48, 64)
    assert model.AblationTrainingConfig(preset="tiny").to_library(classification_weight=0.0).classification_weight == 0
    assert "classification_weight" not in model.AblationTrainingConfig.model_fields


def test_dagster_config_refuses_unknown_exclusions_and_clashing_extras():
    with pytest.raises(ValueError, match="exclude"):
        dagster_config(SplitConfig, exclude=("nope",))
    from pydantic import Field

    with pytest.raises(ValueError, match="extra"):
        dagster_config(SplitConfig, extra={"seed": (int, Field(0, description="x"))})


def test_the_demo_selects_the_tiny_presets():
    src = (REPO / "assets_pkg" / "pipeline.py").read_text()
    for asset in ("cell_image_sets", "segmentation_model", "counting_model", "localization_model",
                  "localization_model_ablation"):
        assert f'"{asset}": {{"config": {{"preset": "tiny"}}}}' in src, asset


# ----------------------------------------------------------------------------- command line
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_flags_are_the_library_fields_with_the_library_defaults(command):
    lib, required, no_flag = COMMANDS[command]
    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict)).choices[command]
    dests = {a.dest for a in sub._actions}
    assert set(lib.model_fields) - no_flag <= dests
    args = parser.parse_args([command, *required])
    required_fields = {f: getattr(args, f) for f, i in lib.model_fields.items() if i.is_required()}
    assert config_from_args(lib, args) == lib(**required_fields)
    for action in sub._actions:
        if action.dest in lib.model_fields:
            assert lib.model_fields[action.dest].description.replace("%", "%%") in action.help


def test_cli_keeps_the_old_flag_names():
    parser = build_parser()
    a = parser.parse_args(["train-segmentation", "--images", "i", "--masks", "m", "--out", "o", "--width", "8",
                           "--lr", "0.01", "--minutes", "2", "--preset", "tiny"])
    cfg = config_from_args(SegTrainConfig, a)
    assert (cfg.base_width, cfg.learning_rate, cfg.max_minutes, cfg.steps, cfg.crop) == (8, 0.01, 2.0, 300, 128)
    a = parser.parse_args(["train-counting", "--images", "i", "--out", "o", "--input-size", "48", "64"])
    assert config_from_args(CountTrainConfig, a).input_shape == (48, 64)
    a = parser.parse_args(["segment", "i", "--out", "o", "--preset", "bbbc039", "--nucleus-diameter", "20"])
    assert config_from_args(SegmentRunConfig, a).classical_preset == "bbbc039"


def test_train_segmentation_help_states_the_cpu_time_of_the_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train-segmentation", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "1200 steps of 256² crops, with the evaluations on held-out images, take about 23 min" in out
    assert "(default: 1200" in out and "the defaults run about 23 min on 2 CPU cores" in out


# ----------------------------------------------------------------------------- params.yaml
def test_params_yaml_sections_validate():
    params = load_params(REPO / "params.yaml")
    assert set(params) == set(PARAMS_SECTIONS)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, cfg in params.items():
        assert isinstance(cfg, PARAMS_SECTIONS[section])
        assert cfg.model_dump(include=set(raw[section])) == raw[section]


def test_a_params_key_that_is_not_a_field_fails(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["ingest"]["crop"] = 64
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match="crop"):
        load_params(path)
    path.write_text(yaml.safe_dump({"segment": {}}))
    with pytest.raises(ValueError, match="segment"):
        load_params(path)


def test_dagster_types_of_library_annotations():
    from typing import Literal

    from assets_pkg.defs.config import dagster_type

    assert dagster_type(tuple[int, int]) == list[int] and dagster_type(tuple[int, ...]) == list[int]
    assert dagster_type(Path | None) == (str | None)
    assert dagster_type(Literal["a", "b"] | None) == (str | None)  # Dagster has no optional Literal
    assert dagster_type(Literal["a", "b"]) == Literal["a", "b"]
