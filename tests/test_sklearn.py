"""The scikit-learn estimators: scikit-learn's own estimator checks, a Pipeline with
cross-validation on the digits, and NumPy in and out whatever the backend."""

from __future__ import annotations

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from xpnet.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@parametrize_with_checks([MLPClassifier(), MLPRegressor()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_pipeline_cross_validation_on_digits():
    X, y = load_digits(return_X_y=True)
    clf = MLPClassifier(
        hidden_layer_sizes=(128, 64), batchnorm=True, epochs=40, batch_size=32, random_state=0
    )
    pipe = make_pipeline(StandardScaler(), clf)
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() >= 0.95, scores


def test_numpy_in_and_out_on_the_backend_under_test(backend_case, xp):
    lib, device = backend_case
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    clf = MLPClassifier(
        hidden_layer_sizes=(32,), epochs=5, batch_size=32, random_state=0, backend=lib,
        device=device, batchnorm=True, dropout=0.1, optimizer="adamw",
    )  # fmt: skip
    clf.fit(X[:1200], y[:1200])
    proba = clf.predict_proba(X[1200:])
    assert isinstance(proba, np.ndarray) and proba.shape == (597, 10)
    assert isinstance(clf.predict(X[:3]), np.ndarray)
    assert clf.score(X[1200:], y[1200:]) > 0.8
    assert len(clf.loss_curve_) == clf.n_iter_ == 5 and clf.n_features_in_ == 64
    reg = MLPRegressor(hidden_layer_sizes=(16,), epochs=3, backend=lib, device=device)
    out = reg.fit(X, np.stack([y, -y], axis=1).astype(float)).predict(X[:4])
    assert isinstance(out, np.ndarray) and out.shape == (4, 2)


def test_partial_fit_and_early_stopping():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    clf = MLPClassifier(hidden_layer_sizes=(32,), batch_size=32, random_state=0)
    with pytest.raises(ValueError) as info:
        clf.partial_fit(X, y)
    assert str(info.value) == "partial_fit: classes must be given on the first call"
    for _ in range(3):
        clf.partial_fit(X, y, classes=np.arange(10))
    assert clf.n_iter_ == 3 and clf.loss_curve_[2] < clf.loss_curve_[0]
    stopped = MLPClassifier(
        hidden_layer_sizes=(32,), epochs=500, batch_size=32, early_stopping=True,
        n_iter_no_change=3, random_state=0,
    ).fit(X, y)  # fmt: skip
    assert stopped.n_iter_ < 500 and len(stopped.validation_scores_) == stopped.n_iter_
    assert clf.get_params()["hidden_layer_sizes"] == (32,)
    assert clf.set_params(epochs=7).epochs == 7


def test_partial_fit_classes_given_unsorted_and_duplicated():
    """classes_ is the sorted set of the classes given, whatever their order and
    repetitions: one probability column per class, labels mapped to their own column."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4))
    y = np.array(["cat", "dog", "ant"] * 20)
    X[y == "dog", 0] += 4
    X[y == "ant", 1] += 4
    given = ["dog", "cat", "dog", "ant", "cat"]
    clf = MLPClassifier(hidden_layer_sizes=(8,), learning_rate=0.02, random_state=0)
    for _ in range(30):
        clf.partial_fit(X, y, classes=given)
    assert clf.classes_.tolist() == ["ant", "cat", "dog"]
    assert clf.predict_proba(X).shape == (60, 3)
    assert np.mean(clf.predict(X) == y) > 0.9  # each label learned as its own class
    reference = MLPClassifier(hidden_layer_sizes=(8,), learning_rate=0.02, random_state=0)
    for _ in range(30):
        reference.partial_fit(X, y, classes=np.array(["ant", "cat", "dog"]))
    np.testing.assert_array_equal(clf.predict_proba(X), reference.predict_proba(X))


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("epochs", 0),
        ("epochs", -5),
        ("epochs", 2.7),
        ("batch_size", 0),
        ("batch_size", "big"),
        ("validation_fraction", 1.5),
        ("validation_fraction", 0.0),
        ("learning_rate", 0.0),
        ("momentum", 1.5),
        ("momentum", 1.0),
        ("weight_decay", -1e-4),
        ("dropout", 1.0),
        ("hidden_layer_sizes", 0),
        ("activation", "swish"),
        ("optimizer", "lbfgs"),
        ("dtype", "float16"),
        ("n_iter_no_change", 0),
        ("early_stopping", "yes"),
    ],
)
@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_bad_parameters_are_refused_by_name_before_training(estimator, param, value, method):
    """scikit-learn's parameter-constraint machinery checks every parameter, as for its
    own estimators: one ValueError naming the parameter, before any training."""
    from sklearn.utils._param_validation import InvalidParameterError

    X, y = np.zeros((6, 3)), np.array([0, 1, 0, 1, 0, 1])
    kwargs = {"classes": [0, 1]} if method == "partial_fit" and estimator is MLPClassifier else {}
    model = estimator(**{param: value})
    with pytest.raises(InvalidParameterError, match=f"'{param}' parameter of {estimator.__name__}"):
        getattr(model, method)(X, y, **kwargs)
    assert not hasattr(model, "model_")


def test_a_diverging_fit_raises_instead_of_returning_nan():
    from xpnet.errors import TrainingDiverged

    X, y = load_digits(return_X_y=True)
    model = MLPClassifier(learning_rate=1e6, optimizer="sgd", epochs=5, random_state=0)
    with pytest.raises(
        TrainingDiverged, match=r"training loss became (nan|inf) at epoch \d+, step \d+"
    ):
        model.fit(X, y)


def _non_defaults(device):
    """A value other than the default for every parameter of both estimators."""
    return {
        "hidden_layer_sizes": (7, 5),
        "activation": "tanh",
        "batchnorm": True,
        "dropout": 0.25,
        "optimizer": "sgd",
        "learning_rate": 0.05,
        "momentum": 0.5,
        "weight_decay": 0.0,
        "batch_size": 16,
        "epochs": 3,
        "early_stopping": True,
        "validation_fraction": 0.2,
        "n_iter_no_change": 4,
        "random_state": 3,
        "backend": "array_api_strict",
        "device": device,
        "dtype": "float32",
    }


@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_every_parameter_given_is_kept_and_builds_the_model(estimator):
    """Each parameter given at construction is what get_params returns and what the model
    is built and trained with: array-api-strict's second device shows a dropped device in
    every session."""
    from tests.helpers import strict_devices
    from xpnet import backend
    from xpnet.nn import BatchNorm1d, Dropout, Tanh
    from xpnet.optim import SGD

    strict, _, second = strict_devices()
    given = _non_defaults(second)
    defaults = estimator().get_params()
    assert set(given) == set(defaults)  # a new parameter is added here
    assert all(given[name] != defaults[name] for name in given)
    model = estimator(**given)
    assert model.get_params() == given
    X = np.random.default_rng(0).standard_normal((50, 6))
    model.fit(X, np.arange(50) % 3)
    net = model.model_
    assert backend.library_name(net.xp) == "array_api_strict" and net.device == second
    outputs = 3 if estimator is MLPClassifier else 1
    assert net.dtype == strict.float32 and net.sizes == [6, 7, 5, outputs]
    assert all(isinstance(f, Tanh) for f in net.f[:-1]) and len(net.bn_layers) == 2
    assert [(type(d), d.p) for d in net.dropout_layers] == [(Dropout, 0.25)] * 2
    assert all(isinstance(bn, BatchNorm1d) for bn in net.bn_layers)
    opt = model._optimizer
    assert isinstance(opt, SGD) and (opt.lr, opt.mu, opt.weight_decay) == (0.05, 0.5, 0.0)
    assert 1 <= model.n_iter_ <= 3 and len(model.validation_scores_) == model.n_iter_
    assert model.predict(X).shape[0] == 50


def _blobs(n=60, classes=3, seed=0):
    """``n`` rows of 4 features in ``classes`` separable groups, labelled 0, 1, ..."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    X = rng.standard_normal((n, 4))
    X[np.arange(n), y % 4] += 4
    return X, y


def test_labels_outside_the_classes_are_refused_naming_them():
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=(4,), random_state=0)
    clf.partial_fit(X, y * 2 + 1, classes=[1, 3, 5])
    labels = np.array([1, 0, 3, 2, 5, 6] * 10)  # below, between and above the classes
    with pytest.raises(ValueError) as info:
        clf.partial_fit(X, labels)
    assert str(info.value) == "labels [0, 2, 6] are not among the classes [1 3 5]"
    with pytest.raises(ValueError) as info:
        clf.partial_fit(X, np.full(60, 7))  # only above: past the last class's index
    assert str(info.value) == "labels [7] are not among the classes [1 3 5]"


def test_partial_fit_keeps_the_classes_given_when_a_batch_lacks_some():
    """A later batch holding only some classes trains each label on its own column."""
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=(8,), learning_rate=0.02, random_state=0)
    clf.partial_fit(X, y, classes=[0, 1, 2])
    for _ in range(40):
        clf.partial_fit(X[y > 0], y[y > 0])
    assert clf.classes_.tolist() == [0, 1, 2] and clf.predict_proba(X).shape == (60, 3)
    assert np.mean(clf.predict(X[y > 0]) == y[y > 0]) > 0.9


