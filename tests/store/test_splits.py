import numpy as np
import pandas as pd
import pytest

from assets_pkg.core.errors import CellscapeError
from assets_pkg.core.store.config import SplitConfig
from assets_pkg.core.store.splits import (
    check_disjoint,
    make_splits,
    split_summary,
    split_version,
)


def _catalog(n_proteins=6, fields=5, frames_per_field=7):
    rows = []
    for p in range(n_proteins):
        for f in range(fields):
            for k in range(frames_per_field):
                rows.append(
                    dict(frame_id=f"pl/{p:02d}/f{f:02d}/n{k:04d}", plate_id="pl", well=f"A{p + 1:02d}",
                         field_id=f, ensg_id=f"ENSG{p:011d}")
                )
    return pd.DataFrame(rows)


def test_field_exclusive_split_is_disjoint_and_covers_every_protein_in_train():
    cat = _catalog()
    s = make_splits(cat, SplitConfig(0.6, 0.2, 0.2, "field", seed=3))
    assert len(s) == len(cat)
    assert check_disjoint(s, "field") == []
    # every protein is in train; 5 fields at 60/20/20 -> 3/1/1 fields per protein
    per = s.groupby(["ensg_id", "split"])["field_id"].nunique().unstack()
    assert (per["train"] == 3).all() and (per["valid"] == 1).all() and (per["test"] == 1).all()
    # labels are dense over sorted ensg ids
    assert sorted(s["label"].unique()) == list(range(6))
    assert (s.groupby("ensg_id")["label"].nunique() == 1).all()


def test_protein_exclusive_split_keeps_each_protein_in_one_split():
    s = make_splits(_catalog(n_proteins=10), SplitConfig(0.6, 0.2, 0.2, "protein", seed=1))
    assert check_disjoint(s, "protein") == []
    summ = split_summary(s)
    assert (summ["train"]["proteins"], summ["valid"]["proteins"], summ["test"]["proteins"]) == (6, 2, 2)


def test_split_is_deterministic_and_seed_dependent():
    cat = _catalog()
    a = make_splits(cat, SplitConfig(seed=5))
    b = make_splits(cat.sample(frac=1, random_state=0), SplitConfig(seed=5))
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    c = make_splits(cat, SplitConfig(seed=6))
    assert not np.array_equal(a["split"].to_numpy(), c["split"].to_numpy())
    assert split_version(a, SplitConfig(seed=5)) == split_version(b, SplitConfig(seed=5))
    assert split_version(a, SplitConfig(seed=5)) != split_version(c, SplitConfig(seed=6))


def test_protein_subset_and_frame_cap():
    s = make_splits(_catalog(), SplitConfig(n_proteins=3, max_frames_per_protein=10, seed=2))
    assert s["ensg_id"].nunique() == 3
    assert (s.groupby("ensg_id").size() == 10).all()
    assert sorted(s["label"].unique()) == [0, 1, 2]


def test_check_disjoint_reports_a_straddling_field():
    s = make_splits(_catalog(), SplitConfig(seed=0))
    i = s.index[(s["split"] == "train")][0]
    j = s.index[(s["field_id"] == s.loc[i, "field_id"]) & (s["ensg_id"] == s.loc[i, "ensg_id"])][1]
    s.loc[j, "split"] = "test"
    assert any("straddle" in p for p in check_disjoint(s, "field"))


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="sum to 1"):
        SplitConfig(0.5, 0.2, 0.2)
    with pytest.raises(ValueError, match="exclusive_by"):
        SplitConfig(exclusive_by="well")


def test_few_fields_per_protein_still_give_valid_and_test_fields():
    # 2 fields per protein at 80/10/10: every protein keeps a train field and the second
    # fields spread over the splits in proportion, instead of all landing in train
    s = make_splits(_catalog(n_proteins=200, fields=2, frames_per_field=1), SplitConfig(seed=0))
    fields = s.groupby("split")["frame_id"].size()
    assert (s[s["split"] == "train"].groupby("ensg_id").size() >= 1).sum() == 200
    assert 0.05 < fields["valid"] / len(s) < 0.15 and 0.05 < fields["test"] / len(s) < 0.15
    assert check_disjoint(s, "field") == []


# ---------------------------------------------------------------------------- no vacuous splits
@pytest.mark.parametrize("column, value", [("well", np.nan), ("well", ""), ("field_id", np.nan),
                                           ("ensg_id", None), ("plate_id", "  ")])
def test_make_splits_refuses_empty_or_nan_keys_naming_the_column(column, value):
    # Frames without a well or field used to form one silent group: all of them in one split.
    cat = _catalog(n_proteins=3, fields=4)
    cat[column] = cat[column].astype(object)
    cat.loc[cat.index[5:], column] = value
    with pytest.raises(CellscapeError, match=f"'{column}' is empty or NaN in {len(cat) - 5} of {len(cat)}") as e:
        make_splits(cat, SplitConfig(seed=0))
    assert e.value.field == column and isinstance(e.value, ValueError)


def test_check_disjoint_fails_an_empty_split_the_config_asks_for():
    # One field per protein: every protein's only field goes to train, valid and test stay empty.
    cat = _catalog(n_proteins=4, fields=1)
    config = SplitConfig(0.5, 0.5, 0.0, "field", seed=0)
    s = make_splits(cat, config)
    assert set(s["split"]) == {"train"}
    problems = check_disjoint(s, config)
    assert len(problems) == 1 and problems[0].startswith("valid is empty")  # test is 0: not asked for
    # with the protein as the unit, 4 proteins fill train and valid: sound
    by_protein = SplitConfig(0.5, 0.5, 0.0, "protein", seed=0)
    assert check_disjoint(make_splits(cat, by_protein), by_protein) == []
    # a bare unit name means the default fractions: valid and test must both hold frames
    assert [p.split()[0] for p in check_disjoint(s, "field")] == ["valid", "test"]


def test_check_disjoint_fails_missing_or_nan_keys_and_unknown_split_names():
    s = make_splits(_catalog(), SplitConfig(seed=0))
    assert check_disjoint(s, "field") == []
    assert check_disjoint(s.drop(columns=["well"]), "field") == ["columns ['well'] are missing"]
    nan_well = s.astype({"well": object})
    nan_well.loc[nan_well.index[:3], "well"] = np.nan
    assert check_disjoint(nan_well, "field") == [
        f"column 'well' is empty or NaN in 3 of {len(s)} rows (e.g. frame {s['frame_id'].iloc[0]!r})"]
    renamed = s.astype({"split": object})
    renamed.loc[renamed["split"] == "valid", "split"] = "validation"
    problems = check_disjoint(renamed, "field")
    assert any("['validation']" in p for p in problems) and any(p.startswith("valid is empty") for p in problems)
    assert check_disjoint(s.iloc[:0], "field") == ["the split holds no frames"]
