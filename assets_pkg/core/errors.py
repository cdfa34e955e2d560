"""Error types shared by the library: every message names the file and the field."""

from __future__ import annotations

from pathlib import Path


class CellscapeError(ValueError):
    """Bad input, reported with the file and the field it concerns.

    Parameters
    ----------
    message : str
        What is wrong, in words a user can act on.
    path : str or Path, optional
        The file or folder the problem was found in.
    field : str, optional
        The metadata column, JSON key or array property concerned.
    """

    def __init__(self, message: str, path: str | Path | None = None, field: str | None = None):
        self.path = None if path is None else str(path)
        self.field = field
        self.reason = message
        parts = []
        if self.path is not None:
            parts.append(self.path)
        if field is not None:
            parts.append(f"field '{field}'")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class PlateFormatError(CellscapeError):
    """A plate folder, its metadata or one of its images is malformed."""


class CellSetError(CellscapeError):
    """A cell image set folder, file name, image or mask is malformed."""


class ImageFormatError(PlateFormatError, CellSetError):
    """An image file is missing, cannot be decoded, or is not the image expected.

    Raised by :mod:`assets_pkg.core.imaging.io`, which reads plate fields and cell image sets
    alike; it is both a :class:`PlateFormatError` and a :class:`CellSetError`, so callers that
    catch either for a bad image keep catching it.
    """


class ValidationFailed(CellscapeError):
    """A plate failed its Great Expectations suites; ``report`` holds the details."""

    def __init__(self, message: str, path: str | Path | None = None, report=None):
        super().__init__(message, path=path)
        self.report = report


class StoreError(CellscapeError):
    """The frame store is missing, inconsistent or was asked for something it does not hold."""


class TableNotWritten(StoreError):
    """No dataset-level table of that name (catalog, splits, ...) has ever been written to the store.

    The one store condition a caller may answer by making the table itself (``cellscape
    train`` makes a split when the store holds none); every other :class:`StoreError`
    (a checksum that differs, a missing file a manifest names) means the store is damaged.
    """
