"""Running segmentation and counting over folders of images (the CLI's and assets' workhorse).

- :func:`segmenter` / :func:`counter`: one callable per image from a model folder, or the
  classical baseline when no model is given.
- :func:`segment_folder`: one uint16 instance-label TIFF per input image, named
  ``<input stem>.tif``, each written atomically; returns a per-image table.
- :func:`count_folder`: a table ``image, count`` (plus the method and seconds).
- :func:`training_pairs`: images and instance labels of an image folder and a mask folder
  paired by stem (BBBC039-style coloured PNGs or label TIFFs).

Input folders are only read.  Images: ``.tif``/``.tiff``/``.png``, 8- or 16-bit (or float).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CellSetError
from ..imaging.io import read_image
from .classical import classical_segment
from .datasets import pair_by_stem, read_image_mask_folder
from .models import CountingModel, SegmentationModel, load_model

__all__ = [
    "segmenter",
    "counter",
    "segment_folder",
    "count_folder",
    "training_pairs",
    "write_labels",
]


def segmenter(model: str | Path | SegmentationModel | None = None, preset: str | None = None,
              object_diameter_px: float | None = None) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """A ``segment(image) -> labels`` callable and its method name.

    Parameters
    ----------
    model : path-like or SegmentationModel, optional
        A segmentation model folder (see :func:`~assets_pkg.core.segmentation.models.save_model`);
        None gives the classical baseline.
    preset : str, optional
        Classical preset (:data:`~assets_pkg.core.segmentation.classical.CLASSICAL_PRESETS`) when no
        model is given.
    object_diameter_px : float, optional
        Typical nucleus diameter in the images, pixels: the U-Net rescales images to its
        training scale, the classical baseline sizes its filters from it.
    """
    if model is None:
        return ((lambda im: classical_segment(im, object_diameter_px, preset=preset)),
                f"classical{'' if preset is None else ':' + preset}")
    if not isinstance(model, SegmentationModel):
        model = load_model(model, kind="segmentation")
    return (lambda im: model.segment(im, object_diameter_px)), "unet"


def counter(model: str | Path | SegmentationModel | CountingModel | None = None, preset: str | None = None,
            object_diameter_px: float | None = None) -> tuple[Callable[[np.ndarray], float], str]:
    """A ``count(image) -> number`` callable and its method name.

    A counting model regresses the count; a segmentation model (or the classical baseline when
    ``model`` is None) counts its predicted instances.
    """
    if isinstance(model, str | Path):
        model = load_model(model)
    if isinstance(model, CountingModel):
        return model.count, "counting-cnn"
    seg, name = segmenter(model, preset, object_diameter_px)
    return (lambda im: int(seg(im).max())), f"{name}-instances"


def write_labels(path: Path, labels: np.ndarray) -> None:
    """Write a uint16 label TIFF atomically (temporary file, then rename)."""
    import tifffile

    labels = np.asarray(labels)
    if labels.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError(f"{path.name}: {int(labels.max())} objects do not fit a uint16 label image")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tifffile.imwrite(tmp, labels.astype(np.uint16), compression="zlib")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _images(images_dir: str | Path) -> list[Path]:
    """The images of a folder, sorted; no image, or two sharing a stem (their outputs would
    collide), is an error naming the folder or the files."""
    return [Path(p) for p in pair_by_stem(images_dir)["image_path"]]


def segment_folder(
    images_dir: str | Path,
    out_dir: str | Path,
    model: str | Path | SegmentationModel | None = None,
    *,
    preset: str | None = None,
    object_diameter_px: float | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Segment every image of a folder into ``out_dir/<stem>.tif`` (uint16 instance labels).

    Parameters
    ----------
    images_dir : path-like
        Folder of ``.tif``/``.tiff``/``.png`` images (read only).
    out_dir : path-like
        Created if missing; existing label files of the same names are replaced.
    model : path-like or SegmentationModel, optional
        U-Net model folder; the classical baseline when None.
    preset : str, optional
        Classical preset when no model is given.
    object_diameter_px : float, optional
        Typical nucleus diameter in these images, pixels (see :func:`segmenter`).
    progress : bool
        tqdm bar.
    log : callable, optional
        Receives one line per image.

    Returns
    -------
    pandas.DataFrame
        ``image`` (file name), ``labels`` (output path), ``objects``, ``seconds``, ``method``.
    """
    paths = _images(images_dir)
    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(images_dir).resolve():
        raise CellSetError("the output folder must differ from the input folder (inputs are never overwritten)",
                           path=out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seg, method = segmenter(model, preset, object_diameter_px)
    it = paths
    if progress:
        from tqdm import tqdm

        it = tqdm(paths, desc=f"segment ({method})", unit="image")
    rows = []
    for p in it:
        image = read_image(p)
        t0 = time.perf_counter()
        labels = seg(image)
        dt = time.perf_counter() - t0
        target = out_dir / f"{p.stem}.tif"
        write_labels(target, labels)
        rows.append({"image": p.name, "labels": str(target), "objects": int(labels.max()), "seconds": dt,
                     "method": method})
        if log is not None:
            log(f"{p.name}: {int(labels.max())} objects in {dt:.2f}s")
    return pd.DataFrame(rows)


def count_folder(
    images_dir: str | Path,
    model: str | Path | SegmentationModel | CountingModel | None = None,
    *,
    preset: str | None = None,
    object_diameter_px: float | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Count the cells of every image of a folder.

    Returns
    -------
    pandas.DataFrame
        ``image`` (file name), ``count`` (int, rounded for the counting CNN), ``raw_count``
        (the model's unrounded output), ``method``, ``seconds``.
    """
    paths = _images(images_dir)
    fn, method = counter(model, preset, object_diameter_px)
    it = paths
    if progress:
        from tqdm import tqdm

        it = tqdm(paths, desc=f"count ({method})", unit="image")
    rows = []
    for p in it:
        image = read_image(p)
        t0 = time.perf_counter()
        raw = float(fn(image))
        rows.append({"image": p.name, "count": max(0, int(round(raw))), "raw_count": raw, "method": method,
                     "seconds": time.perf_counter() - t0})
    return pd.DataFrame(rows)


def training_pairs(images_dir: str | Path, masks_dir: str | Path, mask_kind: str = "auto"
                   ) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Names, images and instance labels of images paired with masks by file stem.

    Every image needs a mask (the error names the first one without).
    """
    ds = read_image_mask_folder(images_dir, masks_dir, require_masks=True, mask_kind=mask_kind)
    names, images, labels = [], [], []
    for name, image, lab in ds:
        names.append(name)
        images.append(image)
        labels.append(lab)
    return names, images, labels


# ----------------------------------------------------------------------------- image sets, evaluation
#: Simulated fields blurred more than this are left out of the segmentation set (they stay in
#: the counting set): their masks are the in-focus objects, while at BBBC005's F48 the blurred
#: nucleus is about twice its mask, so IoU scoring would measure the blur, not the segmenter
#: (BBBC005 itself gives masks for in-focus images only).
SEGMENTATION_MAX_BLUR = 23

CELL_SET_COLUMNS = ["set", "name", "image_path", "mask_path", "count", "blur", "stain", "split", "source"]


def scaled_counts(n: int, size: tuple[int, int], seed: int) -> list[int]:
    """BBBC005's counts drawn at random (seeded), scaled to the area of ``size`` (H, W) pixels.

    BBBC005 fields are 520 x 696 pixels; a smaller field gets proportionally fewer cells (at
    least 1) so that cells keep BBBC005's size and density.
    """
    from ..imaging.bbbc import BBBC005_COUNTS

    ratio = min(1.0, size[0] * size[1] / (520 * 696))
    drawn = np.random.default_rng(seed).choice(BBBC005_COUNTS, size=n)
    return [max(1, int(round(c * ratio))) for c in drawn]


def cell_sets_table(
    segmentation_images: str | Path | None = None,
    segmentation_masks: str | Path | None = None,
    counting_images: str | Path | None = None,
    *,
    simulated_dir: str | Path | None = None,
    simulated_fields: int = 24,
    simulated_size: tuple[int, int] = (520, 696),
    seed: int = 0,
    train_fraction: float = 2 / 3,
    progress: bool = False,
) -> pd.DataFrame:
    """The segmentation and counting image sets with their train/test split.

    A folder that is not given is replaced by simulated fields (:func:`simulate_cells` into
    ``simulated_dir``): the nucleus stain (``w1``) of fields blurred at most
    :data:`SEGMENTATION_MAX_BLUR` with its exact masks for segmentation, both stains of all
    fields with their counts for counting.

    Parameters
    ----------
    segmentation_images, segmentation_masks : path-like, optional
        Images and masks paired by stem (BBBC039-style PNGs or label TIFFs).
    counting_images : path-like, optional
        BBBC005-style names (``_C<count>_``).
    simulated_dir : path-like, optional
        Where simulated fields go (required when a folder is missing); an existing folder is
        reused when it holds the expected number of images, which is checked.
    simulated_fields, simulated_size, seed
        The simulation (each field gives a nucleus and a cell image; counts from
        :func:`scaled_counts`).
    train_fraction : float
        Segmentation: the first ``round(fraction * n)`` images by sorted name train (BBBC039:
        100 of 150).  Counting: :func:`~assets_pkg.core.segmentation.datasets.bbbc005_split` (every third
        image of each blur x stain group is test; every third by name when the groups are
        too small to give any).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`CELL_SET_COLUMNS`; ``set`` is ``"segmentation"`` or ``"counting"``,
        ``split`` ``"train"`` or ``"test"``, ``source`` ``"folder"`` or ``"simulated"``.
    """
    from ..imaging.cellsim import simulate_cells
    from .datasets import bbbc005_split, bbbc005_table, bbbc039_split

    sim = None
    if segmentation_images is None or counting_images is None:
        if simulated_dir is None:
            raise ValueError("simulated_dir is needed when a folder is not given")
        sim_dir = Path(simulated_dir)
        if not sim_dir.is_dir():  # simulated beside, then renamed: a crash leaves no half folder
            import shutil

            tmp = sim_dir.with_name(f".{sim_dir.name}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                simulate_cells(tmp, simulated_fields, seed=seed, size=tuple(simulated_size),
                               counts=scaled_counts(simulated_fields, simulated_size, seed), progress=progress)
                os.replace(tmp, sim_dir)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        sim = bbbc005_table(sim_dir, sim_dir / "masks")
        if len(sim) != 2 * simulated_fields:
            raise CellSetError(f"holds {len(sim)} images, expected {2 * simulated_fields} for "
                               f"{simulated_fields} simulated fields; remove it to simulate again", path=sim_dir)
    parts = []
    if segmentation_images is not None:
        if segmentation_masks is None:
            raise ValueError("segmentation_masks is needed with segmentation_images")
        pairs = pair_by_stem(segmentation_images, segmentation_masks, require_masks=True)
        seg = pd.DataFrame({"name": pairs["name"], "image_path": pairs["image_path"], "mask_path": pairs["mask_path"],
                            "source": "folder"})
    else:
        nuc = sim[(sim.stain == 1) & (sim.blur <= SEGMENTATION_MAX_BLUR)]
        seg = pd.DataFrame({"name": nuc["name"], "image_path": nuc["path"], "mask_path": nuc["mask_path"],
                            "count": nuc["count"], "blur": nuc["blur"], "stain": nuc["stain"], "source": "simulated"})
    n_train = int(round(train_fraction * len(seg)))
    train_names, _ = bbbc039_split(list(seg["name"]), n_train)
    seg["split"] = np.where(seg["name"].isin(train_names), "train", "test")
    parts.append(seg.assign(set="segmentation"))
    cnt = bbbc005_table(counting_images) if counting_images is not None else sim
    cnt = pd.DataFrame({"name": cnt["name"], "image_path": cnt["path"], "mask_path": cnt["mask_path"],
                        "count": cnt["count"], "blur": cnt["blur"], "stain": cnt["stain"],
                        "source": "folder" if counting_images is not None else "simulated"})
    cnt["split"] = bbbc005_split(cnt)
    if not (cnt["split"] == "test").any():  # groups under 3 images: every third image overall
        order = cnt["name"].rank(method="first").astype(int) - 1
        cnt["split"] = np.where(order % 3 == 2, "test", "train")
    parts.append(cnt.assign(set="counting"))
    out = pd.concat(parts, ignore_index=True)
    for c in CELL_SET_COLUMNS:
        if c not in out:
            out[c] = None
    out["image_path"] = out["image_path"].astype(str)
    out["mask_path"] = out["mask_path"].map(lambda p: None if p is None or (isinstance(p, float) and np.isnan(p))
                                            else str(p))
    return out[CELL_SET_COLUMNS].sort_values(["set", "name"]).reset_index(drop=True)


def evaluate_segmentation(
    table: pd.DataFrame,
    methods: dict[str, Callable[[np.ndarray], np.ndarray]],
    *,
    progress: bool = False,
) -> tuple[pd.DataFrame, dict[str, list[np.ndarray]]]:
    """Segment the images of a table (``name``, ``image_path``, ``mask_path``) with each method.

    Returns
    -------
    scores : pandas.DataFrame
        One row per image and method: ``name``, ``method``, ``seconds`` and the keys of
        :func:`~assets_pkg.core.segmentation.metrics.score_segmentation`.
    labels : dict of method -> list of ndarray (H, W) int32
        The predictions, in table order.
    """
    from .datasets import load_mask
    from .metrics import score_segmentation

    rows, labels = [], {m: [] for m in methods}
    it = list(table.itertuples(index=False))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="segment + score", unit="image")
    for r in it:
        image = read_image(r.image_path)
        truth = load_mask(r.mask_path)
        for m, fn in methods.items():
            t0 = time.perf_counter()
            pred = np.asarray(fn(image), np.int32)
            dt = time.perf_counter() - t0
            labels[m].append(pred)
            rows.append({"name": r.name, "method": m, "seconds": dt, **score_segmentation(pred, truth)})
    return pd.DataFrame(rows), labels


def write_label_stack(path: str | Path, labels: list[np.ndarray]) -> tuple[int, int, int]:
    """Write label images into one zarr3 TensorStore array (N, H_max, W_max) uint16, zero-padded.

    Each image occupies ``[i, :H_i, :W_i]``; one chunk per image.  Returns the array's shape.
    """
    import tensorstore as ts

    if not labels:
        raise ValueError("no label image to write")
    h = max(lab.shape[0] for lab in labels)
    w = max(lab.shape[1] for lab in labels)
    shape = (len(labels), h, w)
    arr = ts.open({
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(Path(path).resolve())},
        "metadata": {"shape": list(shape), "data_type": "uint16", "chunk_grid": {"name": "regular", "configuration":
                     {"chunk_shape": [1, h, w]}},
                     "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                                {"name": "zstd", "configuration": {"level": 3}}],
                     "fill_value": 0},
        "create": True, "delete_existing": True,
    }).result()
    futures = []
    for i, lab in enumerate(labels):
        if lab.max(initial=0) > np.iinfo(np.uint16).max:
            raise ValueError(f"label image {i} has more objects than uint16 holds")
        futures.append(arr[i, : lab.shape[0], : lab.shape[1]].write(lab.astype(np.uint16)))
    for f in futures:
        f.result()
    return shape


def read_label_stack(path: str | Path, index: int | None = None) -> np.ndarray:
    """Read a stack written by :func:`write_label_stack` (all, or image ``index``; padded)."""
    import tensorstore as ts

    arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(Path(path).resolve())}}).result()
    return arr.read().result() if index is None else arr[index].read().result()
