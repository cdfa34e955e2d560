"""The image reader and writer (assets_pkg.core.imaging.io) on small hand-made files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from plate_factory import (
    call_with_fifo_timeout,
    forbid_decoding,
    huge_header_png,
    huge_header_tiff,
    make_fifo,
)

from assets_pkg.core.errors import CellSetError, ImageFormatError, PlateFormatError
from assets_pkg.core.imaging.io import (
    DEFAULT_LIMITS,
    ImageInfo,
    ImageLimits,
    inspect_image,
    read_array,
    read_image,
    write_tiff,
)

IMG8 = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
IMG16 = np.arange(24, dtype=np.uint16).reshape(4, 6) * 2000


def _raises(fn, path: Path, match: str, field: str | None = None) -> ImageFormatError:
    """``fn(path)`` raises an ImageFormatError naming ``path`` (and ``field``)."""
    with pytest.raises(ImageFormatError, match=match) as e:
        fn(path)
    assert e.value.path == str(path) and str(path) in str(e.value)
    assert e.value.field == field
    return e.value


@pytest.mark.parametrize("image", [IMG8, IMG16], ids=["8-bit", "16-bit"])
def test_tiff_round_trip_and_header(tmp_path, image):
    p = tmp_path / "x.tif"
    write_tiff(p, image)
    got = read_image(p)
    assert got.dtype == image.dtype and got.shape == (4, 6)
    np.testing.assert_array_equal(got, image)
    bits = image.dtype.itemsize * 8
    assert inspect_image(p) == ImageInfo("tiff", (4, 6), image.dtype.name, bits, 1)
    assert inspect_image(p, data=p.read_bytes(), verify=True) == inspect_image(p)


@pytest.mark.parametrize("image", [IMG8, IMG16], ids=["8-bit", "16-bit"])
def test_png_round_trip_and_header(tmp_path, image):
    p = tmp_path / "x.png"
    iio.imwrite(p, image)
    got = read_image(p)
    assert got.dtype == image.dtype
    np.testing.assert_array_equal(got, image)
    info = inspect_image(p)
    assert info == ImageInfo("png", (4, 6), image.dtype.name, image.dtype.itemsize * 8, 1)
    assert info.ndim == 2


def test_rgb_png_with_equal_channels_reads_as_its_first_channel(tmp_path):
    grey = np.repeat(IMG8[..., None], 3, axis=2)
    iio.imwrite(tmp_path / "g.png", grey)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), IMG8)
    assert inspect_image(tmp_path / "g.png").shape == (4, 6, 3)
    assert read_array(tmp_path / "g.png").shape == (4, 6, 3)  # as stored
    rgba = np.concatenate([grey, np.full((4, 6, 1), 255, np.uint8)], axis=2)
    iio.imwrite(tmp_path / "a.png", rgba)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), IMG8)


def test_colour_png_is_refused(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 5
    iio.imwrite(tmp_path / "c.png", rgb)
    e = _raises(read_image, tmp_path / "c.png", "single-channel 2-D image", field="shape")
    # both rooms' callers catch it as before
    assert isinstance(e, PlateFormatError) and isinstance(e, CellSetError)


def test_stack_is_refused_but_inspected(tmp_path):
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, np.zeros((3, 4, 6), np.uint16), photometric="minisblack")
    _raises(read_image, p, r"got shape \(3, 4, 6\)", field="shape")
    info = inspect_image(p)
    assert (info.shape, info.pages, info.ndim) == ((3, 4, 6), 3, 3)


def test_shape_and_dtype_expectations(tmp_path):
    p = tmp_path / "f.tif"
    write_tiff(p, np.zeros((4, 6), np.float32))
    assert read_image(p).dtype == np.float32  # any integer or float by default
    _raises(lambda q: read_image(q, dtypes=("uint8", "uint16")), p, "expected uint8 or uint16 pixels, got float32",
            field="dtype")
    write_tiff(p, IMG16)
    _raises(lambda q: read_image(q, expect_shape=(6, 4)), p, "differs from metadata", field="height/width")
    tifffile.imwrite(tmp_path / "b.tif", np.ones((4, 6), bool))
    _raises(read_image, tmp_path / "b.tif", "unsupported pixel type bool", field="dtype")


def test_missing_file(tmp_path):
    for fn in (read_image, read_array, inspect_image):
        _raises(fn, tmp_path / "nope.tif", "image file is missing", field="file_name")


def test_corrupt_files_name_the_file(tmp_path):
    junk = np.random.default_rng(0).bytes(300)
    (tmp_path / "junk.tif").write_bytes(junk)
    for fn in (read_image, inspect_image):
        _raises(fn, tmp_path / "junk.tif", "cannot read TIFF")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + junk)
    _raises(read_image, tmp_path / "junk.png", "cannot read PNG")
    _raises(inspect_image, tmp_path / "junk.png", "cannot read PNG")


def test_truncated_tiff(tmp_path):
    p = tmp_path / "t.tif"
    write_tiff(p, IMG16)
    data = p.read_bytes()
    p.write_bytes(data[:-10])
    _raises(inspect_image, p, "truncated TIFF: image data ends at byte")
    with pytest.raises(ImageFormatError):
        read_image(p)


def test_header_only_unless_verify(tmp_path):
    p = tmp_path / "z.tif"
    tifffile.imwrite(p, np.random.default_rng(1).integers(0, 60000, (64, 64), dtype=np.uint16),
                     compression="zlib", photometric="minisblack")
    with tifffile.TiffFile(p) as tf:
        start = tf.pages[0].dataoffsets[0]
    data = bytearray(p.read_bytes())
    data[start: start + 64] = bytes(64)  # same size, compressed stream broken
    p.write_bytes(bytes(data))
    assert inspect_image(p).shape == (64, 64)  # the header is intact
    _raises(lambda q: inspect_image(q, verify=True), p, "cannot read TIFF")
    _raises(lambda q: inspect_image(q, data=bytes(data), verify=True), p, "cannot read TIFF")


def test_non_image_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello, not an image\n")
    for fn in (read_image, inspect_image):
        _raises(fn, tmp_path / "notes.txt", "not a TIFF or PNG image", field="file_name")
    (tmp_path / "notes.png").write_text("hello, not an image\n")
    _raises(read_image, tmp_path / "notes.png", "cannot read PNG")


def test_format_comes_from_the_bytes(tmp_path):
    write_tiff(tmp_path / "really_tiff.png", IMG16)
    np.testing.assert_array_equal(read_image(tmp_path / "really_tiff.png"), IMG16)
    assert inspect_image(tmp_path / "really_tiff.png").format == "tiff"


def test_write_tiff_is_byte_reproducible(tmp_path):
    a = np.arange(12, dtype=np.uint16).reshape(3, 4)
    write_tiff(tmp_path / "a.tif", a, description="x")
    write_tiff(tmp_path / "b.tif", a.copy(), description="x")
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()
    # pinned: plate and cell simulator outputs are DVC-pinned by their hashes
    digest = hashlib.sha256((tmp_path / "a.tif").read_bytes()).hexdigest()
    assert digest == "7bdc6e416ca7bcc3d60c019214d330580c33e2fd8a80f2009486fa6142f793d7"


# ------------------------------------------------------------------------------ hostile files


@pytest.mark.parametrize("make", [huge_header_tiff, huge_header_png], ids=["tiff", "png"])
def test_huge_declared_size_is_refused_before_decoding(tmp_path, monkeypatch, make):
    p = make(tmp_path / ("huge.tif" if make is huge_header_tiff else "huge.png"))
    assert p.stat().st_size < 2000  # 100000 x 100000 uint16 = 18.6 GiB once decoded
    attempts = forbid_decoding(monkeypatch)
    for fn in (read_array, read_image, lambda q: inspect_image(q, verify=True),
               lambda q: inspect_image(q, data=q.read_bytes(), verify=True)):
        _raises(fn, p, "declares 10,000,000,000 pixels per plane, above the limit of 268,435,456", field="shape")
    assert attempts == []
    assert inspect_image(p).shape == (100_000, 100_000)  # the header alone is fine to describe


def test_image_limits_are_configurable(tmp_path):
    p = tmp_path / "x.tif"
    write_tiff(p, IMG16)
    assert read_image(p, limits=ImageLimits(max_plane_pixels=24)).shape == (4, 6)
    _raises(lambda q: read_image(q, limits=ImageLimits(max_plane_pixels=23)), p, "above the limit of 23",
            field="shape")
    _raises(lambda q: read_array(q, limits=ImageLimits(max_bytes=47)), p, "48 bytes of pixels", field="shape")
    assert DEFAULT_LIMITS.max_plane_pixels == 2**28


def test_expected_shape_is_checked_on_the_header_before_decoding(tmp_path, monkeypatch):
    p = huge_header_tiff(tmp_path / "f.tif", height=2048, width=2048)  # under the limit, not what metadata says
    attempts = forbid_decoding(monkeypatch)
    _raises(lambda q: read_image(q, expect_shape=(64, 64)), p, "differs from metadata", field="height/width")
    assert attempts == []


def test_fifo_named_like_an_image_is_refused_without_blocking(tmp_path):
    fifo = make_fifo(tmp_path / "A01_f00_nucleus.tif")
    for fn in (read_array, read_image, inspect_image):
        with pytest.raises(ImageFormatError, match=r"not a regular file \(a FIFO") as e:
            call_with_fifo_timeout(lambda fn=fn: fn(fifo), [fifo], timeout=10)
        assert e.value.path == str(fifo) and e.value.field == "file_name"
    _raises(read_image, tmp_path, "not a regular file \\(a directory", field="file_name")


def test_symlinks_are_refused_when_asked_and_content_is_never_echoed(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"QZXJ:x:0:0:SECRET\n")
    link = tmp_path / "A01_f00_protein.tif"
    link.symlink_to(secret)
    for fn in (read_array, read_image, inspect_image):
        e = _raises(lambda q, fn=fn: fn(q, follow_symlinks=False), link, "is a symbolic link", field="file_name")
        assert "QZXJ" not in str(e)
        # followed (the default, for user image folders), the content is still not quoted
        with pytest.raises(ImageFormatError, match="cannot read TIFF") as followed:
            fn(link)
        assert "QZXJ" not in str(followed.value) and "SECRET" not in str(followed.value)
    write_tiff(tmp_path / "real.tif", IMG16)
    (tmp_path / "ok.tif").symlink_to(tmp_path / "real.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "ok.tif"), IMG16)


def test_non_image_content_is_never_quoted(tmp_path):
    p = tmp_path / "notes.dat"
    p.write_bytes(b"QZXJ:x:0:0:/bin/bash\n")
    e = _raises(read_array, p, "not a TIFF or PNG image", field="file_name")
    assert "QZXJ" not in str(e)
