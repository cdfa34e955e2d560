"""Small valid plates for tests, written with :func:`assets_pkg.core.imaging.plates.write_plate`, and
knobs to break them.

``make_plate`` writes a plate of synthetic fields: the ``nucleus`` channel holds Gaussian
blobs ("nuclei"), the ``protein`` channel a dimmer copy of them with a halo, both uint16 with
Poisson-like noise.  Every row carries complete, valid provenance for the ``dragonfly-63x``
instrument of the package registry.  The helpers below rewrite metadata.csv, plate.json or an
image in place so a test can break exactly one thing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from assets_pkg.core.imaging import plates

#: Provenance every row of a made plate carries (bit_depth 16 fits the uint16 images).
DEFAULT_PROVENANCE: dict[str, object] = {
    "cell_line": "HEK293T",
    "instrument": "dragonfly-63x",
    "objective": "63x/1.47 oil",
    "numerical_aperture": 1.47,
    "pixel_size_um": 0.2,
    "bit_depth": 16,
    "operator": "test-operator",
    "fixation": "live",
    "stain": "Hoechst 33342",
    "site": "lab-a",
}

#: Per channel: exposure (ms), excitation and emission (nm).
CHANNEL_OPTICS: dict[str, dict[str, float]] = {
    "nucleus": {"exposure_ms": 50.0, "excitation_nm": 405.0, "emission_nm": 450.0},
    "protein": {"exposure_ms": 200.0, "excitation_nm": 488.0, "emission_nm": 525.0},
}

#: Genes cycled over the wells: (gene, Ensembl id, localization).
GENES: tuple[tuple[str, str, str], ...] = (
    ("LMNB1", "ENSG00000113368", "nuclear_membrane"),
    ("FBL", "ENSG00000105202", "nucleolus_fc_dfc"),
    ("TOMM20", "ENSG00000173726", "mitochondria"),
    ("SEC61B", "ENSG00000106803", "er"),
    ("GOLGA2", "ENSG00000167110", "golgi"),
)


def blobs_image(
    rng: np.random.Generator, size: int, n_blobs: int = 6, radius: float = 5.0, amplitude: float = 3000.0
) -> np.ndarray:
    """A (size, size) float64 image of Gaussian blobs on a dark background (no noise)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    img = np.zeros((size, size))
    for _ in range(n_blobs):
        cy, cx = rng.uniform(radius, size - radius, 2)
        r = radius * rng.uniform(0.7, 1.3)
        img += amplitude * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return img


def _to_uint16(rng: np.random.Generator, img: np.ndarray, background: float = 100.0) -> np.ndarray:
    noisy = rng.poisson(np.clip(img + background, 0, None))
    return np.clip(noisy, 0, 65535).astype(np.uint16)


def make_plate(
    root: str | Path,
    plate_id: str = "plate01",
    wells: int = 2,
    fields: int = 2,
    size: int = 64,
    seed: int = 0,
    provenance: Mapping[str, object] | None = None,
    acquisition_time: str = "2026-01-15T09:30:00Z",
) -> Path:
    """Write a small valid plate under ``root`` and return its folder.

    Parameters
    ----------
    root : path-like
        Parent folder; the plate lands in ``root/plate_id``.
    plate_id : str
    wells : int
        Number of wells (A01, A02, ... row-major).
    fields : int
        Fields per well; each field has one TIFF per channel (``nucleus``, ``protein``).
    size : int
        Images are (size, size) uint16.
    seed : int
        Seed of the synthetic images.
    provenance : mapping, optional
        Values replacing :data:`DEFAULT_PROVENANCE` entries on every row.
    acquisition_time : str
        ISO 8601 UTC time of the first field; later fields are a minute apart.

    Returns
    -------
    Path
        The plate folder, holding ``wells * fields * 2`` images, metadata.csv and plate.json.
    """
    rng = np.random.default_rng(seed)
    prov = {**DEFAULT_PROVENANCE, **(provenance or {})}
    base = pd.Timestamp(acquisition_time)
    images: dict[tuple[str, int, str], np.ndarray] = {}
    rows: list[dict] = []
    well_map: dict[str, plates.WellInfo] = {}
    for w, well in enumerate(plates.well_names(wells)):
        gene, ensg, loc = GENES[w % len(GENES)]
        well_map[well] = plates.WellInfo(gene, ensg, (plates.Localization(loc, 3),))
        for fid in range(fields):
            nuclei = blobs_image(rng, size)
            protein = 0.4 * nuclei + 0.2 * blobs_image(rng, size, n_blobs=12, radius=8.0)
            when = (base + pd.Timedelta(minutes=w * fields + fid)).strftime("%Y-%m-%dT%H:%M:%SZ")
            for channel, img in (("nucleus", nuclei), ("protein", protein)):
                images[(well, fid, channel)] = _to_uint16(rng, img)
                rows.append(
                    {
                        "well": well,
                        "field_id": fid,
                        "channel": channel,
                        "gene": gene,
                        "ensg_id": ensg,
                        "acquisition_time": when,
                        **CHANNEL_OPTICS[channel],
                        **prov,
                    }
                )
    return plates.write_plate(
        root, plate_id, images, rows, well_map, extra_info={"instrument": prov["instrument"]}
    )


