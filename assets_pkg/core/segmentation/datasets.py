"""Cell image sets on disk: BBBC005-style counting sets, BBBC039-style masks, label TIFFs.

Formats recognised
------------------
- **Images**: single-channel ``.tif``/``.tiff``/``.png`` (any case), 8- or 16-bit (float
  TIFFs too), read by :func:`assets_pkg.core.imaging.io.read_image` as 2-D arrays (height,
  width).  An RGB(A) file whose colour channels are equal is read as its first channel.
- **BBBC005 names** ``<well>_C<count>_F<blur>_s<site>_w<stain>.<ext>``, for example
  ``A05_C18_F1_s01_w2.TIF``: the true cell count is in the name (see
  :mod:`assets_pkg.core.imaging.bbbc`), read by :func:`bbbc005_table`.
- **Masks**, read by :func:`load_mask` into int32 label images (0 = background, 1..N):

  * *coloured* masks (BBBC039): a PNG whose channel 0 holds a few values (0..3), each
    4-connected component of one non-zero value being one nucleus (touching nuclei differ in
    value);
  * *label images* (TIFF or PNG, 2-D, two or more non-zero values): each non-zero value is
    one instance;
  * *binary* masks (2-D, one non-zero value): each 4-connected component is one instance.

- **Pairing**: an image and its mask share the file stem (name without extension);
  ``images/x.tif`` pairs with ``masks/x.png`` or ``masks/x.tif``.

Splits used by the benchmarks (deterministic, by sorted file name): :func:`bbbc039_split`
(first 100 train, last 50 test) and :func:`bbbc005_split` (every third file of each blur x
stain group is test); cross-validation folds (seeded): :func:`stratified_folds` (k folds,
stratified by blur x stain, spread over the count range, a field's images in one fold).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from skimage import measure, segmentation

from ..errors import CellSetError
from ..imaging.bbbc import parse_bbbc005_name
from ..imaging.io import IMAGE_SUFFIXES, read_array, read_image


# ---------------------------------------------------------------------------- files
def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder (not recursive, no hidden files), sorted by name.

    Raises
    ------
    CellSetError
        When the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CellSetError("image folder does not exist", path=folder)
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def labels_from_coloured(values: np.ndarray) -> np.ndarray:
    """Instance labels of a coloured mask: each 4-connected region of one non-zero value.

    Parameters
    ----------
    values : ndarray of int, shape (height, width)
        0 = background; touching objects carry different values.

    Returns
    -------
    ndarray of int32
        1..N in raster order of each object's first pixel.
    """
    return measure.label(np.asarray(values), background=0, connectivity=1).astype(np.int32)


def relabel(labels: np.ndarray) -> np.ndarray:
    """A label image renumbered 1..N (order of the original values), as int32."""
    lab = np.asarray(labels)
    if lab.size and lab.min() < 0:
        raise ValueError("label images must not hold negative values")
    out, _, _ = segmentation.relabel_sequential(lab.astype(np.int64, copy=False))
    return out.astype(np.int32)


def load_mask(path: str | Path, kind: str = "auto") -> np.ndarray:
    """Read an instance mask in any of the recognised formats.

    Parameters
    ----------
    path : path-like
        PNG or TIFF.
    kind : {"auto", "coloured", "labels"}
        ``"coloured"``: channel 0 (or the 2-D array) holds a few values, each 4-connected
        component of one value is one instance (BBBC039).  ``"labels"``: a 2-D image in which
        each non-zero value is one instance.  ``"auto"``: a file with channels is coloured;
        a 2-D file with one non-zero value (a binary mask) gives its 4-connected components;
        any other 2-D file is a label image.  (A 2-D coloured map needs ``"coloured"``.)

    Returns
    -------
    ndarray of int32, shape (height, width)
        0 = background, 1..N = instances.

    Raises
    ------
    CellSetError
        When the file is missing or unreadable, has an unexpected shape or pixel type, or
        ``kind`` is unknown.
    """
    path = Path(path)
    if kind not in ("auto", "coloured", "labels"):
        raise CellSetError(f"unknown mask kind {kind!r}", path=path, field="kind")
    arr = read_array(path)
    if arr.ndim == 3:
        if kind == "labels":
            raise CellSetError(
                f"a label image must be 2-D, got shape {arr.shape}", path=path, field="shape"
            )
        arr, kind = arr[..., 0], "coloured"
    if arr.ndim != 2:
        raise CellSetError(f"expected a 2-D mask, got shape {arr.shape}", path=path, field="shape")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise CellSetError(
            f"masks must hold integers, got {arr.dtype}", path=path, field="dtype"
        )
    if arr.size and arr.min() < 0:
        raise CellSetError("masks must not hold negative values", path=path, field="values")
    if kind == "auto":
        n_values = np.unique(arr).size - int(arr.size > 0 and arr.min() == 0)
        kind = "coloured" if n_values <= 1 else "labels"
    if kind == "coloured":
        return labels_from_coloured(arr)
    return relabel(arr)


def pair_by_stem(
    images_dir: str | Path, masks_dir: str | Path | None = None, require_masks: bool = False
) -> pd.DataFrame:
    """Pair the images of a folder with their masks by file stem.

    Parameters
    ----------
    images_dir : path-like
        Folder of images (see :func:`list_images`).
    masks_dir : path-like, optional
        Folder of masks; a mask pairs with the image of the same stem.  Masks without an
        image are ignored.
    require_masks : bool
        Raise when an image has no mask.

    Returns
    -------
    pandas.DataFrame
        Columns ``name`` (the stem), ``image_path``, ``mask_path`` (None where there is no
        mask); sorted by name.

    Raises
    ------
    CellSetError
        When a folder is missing, holds no image, two files share a stem, or a mask is missing
        while ``require_masks``.
    """
    images = _by_stem(list_images(images_dir))
    if not images:
        raise CellSetError("no image (.tif, .tiff, .png) in the folder", path=images_dir)
    masks = _by_stem(list_images(masks_dir)) if masks_dir is not None else {}
    missing = [s for s in images if s not in masks]
    if require_masks and missing:
        raise CellSetError(
            f"{len(missing)} image(s) without a mask of the same stem, first {missing[:3]}",
            path=masks_dir if masks_dir is not None else images_dir,
            field="mask",
        )
    names = sorted(images)
    return pd.DataFrame(
        {
            "name": names,
            "image_path": [images[n] for n in names],
            "mask_path": [masks.get(n) for n in names],
        }
    )


def _by_stem(paths: list[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in paths:
        if p.stem in out:
            raise CellSetError(
                f"two files share the stem {p.stem!r}: {out[p.stem].name} and {p.name}",
                path=p,
                field="file_name",
            )
        out[p.stem] = p
    return out


class ImageMaskSet(Sequence):
    """A lazily read list of ``(name, image, labels)``; ``labels`` is None without a mask.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``name``, ``image_path``, ``mask_path`` (see :func:`pair_by_stem`).
    mask_kind : str
        Passed to :func:`load_mask`.

    Notes
    -----
    Images and masks are read on access (``s[i]``, iteration); nothing is cached.  Images
    keep the file's dtype (uint16 for BBBC039); labels are int32.
    """

    def __init__(self, table: pd.DataFrame, mask_kind: str = "auto"):
        self.table = table.reset_index(drop=True)
        self.mask_kind = mask_kind

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ImageMaskSet(self.table.iloc[i], self.mask_kind)
        row = self.table.iloc[i]
        image = read_image(row["image_path"])
        labels = None
        if row["mask_path"] is not None and not pd.isna(row["mask_path"]):
            labels = load_mask(row["mask_path"], self.mask_kind)
            if labels.shape != image.shape:
                raise CellSetError(
                    f"mask shape {labels.shape} differs from image shape {image.shape}",
                    path=row["mask_path"],
                    field="shape",
                )
        return row["name"], image, labels

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
        for i in range(len(self)):
            yield self[i]

    @property
    def names(self) -> list[str]:
        return list(self.table["name"])

    def subset(self, names: Sequence[str]) -> ImageMaskSet:
        """The entries with the given names, in the order given."""
        idx = self.table.set_index("name")
        missing = [n for n in names if n not in idx.index]
        if missing:
            raise KeyError(f"not in the set: {missing[:3]}")
        return ImageMaskSet(idx.loc[list(names)].reset_index(), self.mask_kind)


def read_image_mask_folder(
    images_dir: str | Path,
    masks_dir: str | Path | None = None,
    require_masks: bool = False,
    mask_kind: str = "auto",
) -> ImageMaskSet:
    """A folder of images, with masks paired by stem where there are any.

    See :func:`pair_by_stem` for the pairing and errors and :func:`load_mask` for the mask
    formats.
    """
    return ImageMaskSet(pair_by_stem(images_dir, masks_dir, require_masks), mask_kind)


def read_bbbc039(root: str | Path) -> ImageMaskSet:
    """BBBC039 (or a folder laid out like it): ``root/images/*.tif`` and ``root/masks/*.png``.

    Returns
    -------
    ImageMaskSet
        Lazy ``(name, image uint16 (520, 696), labels int32)`` per field, sorted by name;
        every image must have a mask.
    """
    root = Path(root)
    return read_image_mask_folder(root / "images", root / "masks", require_masks=True)


def bbbc005_table(folder: str | Path, masks_dir: str | Path | None = None) -> pd.DataFrame:
    """Table of a BBBC005-style folder, true counts from the names.

    Parameters
    ----------
    folder : path-like
        Images named ``<well>_C<count>_F<blur>_s<site>_w<stain>.<ext>``.
    masks_dir : path-like, optional
        Folder of masks paired by stem (the simulator's ``masks/``).

    Returns
    -------
    pandas.DataFrame
        Columns ``name``, ``path``, ``well``, ``count``, ``blur``, ``site``, ``stain``,
        ``mask_path`` (None without a mask); sorted by name.

    Raises
    ------
    CellSetError
        When the folder holds no image, or an image name does not follow the pattern (the
        message names the file).
    """
    pairs = pair_by_stem(folder, masks_dir)
    rows = []
    for name, path, mask in pairs.itertuples(index=False):
        info = parse_bbbc005_name(path)
        rows.append(
            {
                "name": name,
                "path": path,
                "well": info["well"],
                "count": info["count"],
                "blur": info["blur"],
                "site": info["site"],
                "stain": info["stain"],
                "mask_path": mask,
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- splits
def bbbc039_split(names: Sequence[str], n_train: int = 100) -> tuple[list[str], list[str]]:
    """Deterministic train/test split by sorted name: the first ``n_train`` train, the rest test.

    On the 150 BBBC039 fields of ``../shared/data`` this gives 100 train and 50 test fields.
    """
    names = sorted(names)
    if not 0 <= n_train <= len(names):
        raise ValueError(f"n_train must be in 0..{len(names)}, got {n_train}")
    return names[:n_train], names[n_train:]


def group_folds(groups: Sequence[str], k: int = 5, seed: int = 0) -> np.ndarray:
    """Assign items to ``k`` cross-validation folds keeping each group (e.g. a well) in one fold.

    Groups are shuffled with ``seed``, then placed largest first into the fold with the fewest
    items so far, so fold sizes differ by at most the largest group's size.

    Parameters
    ----------
    groups : sequence of str
        Group of each item (items of one group are never split across folds).
    k : int
        Number of folds, 2 <= k <= number of groups.
    seed : int

    Returns
    -------
    ndarray of int, shape (n_items,)
        The fold (0..k-1) of each item.
    """
    groups = np.asarray(list(groups), dtype=object)
    names, inverse, sizes = np.unique(groups.astype(str), return_inverse=True, return_counts=True)
    if not 2 <= k <= len(names):
        raise ValueError(f"k must be in 2..{len(names)} (the number of groups), got {k}")
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-sizes[order], kind="stable")]
    fold_of_group, load = np.zeros(len(names), int), np.zeros(k, int)
    for g in order:
        f = int(np.argmin(load))
        fold_of_group[g] = f
        load[f] += sizes[g]
    return fold_of_group[inverse]


def bbbc039_well(name: str) -> str:
    """The well of a BBBC039 field name (``IXMtest_A02_s1_w1...`` -> ``"A02"``)."""
    parts = str(name).split("_")
    return parts[1] if len(parts) > 2 else str(name)


def bbbc005_split(table: pd.DataFrame, test_every: int = 3) -> pd.Series:
    """Deterministic train/test split of a BBBC005 table, stratified by blur and stain.

    Within each (blur, stain) group sorted by name (hence by plate column, hence by count),
    positions ``test_every - 1, 2 * test_every - 1, ...`` are test: a third of each group by
    default, spread over the whole count range.

    Returns
    -------
    pandas.Series of str
        ``"train"`` or ``"test"``, indexed like ``table``.
    """
    if test_every < 2:
        raise ValueError(f"test_every must be >= 2, got {test_every}")
    pos = table.sort_values("name").groupby(["blur", "stain"]).cumcount()
    split = np.where((pos + 1) % test_every == 0, "test", "train")
    return pd.Series(split, index=pos.index).reindex(table.index).rename("split")


def stratified_folds(
    table: pd.DataFrame,
    n_folds: int = 5,
    *,
    strata: Sequence[str] = ("blur", "stain"),
    groups: Sequence[str] | None = ("count", "site"),
    order: str = "name",
    seed: int = 0,
) -> pd.Series:
    """Deterministic, seeded k-fold assignment stratified by ``strata`` and kept whole by ``groups``.

    Every row gets one fold in ``0 .. n_folds - 1``.  Within each stratum (by default each
    blur x stain group) the folds hold ``floor`` or ``ceil`` of ``size / n_folds`` rows, and,
    because rows are dealt in ``order`` (for BBBC005 names: by plate column, hence by true
    count), each fold gets rows from the whole count range.  Rows with equal ``groups`` values
    land in the same fold: in BBBC005 a field (count, site) imaged at several blur levels or in
    both stains shows the same simulated cells, so splitting it would let the test fold's
    cells be seen in training.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per image, with the columns named by ``strata``, ``groups`` and ``order``
        (:func:`bbbc005_table` has them all).
    n_folds : int
        Number of folds, >= 2; every stratum needs at least this many rows.
    strata : sequence of str
        Columns whose value combinations are balanced over the folds.
    groups : sequence of str, optional
        Columns whose value combinations must not be split over folds (None: rows are
        independent).
    order : str
        Column giving the dealing order within a stratum (a group is dealt at its first row).
    seed : int
        Seeds the choice among equally filled folds; the same seed gives the same folds.

    Returns
    -------
    pandas.Series of int
        Named ``"fold"``, indexed like ``table``.

    Raises
    ------
    ValueError
        When ``n_folds < 2``, a column is missing, or a stratum has fewer rows than folds.

    Notes
    -----
    Greedy dealing: groups of several rows first (largest first), then single rows, each in
    ``order``; a group goes to the fold holding the fewest rows of its strata so far, ties
    broken by the fold's total, then at random.  When groups cross strata the per-stratum
    balance can be off by one more than ``ceil``; for BBBC005 the exact balance holds.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    strata, groups = list(strata), list(groups or [])
    missing = [c for c in [*strata, *groups, order] if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}")
    n = len(table)
    stratum = table.groupby(strata, sort=True).ngroup().to_numpy()
    sizes = np.bincount(stratum, minlength=stratum.max(initial=-1) + 1)
    if (sizes < n_folds).any():
        small = table.iloc[int(np.flatnonzero(stratum == int(np.argmin(sizes)))[0])][strata].to_dict()
        raise ValueError(f"stratum {small} has {int(sizes.min())} rows, fewer than {n_folds} folds")
    unit = table.groupby(groups, sort=False).ngroup().to_numpy() if groups else np.arange(n)
    rank = np.empty(n, np.int64)
    rank[np.argsort(table[order].to_numpy(), kind="stable")] = np.arange(n)
    first = pd.Series(rank).groupby(unit).min()
    size = pd.Series(np.ones(n, np.int64)).groupby(unit).sum()
    units = sorted(first.index, key=lambda u: (-size[u], first[u]))
    members = pd.Series(np.arange(n)).groupby(unit).indices
    rng = np.random.default_rng(seed)
    fill = np.zeros((n_folds, sizes.size), np.int64)
    fold = np.full(n, -1, np.int64)
    for u in units:
        rows = members[u]
        cost = fill[:, stratum[rows]].sum(axis=1)
        f = int(np.lexsort((rng.random(n_folds), fill.sum(axis=1), cost))[0])
        fold[rows] = f
        np.add.at(fill[f], stratum[rows], 1)
    return pd.Series(fold, index=table.index, name="fold")
