"""Estimators for scikit-learn: xpnet MLPs in ``Pipeline``, ``GridSearchCV``, ``cross_val_score``.

:class:`MLPClassifier` and :class:`MLPRegressor` follow scikit-learn's estimator rules
(``get_params``/``set_params``, ``fit`` returns the estimator, fitted attributes end in
``_``, ``partial_fit``) and pass ``sklearn.utils.estimator_checks.check_estimator``. They
train through :func:`xpnet.train.fit` (its step, its epoch loop, and
:class:`~xpnet.callbacks.EarlyStopping` on a held-out ``validation_fraction`` with
``early_stopping=True``), so they read the loss back from a GPU only every few steps. They
take and return NumPy arrays whatever the backend: with ``backend="cupy"`` the model trains
on the GPU and only the predictions come back. Their parameters are checked by
scikit-learn's own constraint machinery when ``fit`` or ``partial_fit`` starts (an
``InvalidParameterError``, a ``ValueError``, naming the parameter and what it accepts), and
a loss that becomes NaN or infinite stops training with
:class:`~xpnet.errors.TrainingDiverged`, naming the epoch and step, as ``xpnet.train.fit``
does, instead of leaving a model that predicts NaN. Needs ``pip install 'xpnet[sklearn]'``.

Examples
--------
>>> from sklearn.datasets import load_iris
>>> from xpnet.sklearn import MLPClassifier
>>> X, y = load_iris(return_X_y=True)
>>> clf = MLPClassifier(hidden_layer_sizes=(16,), learning_rate=0.01, random_state=0).fit(X, y)
>>> clf.score(X, y) > 0.9
True
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils._param_validation import Interval, StrOptions
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as err:  # pragma: no cover - depends on the environment
    from .errors import BackendNotInstalledError

    raise BackendNotInstalledError(
        "xpnet.sklearn needs scikit-learn: pip install 'xpnet[sklearn]'"
    ) from err

from . import backend as _backend
from .callbacks import EarlyStopping
from .errors import XpnetValueError
from .models import ACTIVATIONS, MLP
from .nn import CrossEntropyLoss, MSELoss, Softmax
from .optim import OPTIMIZERS
from .train import FitState, fit

__all__ = ["MLPClassifier", "MLPRegressor"]


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the training loop."""

    # checked by scikit-learn's own machinery at the start of fit and partial_fit, so that
    # a bad value fails there with scikit-learn's InvalidParameterError (a ValueError)
    _parameter_constraints: ClassVar[dict] = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "batchnorm": ["boolean"],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "momentum": [Interval(Real, 0, 1, closed="left")],  # as SGD's own check
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "backend": [str],
        "device": "no_validation",  # the backend's own check names what is wrong
        "dtype": [StrOptions({"float32", "float64"})],
    }

    def __init__(
        self,
        hidden_layer_sizes,
        activation,
        *,
        batchnorm,
        dropout,
        optimizer,
        learning_rate,
        momentum,
        weight_decay,
        batch_size,
        epochs,
        early_stopping,
        validation_fraction,
        n_iter_no_change,
        random_state,
        backend,
        device,
        dtype,
    ):  # the defaults are each estimator's own, in its documented signature
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.batchnorm = batchnorm
        self.dropout = dropout
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.backend = backend
        self.device = device
        self.dtype = dtype

    # -- the parts the subclasses fill in ----------------------------------------------------
    def _loss(self):
        raise NotImplementedError

    def _targets(self, y, *, reset):
        raise NotImplementedError

    # -- training --------------------------------------------------------------------------
    def _seed(self):
        state = self.random_state
        if isinstance(state, np.random.RandomState):
            return int(state.randint(2**31 - 1))
        return state

    def _build(self, n_features, n_outputs):
        hidden = (
            [self.hidden_layer_sizes]
            if isinstance(self.hidden_layer_sizes, (int, np.integer))
            else list(self.hidden_layer_sizes)
        )
        seed = self._seed()
        self._rng = np.random.default_rng(seed)
        self.model_ = MLP(
            [n_features, *hidden, n_outputs],
            activation=self.activation,
            batchnorm=self.batchnorm,
            dropout=self.dropout,
            xp=self.backend,
            device=self.device,
            dtype=self.dtype,
            seed=self._rng,
        )
        options = {"lr": self.learning_rate, "weight_decay": self.weight_decay}
        if self.optimizer == "sgd":
            options["momentum"] = self.momentum
        self._optimizer = OPTIMIZERS[self.optimizer](self.model_, **options)
        self.loss_curve_ = []
        self.n_iter_ = 0

    def _to_model(self, array):
        xp = self.model_.xp
        dtype = _backend.dtype_name(self.model_.dtype)
        return xp.asarray(np.asarray(array, dtype=dtype), device=self.model_.device)

    def _train(self, X, T, epochs, validation=None):
        """``epochs`` more epochs of :func:`xpnet.train.fit` on the host arrays ``(X, T)``.

        With ``validation``, stops early as :class:`~xpnet.callbacks.EarlyStopping` does
        and ends with the best epoch's parameters. Returns fit's history.
        """
        # a batch larger than the data is one batch of all rows, as in fit
        size = min(200, X.shape[0]) if self.batch_size == "auto" else int(self.batch_size)
        callbacks = [] if validation is None else [EarlyStopping(self.n_iter_no_change)]
        with _backend.quiet_float_errors(self.model_.xp):  # fit raises on a non-finite loss
            history = fit(
                self.model_, self._loss(), self._optimizer, (X, T),
                epochs=self.n_iter_ + epochs, batch_size=size,
                validation=validation, seed=int(self._rng.integers(2**63 - 1)),
                progress=False, callbacks=callbacks, state=FitState(epoch=self.n_iter_),
            )  # fmt: skip
        self.model_.eval()
        self.n_iter_ += len(history)
        self.loss_curve_ += [record["loss"] for record in history]
        return history

    def _fit(self, X, T):
        validation = None
        if self.early_stopping:
            n_val = max(1, round(self.validation_fraction * X.shape[0]))
            order = self._rng.permutation(X.shape[0])
            held, kept = order[:n_val], order[n_val:]
            validation = (X[held], T[held])
            X, T = X[kept], T[kept]
        history = self._train(X, T, int(self.epochs), validation)
        self.validation_scores_ = (
            [-record["val_loss"] for record in history] if self.early_stopping else None
        )
        return self

    def _forward(self, X):
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        self.model_.eval()
        return _backend.to_numpy(self.model_.forward(self._to_model(X))).astype(np.float64)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multilayer perceptron classifier trained with xpnet (softmax cross-entropy).

    Parameters
    ----------
    hidden_layer_sizes : tuple of int
        The hidden widths (default one layer of 100, as scikit-learn's).
    activation : str
        ``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"gelu"`` or ``"identity"``.
    batchnorm : bool
        BatchNorm1d before each hidden activation.
    dropout : float
        Dropout probability after each hidden activation.
    optimizer : str
        ``"adam"`` (default, as scikit-learn's), ``"adamw"`` or ``"sgd"``.
    learning_rate : float
        The optimizer's learning rate.
    momentum : float
        SGD's momentum, in [0, 1) (other optimizers ignore it).
    weight_decay : float
        L2 penalty (Adam, SGD: ``weight_decay * W`` added to each gradient) or decoupled
        decay (AdamW). The default, 1e-4, is scikit-learn's ``alpha``.
    batch_size : int or "auto"
        Rows per step (at most the number of samples); ``"auto"``, the default as in
        scikit-learn's own estimators, is ``min(200, n_samples)``.
    epochs : int
        Passes over the data.
    early_stopping : bool
        Hold out ``validation_fraction`` of the data, stop when its loss has not improved
        for ``n_iter_no_change`` epochs, and keep the best epoch's parameters.
    validation_fraction : float
        See ``early_stopping``.
    n_iter_no_change : int
        See ``early_stopping``.
    random_state : int, numpy.random.RandomState or None
        Seeds the initial parameters, the shuffling and the dropout masks; a
        ``RandomState`` seeds each fit with the integer ``randint(2**31 - 1)`` it draws.
    backend : str
        The array library to train on: ``"numpy"``, ``"cupy"``, ``"torch"``,
        ``"array_api_strict"``; inputs and outputs are NumPy arrays regardless.
    device : str, optional
        Its device.
    dtype : str
        ``"float64"`` (default, as scikit-learn computes) or ``"float32"``.

    Attributes
    ----------
    classes_ : numpy.ndarray
        The class labels.
    n_features_in_ : int
        Features seen in ``fit``.
    model_ : MLP
        The trained xpnet model (save it with :func:`xpnet.save`).
    loss_curve_ : list of float
        The mean training loss of each epoch.
    validation_scores_ : list of float or None
        With early stopping, minus the validation loss of each epoch.
    n_iter_ : int
        Epochs run.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.model_selection import cross_val_score
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from xpnet.sklearn import MLPClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> pipe = make_pipeline(StandardScaler(), MLPClassifier(epochs=20, random_state=0))
    >>> bool(cross_val_score(pipe, X, y, cv=3).mean() > 0.9)
    True
    """

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        batchnorm=False,
        dropout=0.0,
        optimizer="adam",
        learning_rate=1e-3,
        momentum=0.9,
        weight_decay=1e-4,
        batch_size="auto",
        epochs=200,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        random_state=None,
        backend="numpy",
        device=None,
        dtype="float64",
    ):
        super().__init__(
            hidden_layer_sizes,
            activation,
            batchnorm=batchnorm,
            dropout=dropout,
            optimizer=optimizer,
            learning_rate=learning_rate,
            momentum=momentum,
            weight_decay=weight_decay,
            batch_size=batch_size,
            epochs=epochs,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            random_state=random_state,
            backend=backend,
            device=device,
            dtype=dtype,
        )

    def _loss(self):
        return CrossEntropyLoss()

    def _targets(self, y, *, reset):
        check_classification_targets(y)
        if reset:
            self.classes_ = np.unique(y)
        ids = np.searchsorted(self.classes_, y)
        ids = np.clip(ids, 0, len(self.classes_) - 1)
        if np.any(self.classes_[ids] != y):
            unknown = sorted(set(np.asarray(y).tolist()) - set(self.classes_.tolist()))
            raise XpnetValueError(f"labels {unknown} are not among the classes {self.classes_}")
        return ids.astype(np.int64)

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Train a new model on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The features.
        y : array-like of shape (n_samples,)
            The class labels.

        Returns
        -------
        MLPClassifier
            The fitted estimator.
        """
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        T = self._targets(y, reset=True)
        self._build(X.shape[1], len(self.classes_))
        return self._fit(X, T)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MLPClassifier:
        """One epoch on ``(X, y)``, continuing the model (a new one on the first call).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The features.
        y : array-like of shape (n_samples,)
            The class labels.
        classes : array-like, optional
            All the classes; required on the first call.

        Returns
        -------
        MLPClassifier
            The estimator.
        """
        self._validate_params()
        first = not hasattr(self, "model_")
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], reset=first)
        if first:
            if classes is None:
                raise XpnetValueError("partial_fit: classes must be given on the first call")
            self.classes_ = np.unique(np.asarray(classes))
            self._build(X.shape[1], len(self.classes_))
        self._train(X, self._targets(y, reset=False), 1)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities: the softmax of the logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The features.

        Returns
        -------
        numpy.ndarray
            ``(n_samples, n_classes)``, columns in the order of ``classes_``.
        """
        logits = self._forward(X)
        return Softmax().forward(logits)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The features.

        Returns
        -------
        numpy.ndarray
            ``(n_samples,)`` labels from ``classes_``.
        """
        logits = self._forward(X)  # first: it raises NotFittedError before fit
        return self.classes_[np.argmax(logits, axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """The accuracy of :meth:`predict` on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The features.
        y : array-like of shape (n_samples,)
            The true labels.
        sample_weight : array-like of shape (n_samples,), optional
            Weights of the rows.

        Returns
        -------
        float
            The (weighted) fraction of rows predicted right.
        """
        return super().score(X, y, sample_weight=sample_weight)


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multilayer perceptron regressor trained with xpnet (mean squared error).

    Parameters
    ----------
    hidden_layer_sizes : tuple of int
        The hidden widths (default one layer of 100, as scikit-learn's).
    activation : str
        ``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"gelu"`` or ``"identity"``.
    batchnorm : bool
        BatchNorm1d before each hidden activation.
    dropout : float
        Dropout probability after each hidden activation.
    optimizer : str
        ``"adam"`` (default), ``"adamw"`` or ``"sgd"``.
    learning_rate : float
        The optimizer's learning rate.
    momentum : float
        SGD's momentum, in [0, 1) (other optimizers ignore it).
    weight_decay : float
        L2 penalty (Adam, SGD: ``weight_decay * W`` added to each gradient) or decoupled
        decay (AdamW). The default, 1e-4, is scikit-learn's ``alpha``.
    batch_size : int or "auto"
        Rows per step (at most the number of samples); ``"auto"``, the default as in
        scikit-learn's own estimators, is ``min(200, n_samples)``.
    epochs : int
        Passes over the data.
    early_stopping : bool
        Hold out ``validation_fraction`` of the data and stop as :class:`MLPClassifier`.
    validation_fraction : float
        See ``early_stopping``.
    n_iter_no_change : int
        See ``early_stopping``.
    random_state : int, numpy.random.RandomState or None
        Seeds the initial parameters, the shuffling and the dropout masks; a
        ``RandomState`` seeds each fit with the integer ``randint(2**31 - 1)`` it draws.
    backend : str
        The array library to train on; inputs and outputs are NumPy arrays regardless.
    device : str, optional
        Its device.
    dtype : str
        ``"float64"`` (default) or ``"float32"``.

    Attributes
    ----------
    n_features_in_ : int
        Features seen in ``fit``.
    n_outputs_ : int
        Targets per sample.
    model_ : MLP
        The trained xpnet model.
    loss_curve_ : list of float
        The mean training loss (MSE over all outputs) of each epoch.
    validation_scores_ : list of float or None
        With early stopping, minus the validation loss of each epoch.
    n_iter_ : int
        Epochs run.
    """

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        batchnorm=False,
        dropout=0.0,
        optimizer="adam",
        learning_rate=1e-3,
        momentum=0.9,
        weight_decay=1e-4,
        batch_size="auto",
        epochs=200,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        random_state=None,
        backend="numpy",
        device=None,
        dtype="float64",
    ):
        super().__init__(
            hidden_layer_sizes,
            activation,
            batchnorm=batchnorm,
            dropout=dropout,
            optimizer=optimizer,
            learning_rate=learning_rate,
            momentum=momentum,
            weight_decay=weight_decay,
            batch_size=batch_size,
            epochs=epochs,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            random_state=random_state,
            backend=backend,
            device=device,
            dtype=dtype,
        )

    def _loss(self):
        return MSELoss()

    def _targets(self, y, *, reset):
        y = np.asarray(y, dtype=np.float64)
        if reset:
            self._one_d = y.ndim == 1
            self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        return y.reshape(y.shape[0], -1).astype(self.dtype)

    def fit(self, X: Any, y: Any) -> MLPRegressor:
        """Train a new model on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The features.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The targets.

        Returns
        -------
        MLPRegressor
            The fitted estimator.
        """
        self._validate_params()
        X, y = validate_data(
            self, X, y, dtype=[np.float64, np.float32], multi_output=True, y_numeric=True
        )
        T = self._targets(y, reset=True)
        self._build(X.shape[1], self.n_outputs_)
        return self._fit(X, T)

    def partial_fit(self, X: Any, y: Any) -> MLPRegressor:
        """One epoch on ``(X, y)``, continuing the model (a new one on the first call).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The features.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The targets.

        Returns
        -------
        MLPRegressor
            The estimator.
        """
        first = not hasattr(self, "model_")
        self._validate_params()
        X, y = validate_data(
            self, X, y, dtype=[np.float64, np.float32], multi_output=True, y_numeric=True,
            reset=first,
        )  # fmt: skip
        T = self._targets(y, reset=first)
        if first:
            self._build(X.shape[1], self.n_outputs_)
        elif T.shape[1] != self.n_outputs_:
            raise XpnetValueError(
                f"partial_fit: y has {T.shape[1]} outputs, the model {self.n_outputs_}"
            )
        self._train(X, T, 1)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The predicted targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The features.

        Returns
        -------
        numpy.ndarray
            ``(n_samples,)`` for a 1-D target in ``fit``, else ``(n_samples, n_outputs)``.
        """
        out = self._forward(X)
        return out[:, 0] if self._one_d else out

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """The coefficient of determination R² of :meth:`predict` on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The features.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The true targets.
        sample_weight : array-like of shape (n_samples,), optional
            Weights of the rows.

        Returns
        -------
        float
            R², averaged uniformly over the outputs.
        """
        return super().score(X, y, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
