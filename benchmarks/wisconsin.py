"""The Wisconsin breast-cancer data, for the benchmarks and the tests that use it.

Not part of the package: the data file is not shipped with the repository, so
the benchmark and the test that use it take its path and skip without it.
"""

import numpy as np


def load_breast_cancer_wisconsin(path):
    """The original Wisconsin breast-cancer data (UCI), as used for Bayesian
    logistic regression in the particle-EM literature.

    Reads the comma-separated file ``breast-cancer-wisconsin.data`` (columns:
    sample id, 9 integer features in 1..10, class 2 = benign or 4 =
    malignant), drops the 16 rows with missing values (``?``), standardises
    each feature to mean 0 and standard deviation 1, and maps the class to
    ``(class - 2) / 2`` in ``{0, 1}``.

    Args:
        path: the file's path (the data set is not shipped with the repository).

    Returns:
        ``(features, labels)``: NumPy arrays, float32 ``(683, 9)`` and
        float32 ``(683,)``.

    References:
        Wolberg & Mangasarian (1990), *Multisurface method of pattern
        separation for medical diagnosis applied to breast cytology*, PNAS 87;
        UCI Machine Learning Repository (CC BY 4.0).
    """
    rows = []
    with open(path) as f:
        for line in f:
            fields = line.strip().split(",")
            if len(fields) != 11 or "?" in fields:
                continue
            rows.append([float(v) for v in fields[1:]])
    if not rows:
        raise ValueError(f"no complete rows found in {path!r}.")
    data = np.asarray(rows, np.float64)
    features, classes = data[:, :9], data[:, 9]
    if not np.all(np.isin(classes, (2.0, 4.0))):
        raise ValueError(f"unexpected class labels in {path!r}: expected 2 and 4.")
    features = (features - features.mean(0)) / features.std(0)
    return features.astype(np.float32), ((classes - 2.0) / 2.0).astype(np.float32)
