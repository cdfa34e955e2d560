"""Tests of the virtual microscope (assets_pkg.core.imaging.simulator) and protein panels (proteins)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import ndimage as ndi

from assets_pkg.core.imaging import plates
from assets_pkg.core.imaging import simulator as sim
from assets_pkg.core.imaging.io import read_image
from assets_pkg.core.imaging.proteins import PanelError, default_panel_path, load_panel
from assets_pkg.core.qc.instruments import REGISTRY_PATH

OPENCELL_CSV = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "opencell" / "annotations.csv"
)
INSTRUMENTS = REGISTRY_PATH

SMALL = dict(wells=3, fields_per_well=2, field_size=128)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------------------
# plates on disk
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_plates(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("sim") / "plates"
    return sim.simulate_plates(out, n_plates=2, seed=11, defects=True, defect_rate=0.5, **SMALL)


def test_byte_reproducible(tmp_path, two_plates):
    again = sim.simulate_plates(
        tmp_path / "a", n_plates=2, seed=11, defects=True, defect_rate=0.5, **SMALL
    )
    first = _digests(two_plates[0].parent)
    assert [p.name for p in again] == ["plate01", "plate02"]
    assert _digests(tmp_path / "a") == first
    assert len(first) == 2 * (3 * 2 * 2 + 3)  # images + metadata.csv, plate.json, defects.csv

    other = sim.simulate_plates(
        tmp_path / "b", n_plates=2, seed=12, defects=True, defect_rate=0.5, **SMALL
    )
    changed = _digests(tmp_path / "b")
    tifs = [k for k in first if k.endswith(".tif")]
    assert all(changed[k] != first[k] for k in tifs)
    assert other[0].name == "plate01"


def test_plate_reads_back(two_plates):
    for k, path in enumerate(two_plates):
        assert plates.plate_is_complete(path)
        plate = plates.read_plate(path)
        assert plate.plate_id == f"plate{k + 1:02d}"
        meta = plate.metadata
        assert len(meta) == 3 * 2 * 2
        assert set(meta["channel"]) == set(plates.CHANNELS)
        assert list(meta.columns) == list(plates.METADATA_COLUMNS)
        # every provenance column is filled in
        for col in plates.METADATA_COLUMNS:
            assert meta[col].notna().all(), col
            assert (meta[col].astype(str).str.strip() != "").all(), col
        assert (meta["width"] == 128).all() and (meta["height"] == 128).all()
        assert (meta["bit_depth"] == 16).all()
        assert (meta["cell_line"] == "HEK293T").all()
        times = meta["acquisition_time"].astype(str)
        assert times.str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()
        assert times.min() >= "2026-01-05T09:00:00Z"
        per_field = meta.groupby(["well", "field_id"])["acquisition_time"].nunique()
        assert (per_field == 1).all() and meta.drop_duplicates(["well", "field_id"])[
            "acquisition_time"
        ].is_unique
        stains = dict(zip(meta["channel"], meta["stain"], strict=False))
        assert stains["nucleus"].startswith("Hoechst") and "mNeonGreen" in stains["protein"]
        # well map agrees with the metadata
        for well, info in plate.wells.items():
            rows = meta[meta["well"] == well]
            assert set(rows["gene"]) == {info.gene} and set(rows["ensg_id"]) == {info.ensg_id}
            assert info.localizations
        # images are what the metadata says
        for name, sha in zip(meta["file_name"], meta["sha256"], strict=True):
            img = read_image(path / name, expect_shape=(128, 128), dtypes=plates.PIXEL_DTYPES)
            assert img.dtype == np.uint16
            assert plates.sha256_file(path / name) == sha
        sim_info = plate.info["simulator"]
        assert sim_info["seed"] == 11 and sim_info["version"] == sim.SIMULATOR_VERSION
        assert plate.info["pixel_size_um"] == 0.2 and plate.info["field_size"] == 128
        assert plate.info["instrument"] == "dragonfly-63x" and plate.info["fields_per_well"] == 2


def test_metadata_within_instrument_bounds(two_plates):
    spec = yaml.safe_load(INSTRUMENTS.read_text())["instruments"]
    meta = plates.read_plate(two_plates[0]).metadata
    for _, r in meta.iterrows():
        inst = spec[r["instrument"]]
        assert inst["pixel_size_um"][0] <= r["pixel_size_um"] <= inst["pixel_size_um"][1]
        assert r["bit_depth"] in inst["bit_depths"]
        assert r["objective"] in inst["objectives"]
        assert (
            inst["numerical_aperture"][0]
            <= r["numerical_aperture"]
            <= inst["numerical_aperture"][1]
        )
        assert inst["excitation_nm"][0] <= r["excitation_nm"] <= inst["excitation_nm"][1]
        assert inst["emission_nm"][0] <= r["emission_nm"] <= inst["emission_nm"][1]
        assert 0 < r["exposure_ms"] <= inst["max_exposure_ms"]
    chans = meta.drop_duplicates("channel").set_index("channel")
    assert (chans.loc["nucleus", "excitation_nm"], chans.loc["nucleus", "emission_nm"]) == (
        405,
        450,
    )
    assert (chans.loc["protein", "excitation_nm"], chans.loc["protein", "emission_nm"]) == (
        488,
        525,
    )


def test_defects_recorded(tmp_path):
    (path,) = sim.simulate_plates(
        tmp_path,
        n_plates=1,
        seed=5,
        defects=True,
        defect_rate=1.0,
        wells=4,
        fields_per_well=2,
        field_size=128,
    )
    d = pd.read_csv(path / plates.DEFECTS_CSV, dtype={"well": str})
    assert list(d.columns) == list(sim.DEFECTS_COLUMNS)
    assert set(d["defect"]) <= set(sim.DEFECT_KINDS)
    assert len(d.drop_duplicates(["well", "field_id"])) == 8  # every field has one
    assert (d["plate_id"] == "plate01").all() and d["detail"].str.len().gt(0).all()
    oof = d[d["defect"] == "out_of_focus"]
    assert (oof.groupby(["well", "field_id"]).size() == 2).all()  # both channels
    for _, r in d[d["defect"] == "saturated"].iterrows():
        img = read_image(
            path / plates.image_file_name(r["well"], r["field_id"], r["channel"])
        )
        assert (img == 65535).mean() > 0.01
    # no defects asked: no defects.csv
    (clean,) = sim.simulate_plates(
        tmp_path / "clean", n_plates=1, seed=5, wells=2, fields_per_well=1, field_size=64
    )
    assert not (clean / plates.DEFECTS_CSV).exists()


def test_defect_kinds_render():
    base = sim.render_field(["cytoplasmic"], seed=3, field_size=160)

    def hf(img):
        return float(np.abs(np.diff(img.astype(float), axis=1)).mean())

    blur = sim.render_field(["cytoplasmic"], seed=3, field_size=160, defect="out_of_focus")
    assert [r[:2] for r in blur.defects] == [
        ("nucleus", "out_of_focus"),
        ("protein", "out_of_focus"),
    ]
    assert hf(blur.nucleus) < 0.7 * hf(base.nucleus)
    np.testing.assert_array_equal(blur.nucleus_labels, base.nucleus_labels)  # same cells

    plan = sim.plan_defect("saturated", 1, field_size=160)
    sat = sim.render_field(["cytoplasmic"], seed=3, field_size=160, defect=plan)
    ch = plan.channels[0]
    assert (getattr(sat, ch) == 65535).mean() > 0.01
    assert (getattr(base, ch) == 65535).mean() == 0

    plan = sim.plan_defect("debris", 2, field_size=160)
    deb = sim.render_field(["cytoplasmic"], seed=3, field_size=160, defect=plan)
    ch = plan.channels[0]
    assert getattr(deb, ch).max() > getattr(base, ch).max() + 1000
    assert deb.defects == [(ch, "debris", plan.detail)]


def test_refuses_to_overwrite(tmp_path):
    sim.simulate_plates(tmp_path, n_plates=1, seed=1, wells=1, fields_per_well=1, field_size=64)
    before = _digests(tmp_path)
    with pytest.raises(plates.PlateFormatError, match="already exists"):
        sim.simulate_plates(tmp_path, n_plates=2, seed=2, wells=1, fields_per_well=1, field_size=64)
    assert _digests(tmp_path) == before
    assert not (tmp_path / "plate02").exists()


def test_panel_cycles_across_plates(tmp_path):
    panel = pd.DataFrame(
        {
            "ensg_id": [f"ENSG{i:011d}" for i in range(1, 6)],
            "target_name": [f"G{i}" for i in range(1, 6)],
            "annotation_name": ["nucleoplasm", "er", "golgi", "membrane", "centrosome"],
            "annotation_grade": [3, 3, 2, 3, 1],
        }
    )
    paths = sim.simulate_plates(
        tmp_path,
        n_plates=3,
        seed=4,
        proteins=panel,
        wells=2,
        fields_per_well=1,
        field_size=64,
        plate_prefix="screen",
        progress=True,
    )
    assert [p.name for p in paths] == ["screen01", "screen02", "screen03"]
    genes = [plates.read_plate(p).wells[w].gene for p in paths for w in ("A01", "A02")]
    assert set(genes) == {f"G{i}" for i in range(1, 6)}  # 3 plates x 2 wells cover the panel
    assert genes[5] == genes[0]  # and wrap around


def test_acquisition_time_deterministic():
    start = sim.parse_start_time("2026-01-05T09:00:00Z")
    assert sim.acquisition_time(start, 0, 0, 0) == "2026-01-05T09:00:00Z"
    assert sim.acquisition_time(start, 1, 2, 1) == "2026-01-06T09:04:15Z"
    assert (
        sim.acquisition_time(sim.parse_start_time("2026-01-05T10:00:00+01:00"), 0, 0, 0)
        == "2026-01-05T09:00:00Z"
    )
    with pytest.raises(ValueError, match="time zone"):
        sim.parse_start_time("2026-01-05T09:00:00")


# --------------------------------------------------------------------------------------
# fields and localization patterns
# --------------------------------------------------------------------------------------


def test_render_field_shapes_and_determinism():
    a = sim.render_field([("er", 3), ("nuclear_membrane", 2)], seed=9, field_size=200)
    b = sim.render_field([("er", 3), ("nuclear_membrane", 2)], seed=9, field_size=200)
    for name in ("nucleus", "protein"):
        img = getattr(a, name)
        assert img.shape == (200, 200) and img.dtype == np.uint16
        np.testing.assert_array_equal(img, getattr(b, name))
    assert a.nucleus_labels.dtype == np.int32 and a.cell_labels.shape == (200, 200)
    # every nucleus lies inside its own cell
    nuc = a.nucleus_labels > 0
    assert np.array_equal(a.cell_labels[nuc], a.nucleus_labels[nuc])
    # camera offset ~100 ADU, background a few hundred ADU, nuclei much brighter
    bg = a.nucleus[a.cell_labels == 0]
    assert 100 < np.median(bg) < 800
    assert np.median(a.nucleus[nuc]) > 3 * np.median(bg)


def test_field_statistics_look_like_opencell():
    f = sim.render_field(["nucleoplasm"], seed=0, field_size=512)
    ids = np.unique(f.nucleus_labels)
    assert 15 <= len(ids) - 1 <= 70
    areas = np.bincount(f.nucleus_labels.ravel())[1:]
    whole = areas[areas > 0]
    assert 1500 < np.median(whole) < 4500  # px at 0.2 um: ~40-70 px across, like OpenCell HEK293T
    assert f.nucleus.min() >= 50  # offset keeps the floor above zero


def _bg_sub(img: np.ndarray, cells: np.ndarray) -> np.ndarray:
    return img.astype(float) - np.median(img[cells == 0])


def _masks(f: sim.SimulatedField) -> dict[str, np.ndarray]:
    nuc = f.nucleus_labels > 0
    cell = f.cell_labels > 0
    d_in = ndi.distance_transform_edt(nuc)
    d_out = ndi.distance_transform_edt(~nuc)
    edges = np.zeros_like(cell)
    c = f.cell_labels
    for ax in (0, 1):
        diff = np.diff(c, axis=ax) != 0
        sl0 = [slice(None)] * 2
        sl1 = [slice(None)] * 2
        sl0[ax], sl1[ax] = slice(1, None), slice(None, -1)
        edges[tuple(sl0)] |= diff
        edges[tuple(sl1)] |= diff
    d_edge = ndi.distance_transform_edt(~edges)
    contact = np.zeros_like(cell)
    for ax in (0, 1):
        a = np.moveaxis(c, ax, 0)
        both = (a[1:] != a[:-1]) & (a[1:] > 0) & (a[:-1] > 0)
        np.moveaxis(contact, ax, 0)[1:] |= both
        np.moveaxis(contact, ax, 0)[:-1] |= both
    return {
        "nuc": nuc,
        "nuc_core": d_in > 4,
        "cyto": cell & ~nuc,
        "cyto_core": cell & (d_out > 3) & (d_edge > 3),
        "nuc_rim": (d_in <= 2) & nuc | (d_out <= 2) & ~nuc & cell,
        "cell_edge": cell & (d_edge <= 2),
        "contact": ndi.binary_dilation(contact, iterations=2) & cell,
        "periphery": cell & (d_edge <= 7),  # within ~1.4 um of the cell edge
        "perinuclear": cell & (d_out <= 12),  # within ~2.4 um of a nucleus
        "nucleolus": ndi.binary_dilation(f.nucleolus_mask, iterations=1),
        "bg": ~ndi.binary_dilation(cell, iterations=4),  # away from cells (PSF spill)
    }


def _top(sig: np.ndarray, frac: float) -> np.ndarray:
    return sig >= np.quantile(sig, 1 - frac)


LOCALIZATION_CASES = sorted(plates.LOCALIZATIONS)


@pytest.mark.parametrize("loc", LOCALIZATION_CASES)
def test_localization_renders_where_it_should(loc):
    f = sim.render_field([loc], seed=21, field_size=192, expression=3000.0, density=1.3)
    m = _masks(f)
    sig = _bg_sub(f.protein, f.cell_labels)
    total = sig.sum()
    mean = {k: sig[v].mean() for k, v in m.items() if v.any()}
    inside = sig[m["nuc"]].sum() / total
    if "bg" in mean:  # a crowded field may have no background far from cells
        assert mean["bg"] < 0.2 * max(mean["nuc"], mean["cyto"]), "signal should sit in cells"

    if loc in ("nucleoplasm", "chromatin", "nuclear_punctae"):
        assert inside > 0.8
        assert mean["nuc_core"] > 4 * mean["cyto_core"]
    elif loc in ("nucleolus_gc", "nucleolus_fc_dfc"):
        assert inside > 0.7  # the rest: green autofluorescence of the cytoplasm
        top = _top(sig, 0.003)
        assert (top & ndi.binary_dilation(m["nucleolus"], iterations=2)).sum() > 0.8 * top.sum()
        assert sig[m["nucleolus"]].mean() > 4 * sig[m["nuc"] & ~m["nucleolus"]].mean()
    elif loc == "nuclear_membrane":
        assert mean["nuc_rim"] > 3 * mean["nuc_core"]
        assert mean["nuc_rim"] > 3 * mean["cyto_core"]
    elif loc in ("cytoplasmic", "er", "mitochondria", "vesicles", "big_aggregates"):
        assert inside < 0.3
        assert mean["cyto"] > 4 * mean["nuc_core"]
    elif loc == "membrane":
        assert mean["cell_edge"] > 2.5 * mean["cyto_core"]
        assert mean["cell_edge"] > 5 * mean["nuc_core"]
    elif loc == "cell_contact":
        assert mean["contact"] > 2.5 * mean["cyto_core"]
        assert mean["contact"] > 5 * mean["nuc_core"]
        free = m["cell_edge"] & ~m["contact"]
        assert mean["contact"] > 1.5 * sig[free].mean()
    elif loc == "cytoskeleton":
        assert mean["cyto"] > 1.5 * mean["nuc_core"]
        # filaments: much more pixel-scale structure than a diffuse cytoplasm
        diffuse = _bg_sub(
            sim.render_field(
                ["cytoplasmic"], seed=21, field_size=192, expression=3000.0, density=1.3
            ).protein,
            f.cell_labels,
        )
        cv = sig[m["cyto"]].std() / sig[m["cyto"]].mean()
        cv0 = diffuse[m["cyto"]].std() / diffuse[m["cyto"]].mean()
        assert cv > 1.3 * cv0
    elif loc == "focal_adhesions":
        top = _top(sig, 0.01)
        assert (top & m["periphery"]).sum() > 0.7 * top.sum()
    elif loc in ("golgi", "centrosome"):
        top = _top(sig, 0.003 if loc == "centrosome" else 0.01)
        near = ndi.binary_dilation(m["perinuclear"], iterations=2)
        assert (top & near).sum() > 0.8 * top.sum()
        assert (top & m["nuc_core"]).sum() < 0.25 * top.sum()
    else:  # pragma: no cover - a new class must get an assertion
        pytest.fail(f"no expectation written for {loc}")


def test_grades_weight_the_mix():
    strong = sim.render_field([("nucleoplasm", 3), ("cytoplasmic", 1)], seed=2, field_size=160)
    weak = sim.render_field([("nucleoplasm", 1), ("cytoplasmic", 3)], seed=2, field_size=160)
    for f, more_nuclear in ((strong, True), (weak, False)):
        m = _masks(f)
        sig = _bg_sub(f.protein, f.cell_labels)
        ratio = sig[m["nuc_core"]].mean() / sig[m["cyto_core"]].mean()
        assert (ratio > 2) if more_nuclear else (ratio < 0.7)


def test_render_field_rejects_unknown_localization():
    with pytest.raises(ValueError, match="unknown localization"):
        sim.render_field(["nucleus"], seed=0, field_size=64)


# --------------------------------------------------------------------------------------
# panels
# --------------------------------------------------------------------------------------


def test_default_panel():
    panel = load_panel()
    assert len(panel) >= 60
    assert len({w.gene for w in panel}) == len(panel) == len({w.ensg_id for w in panel})
    assert all(re.fullmatch(r"ENSG\d{11}", w.ensg_id) for w in panel)
    covered = {loc.name for w in panel for loc in w.localizations}
    assert covered == set(plates.LOCALIZATIONS)
    assert sum(len(w.localizations) >= 2 for w in panel) >= 15
    genes = {w.gene: w for w in panel}
    assert genes["LMNB1"].ensg_id == "ENSG00000113368"
    assert genes["TOMM20"].localizations[0].name == "mitochondria"
    for w in panel:
        grades = [loc.grade for loc in w.localizations]
        assert grades == sorted(grades, reverse=True) and len(grades) <= 3


def test_default_panel_agrees_with_opencell():
    if not OPENCELL_CSV.is_file():
        pytest.skip(f"OpenCell annotations not found at {OPENCELL_CSV} (shared data folder absent)")
    ref = pd.read_csv(OPENCELL_CSV, dtype=str)
    ids = dict(zip(ref["target_name"], ref["ensg_id"], strict=False))
    mine = pd.read_csv(default_panel_path(), dtype=str)
    shared = mine[mine["target_name"].isin(ids)]
    assert len(shared["target_name"].unique()) >= 60
    assert (shared["ensg_id"] == shared["target_name"].map(ids)).all()


def test_load_opencell_annotations():
    if not OPENCELL_CSV.is_file():
        pytest.skip(f"OpenCell annotations not found at {OPENCELL_CSV} (shared data folder absent)")
    panel = load_panel(OPENCELL_CSV)
    assert len(panel) == 1310
    assert max(len(w.localizations) for w in panel) == 3
    by_gene = {w.gene: w for w in panel}
    # SQSTM1 has four annotations in OpenCell; the weakest is dropped
    sq = by_gene["SQSTM1"].localizations
    assert [x.name for x in sq][0] == "vesicles" and len(sq) == 3 and sq[-1].grade == 2
    assert load_panel(pd.read_csv(OPENCELL_CSV)) == panel


def test_unknown_annotation_names_file_and_field(tmp_path):
    bad = tmp_path / "panel.csv"
    bad.write_text(
        "ensg_id,target_name,annotation_name,annotation_grade\n"
        "ENSG00000113368,LMNB1,nuclear_membrane,3\n"
        "ENSG00000181163,NPM1,nucleolus,3\n"
    )
    with pytest.raises(PanelError) as e:
        load_panel(bad)
    assert (
        str(bad) in str(e.value)
        and "annotation_name" in str(e.value)
        and "nucleolus" in str(e.value)
    )
    assert e.value.field == "annotation_name"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("ensg_id,target_name,annotation_name\nENSG00000113368,LMNB1,er\n", "annotation_grade"),
        ("ensg_id,target_name,annotation_name,annotation_grade\nENSG1,LMNB1,er,3\n", "ensg_id"),
        (
            "ensg_id,target_name,annotation_name,annotation_grade\nENSG00000113368,LMNB1,er,5\n",
            "annotation_grade",
        ),
    ],
)
def test_panel_errors_name_the_field(tmp_path, text, field):
    p = tmp_path / "p.csv"
    p.write_text(text)
    with pytest.raises(PanelError) as e:
        load_panel(p)
    assert e.value.field == field and str(p) in str(e.value)


def test_plate_json_records_simulator(two_plates):
    info = json.loads((two_plates[1] / plates.PLATE_JSON).read_text())
    assert info["simulator"]["plate_index"] == 1
    assert info["simulator"]["panel_size"] == len(load_panel())
    assert set(info["wells"]) == {"A01", "A02", "A03"}
