"""Image files in and out: the one place the library reads and writes microscope images.

Every image the library reads goes through this module: plate fields
(:mod:`assets_pkg.core.imaging.plates`), image folders (:mod:`assets_pkg.core.store.sources`),
cell image sets and their masks (:mod:`assets_pkg.core.segmentation.datasets`) and the geometry
checks of the QC suites (:mod:`assets_pkg.core.qc`).

- :func:`read_array`: the pixels as stored, (height, width) or (height, width, channels).
- :func:`read_image`: a single-channel image (height, width) in the file's dtype; an RGB(A)
  file whose three colour channels are equal gives its first channel.
- :func:`inspect_image`: shape, dtype, bit depth and page count from the header alone, without
  decoding pixels (optionally decoding them all to prove the file complete).
- :func:`write_tiff`: a byte-reproducible single-page TIFF.

Formats.  TIFF (classic and BigTIFF, OME-TIFF included: the first series is read) through
``tifffile``, and PNG through ``imageio`` (Pillow).  The format is recognised from the file's
first bytes; a file whose bytes are neither is taken by its suffix (``.tif``/``.tiff``, ``.png``)
so that a damaged file is reported as a damaged TIFF or PNG, and any other file is refused.

Hostile files.  Only regular files are opened: the file is opened non-blocking and checked
with ``fstat`` before a byte is read, so a FIFO, device or directory named like an image is
refused at once instead of blocking the reader; with ``follow_symlinks=False`` (what plate
folders use) a symbolic link is refused too (``O_NOFOLLOW``).  The size an image header declares
is checked against :class:`ImageLimits` before any pixel is decoded, so a small file claiming
100000 x 100000 pixels is refused instead of allocating gigabytes.  Messages never quote the
file's bytes (decoder messages are stripped of byte strings).

Errors are :class:`~assets_pkg.core.errors.ImageFormatError`, naming the file and, where
there is one, the property concerned (``file_name``, ``shape``, ``dtype``, ``height/width``).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np

from ..errors import ImageFormatError

__all__ = [
    "DEFAULT_LIMITS",
    "IMAGE_SUFFIXES",
    "TIFF_SUFFIXES",
    "ImageInfo",
    "ImageLimits",
    "image_format",
    "open_regular",
    "inspect_image",
    "read_array",
    "read_image",
    "write_tiff",
]

#: File suffixes of the images the library reads (compared lower-case).
IMAGE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png")

#: File suffixes of TIFF files (compared lower-case).
TIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: PNG colour type -> samples per pixel after decoding (palette images decode to RGB).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


@dataclass(frozen=True)
class ImageInfo:
    """What an image file holds, as its header states it.

    Attributes
    ----------
    format : {"tiff", "png"}
        The file format.
    shape : tuple of int
        Shape of the pixel array (of the first series for TIFF): (height, width) for a
        single-channel image, (height, width, channels) for a colour PNG, (pages, height,
        width) for a TIFF stack.
    dtype : str
        NumPy name of the stored sample type (``"uint8"``, ``"uint16"``, ``"float32"``, ...).
    bit_depth : int
        Bits per sample as stored (1, 8, 16, 32 ...).
    pages : int
        Number of TIFF pages (images in the file); 1 for PNG.
    """

    format: str
    shape: tuple[int, ...]
    dtype: str
    bit_depth: int
    pages: int

    @property
    def ndim(self) -> int:
        """Number of dimensions of :attr:`shape`."""
        return len(self.shape)


@dataclass(frozen=True)
class ImageLimits:
    """How large an image may be, checked on the size its header declares, before decoding.

    Attributes
    ----------
    max_plane_pixels : int
        Most pixels (height x width) of one image plane.  Default 2**28 (16384 x 16384), far
        above any microscope camera (a 2048 x 2048 sCMOS frame is 2**22 pixels).
    max_bytes : int
        Most bytes of the decoded array (all planes and samples of the first series).
        Default 2**32 (4 GiB).
    """

    max_plane_pixels: int = 2**28
    max_bytes: int = 2**32


#: The limits used when a caller gives none.
DEFAULT_LIMITS = ImageLimits()

# A bytes literal in a decoder's message (tifffile quotes the first bytes of a non-TIFF file).
_BYTES_LITERAL = re.compile(r"""b(['"])(?:\\.|(?!\1).)*\1""")


def _reason(e: BaseException) -> str:
    """A decoder exception as text that quotes none of the file's bytes."""
    text = _BYTES_LITERAL.sub("", str(e))
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())[:200]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def image_format(path: str | Path, head: bytes) -> str:
    """The format of an image file from its first bytes, else from its suffix.

    Parameters
    ----------
    path : path-like
        The file (its suffix decides when the bytes are not recognised).
    head : bytes
        The file's first 8 (or more) bytes.

    Returns
    -------
    {"tiff", "png"}

    Raises
    ------
    ImageFormatError
        When neither the bytes nor the suffix name a TIFF or PNG file (the message does not
        quote the bytes).
    """
    if head[:4] in _TIFF_MAGIC:
        return "tiff"
    if head[:8] == _PNG_MAGIC:
        return "png"
    suffix = Path(path).suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix == ".png":
        return "png"
    raise ImageFormatError(
        "not a TIFF or PNG image (neither its first bytes nor its suffix name one)", path=path, field="file_name"
    )


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_regular(
    path: str | Path,
    *,
    follow_symlinks: bool = True,
    what: str = "image file",
    error: type[ImageFormatError] | type = ImageFormatError,
):
    """Open a regular file for binary reading, without ever blocking on a FIFO or device.

    The file is opened with ``O_NONBLOCK`` (a FIFO opens at once instead of waiting for a
    writer) and checked with ``fstat`` on the open descriptor, so what is read is what was
    checked.  With ``follow_symlinks=False`` a symbolic link is refused (``O_NOFOLLOW``), not
    followed.

    Parameters
    ----------
    path : path-like
        The file.
    follow_symlinks : bool
        Follow a symbolic link (the default, for user folders of images); plate folders pass
        False.
    what : str
        How messages call the file (``"image file"``, ``"metadata.csv"`` ...).
    error : type
        The :class:`~assets_pkg.core.errors.CellscapeError` subclass raised.

    Returns
    -------
    io.BufferedReader
        The open file; close it (``with``).

    Raises
    ------
    error
        Naming the file and the field ``file_name``: missing, a symbolic link (when not
        followed), not a regular file (directory, FIFO, device, socket), or not readable.
    """
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    link_msg = f"{what} is a symbolic link; plate files must be regular files (links are not followed)"
    try:
        if not follow_symlinks:
            if path.is_symlink():  # also where O_NOFOLLOW does not exist
                raise error(link_msg, path=path, field="file_name")
            flags |= getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags)
    except FileNotFoundError as e:
        raise error(f"{what} is missing", path=path, field="file_name") from e
    except OSError as e:
        if not follow_symlinks and os.path.islink(path):  # replaced by a link in between: ELOOP
            raise error(link_msg, path=path, field="file_name") from e
        raise error(f"cannot open {what} ({e.strerror or type(e).__name__})", path=path, field="file_name") from e
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise error(f"{what} is not a regular file ({kind}); not read", path=path, field="file_name")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_limits(path: Path, plane_pixels: int, nbytes: int, limits: ImageLimits | None) -> None:
    limits = DEFAULT_LIMITS if limits is None else limits
    if plane_pixels > limits.max_plane_pixels:
        raise ImageFormatError(
            f"the header declares {plane_pixels:,} pixels per plane, above the limit of "
            f"{limits.max_plane_pixels:,}; not decoded",
            path=path,
            field="shape",
        )
    if nbytes > limits.max_bytes:
        raise ImageFormatError(
            f"the header declares {nbytes:,} bytes of pixels, above the limit of {limits.max_bytes:,}; not decoded",
            path=path,
            field="shape",
        )


