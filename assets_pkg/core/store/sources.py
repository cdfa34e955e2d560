"""Other image sources, read into the forms the pipeline uses.

- :func:`read_image_folder`: a folder of single-channel field images (TIFF or PNG, read by
  :func:`assets_pkg.core.imaging.io.read_image`), nucleus and protein images paired by name
  -> ``[(field_name, nucleus_img, protein_img), ...]``, ready for :func:`assets_pkg.core.segmentation.nuclei.detect_nuclei` and
  :func:`assets_pkg.core.store.frames.extract_frames`.
- :func:`read_cytoself_arrays`: the released cytoself / OpenCell crop arrays ->
  ``(frames, table)`` in the frame store's form (frames float32 (N, 100, 100, 3), channels
  protein, nucleus, distance; table with the frame-table columns of
  :data:`FRAME_TABLE_COLUMNS`).

Two cytoself layouts are recognised (github.com/royerlab/cytoself, README "Data
Availability" and ``DataManagerOpenCell``):

(a) ``Image_dataNN.npy`` of shape (N, 100, 100, C), channels (protein, nucleus[, nuclear
    distance[, nuclear segmentation]]), each with ``Label_dataNN.csv`` (same rows, columns
    ``ensg, name, loc_grade1, loc_grade2, loc_grade3, protein_id, FOV_id``);
(b) per protein, ``<prefix>_pro.npy`` and ``<prefix>_nuc.npy`` of shape (n, 100, 100),
    optional ``<prefix>_nucdist.npy``, and ``<prefix>_label.npy``, an object array of shape
    (n, 3) ``(ensg, name, localization)`` (``download_sample_data``) or (n, >= 7) with the
    Label_data columns above.  The prefix is whatever precedes the last ``_`` (``ACTB``,
    ``ENSG00000075624_ACTB`` ...).

Wells and fields: released crops have no plate wells and, in layout (b) with three label
columns, no field of view either.  So that a field-exclusive split
(:func:`assets_pkg.core.store.splits.make_splits`) still holds out whole fields, every frame
gets a stated, never-empty grouping:

- ``well`` is the protein's gene name: one pseudo-well per protein, as each OpenCell cell line
  has its own well; frame ids read ``<plate_id>/<gene>/f<field>/n<nucleus>`` as for ingested
  plates.
- ``field_id`` numbers a protein's fields of view in order of appearance.  A frame with a
  released ``FOV_id`` belongs to that FOV.  Frames without one (no ``FOV_id`` column, or an
  empty value) are grouped into pseudo-fields of :data:`CYTOSELF_PSEUDO_FIELD_FRAMES`
  consecutive frames of the same protein in file order (the last one may be smaller):
  released crops come FOV by FOV, so neighbours in file order tend to share a field, and a
  field-exclusive split then holds out runs of neighbouring crops instead of scattering
  them over train and valid.  ``source_fov`` is empty for these frames.

Localization grades: cytoself's ``loc_grade1`` is read as a protein's primary (most
prominent) annotation and ``loc_grade3`` as its weakest -- the reverse of OpenCell's numeric
grade (3 = prominent); code built on the released labels uses ``loc_grade1`` as the primary
localization, and cytoself's ``*_label.npy`` carries only that one.  They are mapped to
OpenCell grades 3, 2, 1 (:data:`CYTOSELF_GRADE_COLUMNS`, overridable); the
``localization`` column lists classes highest grade first, ``';'``-joined, and
``localization_grades`` reads like ``"nucleoplasm:3;cytoplasmic:1"``.
"""

from __future__ import annotations

import fnmatch
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PlateFormatError
from ..imaging.io import IMAGE_SUFFIXES, read_image
from .frames import signed_distance

#: cytoself label column -> OpenCell grade (3 = prominent).
CYTOSELF_GRADE_COLUMNS: dict[str, int] = {"loc_grade1": 3, "loc_grade2": 2, "loc_grade3": 1}

#: Positional meaning of the columns of a cytoself ``*_label.npy`` with 7 or more columns.
CYTOSELF_LABEL_COLUMNS: tuple[str, ...] = (
    "ensg",
    "name",
    "loc_grade1",
    "loc_grade2",
    "loc_grade3",
    "protein_id",
    "FOV_id",
)