def read_metadata_text(plate_dir: str | Path) -> pd.DataFrame:
    """metadata.csv as all-text columns, blanks kept as empty strings (nothing cast)."""
    return pd.read_csv(Path(plate_dir) / plates.METADATA_CSV, dtype=str, keep_default_na=False)


def write_metadata_text(plate_dir: str | Path, df: pd.DataFrame) -> None:
    """Write ``df`` as metadata.csv the way :func:`plates.write_plate` does."""
    df.to_csv(Path(plate_dir) / plates.METADATA_CSV, index=False, lineterminator="\n")


def edit_metadata(plate_dir: str | Path, fn: Callable[[pd.DataFrame], pd.DataFrame | None]) -> Path:
    """Rewrite metadata.csv through ``fn``.

    ``fn`` gets the table as text (see :func:`read_metadata_text`) and either edits it in place
    and returns None, or returns the new table.  Returns the plate folder.
    """
    df = read_metadata_text(plate_dir)
    out = fn(df)
    write_metadata_text(plate_dir, df if out is None else out)
    return Path(plate_dir)


def set_value(plate_dir: str | Path, file_name: str, column: str, value: object) -> Path:
    """Set one cell of metadata.csv: the ``column`` of the row of ``file_name``."""

    def edit(df: pd.DataFrame) -> None:
        rows = df.index[df["file_name"] == file_name]
        assert len(rows) == 1, f"{file_name} is listed {len(rows)} times"
        df.loc[rows, column] = str(value)

    return edit_metadata(plate_dir, edit)