def test_a_failed_first_partial_fit_leaves_the_estimator_unfitted():
    from sklearn.exceptions import NotFittedError

    X, y = _blobs()
    clf = MLPClassifier(backend="no_such_library")
    with pytest.raises(ValueError, match="unknown backend 'no_such_library'"):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(NotFittedError):
        clf.predict(X)
    clf.set_params(backend="numpy", random_state=0).partial_fit(X, y, classes=[0, 1, 2])
    assert clf.predict(X).shape == (60,) and clf.n_iter_ == 1


def test_regressor_partial_fit_takes_several_outputs_one_epoch_a_call():
    X, _ = _blobs()
    Y = np.stack([X[:, 0] + X[:, 1], X[:, 2] - X[:, 3]], axis=1)
    reg = MLPRegressor(hidden_layer_sizes=(8,), random_state=0)
    for calls in (1, 2):
        reg.partial_fit(X, Y)
        assert reg.n_iter_ == calls and len(reg.loss_curve_) == calls
    assert reg.predict(X).shape == (60, 2)
    with pytest.raises(ValueError) as info:
        reg.partial_fit(X, Y[:, :1])
    assert str(info.value) == "partial_fit: y has 1 outputs, the model 2"


def test_score_weighs_the_rows_with_sample_weight():
    from sklearn.metrics import accuracy_score, r2_score

    X, y = _blobs()
    weights = np.linspace(0.1, 3.0, 60)
    clf = MLPClassifier(hidden_layer_sizes=(4,), epochs=2, random_state=0).fit(X, y)
    want = accuracy_score(y, clf.predict(X), sample_weight=weights)
    assert clf.score(X, y, sample_weight=weights) == want != clf.score(X, y)
    target = X @ np.array([1.0, -2.0, 0.5, 3.0])
    reg = MLPRegressor(hidden_layer_sizes=(4,), epochs=2, random_state=0).fit(X, target)
    want = r2_score(target, reg.predict(X), sample_weight=weights)
    assert reg.score(X, target, sample_weight=weights) == want != reg.score(X, target)


