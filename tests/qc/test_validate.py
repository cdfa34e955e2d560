"""Tests of plate validation: every rule of the four suites, through validate_plate (assets_pkg.core.qc)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from plate_factory import (
    edit_metadata,
    edit_plate_json,
    make_plate,
    read_metadata_text,
    replace_image,
    set_value,
    tree_state,
)

from assets_pkg.core.imaging import plates
from assets_pkg.core.qc.instruments import load_instrument_registry
from assets_pkg.core.qc.report import MAX_EXAMPLES, Failure, ValidationReport
from assets_pkg.core.qc.rules import PROVENANCE_FIELDS
from assets_pkg.core.qc.suites import SUITES
from assets_pkg.core.qc.validate import validate_plate

NOW = datetime(2026, 3, 1, tzinfo=UTC)
F00P = "A01_f00_protein.tif"
F00N = "A01_f00_nucleus.tif"


@pytest.fixture
def plate(tmp_path: Path) -> Path:
    return make_plate(tmp_path, "plate01", wells=2, fields=2, size=32)


def validate(plate_dir: Path, **kw) -> ValidationReport:
    kw.setdefault("now", NOW)
    return validate_plate(plate_dir, **kw)


def find(report: ValidationReport, suite: str, column: str | None = None, file: str | None = None,
         text: str | None = None) -> Failure:
    """The failure of ``suite`` on ``column`` naming ``file`` whose details mention ``text``."""
    for f in report.suite(suite).failures:
        if column is not None and f.column != column:
            continue
        if file is not None and file not in f.files:
            continue
        words = f.message + " ".join(str(e.get("detail", "")) for e in f.examples)
        if text is not None and text not in words:
            continue
        return f
    raise AssertionError(f"no {suite} failure on {column!r} naming {file!r} with {text!r}:\n{report.to_text()}")


def _tiff_bytes(image: np.ndarray) -> bytes:
    import io

    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, image, photometric="minisblack", metadata=None, software=False, datetime=False)
    return buf.getvalue()


# ------------------------------------------------------------------------------------ valid


def test_valid_plate_passes_every_suite(plate: Path) -> None:
    report = validate(plate)
    assert report.success, report.to_text()
    assert [s.name for s in report.suites] == list(SUITES)
    assert all(s.success and s.evaluated > 0 for s in report.suites)
    assert report.plate_id == "plate01" and report.errors == [] and report.failures == []
    assert "passed" in report.to_text().splitlines()[0]
    json.dumps(report.to_dict())


def test_default_now_is_the_current_time(plate: Path) -> None:
    assert validate_plate(plate).success


def test_suites_subset_and_unknown_suite(plate: Path) -> None:
    report = validate(plate, suites=("geometry", "schema"))
    assert [s.name for s in report.suites] == ["schema", "geometry"]
    with pytest.raises(ValueError, match="unknown suite"):
        validate(plate, suites=("schema", "vibes"))


def test_custom_registry_is_used(plate: Path) -> None:
    reg = load_instrument_registry()
    reg["dragonfly-63x"] = {**reg["dragonfly-63x"], "pixel_size_um": [0.5, 1.0]}
    report = validate(plate, registry=reg)
    f = find(report, "provenance", "pixel_size_um", F00P)
    assert len(f.files) == 8 and len(f.examples) == MAX_EXAMPLES


# ------------------------------------------------------------------------------ geometry


def test_corrupt_tiff(plate: Path) -> None:
    replace_image(plate, F00P, np.random.default_rng(1).bytes(3000))
    report = validate(plate)
    assert not report.suite("geometry").success
    find(report, "geometry", "file_name", F00P, "cannot read TIFF")
    assert report.suite("checksums").success  # metadata was updated to the new bytes


def test_truncated_tiff_with_intact_header(plate: Path) -> None:
    data = (plate / F00P).read_bytes()
    replace_image(plate, F00P, data[: len(data) - 100])
    report = validate(plate)
    find(report, "geometry", "file_name", F00P, "truncated")
    assert report.suite("checksums").success


def test_truncated_tiff_without_metadata_update_fails_checksums_too(plate: Path) -> None:
    data = (plate / F00P).read_bytes()
    (plate / F00P).write_bytes(data[: len(data) // 2])
    report = validate(plate)
    find(report, "geometry", "file_name", F00P)
    find(report, "checksums", "file_bytes", F00P)
    find(report, "checksums", "sha256", F00P)


def test_wrong_shape(plate: Path) -> None:
    replace_image(plate, F00P, np.zeros((16, 32), np.uint16))
    report = validate(plate)
    f = find(report, "geometry", "height", F00P, "16x32")
    assert f.examples[0]["height"] == 32 and f.examples[0]["image.height"] == 16
    find(report, "geometry", "file_name", F00P, "common shape 32x32")
    assert len(report.suite("geometry").failures) == 2  # width agrees with metadata


@pytest.mark.parametrize(
    ("image", "column", "text"),
    [
        (np.zeros((32, 32), np.float32), "bit_depth", "float32"),
        (np.zeros((32, 32), np.uint8), "bit_depth", "uint8 pixels but bit_depth 16"),
    ],
)
def test_wrong_dtype(plate: Path, image: np.ndarray, column: str, text: str) -> None:
    replace_image(plate, F00P, image)
    report = validate(plate)
    find(report, "geometry", column, F00P, text)
    assert report.suite("checksums").success


def test_not_2d(plate: Path) -> None:
    replace_image(plate, F00P, np.zeros((3, 32, 32), np.uint16))
    report = validate(plate)
    find(report, "geometry", "file_name", F00P, "not 2-D")


# ------------------------------------------------------------------------------ checksums


def test_missing_channel_file(plate: Path) -> None:
    (plate / F00P).unlink()
    report = validate(plate)
    find(report, "checksums", "file_name", F00P, "file is missing")
    find(report, "geometry", "file_name", F00P, "file is missing")
    assert report.suite("schema").success and report.suite("provenance").success


def test_checksum_mismatch(plate: Path) -> None:
    set_value(plate, F00P, "sha256", "0" * 64)
    report = validate(plate)
    f = find(report, "checksums", "sha256", F00P, "checksum mismatch")
    assert f.files == [F00P]
    assert [s.name for s in report.suites if not s.success] == ["checksums"]


def test_file_bytes_mismatch(plate: Path) -> None:
    set_value(plate, F00P, "file_bytes", 12)
    report = validate(plate)
    find(report, "checksums", "file_bytes", F00P, "recorded 12 bytes")


def test_unlisted_image(plate: Path) -> None:
    (plate / "A09_f00_protein.tif").write_bytes((plate / F00P).read_bytes())
    report = validate(plate)
    f = find(report, "checksums", "file_name", "A09_f00_protein.tif", "not listed")
    assert f.files == ["A09_f00_protein.tif"]


def test_unsafe_file_name_is_not_read(plate: Path) -> None:
    set_value(plate, F00P, "file_name", "../plate01/" + F00P)
    report = validate(plate)
    find(report, "checksums", "file_name", "../plate01/" + F00P, "unsafe file name")
    find(report, "schema", "file_name", "../plate01/" + F00P)


# --------------------------------------------------------------------------------- schema


def test_missing_channel_row(plate: Path) -> None:
    edit_metadata(plate, lambda df: df[df["file_name"] != F00P])
    report = validate(plate)
    find(report, "schema", "channel", F00N, "no row for channel(s) protein")
    find(report, "checksums", "file_name", F00P, "not listed in metadata.csv")


def test_missing_metadata_column(plate: Path) -> None:
    edit_metadata(plate, lambda df: df.drop(columns=["operator"]))
    report = validate(plate)
    f = find(report, "schema", "operator", "metadata.csv", "missing")
    assert f.expectation == "expect_table_columns_to_match_set"
    find(report, "provenance", "operator")
    assert "field 'operator'" in report.to_text()


def test_unexpected_metadata_column(plate: Path) -> None:
    def add(df):
        df["comment"] = "hello"

    edit_metadata(plate, add)
    report = validate(plate)
    find(report, "schema", "comment", "metadata.csv", "unexpected column")
    assert [s.name for s in report.suites if not s.success] == ["schema"]


def test_duplicate_field_rows(plate: Path) -> None:
    import pandas as pd

    edit_metadata(plate, lambda df: pd.concat([df, df[df["file_name"] == F00P]], ignore_index=True))
    report = validate(plate)
    f = find(report, "schema", "field_id", F00P, "duplicate field row")
    assert f.files == [F00P, F00P]
    find(report, "schema", "file_name", F00P, "listed more than once")


@pytest.mark.parametrize(
    ("column", "value", "text"),
    [
        ("field_id", "one", "is not an integer"),
        ("width", "32.5", "is not an integer"),
        ("channel", "brightfield", "is not one of"),
        ("well", "Q99", "not a well name"),
        ("field_id", "-1", "negative"),
        ("gene", "TP53", "differs from plate.json"),
        ("ensg_id", "ENSG00000000001", "differs from plate.json"),
    ],
)
def test_schema_values(plate: Path, column: str, value: str, text: str) -> None:
    set_value(plate, F00P, column, value)
    report = validate(plate, suites=("schema",))
    find(report, "schema", column, F00P, text)


@pytest.mark.parametrize("bad_id", ["plate/01", "../plate01", "..", "plate01\\x"])
def test_unsafe_plate_id_in_metadata(plate: Path, bad_id: str) -> None:
    set_value(plate, F00P, "plate_id", bad_id)
    report = validate(plate, suites=("schema",))
    find(report, "schema", "plate_id", F00P, "not a safe plate id")
    find(report, "schema", "plate_id", F00P, "differs from the plate's id 'plate01'")


def test_plate_id_of_another_plate(plate: Path) -> None:
    set_value(plate, F00P, "plate_id", "plate02")
    report = validate(plate)
    f = find(report, "schema", "plate_id", F00P, "differs")
    assert f.examples[0]["plate_id"] == "plate02"


@pytest.mark.parametrize("bad_id", ["plate/01", "../plate01", ".."])
def test_unsafe_plate_id_in_plate_json(plate: Path, bad_id: str) -> None:
    edit_plate_json(plate, lambda info: info.update(plate_id=bad_id))
    report = validate(plate)
    assert not report.success and report.plate_id is None
    assert len(report.errors) == 1 and "plate.json" in report.errors[0] and "plate_id" in report.errors[0]
    assert all(not s.success and s.evaluated == 0 for s in report.suites)
    assert all(f.files == ["plate.json"] for f in report.failures)


# ----------------------------------------------------------------------------- provenance


def test_blank_operator(plate: Path) -> None:
    set_value(plate, F00P, "operator", "   ")
    report = validate(plate)
    f = find(report, "provenance", "operator", F00P, "empty")
    assert f.examples == [{"file_name": F00P, "line": 3, "operator": "   ", "detail": "provenance is empty"}]
    assert [s.name for s in report.suites if not s.success] == ["provenance"]


def test_every_provenance_field_is_required(tmp_path: Path) -> None:
    plate = make_plate(tmp_path, wells=4, fields=2, size=16)  # 16 files: blank one field in each
    names = list(read_metadata_text(plate)["file_name"])
    blanked = dict(zip(names, PROVENANCE_FIELDS, strict=False))

    def blank(df):
        for name, column in blanked.items():
            df.loc[df["file_name"] == name, column] = ""

    edit_metadata(plate, blank)
    report = validate(plate, suites=("provenance",))
    for name, column in blanked.items():
        f = find(report, "provenance", column, name)
        assert name in f.files


def test_unknown_instrument(plate: Path) -> None:
    set_value(plate, F00P, "instrument", "hubble")
    report = validate(plate)
    find(report, "provenance", "instrument", F00P, "unknown instrument 'hubble'")


def test_pixel_size_out_of_range(plate: Path) -> None:
    set_value(plate, F00P, "pixel_size_um", 2.5)
    report = validate(plate)
    f = find(report, "provenance", "pixel_size_um", F00P)
    assert f.files == [F00P] and f.examples[0]["pixel_size_um"] == 2.5
    line = "plate01/A01_f00_protein.tif: [provenance] field 'pixel_size_um': 2.5 outside dragonfly-63x bounds [0.05, 0.3]"
    assert line in report.to_text().splitlines()


@pytest.mark.parametrize(
    ("column", "value", "text"),
    [
        ("numerical_aperture", "0.9", "outside dragonfly-63x bounds [1.4, 1.49]"),
        ("excitation_nm", "900", "outside dragonfly-63x bounds"),
        ("emission_nm", "300", "outside dragonfly-63x bounds"),
        ("bit_depth", "14", "not among dragonfly-63x bit depths"),
        ("objective", "40x/1.1 water", "not among dragonfly-63x objectives"),
        ("exposure_ms", "0", "is not > 0"),
        ("exposure_ms", "5000", "above dragonfly-63x maximum 2000"),
        ("ensg_id", "ENSG123", "not an Ensembl gene id"),
        ("pixel_size_um", "abc", "is not a number"),
    ],
)
def test_provenance_bounds(plate: Path, column: str, value: str, text: str) -> None:
    set_value(plate, F00P, column, value)
    report = validate(plate, suites=("provenance",))
    find(report, "provenance", column, F00P, text)


def test_acquisition_time_in_the_future(plate: Path) -> None:
    set_value(plate, F00P, "acquisition_time", "2026-06-01T00:00:00Z")
    report = validate(plate)
    find(report, "provenance", "acquisition_time", F00P, "in the future")
    # the whole plate is in the future of a `now` before its acquisition
    early = validate(plate, now=datetime(2026, 1, 1))
    assert len(find(early, "provenance", "acquisition_time", F00N, "in the future").files) == 8


def test_acquisition_time_before_2000(plate: Path) -> None:
    set_value(plate, F00P, "acquisition_time", "1999-12-31T23:59:59Z")
    find(validate(plate), "provenance", "acquisition_time", F00P, "before 2000")


@pytest.mark.parametrize(
    "value",
    ["yesterday", "2026-01-15 09:30:00Z", "2026-01-15T09:30:00", "2026-13-45T00:00:00Z",
     "2026-01-15T09:30:00+02:00", "15/01/2026"],
)
def test_acquisition_time_unparsable(plate: Path, value: str) -> None:
    set_value(plate, F00P, "acquisition_time", value)
    report = validate(plate, suites=("provenance",))
    find(report, "provenance", "acquisition_time", F00P, "not an ISO 8601 time")


def test_acquisition_time_offset_forms(plate: Path) -> None:
    set_value(plate, F00P, "acquisition_time", "2026-01-15T09:30:00.123+00:00")
    set_value(plate, F00N, "acquisition_time", "2026-01-15T09:30Z")
    assert validate(plate).success


# ------------------------------------------------------------------------- unreadable plates


def test_empty_plate_header_only(plate: Path) -> None:
    edit_metadata(plate, lambda df: df.iloc[0:0])
    report = validate(plate)
    assert not report.success and report.plate_id == "plate01"
    assert "empty plate" in report.errors[0] and "metadata.csv" in report.errors[0]
    assert all(not s.success for s in report.suites) and len(report.failures) == len(SUITES)


def test_non_utf8_metadata(plate: Path) -> None:
    p = plate / plates.METADATA_CSV
    p.write_bytes(p.read_bytes().replace(b"test-operator", b"op\xe9rateur", 1))
    report = validate(plate)
    assert not report.success
    assert "metadata.csv" in report.errors[0] and "UTF-8" in report.errors[0]
    assert all(f.files == ["metadata.csv"] for f in report.failures)
    assert "metadata.csv" in report.to_text()


@pytest.mark.parametrize("content", [None, b"", b"  \n"])
def test_missing_or_empty_metadata(plate: Path, content: bytes | None) -> None:
    p = plate / plates.METADATA_CSV
    p.unlink() if content is None else p.write_bytes(content)
    report = validate(plate)
    assert not report.success and "metadata.csv" in report.errors[0]
    json.dumps(report.to_dict())


def test_missing_plate_json(plate: Path) -> None:
    (plate / plates.PLATE_JSON).unlink()
    report = validate(plate)
    assert not report.success and report.plate_id is None
    assert "plate.json is missing" in report.errors[0]
    assert report.to_text().splitlines()[1].startswith("plate01: error:")


# ------------------------------------------------------------------------------- read-only


def test_validation_leaves_folder_untouched(tmp_path: Path) -> None:
    good = make_plate(tmp_path, "good", size=32)
    bad = make_plate(tmp_path, "bad", size=32, seed=1)
    data = (bad / F00P).read_bytes()
    (bad / F00P).write_bytes(data[: len(data) // 2])
    set_value(bad, F00N, "pixel_size_um", 9)
    (bad / "A01_f01_protein.tif").unlink()
    before = tree_state(tmp_path)
    assert validate(good).success
    assert not validate(bad).success
    assert tree_state(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good"]


def test_report_text_and_dict(plate: Path) -> None:
    for name in read_metadata_text(plate)["file_name"]:
        set_value(plate, name, "operator", "")
    report = validate(plate)
    text = report.to_text()
    assert text.splitlines()[0].startswith("plate plate01") and "provenance FAILED (1)" in text
    assert "same problem in 3 more file(s)" in text
    d = report.to_dict()
    assert d["success"] is False and json.loads(json.dumps(d)) == d
    f = d["suites"][1]["failures"][0]
    assert f["column"] == "operator" and len(f["files"]) == 8 and len(f["examples"]) == 5