def _examine(
    path: Path,
    data: bytes | None,
    *,
    decode: bool,
    limits: ImageLimits | None,
    follow_symlinks: bool,
    before_decode=None,
) -> tuple[ImageInfo, np.ndarray | None]:
    """The header's facts and, when ``decode``, the pixels, from one open of the file.

    ``before_decode(info)`` may raise to stop before the pixels are decoded (after the size
    limits are checked).
    """
    if data is not None:
        return _examine_source(path, BytesIO(data), data[:33], len(data), decode, limits, before_decode)
    with open_regular(path, follow_symlinks=follow_symlinks) as fh:
        head = fh.read(33)
        fh.seek(0)
        size = os.fstat(fh.fileno()).st_size
        return _examine_source(path, fh, head, size, decode, limits, before_decode)


def _examine_source(path, src, head: bytes, size: int, decode: bool, limits, before_decode):
    fmt = image_format(path, head)
    if fmt == "tiff":
        import tifffile

        try:
            with tifffile.TiffFile(src, name=path.name) as tf:
                info, plane_pixels = _tiff_info(tf, path, size)
                if not decode:
                    return info, None
                _check_limits(path, plane_pixels, int(np.prod(info.shape)) * np.dtype(info.dtype).itemsize, limits)
                if before_decode is not None:
                    before_decode(info)
                return info, np.asarray(tf.asarray())
        except ImageFormatError:
            raise
        except Exception as e:  # tifffile raises many types on corrupt files; re-raised naming the file
            raise ImageFormatError(f"cannot read TIFF ({_reason(e)})", path=path) from e
    info = _inspect_png(path, head)
    if not decode:
        return info, None
    _check_limits(path, info.shape[0] * info.shape[1], int(np.prod(info.shape)) * np.dtype(info.dtype).itemsize,
                  limits)
    if before_decode is not None:
        before_decode(info)
    try:
        import imageio.v3 as iio

        img = np.asarray(iio.imread(src, plugin="pillow", extension=".png"))
    except Exception as e:  # Pillow raises many types on corrupt files; re-raised naming the file
        raise ImageFormatError(f"cannot read PNG ({_reason(e)})", path=path) from e
    return info, (img if img.flags.writeable else img.copy())