@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_a_random_state_instance_seeds_as_the_integer_it_draws(estimator):
    X, y = _blobs()
    drawn = int(np.random.RandomState(0).randint(2**31 - 1))
    given = estimator(hidden_layer_sizes=(4,), epochs=2, random_state=np.random.RandomState(0))
    seeded = estimator(hidden_layer_sizes=(4,), epochs=2, random_state=drawn)
    np.testing.assert_array_equal(given.fit(X, y).predict(X), seeded.fit(X, y).predict(X))
    assert given.loss_curve_ == seeded.loss_curve_


@pytest.fixture
def fit_calls(monkeypatch):
    """The calls the estimators make to xpnet.train.fit, each recorded as its keyword
    arguments with ``X`` (the training features) and ``history`` (what fit returned)."""
    import xpnet.sklearn

    calls, real_fit = [], xpnet.sklearn.fit

    def recording_fit(model, loss, optimizer, train_data, **options):
        history = real_fit(model, loss, optimizer, train_data, **options)
        calls.append({**options, "X": train_data[0], "history": history})
        return history

    monkeypatch.setattr(xpnet.sklearn, "fit", recording_fit)
    return calls


@pytest.mark.parametrize(("n", "fraction", "held"), [(50, 0.1, 5), (50, 0.25, 12), (3, 0.1, 1)])
def test_early_stopping_holds_out_its_fraction_of_the_rows(fit_calls, n, fraction, held):
    """``round(validation_fraction * n)`` rows, at least one, none of them trained on;
    validation_scores_ is minus each epoch's validation loss."""
    X = np.arange(n * 2.0).reshape(n, 2)  # each row its own
    clf = MLPClassifier(
        hidden_layer_sizes=(4,), epochs=3, early_stopping=True, validation_fraction=fraction,
        random_state=0,
    ).fit(X, np.arange(n) % 2)  # fmt: skip
    (call,) = fit_calls
    kept, validation = call["X"][:, 0].tolist(), call["validation"][0][:, 0].tolist()
    assert len(validation) == held and len(kept) == n - held
    assert sorted(kept + validation) == X[:, 0].tolist()
    assert clf.validation_scores_ == [-record["val_loss"] for record in call["history"]]


