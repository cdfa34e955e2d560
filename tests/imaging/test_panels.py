"""balanced_panel: n proteins of an annotation table, spread evenly over their main localization."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from assets_pkg.core.imaging.proteins import PanelError, balanced_panel, load_panel

OPENCELL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "opencell" / "annotations.csv"


def _table() -> pd.DataFrame:
    """nucleoplasm: 4 proteins (one with a second, weaker class), golgi: 2, er: 1."""
    rows = []
    for i in range(4):
        rows.append((f"ENSG{i:011d}", f"NUC{i}", "nucleoplasm", "3"))
    rows.append(("ENSG00000000000", "NUC0", "cytoplasmic", "1"))  # NUC0: two localizations
    for i in range(4, 6):
        rows.append((f"ENSG{i:011d}", f"GOL{i}", "golgi", "3"))
    rows.append(("ENSG00000000006", "ER6", "er", "2"))
    return pd.DataFrame(rows, columns=["ensg_id", "target_name", "annotation_name", "annotation_grade"])


def _main_class(table: pd.DataFrame) -> Counter:
    return Counter(w.localizations[0].name for w in load_panel(table))


def test_classes_take_turns():
    t = balanced_panel(_table(), 5, seed=0)
    assert t["ensg_id"].nunique() == 5
    # round robin in LOCALIZATIONS order: nucleoplasm, er, golgi, nucleoplasm, golgi
    assert _main_class(t) == Counter({"nucleoplasm": 2, "golgi": 2, "er": 1})
    # an exhausted class (er) is skipped
    assert _main_class(balanced_panel(_table(), 7, seed=0)) == Counter({"nucleoplasm": 4, "golgi": 2, "er": 1})


def test_single_localization_first_and_seeded():
    for seed in range(6):
        t = balanced_panel(_table(), 6, seed=seed)  # 3 of the 4 nucleoplasm proteins
        assert "NUC0" not in set(t["target_name"])  # the one with two classes comes last
        assert t.equals(balanced_panel(_table(), 6, seed=seed))
    picks = {tuple(balanced_panel(_table(), 6, seed=s)["target_name"]) for s in range(6)}
    assert len(picks) > 1  # the seed orders the proteins within a class
    with_multi = balanced_panel(_table(), 6, seed=0, prefer_single=False)
    assert set(with_multi["annotation_name"]) <= {"nucleoplasm", "cytoplasmic", "golgi", "er"}


def test_too_few_proteins_named():
    with pytest.raises(PanelError, match="fewer than the 8") as e:
        balanced_panel(_table(), 8, seed=0)
    assert e.value.field == "ensg_id"
    with pytest.raises(PanelError):
        balanced_panel(_table(), 0, seed=0)


@pytest.mark.skipif(not OPENCELL.is_file(), reason="../shared/data/opencell/annotations.csv is absent")
def test_opencell_world_panel():
    t = balanced_panel(OPENCELL, 204, seed=0)
    panel = load_panel(t)
    assert len(panel) == 204 and len({w.ensg_id for w in panel}) == 204
    counts = _main_class(t)
    assert len(counts) == 17  # every localization class
    assert max(counts.values()) - min(c for c in counts.values() if c >= 12) <= 2