def read_array(
    path: str | Path,
    *,
    data: bytes | None = None,
    limits: ImageLimits | None = None,
    follow_symlinks: bool = True,
) -> np.ndarray:
    """Read all pixels of a TIFF or PNG file, as stored.

    Parameters
    ----------
    path : path-like
        The image file; with ``data``, only named in errors and used for its suffix.
    data : bytes, optional
        The file's bytes when the caller has read them already: the file is not opened.
    limits : ImageLimits, optional
        Largest image decoded, checked on the header before decoding; default
        :data:`DEFAULT_LIMITS`.
    follow_symlinks : bool
        Whether a symbolic link is followed or refused (see :func:`open_regular`).

    Returns
    -------
    numpy.ndarray
        The file's dtype; shape (height, width) for a single-channel image, (height, width,
        channels) for a colour PNG, the first series' shape for a TIFF.

    Raises
    ------
    ImageFormatError
        When the file is missing or not a regular file (field ``file_name``), is not a TIFF or
        PNG file, declares more pixels than ``limits`` allow (field ``shape``), or cannot be
        decoded completely.
    """
    path = Path(path)
    return _examine(path, data, decode=True, limits=limits, follow_symlinks=follow_symlinks)[1]


def _plane_shape(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(height, width) of a single-channel or colour image's shape, None for a stack."""
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] in (3, 4)):
        return (int(shape[0]), int(shape[1]))
    return None


