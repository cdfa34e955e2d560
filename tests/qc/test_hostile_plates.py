"""Hostile plate folders (issue 10, item 5): every rejection names the file and the field, leaves the
raw folder untouched and never hangs or decodes/reads what it should not."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from plate_factory import (
    call_with_fifo_timeout,
    folder_state,
    forbid_decoding,
    huge_header_tiff,
    make_fifo,
    make_plate,
    replace_image,
    set_value,
)

from assets_pkg.cli import main
from assets_pkg.core.imaging import plates
from assets_pkg.core.qc.config import PlateQCConfig
from assets_pkg.core.qc.report import ValidationReport
from assets_pkg.core.qc.validate import validate_plate
from assets_pkg.core.store.frame_store import FrameStore

NOW = datetime(2026, 3, 1, tzinfo=UTC)
F00P = "A01_f00_protein.tif"


@pytest.fixture
def plate(tmp_path: Path) -> Path:
    return make_plate(tmp_path / "plates", "plate01", wells=2, fields=2, size=32)


def validate(plate_dir: Path, **kw) -> ValidationReport:
    kw.setdefault("now", NOW)
    return validate_plate(plate_dir, **kw)


def failure(report: ValidationReport, suite: str, column: str, file: str, text: str):
    """The failure of ``suite`` on ``column`` naming ``file`` whose message or details contain ``text``."""
    for f in report.suite(suite).failures:
        words = f.message + " ".join(str(e.get("detail", "")) for e in f.examples)
        if f.column == column and file in f.files and text in words:
            return f
    raise AssertionError(f"no {suite} failure on {column!r} naming {file!r} with {text!r}:\n{report.to_text()}")


def line_naming(report: ValidationReport, file: str, field: str, text: str) -> str:
    """The report line naming the plate's ``file`` and ``field 'field'`` that contains ``text``."""
    for line in report.to_text().splitlines():
        if f"plate01/{file}:" in line and f"field '{field}'" in line and text in line:
            return line
    raise AssertionError(f"no line naming {file} and field {field!r} with {text!r}:\n{report.to_text()}")


# ------------------------------------------------------------------------------------ FIFO


def test_fifo_named_like_an_image_does_not_hang_validate(plate: Path) -> None:
    (plate / F00P).unlink()
    fifo = make_fifo(plate / F00P)
    before = folder_state(plate)
    report = call_with_fifo_timeout(lambda: validate(plate), [fifo], timeout=120)
    assert not report.success
    failure(report, "checksums", "file_name", F00P, "not a regular file (a FIFO (named pipe))")
    failure(report, "geometry", "file_name", F00P, "not a regular file")
    line_naming(report, F00P, "file_name", "FIFO")
    assert folder_state(plate) == before


def test_fifo_does_not_hang_ingest(plate: Path, tmp_path: Path, capsys) -> None:
    (plate / F00P).unlink()
    fifo = make_fifo(plate / F00P)
    before = folder_state(plate)
    store = tmp_path / "store"
    rc = call_with_fifo_timeout(lambda: main(["ingest", str(plate), "--store", str(store)]), [fifo], timeout=120)
    err = capsys.readouterr().err
    assert rc == 1 and "REFUSED" in err and f"plate01/{F00P}" in err and "field 'file_name'" in err and "FIFO" in err
    assert FrameStore(str(store)).plate_ids() == []
    assert folder_state(plate) == before


# ------------------------------------------------------------------------------------ symlink


def test_symlink_is_refused_and_its_target_never_echoed(plate: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"QZXJ-private: do not print\n")
    (plate / F00P).unlink()
    (plate / F00P).symlink_to(secret)
    before, secret_before = folder_state(plate), secret.read_bytes()
    report = validate(plate)
    assert not report.success
    failure(report, "checksums", "file_name", F00P, "symbolic link")
    line_naming(report, F00P, "file_name", "symbolic link")
    everything = report.to_text() + json.dumps(report.to_dict())
    assert "QZXJ" not in everything and "private" not in everything
    assert folder_state(plate) == before and secret.read_bytes() == secret_before