#: Consecutive frames of one protein per pseudo-field when the source gives no FOV id (see
#: module notes): about the crops one OpenCell field of view yields.
CYTOSELF_PSEUDO_FIELD_FRAMES = 40

_TOKEN_SPLIT = re.compile(r"[_\-. ]+")


# ---------------------------------------------------------------------------- image folders
def _patterns(pattern: str) -> list[str]:
    return [p.strip().lower() for p in pattern.split("|") if p.strip()]


def _match_token(tokens: list[str], patterns: list[str]) -> int | None:
    for i, tok in enumerate(tokens):
        if any(fnmatch.fnmatchcase(tok.lower(), p) for p in patterns):
            return i
    return None


def read_image_folder(
    folder: str | Path,
    nucleus_pattern: str = "*nuc*|*w1*|*dapi*|*hoechst*",
    protein_pattern: str = "*pro*|*w2*|*gfp*",
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Pair the nucleus and protein images of a folder into fields.

    Pairing rule.  Each image file (``.tif``, ``.tiff``, ``.png``; not recursive) has its name
    without extension split into tokens at ``_``, ``-``, ``.`` and spaces.  The first token
    matching one of the ``|``-separated, case-insensitive glob patterns of
    ``nucleus_pattern`` makes it a nucleus image; otherwise the first token matching
    ``protein_pattern`` makes it a protein image; files matching neither are ignored.  The
    field name is the remaining tokens joined with ``_`` (``A01_f01_nucleus.tif`` and
    ``A01_f01_protein.tif`` -> ``A01_f01``; ``..._s01_w1.TIF`` and ``..._s01_w2.TIF`` ->
    ``..._s01``).  A field with a nucleus image but no protein image gets an all-zero protein
    channel of the nucleus image's shape and dtype.

    Parameters
    ----------
    folder : path-like
    nucleus_pattern, protein_pattern : str
        Glob patterns matched against name tokens (see above).

    Returns
    -------
    list of (str, ndarray, ndarray)
        ``(field_name, nucleus_img, protein_img)`` sorted by field name; images 2-D
        (height, width) in the file's dtype.

    Raises
    ------
    PlateFormatError
        When the folder is missing or holds no nucleus image, when two files give the same
        field and channel, when a protein image has no nucleus image, when an image cannot be
        read or is not single-channel 2-D (:class:`~assets_pkg.core.errors.ImageFormatError`),
        or when a pair differs in shape.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PlateFormatError("image folder does not exist", path=folder)
    nuc_pat, pro_pat = _patterns(nucleus_pattern), _patterns(protein_pattern)
    found: dict[str, dict[str, Path]] = {"nucleus": {}, "protein": {}}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES or p.name.startswith("."):
            continue
        tokens = [t for t in _TOKEN_SPLIT.split(p.stem) if t]
        channel, i = "nucleus", _match_token(tokens, nuc_pat)
        if i is None:
            channel, i = "protein", _match_token(tokens, pro_pat)
        if i is None:
            continue
        field = "_".join(tokens[:i] + tokens[i + 1 :]) or p.stem
        if field in found[channel]:
            raise PlateFormatError(
                f"two {channel} images for field {field!r}: {found[channel][field].name} and {p.name}",
                path=p,
                field="file_name",
            )
        found[channel][field] = p
    orphans = sorted(set(found["protein"]) - set(found["nucleus"]))
    if orphans:
        raise PlateFormatError(
            f"protein image without a nucleus image for field(s) {orphans[:5]}",
            path=found["protein"][orphans[0]],
            field="file_name",
        )
    if not found["nucleus"]:
        raise PlateFormatError(
            f"no nucleus image (patterns {nucleus_pattern!r}) in the folder", path=folder
        )
    out = []
    for field in sorted(found["nucleus"]):
        nuc = read_image(found["nucleus"][field])
        if field in found["protein"]:
            pro = read_image(found["protein"][field])
            if pro.shape != nuc.shape:
                raise PlateFormatError(
                    f"protein image shape {pro.shape} differs from nucleus image shape {nuc.shape}",
                    path=found["protein"][field],
                    field="shape",
                )
        else:
            pro = np.zeros_like(nuc)
        out.append((field, nuc, pro))
    return out


# ---------------------------------------------------------------------------- cytoself arrays
def read_cytoself_arrays(
    folder: str | Path,
    plate_id: str = "cytoself",
    grade_columns: Mapping[str, int] = CYTOSELF_GRADE_COLUMNS,
    frames_per_pseudo_field: int = CYTOSELF_PSEUDO_FIELD_FRAMES,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Read released cytoself / OpenCell crops (layout (a) or (b) of the module notes).

    Parameters
    ----------
    folder : path-like
        Folder holding ``Image_dataNN.npy`` + ``Label_dataNN.csv`` files, or per-protein
        ``*_pro.npy``, ``*_nuc.npy`` [``*_nucdist.npy``] and ``*_label.npy`` files.
    plate_id : str
        Written to the ``plate_id`` column and used in ``frame_id``.
    grade_columns : mapping
        Label column -> OpenCell grade (see module notes).
    frames_per_pseudo_field : int
        Consecutive frames of a protein grouped into one field when they have no ``FOV_id``
        (see module notes).

    Returns
    -------
    frames : ndarray of float32, shape (N, H, W, 3)
        Channels (protein, nucleus, distance), intensities as released (cytoself's crops are
        already normalized).  A released distance channel is kept, with its sign flipped if
        needed so that it is positive inside the nucleus (judged by the median value at the
        frame centres, which lie on nuclei); when absent it is computed per frame, in frame
        pixels, from the nucleus channel thresholded at the Otsu threshold of the whole file.
    table : pandas.DataFrame
        :data:`FRAME_TABLE_COLUMNS` plus ``source_file``, ``source_row`` and ``source_fov``.
        ``well`` is the gene name; ``field_id`` numbers the FOVs (or pseudo-fields) of each
        protein in order of appearance (module notes); ``nucleus_label`` numbers the frames
        of each field from 1; ``frame_id`` is
        ``<plate_id>/<gene>/f<field_id:02d>/n<nucleus_label:04d>`` (as the ingest); centres
        and nucleus areas are unknown (NaN / NA).

    Raises
    ------
    PlateFormatError
        When the folder holds neither layout, or a file is missing, unreadable or of the
        wrong shape, labels and images disagree in length, or a label row has no ``ensg`` or
        ``name``.
    """
    if int(frames_per_pseudo_field) < 1:
        raise ValueError(f"frames_per_pseudo_field must be >= 1, got {frames_per_pseudo_field}")
    folder = Path(folder)
    if not folder.is_dir():
        raise PlateFormatError("cytoself data folder does not exist", path=folder)
    image_files = sorted(folder.glob("Image_data*.npy"))
    label_npys = sorted(folder.glob("*_label.npy"))
    if image_files:
        parts = [_read_image_data(p) for p in image_files]
    elif label_npys:
        parts = [_read_protein_arrays(p) for p in label_npys]
    else:
        raise PlateFormatError(
            "no cytoself arrays (Image_dataNN.npy + Label_dataNN.csv, or *_label.npy with "
            "*_pro.npy and *_nuc.npy) in the folder",
            path=folder,
        )
    frames = np.concatenate([f for f, _ in parts], axis=0)
    labels = pd.concat([t for _, t in parts], ignore_index=True)
    return frames, _frame_table(labels, plate_id, grade_columns, int(frames_per_pseudo_field))


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy object arrays of plain Python values and nothing else.

    cytoself's ``*_label.npy`` files are object arrays of strings, which numpy stores as a
    pickle.  ``np.load(allow_pickle=True)`` would run any code such a file names; this loader
    only lets the pickle rebuild an ndarray and its dtype (strings, numbers and tuples need no
    class lookup), so a crafted file fails instead of executing.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an untrusted .npy")


def _read_npy(path: Path, allow_object: bool = False) -> np.ndarray:
    """Read a .npy file; object arrays only with ``allow_object`` and never via full pickle."""
    if not path.is_file():
        raise PlateFormatError("file is missing", path=path)
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _fortran, dtype = read_header(fh)
            if not dtype.hasobject:
                return np.load(path, allow_pickle=False)
            if not allow_object:
                raise PlateFormatError("holds Python objects where numbers were expected", path=path, field="dtype")
            arr = _ArrayOnlyUnpickler(fh).load()
    except PlateFormatError:
        raise
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise PlateFormatError(f"cannot read .npy ({e})", path=path) from e
    if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape):
        raise PlateFormatError(f"object array does not match its header shape {shape}", path=path, field="shape")
    return arr


def _read_image_data(path: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Layout (a): one Image_dataNN.npy and its Label_dataNN.csv."""
    suffix = path.stem[len("Image_data") :]
    csv = path.with_name(f"Label_data{suffix}.csv")
    if not csv.is_file():
        raise PlateFormatError(f"{csv.name} is missing for {path.name}", path=csv)
    img = _read_npy(path)
    if img.ndim != 4 or img.shape[-1] not in (2, 3, 4):
        raise PlateFormatError(
            f"expected shape (N, H, W, C) with C in 2..4, got {img.shape}", path=path, field="shape"
        )
    try:
        lab = pd.read_csv(csv, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PlateFormatError(f"not a readable CSV: {e}", path=csv) from e
    if len(lab) != len(img):
        raise PlateFormatError(f"{len(lab)} label rows for {len(img)} images", path=csv)
    for c in ("ensg", "name"):
        if c not in lab.columns:
            raise PlateFormatError("required column is missing", path=csv, field=c)
    # Channel 3 (nuclear segmentation), when present, is not needed: the distance is there.
    frames = _assemble(
        protein=img[..., 0], nucleus=img[..., 1], distance=img[..., 2] if img.shape[-1] >= 3 else None
    )
    lab = lab.copy()
    lab["source_file"] = path.name
    lab["source_row"] = np.arange(len(lab), dtype=np.int64)
    return frames, lab


def _read_protein_arrays(label_path: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Layout (b): <prefix>_label.npy with <prefix>_pro.npy, _nuc.npy [, _nucdist.npy]."""
    prefix = label_path.name[: -len("_label.npy")]
    lab_arr = _read_npy(label_path, allow_object=True)
    if lab_arr.ndim == 1:
        lab_arr = lab_arr[:, None]
    ncol = lab_arr.shape[1]
    if ncol == 3:
        lab = pd.DataFrame(lab_arr, columns=["ensg", "name", "loc_grade1"])
    elif ncol >= 7:
        lab = pd.DataFrame(lab_arr[:, :7], columns=list(CYTOSELF_LABEL_COLUMNS))
    else:
        raise PlateFormatError(
            f"expected 3 columns (ensg, name, localization) or >= 7 (Label_data columns), got {ncol}",
            path=label_path,
            field="shape",
        )
    pro = _read_npy(label_path.with_name(f"{prefix}_pro.npy"))
    nuc = _read_npy(label_path.with_name(f"{prefix}_nuc.npy"))
    dist_path = label_path.with_name(f"{prefix}_nucdist.npy")
    dist = _read_npy(dist_path) if dist_path.is_file() else None
    for name, a in (("pro", pro), ("nuc", nuc), ("nucdist", dist)):
        if a is None:
            continue
        if a.ndim == 4 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.ndim != 3 or len(a) != len(lab):
            raise PlateFormatError(
                f"expected shape ({len(lab)}, H, W), got {a.shape}",
                path=label_path.with_name(f"{prefix}_{name}.npy"),
                field="shape",
            )
    pro, nuc = pro.reshape(pro.shape[:3]), nuc.reshape(nuc.shape[:3])
    if dist is not None:
        dist = dist.reshape(dist.shape[:3])
    if pro.shape != nuc.shape or (dist is not None and dist.shape != nuc.shape):
        raise PlateFormatError(
            f"channel shapes differ: pro {pro.shape}, nuc {nuc.shape}"
            + ("" if dist is None else f", nucdist {dist.shape}"),
            path=label_path,
            field="shape",
        )
    frames = _assemble(protein=pro, nucleus=nuc, distance=dist)
    lab["source_file"] = label_path.name
    lab["source_row"] = np.arange(len(lab), dtype=np.int64)
    return frames, lab


def _assemble(protein, nucleus, distance) -> np.ndarray:
    """Stack (protein, nucleus, distance) as float32 (N, H, W, 3), computing the distance."""
    n, h, w = nucleus.shape
    frames = np.empty((n, h, w, 3), np.float32)
    frames[..., 0] = protein
    frames[..., 1] = nucleus
    if distance is not None:
        d = np.asarray(distance, dtype=np.float32)
        if n and np.median(d[:, h // 2, w // 2]) < 0:
            d = -d  # make it positive inside the (centred) nucleus
        frames[..., 2] = d
        return frames
    from skimage.filters import threshold_otsu

    nuc = frames[..., 1]
    sample = nuc.ravel()[:: max(1, nuc.size // 1_000_000)]
    if n == 0 or sample.min() == sample.max():
        masks = np.zeros(nuc.shape, bool)
    else:
        masks = nuc > threshold_otsu(sample)
    for i in range(n):  # one 100x100 distance transform per frame
        frames[i, ..., 2] = signed_distance(masks[i])
    return frames


def _grades(row: Mapping, grade_columns: Mapping[str, int]) -> tuple[str, str]:
    pairs: list[tuple[int, str]] = []
    seen = set()
    for col, grade in sorted(grade_columns.items(), key=lambda kv: -kv[1]):
        v = row.get(col)
        if v is None or pd.isna(v):
            continue
        for name in str(v).split(";"):
            name = name.strip()
            if name and name not in seen:
                seen.add(name)
                pairs.append((grade, name))
    return ";".join(n for _, n in pairs), ";".join(f"{n}:{g}" for g, n in pairs)


def _frame_table(labels: pd.DataFrame, plate_id: str, grade_columns: Mapping[str, int],
                 frames_per_pseudo_field: int = CYTOSELF_PSEUDO_FIELD_FRAMES) -> pd.DataFrame:
    n = len(labels)
    labels = labels.reset_index(drop=True)
    for c in ("ensg", "name"):
        blank = labels[c].isna() | (labels[c].astype(str).str.strip() == "")
        if blank.any():
            i = int(np.argmax(blank.to_numpy()))
            raise PlateFormatError(f"label row {int(labels['source_row'].iloc[i])} has no {c}",
                                   path=labels["source_file"].iloc[i], field=c)
    gene = labels["name"].astype(str).to_numpy()
    ensg = labels["ensg"].astype(str).to_numpy()
    if "FOV_id" in labels.columns:
        fov = labels["FOV_id"].astype(str).str.strip().where(labels["FOV_id"].notna(), "")
    else:
        fov = pd.Series([""] * n, dtype=object)
    # Frames without a FOV: pseudo-fields of consecutive frames of one protein (module notes).
    unknown = (fov == "").to_numpy()
    rank = pd.Series(unknown.astype(np.int64)).groupby(gene).cumsum().to_numpy() - 1
    pseudo = pd.Series(rank // frames_per_pseudo_field).astype(str)
    group = fov.where(~unknown, "\x01" + pseudo)
    key = pd.Series(gene) + "\x00" + group
    # Field number: FOVs of each protein numbered in order of appearance.
    first = key.drop_duplicates()
    field_of_key = first.groupby(pd.Series(gene)[first.index].to_numpy()).cumcount()
    field_map = dict(zip(first.to_numpy(), field_of_key.to_numpy(), strict=True))
    field_id = key.map(field_map).astype(np.int64).to_numpy()
    nucleus_label = (key.groupby(key).cumcount() + 1).astype(np.int64).to_numpy()
    loc, grades = zip(*(_grades(r, grade_columns) for r in labels.to_dict("records")), strict=True) if n else ((), ())
    table = pd.DataFrame(
        {
            "frame_index": np.arange(n, dtype=np.int64),
            "frame_id": [
                f"{plate_id}/{g}/f{f:02d}/n{k:04d}" for g, f, k in zip(gene, field_id, nucleus_label, strict=True)
            ],
            "plate_id": plate_id,
            "well": pd.Series(gene, dtype="string"),
            "field_id": field_id,
            "gene": gene,
            "ensg_id": ensg,
            "localization": list(loc),
            "localization_grades": list(grades),
            "centre_y": np.full(n, np.nan),
            "centre_x": np.full(n, np.nan),
            "nucleus_label": nucleus_label,
            "nucleus_area_px": pd.array([pd.NA] * n, dtype="Int64"),
            "source_file": labels["source_file"].astype(str).to_numpy(),
            "source_row": labels["source_row"].to_numpy(dtype=np.int64),
            "source_fov": fov.to_numpy(),
        }
    )
    return table
