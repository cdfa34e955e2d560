"""Train / valid / test splits of the frame catalog, exclusive by field of view or by protein.

Frames of one field of view are strongly correlated (same cells, same illumination), so a
split that puts crops of one field into both train and valid overstates accuracy; cytoself
splits by field.  Splitting by protein instead tests generalisation to unseen proteins.

A field is ``(plate_id, well, field_id)``.  Every frame must have all three (and an
``ensg_id``): :func:`make_splits` refuses a catalog with an empty or NaN key instead of
grouping such frames together, and :func:`check_disjoint` fails a split with an empty split
or missing keys instead of passing it vacuously.  Imports without plate wells or fields state
their grouping (:func:`assets_pkg.core.store.sources.read_cytoself_arrays`).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from ..errors import CellscapeError
from .config import SplitConfig

SPLITS: tuple[str, ...] = ("train", "valid", "test")

#: The columns that say which field (and protein) a frame belongs to; never empty or NaN.
KEY_COLUMNS: tuple[str, ...] = ("plate_id", "well", "field_id", "ensg_id")


def blank_keys(column: pd.Series) -> np.ndarray:
    """Which entries of a key column are missing: NaN/NA/None, or text that is empty after strip.

    Returns
    -------
    ndarray of bool, shape (len(column),)
    """
    blank = column.isna().to_numpy(dtype=bool, copy=True)
    if not pd.api.types.is_numeric_dtype(column.dtype):
        text = column.astype(object).where(~blank, "").astype(str).str.strip()
        blank |= (text == "").to_numpy(dtype=bool)
    return blank


def _key_problems(table: pd.DataFrame, columns) -> list[tuple[str, str]]:
    """``(column, message)`` for every key column with empty or NaN entries."""
    out = []
    for c in columns:
        blank = blank_keys(table[c])
        if blank.any():
            example = table["frame_id"].iloc[int(np.argmax(blank))] if "frame_id" in table else int(np.argmax(blank))
            out.append((c, f"column {c!r} is empty or NaN in {int(blank.sum())} of {len(table)} rows "
                           f"(e.g. frame {example!r})"))
    return out


def field_key(table: pd.DataFrame) -> pd.Series:
    """``plate_id/well/field_id`` of every row, as str: the unit of a field-exclusive split."""
    return table["plate_id"].astype(str) + "/" + table["well"].astype(str) + "/" + table["field_id"].astype(str)


def _assign_counts(n: int, fractions: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Split ``n`` groups into (train, valid, test) counts.

    Each split gets the whole part of its share; the groups left over go to splits drawn
    at random in proportion to their fractional parts, so over many proteins with few fields
    each the totals still follow ``fractions`` (a protein with 2 fields at 80/10/10 sends its
    second field to valid or test 40 % of the time instead of never).  Train always gets at
    least one group.
    """
    raw = np.asarray(fractions, dtype=float) * n
    counts = np.floor(raw + 1e-9).astype(int)
    left = n - int(counts.sum())
    if left > 0:
        rem = np.clip(raw - counts, 0, None)
        p = rem / rem.sum() if rem.sum() > 0 else np.asarray(fractions) / np.sum(fractions)
        for i in rng.choice(3, size=left, replace=False, p=p):
            counts[i] += 1
    if n > 0 and counts[0] == 0:  # a protein must be seen in training before anything else
        j = int(np.argmax(counts))
        counts[j] -= 1
        counts[0] += 1
    return counts


