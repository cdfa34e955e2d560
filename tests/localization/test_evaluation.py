"""Each model is scored on its own (assets_pkg.core.localization.evaluation): its own UMAP, the
test frames by default, several seeds; frame kNN leaves the whole protein out; the protein kNN
has a seeded bootstrap interval; adding a model to a report changes no other model's numbers."""

import json

import numpy as np
import pandas as pd
import pytest
from spectra_factory import synthetic_embeddings

from assets_pkg.cli import build_parser, config_from_args
from assets_pkg.core.errors import CellscapeError
from assets_pkg.core.localization import atlas
from assets_pkg.core.localization.config import AtlasConfig, ScoreConfig
from assets_pkg.core.localization.evaluation import (
    paired_knn_difference,
    score_embedding,
    subsample_frames,
    summarize,
)
from assets_pkg.core.localization.scores import bootstrap_ci, frame_knn_accuracy

FAST = dict(seeds=(0, 1, 2), umap_neighbors=5, k=3, bootstrap=200)


def test_the_default_split_is_test_and_training_frames_do_not_count():
    assert ScoreConfig().score_split == "test" and AtlasConfig().score_split == "test"
    assert len(ScoreConfig().seeds) >= 3
    emb = synthetic_embeddings()
    cfg = ScoreConfig(**FAST)
    got = score_embedding("m", emb.rows, emb.histograms, cfg)
    test = (emb.rows["split"] == "test").to_numpy()
    assert got.scores["frames"] == test.sum() < len(emb.rows)
    assert set(got.coord_rows["split"]) == {"test"}
    # scramble every frame the model may have trained on: the scores do not move
    scrambled = emb.histograms.copy()
    scrambled[~test] = np.random.default_rng(5).permutation(scrambled[~test])
    again = score_embedding("m", emb.rows, scrambled, cfg)
    assert again.scores == got.scores
    pd.testing.assert_frame_equal(again.per_seed, got.per_seed)
    # planted classes: the honest scores still find them
    assert got.scores["frame_knn_accuracy"] == 1.0 and got.scores["protein_knn_accuracy"] == 1.0


def test_a_models_scores_do_not_change_when_another_model_is_added(tmp_path, monkeypatch):
    # the aligned picture changes with the models compared (here: a stand-in that does so on
    # purpose, and skips AlignedUMAP's long compilation); the scores must not
    def picture(xs, seed, n_neighbors):
        rng = np.random.default_rng(len(xs))
        return [rng.normal(size=(len(x), 2)).astype(np.float32) for x in xs]

    monkeypatch.setattr(atlas, "aligned_umap", picture)
    a, b = synthetic_embeddings(seed=0), synthetic_embeddings(seed=1)
    splits = a.rows
    cfg = AtlasConfig(**FAST, n_neighbors=5, n_clusters=3, baseline=False)
    models = {"a": {"checkpoint": "a"}, "b": {"checkpoint": "b"}}
    atlas.report_from_embeddings({"a": a}, models, None, splits, tmp_path / "alone", cfg, log=lambda _: None)
    table, paths = atlas.report_from_embeddings({"a": a, "b": b}, models, None, splits, tmp_path / "both", cfg,
                                                log=lambda _: None)
    alone = json.loads((tmp_path / "alone" / "scores.json").read_text())
    both = json.loads((tmp_path / "both" / "scores.json").read_text())
    assert both["scores"]["a"] == alone["scores"]["a"]
    assert both["per_seed"]["a"] == alone["per_seed"]["a"]
    assert [r["seed"] for r in both["per_seed"]["b"]] == [0, 1, 2]
    assert both["score_config"]["score_split"] == "test" and both["models"] == ["a", "b"]
    assert both["baselines"] == [] and both["provenance"]["score_split"] == "test"
    # the table: mean ± std [min, max] over seeds, protein kNN with its interval
    assert list(table.columns) == ["a", "b"]
    cell = table.loc["clustering score (own UMAP)", "a"]
    s = alone["scores"]["a"]
    assert cell == (f"{s['clustering_score']:.3f} ± {s['clustering_score_std']:.3f} "
                    f"[{s['clustering_score_min']:.3f}, {s['clustering_score_max']:.3f}]")
    assert table.loc["protein kNN accuracy [CI]", "a"].count("[") == 1
    assert paths["scores_table"].read_text().count("frame kNN accuracy") == 1
    assert (tmp_path / "both" / "figures" / "a_own_umap.png").is_file()
    frames_a = pd.read_parquet(tmp_path / "alone" / "a_frames.parquet")
    assert not np.allclose(frames_a["umap_x"], pd.read_parquet(tmp_path / "both" / "a_frames.parquet")["umap_x"])


