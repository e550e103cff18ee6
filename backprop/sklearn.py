"""scikit-learn estimators over :class:`backprop.Network`: BackpropClassifier, BackpropRegressor.

Parameters follow scikit-learn's ``MLPClassifier`` / ``MLPRegressor`` where it has a name for
them (``hidden_layer_sizes``, ``activation``, ``alpha``, ``batch_size``, ``learning_rate_init``,
``max_iter``, ``shuffle``, ``random_state``, ``tol``, ``early_stopping``,
``validation_fraction``, ``n_iter_no_change``, ``verbose``), plus this library's own
(``optimizer``, ``dropout``, ``batch_norm``, ``residual``, ``device``, ``backend``, ``dtype``,
``clip_norm``, ``lr_schedule``). scikit-learn is imported by this module only: ``import
backprop`` works without it (``pip install 'backprop[sklearn]'``).

Outputs and losses
------------------
============================ ======================================= ======================
target (``type_of_target``)  output layer, loss                      ``predict_proba``
============================ ======================================= ======================
binary                       1 sigmoid unit, binary_cross_entropy    (n, 2): [1 - p, p]
multiclass                   n_classes softmax units, cross_entropy  (n, n_classes)
multilabel-indicator         n_labels sigmoid units, binary c.-e.    (n, n_labels)
continuous (regressor)       n_outputs identity units, mse           -
============================ ======================================= ======================

Binary classification uses one sigmoid unit, as ``MLPClassifier`` does: the same model as a
softmax over two units with half the output parameters. ``decision_function`` is the output
layer's pre-activation z (the log-odds for binary: shape (n,); logits otherwise).

Regularization
--------------
scikit-learn's MLP minimises, per mini-batch of B samples, mean loss + (α / 2B) Σ‖W‖²
(``_multilayer_perceptron.py``: ``loss += 0.5 * alpha * ΣW² / sw_sum``, ``sw_sum`` = B, or
the batch's weight sum Σw with sample weights; the weighted mean loss), whose gradient adds
α W / B (α W / Σw). ``Network.fit`` minimises the (weighted) mean loss + l2 Σ W², gradient
2 l2 W, with one l2 for every batch, so the estimators pass ``l2 = alpha / (2 · B · w̄)``,
w̄ the mean weight of the samples trained on (1 without weights, ``class_weight`` included):
scikit-learn's update exactly when each batch's Σw is B · w̄ — full-batch training
(``batch_size`` >= n_samples, as ``"auto"`` is below 200 samples), no or uniform weights.
Otherwise each mini-batch is regularized as one of average weight, and the last, partial
batch of an epoch as a full one. Note that
``mse`` sums over the output units where scikit-learn's squared loss averages over them: with
several outputs the data term is n_outputs times scikit-learn's.

Stopping
--------
``fit`` trains up to ``max_iter`` epochs. Without ``early_stopping`` it stops when the training
loss has not improved by more than ``tol`` for ``n_iter_no_change`` epochs; with it, a
``validation_fraction`` of the data (stratified for single-label classification) is held out
and training stops when the validation loss has not improved by more than ``tol`` for
``n_iter_no_change`` epochs, restoring the parameters of the best epoch (both through
:class:`backprop.EarlyStopping`). ``tol=None`` trains all ``max_iter`` epochs. A
``ConvergenceWarning`` says when ``max_iter`` ended training before the criterion did.
"""

from __future__ import annotations

import copy
import numbers
import warnings
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state, compute_sample_weight
    from sklearn.utils.multiclass import type_of_target, unique_labels
    from sklearn.utils.validation import (_check_sample_weight, check_is_fitted, column_or_1d,
                                          validate_data)
except ImportError as e:            # pragma: no cover - exercised without scikit-learn only
    raise ImportError("backprop.sklearn needs scikit-learn >= 1.6: "
                      "pip install 'backprop[sklearn]'") from e

from . import optimizers as _optimizers
from . import state as _state
from .network import Network
from .training import EarlyStopping
from .validation import check_X

#: scikit-learn's activation names mapped to this library's (others pass through unchanged)
ACTIVATION_NAMES = {"logistic": "sigmoid"}
#: scikit-learn's batch_size="auto": min(200, n_samples)
AUTO_BATCH = 200