def test_symlinked_metadata_is_refused(plate: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.csv"
    real.write_bytes((plate / plates.METADATA_CSV).read_bytes())
    (plate / plates.METADATA_CSV).unlink()
    (plate / plates.METADATA_CSV).symlink_to(real)
    report = validate(plate)
    assert not report.success and "metadata.csv is a symbolic link" in report.errors[0]
    assert str(plate / plates.METADATA_CSV) in report.errors[0] and "field 'file_name'" in report.errors[0]


# ------------------------------------------------------------------------------------ huge header


def test_huge_declared_tiff_is_not_decoded(plate: Path, monkeypatch) -> None:
    data = huge_header_tiff(plate.parent / "huge.tif").read_bytes()
    replace_image(plate, F00P, data)  # metadata still says 32 x 32
    before = folder_state(plate)
    attempts = forbid_decoding(monkeypatch)
    report = validate(plate)
    assert attempts == []
    failure(report, "geometry", "height", F00P, "image shape 100000x100000 but metadata height 32")
    assert folder_state(plate) == before


def test_huge_declared_tiff_matching_its_metadata_hits_the_limit(plate: Path, monkeypatch) -> None:
    replace_image(plate, F00P, huge_header_tiff(plate.parent / "huge.tif").read_bytes())
    set_value(plate, F00P, "height", 100_000)
    set_value(plate, F00P, "width", 100_000)
    attempts = forbid_decoding(monkeypatch)
    report = validate(plate)
    assert attempts == []
    failure(report, "geometry", "file_name", F00P, "declares 10,000,000,000 pixels per plane, above the limit of "
                                                    "268,435,456; not decoded")
    # the limit is configurable
    attempts.clear()
    small = validate(plate, qc=PlateQCConfig(image_max_pixels=32 * 32 - 1))
    failure(small, "geometry", "file_name", "A01_f00_nucleus.tif", "above the limit of 1,023")
    assert attempts == []


# ------------------------------------------------------------------------------------ bit depth


@pytest.mark.parametrize(("top", "ok"), [(12012, False), (4095, True)])
def test_declared_bit_depth_is_enforced(plate: Path, top: int, ok: bool) -> None:
    img = np.full((32, 32), 100, np.uint16)
    img[5, 7] = top
    replace_image(plate, F00P, img)
    set_value(plate, F00P, "bit_depth", 12)
    report = validate(plate, suites=("geometry",))
    assert report.success is ok
    if not ok:
        failure(report, "geometry", "bit_depth", F00P, "maximum pixel value 12012 does not fit bit_depth 12 "
                                                       "(values must be below 4096)")
        line_naming(report, F00P, "bit_depth", "12012")


# ------------------------------------------------------------------------------------ metadata size


def test_huge_metadata_is_refused_before_reading(plate: Path, tmp_path: Path, capsys) -> None:
    meta = plate / plates.METADATA_CSV
    os.truncate(meta, 2**30)  # sparse: 1 GiB claimed, nothing written
    before = folder_state(plate)
    t0 = time.perf_counter()
    report = validate(plate)
    assert time.perf_counter() - t0 < 30
    assert not report.success
    assert report.errors == [f"{meta}: metadata.csv is 1,073,741,824 bytes, above the limit of 268,435,456 bytes "
                             "(max_bytes); not read"]
    assert all(f.files == ["metadata.csv"] for f in report.failures)
    rc = main(["ingest", str(plate), "--store", str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert rc == 1 and "REFUSED" in err and "metadata.csv is 1,073,741,824 bytes" in err
    assert main(["validate", str(plate)]) == 1
    assert "metadata.csv is 1,073,741,824 bytes, above the limit" in capsys.readouterr().out
    assert folder_state(plate) == before


def test_metadata_row_limit_is_configurable(plate: Path) -> None:
    report = validate(plate, qc=PlateQCConfig(metadata_max_rows=7))
    assert not report.success
    assert "metadata.csv has 8 lines of rows, above the limit of 7 (max_rows); not parsed" in report.errors[0]
    assert validate(plate, qc=PlateQCConfig(metadata_max_rows=8)).success