def read_image(
    path: str | Path,
    expect_shape: tuple[int, int] | None = None,
    dtypes: Sequence[str | np.dtype] | None = None,
    *,
    limits: ImageLimits | None = None,
    follow_symlinks: bool = True,
) -> np.ndarray:
    """Read a single-channel image.

    Parameters
    ----------
    path : path-like
        A TIFF or PNG file holding a 2-D image, or an RGB(A) image whose three colour channels
        are equal (read as its first channel).
    expect_shape : (int, int), optional
        (height, width) the image must have, for example what plate metadata promises; checked
        on the header, before the pixels are decoded.
    dtypes : sequence of str or numpy.dtype, optional
        Pixel types allowed, for example ``("uint8", "uint16")`` for plate fields; default
        any integer or floating type.
    limits : ImageLimits, optional
        Largest image decoded (see :func:`read_array`).
    follow_symlinks : bool
        Whether a symbolic link is followed or refused (see :func:`open_regular`).

    Returns
    -------
    numpy.ndarray, shape (height, width)
        The file's dtype, values as stored.

    Raises
    ------
    ImageFormatError
        When the file is missing or unreadable (see :func:`read_array`), not a single-channel
        2-D image (field ``shape``), of a pixel type not allowed (field ``dtype``), or of
        another shape than ``expect_shape`` (field ``height/width``).
    """
    path = Path(path)

    def check_header(info: ImageInfo) -> None:
        plane = _plane_shape(info.shape)
        if expect_shape is not None and plane is not None and plane != tuple(expect_shape):
            raise _shape_error(path, info.shape, expect_shape)

    _, img = _examine(path, None, decode=True, limits=limits, follow_symlinks=follow_symlinks,
                      before_decode=check_header)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        rgb = img[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            img = img[..., 0]
    if img.ndim != 2:
        raise ImageFormatError(
            f"expected a single-channel 2-D image, got shape {img.shape}", path=path, field="shape"
        )
    if dtypes is None:
        if not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
            raise ImageFormatError(f"unsupported pixel type {img.dtype}", path=path, field="dtype")
    else:
        allowed = [np.dtype(d) for d in dtypes]
        if img.dtype not in allowed:
            names = " or ".join(d.name for d in allowed)
            raise ImageFormatError(f"expected {names} pixels, got {img.dtype}", path=path, field="dtype")
    if expect_shape is not None and tuple(img.shape) != tuple(expect_shape):
        raise _shape_error(path, img.shape, expect_shape)
    return img


def _shape_error(path: Path, shape: tuple[int, ...], expect_shape: tuple[int, int]) -> ImageFormatError:
    return ImageFormatError(
        f"shape {tuple(shape)} differs from metadata (height, width) = {tuple(expect_shape)}",
        path=path,
        field="height/width",
    )


def inspect_image(
    path: str | Path,
    data: bytes | None = None,
    verify: bool = False,
    *,
    limits: ImageLimits | None = None,
    follow_symlinks: bool = True,
) -> ImageInfo:
    """Describe an image file from its header, without decoding the pixels.

    Parameters
    ----------
    path : path-like
        The image file; with ``data``, only named in errors and used for its suffix.
    data : bytes, optional
        The file's bytes when the caller has read them already (for example to hash them):
        the file is then not opened again.
    verify : bool
        Also decode every pixel, so that a file whose header is intact but whose image data
        is corrupt fails here (after the header's size is checked against ``limits``).
    limits : ImageLimits, optional
        Largest image decoded with ``verify`` (see :func:`read_array`).
    follow_symlinks : bool
        Whether a symbolic link is followed or refused (see :func:`open_regular`).

    Returns
    -------
    ImageInfo

    Raises
    ------
    ImageFormatError
        When the file is missing or not a regular file, not a TIFF or PNG file, holds no image,
        has a header that cannot be parsed, has image data reaching past the end of the file
        ("truncated"), or, with ``verify``, declares more pixels than ``limits`` allow or
        cannot be decoded completely.
    """
    path = Path(path)
    return _examine(path, data, decode=verify, limits=limits, follow_symlinks=follow_symlinks)[0]


def _tiff_info(tf, path: Path, size: int) -> tuple[ImageInfo, int]:
    """TIFF facts from the header (every page's) and the largest plane's pixel count."""
    if not tf.series:
        raise ImageFormatError("TIFF holds no image", path=path)
    series = tf.series[0]
    shape = tuple(int(s) for s in series.shape)
    dtype = str(np.dtype(series.dtype))
    pages = list(tf.pages)
    plane = 0
    for page in pages:
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)]
        if ends and max(ends) > size:
            raise ImageFormatError(
                f"truncated TIFF: image data ends at byte {max(ends)} but the file has {size}",
                path=path,
            )
        plane = max(plane, int(getattr(page, "imagelength", 0) or 0) * int(getattr(page, "imagewidth", 0) or 0))
    bits = getattr(pages[0], "bitspersample", None) if pages else None
    info = ImageInfo("tiff", shape, dtype, int(bits) if bits else np.dtype(dtype).itemsize * 8, len(pages))
    return info, plane


def _inspect_png(path: Path, head: bytes) -> ImageInfo:
    """PNG facts from the IHDR chunk (bytes 8..33), which the format requires to come first."""
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise ImageFormatError("cannot read PNG (no IHDR header chunk)", path=path)
    width = int.from_bytes(head[16:20], "big")
    height = int.from_bytes(head[20:24], "big")
    bits, colour = head[24], head[25]
    if colour not in _PNG_CHANNELS or bits not in (1, 2, 4, 8, 16):
        raise ImageFormatError(f"cannot read PNG (bit depth {bits}, colour type {colour})", path=path)
    channels = _PNG_CHANNELS[colour]
    shape = (height, width) if channels == 1 else (height, width, channels)
    dtype = "uint16" if bits == 16 else "bool" if (bits == 1 and colour == 0) else "uint8"
    return ImageInfo("png", shape, dtype, int(bits), 1)


def write_tiff(path: str | Path, image: np.ndarray, description: str | None = None) -> None:
    """Write a 2-D image as an uncompressed single-page TIFF, byte-reproducibly.

    Parameters
    ----------
    path : path-like
        Destination file (overwritten).
    image : numpy.ndarray, shape (height, width)
        Any dtype tifffile writes; stored as is (min-is-black).
    description : str, optional
        The ImageDescription tag.

    Notes
    -----
    No timestamp or software tag is written, so equal arrays give equal bytes (the plate
    simulator's and cell simulator's outputs are pinned by their hashes).
    """
    import tifffile

    tifffile.imwrite(
        path,
        np.ascontiguousarray(image),
        photometric="minisblack",
        description=description,
        metadata=None,
        software=False,
        datetime=False,
    )
