"""Per-field image quality (assets_pkg.core.qc.fields): the measures on small hand-made arrays, and
blank, saturated, out-of-focus and debris fields of a simulated plate found, excluded or blocking."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plate_factory import folder_state, replace_image
from scipy import ndimage as ndi

from assets_pkg.core.imaging import plates
from assets_pkg.core.imaging.io import read_image
from assets_pkg.core.imaging.simulator import simulate_plates
from assets_pkg.core.imaging.simulator.optics import camera_image
from assets_pkg.core.qc.config import PlateQCConfig
from assets_pkg.core.qc.fields import assess_fields, block_factor, image_stats, noise_sigma
from assets_pkg.core.qc.validate import field_defects, validate_plate

NOW = datetime(2026, 3, 1, tzinfo=UTC)
RNG = np.random.default_rng(7)


def _noise(shape=(128, 128), level=140.0, rng=RNG) -> np.ndarray:
    """A blank camera image: offset, shot and read noise around ``level`` ADU (uint16)."""
    return camera_image(rng, np.full(shape, level, np.float32))


def _blobs(shape=(128, 128), n=12, radius=6.0, amplitude=2000.0, rng=RNG) -> np.ndarray:
    img = np.zeros(shape, np.float32)
    ys, xs = rng.integers(10, shape[0] - 10, n), rng.integers(10, shape[1] - 10, n)
    img[ys, xs] = 1.0
    img = ndi.gaussian_filter(img, radius) * (2 * np.pi * radius**2) * amplitude
    return camera_image(rng, img + 140)


# ------------------------------------------------------------------------------ measures


def test_noise_sigma_is_the_white_noise_level_and_ignores_gradients() -> None:
    x = RNG.normal(0, 7.0, (256, 256)) + np.linspace(0, 500, 256)[None, :]
    assert noise_sigma(x) == pytest.approx(7.0, rel=0.05)


def test_blank_scores_near_one_structure_far_above() -> None:
    assert image_stats(np.full((64, 64), 100, np.uint16)).signal_snr == 0.0  # constant
    blank = image_stats(_noise())
    assert 0.6 < blank.signal_snr < 1.6
    hot = _noise()
    hot[10, 10] = 65535  # a hot pixel is not a signal
    assert image_stats(hot).signal_snr < 2
    assert image_stats(_blobs()).signal_snr > 20


def test_saturated_fraction_counts_pixels_at_full_scale() -> None:
    img = np.full((100, 100), 200, np.uint16)
    img[:5] = 4095  # 5 % at the 12-bit maximum
    assert image_stats(img, full_scale=4095).saturated_fraction == pytest.approx(0.05)
    assert image_stats(img).saturated_fraction == 0.0  # uint16 maximum by default
    img[:1] = 65535
    assert image_stats(img).saturated_fraction == pytest.approx(0.01)


def test_focus_drops_with_blur() -> None:
    sharp = _blobs(n=30, radius=2.0)
    blurred = camera_image(RNG, ndi.gaussian_filter(sharp.astype(np.float32), 5.0))
    assert image_stats(blurred).focus < 0.1 * image_stats(sharp).focus


def test_bright_extent_finds_a_long_bright_fibre() -> None:
    img = _blobs(shape=(200, 200), n=20).astype(np.float32)
    clean = image_stats(img.astype(np.uint16))
    img[100:103, 20:180] += 20000  # a 160 px fibre
    fibre = image_stats(img.astype(np.uint16))
    assert fibre.bright_extent_px == pytest.approx(160, abs=6) and clean.bright_extent_px < 30


def test_a_large_image_is_measured_on_block_means_with_the_same_meaning(monkeypatch) -> None:
    """Above QC_GRID px the band-passes run on 2 x 2 block means (a quarter of the pixels, so cheap):
    noise still the full-resolution camera noise, blank still about 1, lengths in full-res px."""
    rng = np.random.default_rng(11)
    shape = (1024, 1024)
    assert block_factor(shape) == 2 and block_factor((512, 512)) == 1 and block_factor((1024, 4096)) == 4
    filtered: list[tuple[int, ...]] = []
    gaussian = ndi.gaussian_filter
    monkeypatch.setattr(ndi, "gaussian_filter", lambda a, *k, **kw: filtered.append(a.shape) or gaussian(a, *k, **kw))
    blank = _noise(shape, rng=rng)
    stats = image_stats(blank)
    assert filtered and max(filtered) <= (512, 512)  # no band-pass at full resolution
    monkeypatch.undo()
    assert stats.noise == pytest.approx(noise_sigma(blank), rel=0.03)
    assert 0.6 < stats.signal_snr < 1.6
    hot = blank.copy()
    hot[100, 101] = 65535
    assert image_stats(hot).signal_snr < 2
    blobs = _blobs(shape, n=60, radius=4.0, rng=rng)
    assert image_stats(blobs).signal_snr > 20
    fibre = blobs.astype(np.float32)
    fibre[500:503, 100:420] += 20000  # a 320 px fibre
    long = image_stats(np.clip(fibre, 0, 65535).astype(np.uint16))
    assert long.bright_extent_px == pytest.approx(320, abs=8) and image_stats(blobs).bright_extent_px < 60
    sharp = _blobs(shape, n=120, radius=2.0, rng=rng)
    blurred = camera_image(rng, ndi.gaussian_filter(sharp.astype(np.float32), 5.0))
    assert image_stats(blurred).focus < 0.1 * image_stats(sharp).focus


def test_assess_fields_decides_per_kind_and_needs_enough_fields_for_focus() -> None:
    imgs = {("A01", 0): _blobs(n=30, radius=2.0), ("A01", 1): _blobs(n=30, radius=2.0),
            ("A02", 0): _blobs(n=30, radius=2.0), ("A02", 1): _noise()}
    blurred = camera_image(RNG, ndi.gaussian_filter(_blobs(n=30, radius=2.0).astype(np.float32), 5.0))
    rows = [{"well": w, "field_id": f, "channel": "nucleus", "file_name": f"{w}_f{f:02d}_nucleus.tif",
             "pixel_size_um": 0.2} for (w, f) in [*imgs, ("A03", 0)]]
    table = pd.DataFrame(rows)
    stats = [image_stats(i) for i in [*imgs.values(), blurred]]
    out = assess_fields(table, stats, PlateQCConfig())
    assert out["defect.blank"].tolist() == [False, False, False, True, False]
    assert out["defect.out_of_focus"].tolist() == [False, False, False, False, True]  # blank not judged
    assert np.isnan(out["focus_ratio"].iloc[3]) and out["focus_ratio"].iloc[4] < 0.25
    assert "blank nucleus channel" in out["detail.blank"].iloc[3]
    # with two usable fields there is no plate to compare with: focus not judged
    few = assess_fields(table.iloc[[0, 4]].reset_index(drop=True), [stats[0], stats[4]], PlateQCConfig())
    assert not few["defect.out_of_focus"].any() and few["focus_ratio"].isna().all()


# ------------------------------------------------------------------------------ a simulated plate

#: What seed 56 puts in 3 wells x 3 fields at rate 0.7 (defects.csv): its debris is a 47 px fibre,
#: shorter than one 15 µm (75 px) nucleus, so not debris by the rule; the test adds a long one.
EXPECTED = {
    ("A01", 0, "saturated"),
    ("A01", 1, "out_of_focus"),
    ("A02", 0, "blank"),
    ("A02", 1, "saturated"),
    ("A02", 2, "blank"),
}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("qcsim")
    (plate,) = simulate_plates(out, n_plates=1, seed=56, wells=3, fields_per_well=3, field_size=256,
                               defects=True, defect_rate=0.7)
    return plate


@pytest.fixture
def plate(simulated: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "plates" / simulated.name
    shutil.copytree(simulated, dst)
    return dst


def _truth(plate: Path) -> set[tuple[str, int, str]]:
    d = pd.read_csv(plate / plates.DEFECTS_CSV)
    return {(w, int(f), k) for w, f, k in zip(d["well"], d["field_id"], d["defect"], strict=True)}


def test_simulated_defects_are_found_and_excluded_by_default(plate: Path) -> None:
    assert {t for t in _truth(plate) if t[2] != "debris"} == EXPECTED  # blank nucleus and blank protein included
    before = folder_state(plate)
    report = validate_plate(plate, now=NOW)
    assert report.success, report.to_text()
    assert {(d.well, d.field_id, d.kind) for d in report.defects} == EXPECTED
    assert {(d.kind, d.channel) for d in report.defects if d.kind == "blank"} == {("blank", "nucleus"),
                                                                                   ("blank", "protein")}
    assert report.excluded_fields == sorted({(w, f) for w, f, _ in EXPECTED})
    text = report.to_text()
    assert ("plate01/A02_f00_nucleus.tif: WARNING [images] field 'signal_snr': blank nucleus channel" in text
            and "field A02 f00 excluded from ingest" in text)
    assert "plate01/A01_f00_protein.tif: WARNING [images] field 'saturated_fraction'" in text
    assert "plate01/A01_f01_nucleus.tif: WARNING [images] field 'focus_ratio'" in text
    assert report.to_dict()["excluded_fields"][0] == {
        "well": "A01", "field_id": 0, "defects": ["saturated"], "files": ["A01_f00_protein.tif"],
        "details": [report.defects[0].detail]}
    assert field_defects(plate) == report.defects  # the same decision without the suites
    assert folder_state(plate) == before


def test_block_action_fails_the_images_suite_naming_file_and_field(plate: Path) -> None:
    report = validate_plate(plate, now=NOW, qc=PlateQCConfig(blank="block", saturated="warn"))
    assert not report.success and report.suite("images").success is False
    assert [s.name for s in report.suites if not s.success] == ["images"]
    (f,) = report.suite("images").failures
    assert f.column == "signal_snr" and sorted(f.files) == ["A02_f00_nucleus.tif", "A02_f02_protein.tif"]
    assert "plate01/A02_f00_nucleus.tif: [images] field 'signal_snr': blank nucleus channel" in report.to_text()
    # saturated fields are kept (warn), the out-of-focus one is still excluded
    assert report.excluded_fields == [("A01", 1)]
    assert "field A01 f00 kept" not in report.to_text() and "; kept" in report.to_text()


def test_long_bright_debris_is_found(plate: Path) -> None:
    name = "A03_f00_protein.tif"
    img = read_image(plate / name).astype(np.float32)
    img[120:123, 40:200] += 20000  # a 160 px (32 µm) fibre, two nucleus diameters
    replace_image(plate, name, np.clip(img, 0, 65535).astype(np.uint16))
    report = validate_plate(plate, now=NOW, suites=("images",))
    (d,) = [d for d in report.defects if d.kind == "debris"]
    assert (d.well, d.field_id, d.file_name, d.measure) == ("A03", 0, name, "debris_nuclei")
    assert d.value == pytest.approx(160 / 75, rel=0.1) and "debris" in d.detail