def test_frame_knn_never_lets_a_protein_vote_for_itself():
    # P1 (er) frames sit together; the nearest frames of another protein are P3's (golgi)
    x = np.array([[0.0], [0.1], [10.0], [10.1], [1.0], [1.1]])
    prot = ["P1", "P1", "P2", "P2", "P3", "P3"]
    ann = {"P1": "er", "P2": "er", "P3": "golgi"}
    acc, per = frame_knn_accuracy(x, prot, ann, k=1, metric="euclidean")
    assert acc == 0.0 and list(per["predicted"]) == ["golgi", "golgi", "golgi", "golgi", "er", "er"]
    # with P2 moved next to P1, P1 and P2 find each other
    x2 = x.copy()
    x2[2:4] = [[0.2], [0.3]]
    acc, per = frame_knn_accuracy(x2, prot, ann, k=1, metric="euclidean", chunk=2)
    assert list(per["correct"]) == [True, True, True, True, False, False] and acc == pytest.approx(4 / 6)
    # unannotated frames neither vote nor count
    acc, per = frame_knn_accuracy(np.vstack([x2, [[0.15]]]), prot + ["P4"], ann, k=1, metric="euclidean")
    assert len(per) == 6 and acc == pytest.approx(4 / 6)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    v = (np.arange(40) % 2).astype(float)
    lo, hi = bootstrap_ci(v, 1000, seed=0, level=0.95)
    assert (lo, hi) == bootstrap_ci(v, 1000, seed=0, level=0.95)
    assert lo < 0.5 < hi and 0.2 < hi - lo < 0.45  # about 2 * 1.96 * 0.5 / sqrt(40) = 0.31
    assert bootstrap_ci(np.ones(10), 100, seed=1) == (1.0, 1.0)
    with pytest.raises(CellscapeError, match="level"):
        bootstrap_ci(v, level=1.5)


def test_subsample_takes_the_same_share_of_every_protein():
    prot = np.repeat(["a", "b", "c"], [10, 3, 1])
    take = subsample_frames(prot, 0.5, np.random.default_rng(0))
    assert np.bincount(np.unique(prot, return_inverse=True)[1][take]).tolist() == [5, 2, 1]
    np.testing.assert_array_equal(take, subsample_frames(prot, 0.5, np.random.default_rng(0)))
    assert not np.array_equal(take, subsample_frames(prot, 0.5, np.random.default_rng(1)))
    np.testing.assert_array_equal(subsample_frames(prot, 1.0, np.random.default_rng(0)), np.arange(14))


def test_summary_is_mean_sample_std_min_max():
    per = pd.DataFrame({"clustering_score": [1.0, 2.0, 4.0], "frame_knn_accuracy": [0.5, 0.5, 0.5],
                        "ari_protein_clusters": [0.1, np.nan, 0.3]})
    s = summarize(per)
    assert s["clustering_score"] == pytest.approx(7 / 3) and s["clustering_score_std"] == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert (s["clustering_score_min"], s["clustering_score_max"]) == (1.0, 4.0)
    assert s["frame_knn_accuracy_std"] == 0.0 and np.isnan(s["ari_protein_clusters"])


def test_an_empty_score_split_is_an_error_naming_the_field():
    emb = synthetic_embeddings()
    rows = emb.rows.assign(split="train")
    with pytest.raises(CellscapeError, match="'test' split") as e:
        score_embedding("m", rows, emb.histograms, ScoreConfig(**FAST))
    assert e.value.field == "score_split"


def test_report_flags_reach_the_config():
    args = build_parser().parse_args(["report", "--checkpoint", "m", "--frames", "s", "--out", "o", "--no-baseline",
                                      "--seeds", "3", "4", "5", "--score-split", "valid"])
    cfg = config_from_args(AtlasConfig, args)
    assert (cfg.baseline, cfg.seeds, cfg.score_split) == (False, (3, 4, 5), "valid")
    assert config_from_args(AtlasConfig, build_parser().parse_args(
        ["report", "--checkpoint", "m", "--frames", "s", "--out", "o"])).baseline is True


