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