def edit_plate_json(plate_dir: str | Path, fn: Callable[[dict], dict | None]) -> Path:
    """Rewrite plate.json through ``fn`` (edit in place and return None, or return a new dict)."""
    p = Path(plate_dir) / plates.PLATE_JSON
    info = json.loads(p.read_text(encoding="utf-8"))
    out = fn(info)
    p.write_text(json.dumps(info if out is None else out, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Path(plate_dir)


def replace_image(
    plate_dir: str | Path, file_name: str, image: np.ndarray | bytes, update_metadata: bool = True
) -> Path:
    """Overwrite one image file with an array (written as TIFF) or raw bytes.

    With ``update_metadata`` the row's ``sha256`` and ``file_bytes`` are updated to the new
    file, so only the content problem remains (height, width and bit_depth are left alone).
    """
    path = Path(plate_dir) / file_name
    if isinstance(image, bytes | bytearray):
        path.write_bytes(bytes(image))
    else:
        import tifffile

        tifffile.imwrite(path, np.asarray(image), photometric="minisblack", metadata=None, software=False, datetime=False)
    if update_metadata:
        data = path.read_bytes()

        def edit(df: pd.DataFrame) -> None:
            rows = df["file_name"] == file_name
            df.loc[rows, "sha256"] = hashlib.sha256(data).hexdigest()
            df.loc[rows, "file_bytes"] = str(len(data))

        edit_metadata(plate_dir, edit)
    return path


def tree_state(folder: str | Path) -> dict[str, tuple[str, int, int]]:
    """Relative path -> (sha256, size, mtime_ns) of every file below ``folder``, for
    checking that something left the folder untouched."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(folder))] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns)
    return out


# ------------------------------------------------------------------------------ hostile files


def make_fifo(path: str | Path) -> Path:
    """A FIFO (named pipe) at ``path``: opening it for reading blocks until a writer comes."""
    import os

    os.mkfifo(path)
    return Path(path)


def call_with_fifo_timeout(fn: Callable[[], object], fifos: list[Path], timeout: float = 60.0) -> object:
    """``fn()``, failing (instead of hanging the test run) when it is still blocked after ``timeout`` s.

    ``fn`` runs in a thread.  When it is still running after ``timeout`` seconds it is taken as
    blocked on one of ``fifos``: each is opened for writing and closed again (the blocked
    reader then sees end of file) until the thread ends, and an AssertionError is raised.
    An exception of ``fn`` is re-raised; otherwise its result is returned.
    """
    import os
    import threading
    import time

    out: dict[str, object] = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # handed to the test thread
            out["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        deadline = time.monotonic() + 120
        while thread.is_alive() and time.monotonic() < deadline:
            for f in fifos:
                try:
                    os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:  # no reader waiting on this one
                    pass
            thread.join(0.05)
        raise AssertionError(f"still blocked after {timeout:.0f} s: a FIFO was opened for reading")
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out.get("value")


def huge_header_tiff(path: str | Path, height: int = 100_000, width: int = 100_000) -> Path:
    """A tiny zlib TIFF (a few hundred bytes) whose header claims ``height`` x ``width`` uint16 pixels.

    Decoding it would allocate ``height * width * 2`` bytes (18.6 GiB by default).
    """
    import tifffile

    tifffile.imwrite(path, np.zeros((64, 64), np.uint16), compression="zlib", photometric="minisblack",
                     metadata=None, software=False, datetime=False, rowsperstrip=64)
    with tifffile.TiffFile(path, mode="r+b") as tf:
        tags = tf.pages[0].tags
        tags["ImageWidth"].overwrite(width)
        tags["ImageLength"].overwrite(height)
        tags["RowsPerStrip"].overwrite(height)
    return Path(path)


def huge_header_png(path: str | Path, height: int = 100_000, width: int = 100_000) -> Path:
    """A PNG signature and a valid IHDR chunk claiming ``height`` x ``width`` 16-bit grey pixels, nothing else."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    return Path(path)


def forbid_decoding(monkeypatch, min_pixels: int = 10**8) -> list[str]:
    """Make decoding any TIFF/PNG of at least ``min_pixels`` pixels fail loudly (smaller images decode
    as usual); returns the list each such attempt is recorded in."""
    import imageio.v3 as iio
    import tifffile

    attempts: list[str] = []

    def huge(shape) -> bool:
        return int(np.prod([int(n) for n in shape], dtype=object)) >= min_pixels

    def refuse(name: str):
        attempts.append(name)
        raise MemoryError(f"test: {name} called, pixels decoded before the header was checked")

    file_asarray, page_asarray, imread, png_read = (
        tifffile.TiffFile.asarray, tifffile.TiffPage.asarray, tifffile.imread, iio.imread)

    def tiff_file_asarray(self, *args, **kwargs):
        if self.series and huge(self.series[0].shape):
            refuse("TiffFile.asarray")
        return file_asarray(self, *args, **kwargs)

    def tiff_page_asarray(self, *args, **kwargs):
        if huge(self.shape):
            refuse("TiffPage.asarray")
        return page_asarray(self, *args, **kwargs)

    def tiff_imread(src, *args, **kwargs):
        pos = src.tell() if hasattr(src, "tell") else None
        with tifffile.TiffFile(src, name="probe.tif") if pos is not None else tifffile.TiffFile(src) as tf:
            big = bool(tf.series) and huge(tf.series[0].shape)
        if pos is not None:
            src.seek(pos)
        if big:
            refuse("tifffile.imread")
        return imread(src, *args, **kwargs)

    def png_imread(src, *args, **kwargs):
        head = src.getvalue()[:33] if hasattr(src, "getvalue") else Path(src).read_bytes()[:33] \
            if isinstance(src, str | Path) else src.read(33)
        if hasattr(src, "seek"):
            src.seek(0)
        if head[12:16] == b"IHDR" and huge((int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"))):
            refuse("imageio.imread")
        return png_read(src, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffFile, "asarray", tiff_file_asarray)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", tiff_page_asarray)
    monkeypatch.setattr(tifffile, "imread", tiff_imread)
    monkeypatch.setattr(iio, "imread", png_imread)
    return attempts


def folder_state(folder: str | Path, hash_max_bytes: int = 64 * 2**20) -> dict[str, tuple]:
    """Relative path -> (file type and mode, size, mtime_ns[, sha256]) of every entry below
    ``folder``, from ``lstat``: links are not followed and only regular files up to
    ``hash_max_bytes`` are read (a FIFO is never opened, a sparse 1 GiB file not hashed), for
    checking that a hostile folder was left untouched."""
    import os
    import stat

    folder = Path(folder)
    out: dict[str, tuple] = {}
    for p in sorted(folder.rglob("*")):
        st = os.lstat(p)
        entry: tuple = (st.st_mode, st.st_size, st.st_mtime_ns)
        if stat.S_ISREG(st.st_mode) and st.st_size <= hash_max_bytes:
            entry += (hashlib.sha256(p.read_bytes()).hexdigest(),)
        elif stat.S_ISLNK(st.st_mode):
            entry += (os.readlink(p),)
        out[str(p.relative_to(folder))] = entry
    return out
