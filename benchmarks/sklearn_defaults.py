"""xpnet's scikit-learn estimators with their defaults beside scikit-learn's own.

Each estimator is used as a scikit-learn user would: defaults, in a ``StandardScaler``
pipeline, scored by 3-fold cross-validation (accuracy for the classifiers, R² for the
regressors) on scikit-learn's bundled data sets, with the wall time of the whole
cross-validation. Both get ``random_state=0``.

    python benchmarks/sklearn_defaults.py
"""

from __future__ import annotations

import time
import warnings

from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_score
from sklearn.neural_network import MLPClassifier as SkClassifier
from sklearn.neural_network import MLPRegressor as SkRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from xpnet.sklearn import MLPClassifier, MLPRegressor

CASES = [
    ("digits", load_digits, MLPClassifier, SkClassifier),
    ("wine", load_wine, MLPClassifier, SkClassifier),
    ("breast cancer", load_breast_cancer, MLPClassifier, SkClassifier),
    ("diabetes (R²)", load_diabetes, MLPRegressor, SkRegressor),
]


def _score(estimator, X, y):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        score = cross_val_score(make_pipeline(StandardScaler(), estimator), X, y, cv=3).mean()
    return score, time.perf_counter() - start


def main():
    print("| data | xpnet | scikit-learn | xpnet s | scikit-learn s |")
    print("|---|---:|---:|---:|---:|")
    for name, load, ours, theirs in CASES:
        X, y = load(return_X_y=True)
        (a, ta), (b, tb) = _score(ours(random_state=0), X, y), _score(theirs(random_state=0), X, y)
        print(f"| {name} | {a:.3f} | {b:.3f} | {ta:.1f} | {tb:.1f} |", flush=True)


if __name__ == "__main__":
    main()
