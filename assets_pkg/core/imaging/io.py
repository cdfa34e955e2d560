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

Errors are :class:`~assets_pkg.core.errors.ImageFormatError`, naming the file and, where
there is one, the property concerned (``file_name``, ``shape``, ``dtype``, ``height/width``).
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np

from ..errors import ImageFormatError

__all__ = [
    "IMAGE_SUFFIXES",
    "TIFF_SUFFIXES",
    "ImageInfo",
    "image_format",
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
        When neither the bytes nor the suffix name a TIFF or PNG file.
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
        f"not a TIFF or PNG image (the file starts with {head[:8]!r})", path=path, field="file_name"
    )


def _open(path: Path):
    """The file opened for binary reading; only regular files (a FIFO would block the read)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise ImageFormatError("image file is missing (not a regular file)", path=path, field="file_name")
        return open(path, "rb")
    except FileNotFoundError as e:
        raise ImageFormatError("image file is missing", path=path, field="file_name") from e
    except OSError as e:
        raise ImageFormatError(f"cannot read file ({e.strerror or e})", path=path) from e


def _read_head(path: Path, n: int = 8) -> bytes:
    with _open(path) as fh:
        return fh.read(n)


def _decode(fmt: str, source, path: Path) -> np.ndarray:
    """All pixels of ``source`` (a path or the file's bytes); errors name ``path``."""
    try:
        if fmt == "tiff":
            import tifffile

            return np.asarray(tifffile.imread(source))
        import imageio.v3 as iio

        img = np.asarray(iio.imread(source, plugin="pillow"))
        return img if img.flags.writeable else img.copy()
    except Exception as e:  # decoders raise many types on corrupt input; re-raised naming the file
        raise ImageFormatError(f"cannot read {fmt.upper()} ({type(e).__name__}: {e})", path=path) from e


def read_array(path: str | Path) -> np.ndarray:
    """Read all pixels of a TIFF or PNG file, as stored.

    Parameters
    ----------
    path : path-like
        The image file.

    Returns
    -------
    numpy.ndarray
        The file's dtype; shape (height, width) for a single-channel image, (height, width,
        channels) for a colour PNG, the first series' shape for a TIFF.

    Raises
    ------
    ImageFormatError
        When the file is missing (field ``file_name``), is not a TIFF or PNG file, or cannot
        be decoded completely.
    """
    path = Path(path)
    with _open(path) as fh:  # one open: the format from the first bytes, then the decoder
        fmt = image_format(path, fh.read(8))
        fh.seek(0)
        return _decode(fmt, fh, path)


def read_image(
    path: str | Path,
    expect_shape: tuple[int, int] | None = None,
    dtypes: Sequence[str | np.dtype] | None = None,
) -> np.ndarray:
    """Read a single-channel image.

    Parameters
    ----------
    path : path-like
        A TIFF or PNG file holding a 2-D image, or an RGB(A) image whose three colour channels
        are equal (read as its first channel).
    expect_shape : (int, int), optional
        (height, width) the image must have, for example what plate metadata promises.
    dtypes : sequence of str or numpy.dtype, optional
        Pixel types allowed, for example ``("uint8", "uint16")`` for plate fields; default
        any integer or floating type.

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
    img = read_array(path)
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
        raise ImageFormatError(
            f"shape {img.shape} differs from metadata (height, width) = {tuple(expect_shape)}",
            path=path,
            field="height/width",
        )
    return img


def inspect_image(path: str | Path, data: bytes | None = None, verify: bool = False) -> ImageInfo:
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
        is corrupt fails here.

    Returns
    -------
    ImageInfo

    Raises
    ------
    ImageFormatError
        When the file is missing, not a TIFF or PNG file, holds no image, has a header that
        cannot be parsed, has image data reaching past the end of the file ("truncated"), or,
        with ``verify``, cannot be decoded completely.
    """
    path = Path(path)
    head = data[:33] if data is not None else _read_head(path, 33)
    fmt = image_format(path, head)
    if fmt == "tiff":
        return _inspect_tiff(path, data, verify)
    info = _inspect_png(path, head)
    if verify:
        _decode(fmt, BytesIO(data) if data is not None else path, path)
    return info


def _inspect_tiff(path: Path, data: bytes | None, verify: bool) -> ImageInfo:
    """TIFF facts from the header (every page's), and a full decode when ``verify``."""
    import tifffile

    try:
        size = len(data) if data is not None else path.stat().st_size
        with tifffile.TiffFile(BytesIO(data) if data is not None else path) as tf:
            if not tf.series:
                raise ImageFormatError("TIFF holds no image", path=path)
            series = tf.series[0]
            shape = tuple(int(s) for s in series.shape)
            dtype = str(np.dtype(series.dtype))
            pages = list(tf.pages)
            for page in pages:
                ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)]
                if ends and max(ends) > size:
                    raise ImageFormatError(
                        f"truncated TIFF: image data ends at byte {max(ends)} but the file has {size}",
                        path=path,
                    )
            bits = getattr(pages[0], "bitspersample", None) if pages else None
            if verify:
                tf.asarray()
    except ImageFormatError:
        raise
    except Exception as e:  # tifffile raises many types on corrupt headers; re-raised naming the file
        raise ImageFormatError(f"cannot read TIFF ({type(e).__name__}: {e})", path=path) from e
    return ImageInfo("tiff", shape, dtype, int(bits) if bits else np.dtype(dtype).itemsize * 8, len(pages))


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