def test_a_class_of_one_protein_is_not_scored_as_localization():
    emb = synthetic_embeddings(n_proteins=6, frames_per_protein=8, classes=("er", "golgi", "nucleoplasm"))
    # give the proteins of classes 1 and 2 one class each: only "er" (G00 is unannotated: G03) keeps 1 protein
    loc = {"G01": "golgi", "G02": "nucleoplasm", "G03": "er", "G04": "mitochondria", "G05": "centrosome"}
    rows = emb.rows.assign(localization=emb.rows["gene"].map(loc).fillna(""))
    got = score_embedding("m", rows, emb.histograms, ScoreConfig(**FAST))
    assert got.scores["classes"] == 0 and got.scores["single_localization_frames"] == 0
    assert np.isnan(got.scores["clustering_score"]) and np.isnan(got.scores["ari_protein_clusters"])
    assert 0 <= got.scores["frame_knn_accuracy"] <= 1  # the kNN still scores every annotated frame


def test_protein_knn_against_a_reference_leaves_the_protein_out():
    query = pd.DataFrame([[1.0, 0.0], [0.0, 1.0]], index=["A", "B"])
    reference = pd.DataFrame([[1.0, 0.1], [0.9, 0.0], [0.0, 1.0]], index=["A", "C", "D"])
    ann = {"A": "er", "B": "golgi", "C": "er", "D": "golgi"}
    from assets_pkg.core.localization.scores import knn_localization_accuracy

    acc, per = knn_localization_accuracy(query, ann, k=1, metric="euclidean", reference=reference)
    assert acc == 1.0 and list(per["neighbours"]) == ["C", "D"]  # A's own reference row never votes
    # frames: the train frames vote, the scored frames do not vote for each other
    x = np.array([[0.0], [5.0]])
    acc, per = frame_knn_accuracy(x, ["A", "B"], ann, k=1, metric="euclidean",
                                  reference=np.array([[0.1], [5.1], [0.0]]), reference_proteins=["C", "D", "A"])
    assert acc == 1.0 and list(per["predicted"]) == ["er", "golgi"]


def test_train_frames_vote_only_when_asked():
    emb = synthetic_embeddings()
    cfg = ScoreConfig(**FAST, knn_reference="train")
    got = score_embedding("m", emb.rows, emb.histograms, cfg)
    assert got.scores["frames"] == (emb.rows["split"] == "test").sum()
    train = (emb.rows["split"] == "train").to_numpy()
    flipped = emb.histograms.copy()
    flipped[train] = flipped[train][:, ::-1]  # the train frames now point elsewhere
    moved = score_embedding("m", emb.rows, flipped, cfg)
    assert moved.scores["frame_knn_accuracy"] < got.scores["frame_knn_accuracy"]
    # the scored frames' own UMAP and clusters do not depend on the voters
    pd.testing.assert_series_equal(moved.per_seed["clustering_score"], got.per_seed["clustering_score"])
    with pytest.raises(CellscapeError) as e:
        score_embedding("m", emb.rows.assign(split="test"), emb.histograms, cfg)
    assert e.value.field == "knn_reference"


def test_paired_knn_difference_tells_a_real_gap_from_noise():
    emb = synthetic_embeddings(n_proteins=60)
    cfg = ScoreConfig(k=3, bootstrap=300, score_split="heldout")
    good, noise = emb.histograms, np.random.default_rng(3).normal(size=emb.histograms.shape)
    got = paired_knn_difference(emb.rows, good, noise, cfg)
    held = emb.rows["split"].isin(["valid", "test"]).to_numpy()
    want_a = frame_knn_accuracy(good[held], emb.rows["gene"][held], atlas.annotations_from_rows(emb.rows), k=3)[0]
    assert got["accuracy_a"] == pytest.approx(want_a)
    assert got["difference"] == pytest.approx(got["accuracy_a"] - got["accuracy_b"])
    assert 0 < got["ci_low"] <= got["difference"] <= got["ci_high"]  # class structure against noise: real
    swapped = paired_knn_difference(emb.rows, noise, good, cfg)
    assert swapped["difference"] == pytest.approx(-got["difference"])
    same = paired_knn_difference(emb.rows, good, good.copy(), cfg)
    assert same["difference"] == same["ci_low"] == same["ci_high"] == 0
    with pytest.raises(CellscapeError, match="not finite"):
        paired_knn_difference(emb.rows, good[:-1], noise, cfg)