def make_splits(catalog: pd.DataFrame, config: SplitConfig = SplitConfig()) -> pd.DataFrame:
    """Assign every kept frame of a catalog to train, valid or test.

    Parameters
    ----------
    catalog : pandas.DataFrame
        One row per frame with at least ``frame_id``, ``plate_id``, ``well``, ``field_id`` and
        ``ensg_id``, none of them empty or NaN.
    config : SplitConfig

    Returns
    -------
    pandas.DataFrame
        The kept rows of ``catalog`` (same columns) plus ``split`` (str) and ``label``
        (int64, dense protein class index over the kept proteins, ordered by ``ensg_id``),
        sorted by ``frame_id``.  Deterministic for a given catalog and config.

    Raises
    ------
    CellscapeError (a ValueError)
        Naming the column: when a column is missing, a ``frame_id`` repeats, or a key
        (``frame_id``, ``plate_id``, ``well``, ``field_id``, ``ensg_id``) is empty or NaN --
        such frames would otherwise form one silent group (all of them in one split).
    """
    need = ("frame_id", *KEY_COLUMNS)
    missing = sorted(set(need) - set(catalog.columns))
    if missing:
        raise CellscapeError(f"catalog lacks columns {missing}", field=missing[0])
    for column, message in _key_problems(catalog, need):
        raise CellscapeError(f"catalog {message}: every frame needs a plate, well, field and protein "
                             "(re-import sources without wells or fields with cellscape import)", field=column)
    if catalog["frame_id"].duplicated().any():
        dup = catalog.loc[catalog["frame_id"].duplicated(), "frame_id"].iloc[0]
        raise ValueError(f"catalog has duplicate frame_id {dup!r}")
    rng = np.random.default_rng(config.seed)
    df = catalog.sort_values("frame_id").reset_index(drop=True)

    proteins = np.array(sorted(df["ensg_id"].astype(str).unique()))
    if config.n_proteins is not None and config.n_proteins < len(proteins):
        proteins = np.sort(rng.choice(proteins, size=config.n_proteins, replace=False))
        df = df[df["ensg_id"].isin(proteins)].reset_index(drop=True)

    if config.max_frames_per_protein is not None:
        keep = np.zeros(len(df), dtype=bool)
        for _, idx in df.groupby("ensg_id", sort=True).indices.items():
            if len(idx) > config.max_frames_per_protein:
                idx = rng.choice(idx, size=config.max_frames_per_protein, replace=False)
            keep[idx] = True
        df = df[keep].reset_index(drop=True)

    fractions = (config.train, config.valid, config.test)
    split = np.empty(len(df), dtype=object)
    if config.exclusive_by == "field":
        for _, sub in df.assign(_field=field_key(df)).groupby("ensg_id", sort=True):
            fields = np.array(sorted(sub["_field"].unique()))
            rng.shuffle(fields)
            counts = _assign_counts(len(fields), fractions, rng)
            names = np.repeat(np.array(SPLITS, dtype=object), counts)
            lookup = dict(zip(fields, names, strict=True))
            split[sub.index.to_numpy()] = sub["_field"].map(lookup).to_numpy()
    else:
        shuffled = proteins.copy()
        rng.shuffle(shuffled)
        counts = _assign_counts(len(shuffled), fractions, rng)
        lookup = dict(zip(shuffled, np.repeat(np.array(SPLITS, dtype=object), counts), strict=True))
        split[:] = df["ensg_id"].astype(str).map(lookup).to_numpy()

    out = df.copy()
    out["split"] = pd.Series(split, dtype="string")
    out["label"] = np.searchsorted(proteins, out["ensg_id"].astype(str).to_numpy()).astype(np.int64)
    return out


def check_disjoint(splits: pd.DataFrame, config: SplitConfig | str) -> list[str]:
    """Return the problems that make a split unusable; empty when the split is sound.

    Parameters
    ----------
    splits : pandas.DataFrame
        Output of :func:`make_splits`.
    config : SplitConfig or str
        The config the split was made with; a bare ``"field"`` or ``"protein"`` means
        ``SplitConfig(exclusive_by=...)`` (default fractions, all three non-zero).

    Returns
    -------
    list of str
        One line per problem: a missing column; an empty or NaN key (``frame_id``, ``split``,
        ``plate_id``, ``well``, ``field_id``, ``ensg_id``); a split name outside
        :data:`SPLITS`; a frame listed twice; a field (or protein, for
        ``exclusive_by="protein"``) that straddles two splits; no frames at all; a split the
        config gives a non-zero fraction that holds no frame.  Nothing passes vacuously.
    """
    if isinstance(config, str):
        config = SplitConfig(exclusive_by=config)
    need = ("frame_id", "split", *KEY_COLUMNS)
    missing = [c for c in need if c not in splits.columns]
    if missing:
        return [f"columns {missing} are missing"]
    problems = [message for _, message in _key_problems(splits, need)]
    if problems:
        return problems
    if len(splits) == 0:
        return ["the split holds no frames"]
    names = splits["split"].astype(str)
    unknown = sorted(set(names) - set(SPLITS))
    if unknown:
        problems.append(f"split names {unknown} are not {list(SPLITS)}")
    if splits["frame_id"].duplicated().any():
        problems.append(f"{int(splits['frame_id'].duplicated().sum())} frames appear twice")
    if config.exclusive_by == "field":
        key, unit = field_key(splits), "field"
    else:
        key, unit = splits["ensg_id"].astype(str), "protein"
    per_unit = names.groupby(key.to_numpy()).nunique()
    bad = per_unit[per_unit > 1]
    if len(bad):
        problems.append(f"{len(bad)} {unit}s straddle splits, e.g. {list(bad.index[:3])}")
    counts = names.value_counts()
    for name, fraction in zip(SPLITS, (config.train, config.valid, config.test), strict=True):
        if fraction > 0 and counts.get(name, 0) == 0:
            problems.append(f"{name} is empty although the config gives it {fraction:g} of the {unit}s "
                            f"({key.nunique()} {unit}s in all)")
    return problems


def split_summary(splits: pd.DataFrame) -> dict:
    """Frames, proteins and fields per split, as plain ints."""
    out = {}
    for name in SPLITS:
        sub = splits[splits["split"] == name]
        out[name] = {
            "frames": int(len(sub)),
            "proteins": int(sub["ensg_id"].nunique()),
            "fields": int(sub.groupby(["plate_id", "well", "field_id"]).ngroups) if len(sub) else 0,
        }
    return out


def split_version(splits: pd.DataFrame, config: SplitConfig) -> str:
    """A short content hash of the assignment and config, recorded by models trained on it."""
    h = hashlib.sha256()
    h.update(repr(sorted(config.model_dump().items())).encode())
    h.update(pd.util.hash_pandas_object(splits[["frame_id", "split"]], index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]