@pytest.mark.parametrize(("n", "batch_size", "used"), [(250, "auto", 200), (50, "auto", 50),
                                                       (50, 16, 16), (50, 64, 64)])  # fmt: skip
def test_batch_size_auto_is_200_rows_at_most(fit_calls, n, batch_size, used):
    X, y = _blobs(n)
    MLPClassifier(hidden_layer_sizes=(4,), epochs=1, batch_size=batch_size).fit(X, y)
    assert fit_calls[0]["batch_size"] == used


def test_the_estimators_show_no_progress_bar_even_on_a_terminal(monkeypatch, capsys):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    X, y = _blobs()
    MLPClassifier(hidden_layer_sizes=(4,), epochs=2, random_state=0).fit(X, y)
    MLPRegressor(hidden_layer_sizes=(4,), epochs=2, random_state=0).fit(X, y)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("width", [5, np.int64(5)])
def test_one_hidden_width_may_be_given_as_an_integer(width):
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=width, epochs=1, random_state=0).fit(X, y)
    assert clf.model_.sizes == [4, 5, 3]


@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_the_defaults_build_scikit_learn_s_model(estimator):
    """One hidden layer of 100 ReLUs in float64, trained by Adam with lr 1e-3 and an L2
    penalty of 1e-4, without BatchNorm or dropout, on NumPy."""
    from xpnet import backend
    from xpnet.nn import ReLU
    from xpnet.optim import Adam

    X, y = _blobs()
    model = estimator(epochs=1).fit(X, y)
    net, opt = model.model_, model._optimizer
    assert backend.library_name(net.xp) == "numpy" and net.dtype == np.float64
    assert net.sizes == [4, 100, 3 if estimator is MLPClassifier else 1]
    assert isinstance(net.f[0], ReLU) and not net.bn_layers and not net.dropout_layers
    assert type(opt) is Adam and (opt.lr, opt.weight_decay) == (1e-3, 1e-4)


def test_random_state_seeds_the_initial_parameters():
    """Two seeds, two initialisations: after one step of a learning rate too small to
    move them, the first layers still differ by the size of the weights."""
    X, y = _blobs()
    weights = [
        MLPClassifier(
            hidden_layer_sizes=(8,), epochs=1, optimizer="sgd", learning_rate=1e-12,
            momentum=0.0, batch_size=60, random_state=seed,
        ).fit(X, y).model_.layers[0].W
        for seed in (0, 1, 0)
    ]  # fmt: skip
    np.testing.assert_array_equal(weights[0], weights[2])
    assert np.abs(weights[0] - weights[1]).max() > 0.1
