"""Spectra with planted structure, shared by the atlas tests (importable as ``spectra_factory``)."""

import numpy as np
import pandas as pd


def planted_spectra(seed=0, n_proteins=60, group_sizes=(10, 7, 13), noise=0.02):
    """Spectra whose codes co-vary in planted groups across proteins.

    Each protein has one activity per code group; a code's value is its group's activity
    times a fixed code weight, plus a little noise.  Codes are shuffled so the groups are not
    contiguous.  Returns (spectra DataFrame, planted code labels, protein group of each row).
    """
    rng = np.random.default_rng(seed)
    k = sum(group_sizes)
    planted = np.repeat(np.arange(len(group_sizes)), group_sizes)
    perm = rng.permutation(k)
    planted = planted[perm]
    # three protein groups, each dominated by one code group
    protein_group = np.arange(n_proteins) % len(group_sizes)
    activity = rng.lognormal(0.0, 0.3, size=(n_proteins, len(group_sizes)))
    activity[np.arange(n_proteins), protein_group] *= 8.0
    weights = rng.uniform(0.5, 1.5, size=k)
    x = activity[:, planted] * weights + noise * rng.random((n_proteins, k))
    x /= x.sum(axis=1, keepdims=True)
    names = [f"P{i:03d}" for i in range(n_proteins)]
    return pd.DataFrame(x, index=pd.Index(names, name="protein")), planted, protein_group


def synthetic_embeddings(seed=0, n_proteins=30, frames_per_protein=8, codes=20, classes=("er", "golgi", "nucleoplasm")):
    """Embeddings of frames whose code use depends on their protein's class, no model needed.

    Every 7th protein is unannotated; one unused code (all zero); frames cycle through train,
    train, valid, test.  Returns
    ``assets_pkg.core.localization.atlas.Embeddings`` with a frame table like the store's.
    """
    from assets_pkg.core.localization.atlas import Embeddings

    rng = np.random.default_rng(seed)
    genes = [f"G{i:02d}" for i in range(n_proteins)]
    cls = np.arange(n_proteins) % len(classes)
    loc = {g: (classes[c] if i % 7 else "") for i, (g, c) in enumerate(zip(genes, cls, strict=True))}
    rows = pd.DataFrame({"gene": np.repeat(genes, frames_per_protein)})
    rows["frame_id"] = np.arange(len(rows))
    rows["plate_id"] = "plate01"
    rows["frame_index"] = np.arange(len(rows))
    rows["ensg_id"] = "E" + rows["gene"]
    rows["localization"] = rows["gene"].map(loc)
    rows["split"] = np.tile(["train", "train", "valid", "test"], len(rows) // 4 + 1)[:len(rows)]
    profile = rng.random((len(classes), codes)) ** 3
    h = rng.poisson(profile[np.repeat(cls, frames_per_protein)] * 30 + 0.5).astype(np.float32)
    h[:, -1] = 0
    h /= h.sum(axis=1, keepdims=True)
    pooled = rng.normal(size=(len(rows), 4)).astype(np.float32)
    return Embeddings(rows, h, None, pooled, 100.0)
