"""xpnet's scikit-learn estimators with their defaults beside scikit-learn's own.

Each estimator is used as a scikit-learn user would: defaults, in a ``StandardScaler``
pipeline, scored by 3-fold cross-validation (accuracy for the classifiers, R² for the
regressors) on scikit-learn's bundled data sets, with the wall time of the whole
cross-validation. The score is the mean over ``random_state`` 0 to 4 (one seed moves a
score by about as much as the two estimators differ), and the time is per seed.

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


SEEDS = range(5)


def _score(make, X, y):
    start, scores = time.perf_counter(), []
    for seed in SEEDS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipe = make_pipeline(StandardScaler(), make(random_state=seed))
            scores.append(cross_val_score(pipe, X, y, cv=3).mean())
    return sum(scores) / len(scores), (time.perf_counter() - start) / len(SEEDS)


def main():
    print("| data | xpnet | scikit-learn | xpnet s | scikit-learn s |")
    print("|---|---:|---:|---:|---:|")
    for name, load, ours, theirs in CASES:
        X, y = load(return_X_y=True)
        (a, ta), (b, tb) = _score(ours, X, y), _score(theirs, X, y)
        print(f"| {name} | {a:.4f} | {b:.4f} | {ta:.1f} | {tb:.1f} |", flush=True)


if __name__ == "__main__":
    main()