class _BaseBackprop(BaseEstimator):
    """What the classifier and the regressor share: parameters, the network, the fit loop."""

    def __init__(self, hidden_layer_sizes: Any = (100,), activation: str = "relu", *,
                 optimizer: Any = "adam", alpha: float = 0.0001, batch_size: Any = "auto",
                 learning_rate_init: float = 0.001, max_iter: int = 200, shuffle: bool = True,
                 random_state: Any = None, tol: float | None = 1e-4, verbose: bool = False,
                 early_stopping: bool = False, validation_fraction: float = 0.1,
                 n_iter_no_change: int = 10, dropout: Any = 0.0, batch_norm: Any = False,
                 residual: Any = False, device: str = "cpu", backend: str | None = None,
                 dtype: str = "float32", clip_norm: float | None = None,
                 lr_schedule: Any = None) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.residual = residual
        self.device = device
        self.backend = backend
        self.dtype = dtype
        self.clip_norm = clip_norm
        self.lr_schedule = lr_schedule

    # ------------------------------------------------------------------ what subclasses define

    def _encode_targets(self, y: np.ndarray, incremental: bool, classes: Any) -> np.ndarray:
        """Targets as the network's Y; on a fresh fit sets the fitted label attributes."""
        raise NotImplementedError

    def _output(self) -> tuple[int, str, str]:
        """(output units, output activation, loss) for the fitted targets."""
        raise NotImplementedError

    # ------------------------------------------------------------------ checks

    def _check_params(self) -> tuple[list[int], int]:
        """The hidden sizes and the seed; errors name the parameter (before any work)."""
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
            sizes = [sizes]
        try:
            sizes = list(sizes)
        except TypeError:
            raise ValueError(f"hidden_layer_sizes: expected a sequence of positive integers, "
                             f"got {self.hidden_layer_sizes!r}") from None
        if any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1
               for n in sizes):
            raise ValueError(f"hidden_layer_sizes: expected positive integers, got "
                             f"{self.hidden_layer_sizes!r}")
        for name, low in (("max_iter", 1), ("n_iter_no_change", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        for name in ("alpha", "learning_rate_init"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not np.isfinite(value) or value < 0 or (name != "alpha" and value == 0)):
                bound = ">= 0" if name == "alpha" else "> 0"
                raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
        tol = self.tol
        if tol is not None and (isinstance(tol, bool) or not isinstance(tol, numbers.Real)
                                or not tol >= 0):
            raise ValueError(f"tol: expected None or a number >= 0, got {self.tol!r}")
        if self.early_stopping and not (isinstance(self.validation_fraction, numbers.Real)
                                        and 0 < self.validation_fraction < 1):
            raise ValueError(f"validation_fraction: expected a number in (0, 1), got "
                             f"{self.validation_fraction!r}")
        if self.batch_size != "auto" and (isinstance(self.batch_size, bool) or not isinstance(
                self.batch_size, numbers.Integral) or self.batch_size < 1):
            raise ValueError(f"batch_size: expected 'auto' or a positive integer, got "
                             f"{self.batch_size!r}")
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        return [int(n) for n in sizes], seed

    def _validate(self, X: Any, y: Any, reset: bool,
                  numeric: bool) -> tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc", "coo"], multi_output=True,
                             y_numeric=numeric, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return _dense(X), y

    def _batch(self, n: int) -> int:
        return min(AUTO_BATCH, n) if self.batch_size == "auto" else min(self.batch_size, n)

    def _new_network(self, n_features: int, hidden: list[int], seed: int) -> Network:
        n_out, output, loss = self._output()
        activation = ACTIVATION_NAMES.get(self.activation, self.activation)
        options: dict[str, Any] = {}
        if _any(self.batch_norm):        # passed only when set: Networks before batch norm
            options["batch_norm"] = self.batch_norm
        if _any(self.residual):
            options["residual"] = self.residual
        return Network([n_features, *hidden, n_out], [activation] * len(hidden) + [output],
                       loss, device=self.device, backend=self.backend, dtype=self.dtype,
                       seed=seed, dropout=self.dropout if hidden else [], **options)

    def _weights(self, y: np.ndarray, sample_weight: Any, X: np.ndarray) -> np.ndarray | None:
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        return sample_weight

    # ------------------------------------------------------------------ fitting

    def _fit(self, X: Any, y: Any, sample_weight: Any, incremental: bool,
             classes: Any = None) -> "_BaseBackprop":
        """fit and partial_fit, as one transaction: when anything raises (a bad argument, a
        diverged fit, an interrupt), the estimator is put back as it was before the call —
        every attribute, and for partial_fit the network's parameters, optimizer state,
        generators and history — so an unfitted estimator stays unfitted and a fitted one
        keeps predicting with its previous, consistent ``classes_``/``n_outputs_``/network."""
        before = dict(self.__dict__)
        snapshot: list[Any] = []
        try:
            return self._fit_once(X, y, sample_weight, incremental, classes, snapshot)
        except BaseException:
            if snapshot:                # partial_fit trains the fitted network in place
                net, state = snapshot
                _state.restore(net, state, optimizer=net.optimizer_
                               if state.header["optimizer"] is not None else None)
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _fit_once(self, X: Any, y: Any, sample_weight: Any, incremental: bool,
                  classes: Any, snapshot: list[Any]) -> "_BaseBackprop":
        hidden, seed = self._check_params()
        first = not (incremental and hasattr(self, "network_"))
        X, y = self._validate(X, y, reset=first, numeric=isinstance(self, RegressorMixin))
        if X.shape[0] < 1:
            raise ValueError("X: expected at least one sample")
        Y = self._encode_targets(y, incremental=not first, classes=classes)
        weights = self._weights(y, sample_weight, X)
        if first:       # the fitted attributes are set once the network has trained
            net = self._new_network(X.shape[1], hidden, seed)
            curve: list[float] = []
            n_iter, best = 0, np.inf
        else:
            net, curve = self.network_, self.loss_curve_
            n_iter, best = self.n_iter_, self.best_loss_
            seed = self._seed
        optimizer: Any = net.optimizer_ if not first and net.optimizer_ is not None else (
            copy.deepcopy(self.optimizer) if isinstance(self.optimizer, _optimizers.Optimizer)
            else self.optimizer)
        options: dict[str, Any] = {}
        validation = None
        callbacks: list[Any] = []
        epochs = 1 if incremental else self.max_iter
        if not incremental and self.early_stopping:
            stratify = y if self._stratify() else None
            parts = train_test_split(X, Y, *(() if weights is None else (weights,)),
                                     test_size=self.validation_fraction, random_state=seed,
                                     stratify=stratify)
            X, X_val, Y, Y_val = parts[:4]
            weights = parts[4] if weights is not None else None
            validation = (X_val, Y_val)
        if not incremental and self.tol is not None:
            callbacks.append(EarlyStopping("val_loss" if validation else "loss",
                                           patience=self.n_iter_no_change, min_delta=self.tol,
                                           restore_best=validation is not None))
        if weights is not None:        # Network.fit(sample_weight=): helper "weights"
            options["sample_weight"] = weights
        batch = self._batch(X.shape[0])
        # scikit-learn's penalty: α ‖W‖² / (2 Σw of the batch); a batch's Σw taken as B · w̄
        mean_weight = 1.0 if weights is None else float(np.mean(weights))
        if not mean_weight > 0:         # negative or all-zero weights: Network.fit says so
            mean_weight = 1.0
        if not first:                   # put back by _fit if training fails
            snapshot[:] = [net, _state.capture(net)]
        # a fit's shuffle and dropout seed: from random_state and the epochs done before it
        fit_seed = int(np.random.SeedSequence([seed, n_iter]).generate_state(1)[0])
        history = net.fit(X, Y, epochs=epochs, batch_size=batch,
                          learning_rate=self.learning_rate_init, optimizer=optimizer,
                          shuffle=self.shuffle, seed=fit_seed, validation_data=validation,
                          l2=self.alpha / (2 * batch * mean_weight), clip_norm=self.clip_norm,
                          lr_schedule=self.lr_schedule, callbacks=callbacks,
                          verbose=bool(self.verbose), on_nonfinite="raise", **options)
        self.network_, self._seed = net, seed
        self.loss_curve_ = curve + list(history["loss"])
        self.n_iter_ = n_iter + history.epochs
        self.t_ = net.optimizer_.t if net.optimizer_ is not None else 0
        self.loss_ = self.loss_curve_[-1]
        self.best_loss_ = min([best, *history["loss"]])
        if first:
            self.validation_loss_curve_ = None
        if validation is not None:
            self.validation_loss_curve_ = list(history["val_loss"])
        if (not incremental and self.tol is not None and not history.stopped_early
                and history.epochs == self.max_iter):
            warnings.warn(f"{type(self).__name__}: max_iter={self.max_iter} epochs reached and "
                          "the optimization has not converged yet", ConvergenceWarning)
        return self

    def _stratify(self) -> bool:
        return False

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "_BaseBackprop":
        """Fit a new network to X (n_samples, n_features) and y; returns self.

        ``sample_weight`` (n_samples,): each sample's weight in the weighted mean loss.
        Transactional: when fit (or partial_fit) raises, the estimator is left exactly as it
        was before the call (a fitted one keeps its previous network and attributes).
        """
        return self._fit(X, y, sample_weight, incremental=False)

    # ------------------------------------------------------------------ inference

    def _outputs(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "network_")
        X = _dense(validate_data(self, X, accept_sparse=["csr", "csc", "coo"],
                                 dtype=(np.float64, np.float32), reset=False))
        return self.network_.predict(X)

    def _logits(self, X: Any) -> np.ndarray:
        """The output layer's pre-activation z, (n_samples, n_outputs)."""
        check_is_fitted(self, "network_")
        X = _dense(validate_data(self, X, accept_sparse=["csr", "csc", "coo"],
                                 dtype=(np.float64, np.float32), reset=False))
        net = self.network_
        with net._guard.call("decision_function"):
            X = check_X(net.backend, X, net.layer_sizes[0], net.dtype)
            out = np.empty((X.shape[0], net.layer_sizes[-1]), net.dtype)
            for rows, ws in net._inference_chunks(X):
                out[rows] = net.backend.to_numpy(ws.Z)
        return out

    def to_onnx(self, path: Any) -> None:
        """Write the fitted network as an ONNX graph (see :meth:`backprop.Network.to_onnx`):
        its output is the output layer's activations (``predict_proba``'s positive column
        for binary classification, the predictions for regression)."""
        check_is_fitted(self, "network_")
        self.network_.to_onnx(path)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.non_deterministic = self.device != "cpu"
        return tags


class BackpropClassifier(ClassifierMixin, _BaseBackprop):
    """A multi-layer perceptron classifier trained by backpropagation on any device.

    Parameters are those of :class:`_BaseBackprop` (see the module docstring: scikit-learn's
    ``MLPClassifier`` vocabulary plus ``optimizer``, ``dropout``, ``batch_norm``, ``residual``,
    ``device``, ``backend``, ``dtype``, ``clip_norm``, ``lr_schedule``) and ``class_weight``:
    None, a dict {label: weight} or ``"balanced"`` (n_samples / (n_classes · count)), applied
    as sample weights (scikit-learn's ``compute_sample_weight``; multiplied by
    ``sample_weight``).

    Attributes
    ----------
    classes_ : ndarray (n_classes,), the labels in sorted order (for multilabel: 0..n_labels-1)
    network_ : Network, the fitted network
    n_features_in_, feature_names_in_, loss_curve_ (training loss per epoch, penalty
    included), n_iter_ (epochs trained), t_ (optimizer steps), loss_, best_loss_,
    validation_loss_curve_ (validation loss per epoch, penalty included, with early_stopping;
    else None; scikit-learn's MLP records validation scores instead), n_outputs_.
    """

    def __init__(self, hidden_layer_sizes: Any = (100,), activation: str = "relu", *,
                 optimizer: Any = "adam", alpha: float = 0.0001, batch_size: Any = "auto",
                 learning_rate_init: float = 0.001, max_iter: int = 200, shuffle: bool = True,
                 random_state: Any = None, tol: float | None = 1e-4, verbose: bool = False,
                 early_stopping: bool = False, validation_fraction: float = 0.1,
                 n_iter_no_change: int = 10, dropout: Any = 0.0, batch_norm: Any = False,
                 residual: Any = False, device: str = "cpu", backend: str | None = None,
                 dtype: str = "float32", clip_norm: float | None = None,
                 lr_schedule: Any = None, class_weight: Any = None) -> None:
        super().__init__(hidden_layer_sizes, activation, optimizer=optimizer, alpha=alpha,
                         batch_size=batch_size, learning_rate_init=learning_rate_init,
                         max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol,
                         verbose=verbose, early_stopping=early_stopping,
                         validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, dropout=dropout,
                         batch_norm=batch_norm, residual=residual, device=device,
                         backend=backend, dtype=dtype, clip_norm=clip_norm,
                         lr_schedule=lr_schedule)
        self.class_weight = class_weight

    def _encode_targets(self, y: np.ndarray, incremental: bool, classes: Any) -> np.ndarray:
        y = _integer_labels(y)
        if incremental:
            if self._target_type == "multilabel-indicator":
                if y.ndim != 2 or y.shape[1] != len(self.classes_):
                    raise ValueError(f"y: expected a label indicator matrix with "
                                     f"{len(self.classes_)} columns, as in the first call")
            else:
                unseen = np.setdiff1d(unique_labels(y), self.classes_)
                if len(unseen):
                    raise ValueError(f"y: labels {unseen.tolist()} are not in classes_ "
                                     f"{self.classes_.tolist()}")
            return self._binarize(y)
        kind = type_of_target(y, input_name="y")
        if kind not in ("binary", "multiclass", "multilabel-indicator"):
            raise ValueError(f"Unknown label type: {kind!r}. y: expected class labels (binary, "
                             "multiclass) or a multilabel indicator matrix")
        if classes is not None:
            classes = np.asarray(classes)
            if kind != "multilabel-indicator":
                unseen = np.setdiff1d(unique_labels(y), classes)
                if len(unseen):
                    raise ValueError(f"y: labels {unseen.tolist()} are not in classes "
                                     f"{classes.tolist()}")
                kind = "binary" if len(classes) == 2 else "multiclass"
        self._label_binarizer = LabelBinarizer()
        self._label_binarizer.fit(y if classes is None or kind == "multilabel-indicator"
                                  else classes)
        self.classes_ = self._label_binarizer.classes_
        self._target_type = kind
        if kind != "multilabel-indicator" and len(self.classes_) < 2:
            raise ValueError(f"y: the classifier needs samples of at least 2 classes; got 1 "
                             f"class ({self.classes_.tolist()})")
        self.n_outputs_ = 1 if kind == "binary" else len(self.classes_)
        return self._binarize(y)

    def _binarize(self, y: np.ndarray) -> np.ndarray:
        Y = self._label_binarizer.transform(y)
        return np.asarray(Y.toarray() if hasattr(Y, "toarray") else Y, dtype=np.float64)

    def _output(self) -> tuple[int, str, str]:
        if self._target_type == "multiclass":
            return self.n_outputs_, "softmax", "cross_entropy"
        return self.n_outputs_, "sigmoid", "binary_cross_entropy"

    def _stratify(self) -> bool:
        return self._target_type != "multilabel-indicator"

    def _weights(self, y: np.ndarray, sample_weight: Any, X: np.ndarray) -> np.ndarray | None:
        weights = super()._weights(y, sample_weight, X)
        if self.class_weight is not None:
            if self._target_type == "multilabel-indicator":
                raise ValueError("class_weight: not supported for multilabel targets")
            if isinstance(self.class_weight, dict):
                unknown = set(self.class_weight) - set(self.classes_.tolist())
                if unknown:
                    raise ValueError(f"class_weight: labels {sorted(map(str, unknown))} are not "
                                     f"in classes_ {self.classes_.tolist()}")
            elif self.class_weight != "balanced":
                raise ValueError(f"class_weight: expected None, a dict or 'balanced', got "
                                 f"{self.class_weight!r}")
            by_class = compute_sample_weight(self.class_weight, y)
            weights = by_class if weights is None else weights * by_class
        return weights

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> "BackpropClassifier":
        """Fit a new network; y: labels of any type (n_samples,) or an indicator matrix
        (n_samples, n_labels) for multilabel. Returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    def partial_fit(self, X: Any, y: Any, classes: Any = None,
                    sample_weight: Any = None) -> "BackpropClassifier":
        """One epoch over (X, y), continuing the fitted network and its optimizer state.

        ``classes`` (every label that will ever be seen) is required on the first call and
        ignored afterwards, as in scikit-learn's ``partial_fit``. ``class_weight="balanced"``
        raises ValueError, as in scikit-learn's ``SGDClassifier.partial_fit``: it would be
        computed from each call's labels, not the data set's; pass the dict that
        ``sklearn.utils.class_weight.compute_class_weight("balanced", classes=classes, y=y)``
        gives on the whole training set's labels (or a large sample of them).
        """
        if isinstance(self.class_weight, str) and self.class_weight == "balanced":
            raise ValueError(
                "class_weight 'balanced' is not supported for partial_fit (it would be "
                "computed from each call's labels). To use 'balanced' weights, pass "
                "class_weight=dict(zip(classes, compute_class_weight('balanced', "
                "classes=classes, y=y))) with y the whole training set's labels (or a large "
                "enough sample of them)")
        if not hasattr(self, "network_"):
            if classes is None:
                raise ValueError("classes: must be passed on the first call to partial_fit")
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities: (n, 2) for binary ([1 - p, p]), (n, n_classes) for
        multiclass (softmax), (n, n_labels) for multilabel (each label's sigmoid)."""
        p = self._outputs(X)
        if self._target_type == "binary":
            return np.column_stack([1 - p[:, 0], p[:, 0]])
        return p

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """log of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def decision_function(self, X: Any) -> np.ndarray:
        """The output layer's pre-activation z: the log-odds (n,) for binary, the logits
        (n, n_classes) or (n, n_labels) otherwise."""
        z = self._logits(X)
        return z[:, 0] if self._target_type == "binary" else z

    def predict(self, X: Any) -> np.ndarray:
        """Labels (n,) from ``classes_`` (argmax; p >= 0.5 for binary), or an indicator
        matrix (n, n_labels) for multilabel (each p >= 0.5)."""
        p = self._outputs(X)
        if self._target_type == "multiclass":
            return self.classes_[np.argmax(p, axis=1)]
        if self._target_type == "binary":
            return self.classes_[(p[:, 0] >= 0.5).astype(np.intp)]
        return (p >= 0.5).astype(int)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class BackpropRegressor(RegressorMixin, _BaseBackprop):
    """A multi-layer perceptron regressor trained by backpropagation on any device.

    Parameters: see the module docstring (scikit-learn's ``MLPRegressor`` vocabulary plus this
    library's own). The output layer is ``n_outputs_`` identity units trained on ``mse``
    (½ ‖ŷ - y‖² per sample). Attributes as :class:`BackpropClassifier` without ``classes_``.
    """

    def _encode_targets(self, y: np.ndarray, incremental: bool, classes: Any) -> np.ndarray:
        n_out = 1 if y.ndim == 1 else y.shape[1]
        if incremental and n_out != self.n_outputs_:
            raise ValueError(f"y: expected {self.n_outputs_} outputs, as in the first call, "
                             f"got {n_out}")
        self.n_outputs_ = n_out
        return np.asarray(y, dtype=np.float64).reshape(len(y), n_out)

    def _output(self) -> tuple[int, str, str]:
        return self.n_outputs_, "identity", "mse"

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> "BackpropRegressor":
        """One epoch over (X, y), continuing the fitted network and its optimizer state."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X: Any) -> np.ndarray:
        """Predictions (n,) for one output, (n, n_outputs) for several."""
        y = self._outputs(X)
        return y[:, 0] if self.n_outputs_ == 1 else y


def _dense(X: Any) -> np.ndarray:
    """A sparse matrix made dense (the network's kernels take dense arrays)."""
    return X.toarray() if hasattr(X, "toarray") else X


def _integer_labels(y: np.ndarray) -> np.ndarray:
    """An object array of integers of mixed types (Python and NumPy ints) as int64 labels,
    which ``type_of_target`` would call 'unknown'; anything else unchanged."""
    if y.dtype == object and y.size and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in y.flat):
        return y.astype(np.int64)
    return y


def _any(flags: Any) -> bool:
    """Whether a bool or per-layer sequence of bools (list, tuple, NumPy array) sets one."""
    from .validation import per_layer
    entries = per_layer(flags)
    return any(entries) if entries is not None else bool(flags)
