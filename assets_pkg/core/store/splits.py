"""Train / valid / test splits of the frame catalog, exclusive by field of view or by protein.

Frames of one field of view are strongly correlated (same cells, same illumination), so a
split that puts crops of one field into both train and valid overstates accuracy; cytoself
splits by field.  Splitting by protein instead tests generalisation to unseen proteins.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from .config import SplitConfig

SPLITS: tuple[str, ...] = ("train", "valid", "test")


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
        ``ensg_id``.
    config : SplitConfig

    Returns
    -------
    pandas.DataFrame
        The kept rows of ``catalog`` (same columns) plus ``split`` (str) and ``label``
        (int64, dense protein class index over the kept proteins, ordered by ``ensg_id``),
        sorted by ``frame_id``.  Deterministic for a given catalog and config.
    """
    need = {"frame_id", "plate_id", "well", "field_id", "ensg_id"}
    missing = need - set(catalog.columns)
    if missing:
        raise ValueError(f"catalog lacks columns {sorted(missing)}")
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
    field_key = df["plate_id"].astype(str) + "/" + df["well"].astype(str) + "/" + df["field_id"].astype(str)
    if config.exclusive_by == "field":
        for _, sub in df.assign(_field=field_key).groupby("ensg_id", sort=True):
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


def check_disjoint(splits: pd.DataFrame, exclusive_by: str) -> list[str]:
    """Return the problems that make a split unusable; empty when the split is sound.

    Checks that no frame is in two splits and that no field (or protein, for
    ``exclusive_by="protein"``) straddles two splits.
    """
    problems = []
    if splits["frame_id"].duplicated().any():
        problems.append(f"{int(splits['frame_id'].duplicated().sum())} frames appear twice")
    if exclusive_by == "field":
        key = splits["plate_id"].astype(str) + "/" + splits["well"].astype(str) + "/" + splits["field_id"].astype(str)
        unit = "field"
    else:
        key = splits["ensg_id"].astype(str)
        unit = "protein"
    per_unit = splits.groupby(key)["split"].nunique()
    bad = per_unit[per_unit > 1]
    if len(bad):
        problems.append(f"{len(bad)} {unit}s straddle splits, e.g. {list(bad.index[:3])}")
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
