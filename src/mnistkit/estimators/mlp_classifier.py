"""scikit-learn's ``MLPClassifier`` API over the registry's ``mlp`` and :mod:`mnistkit.training.arrays`."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data

from mnistkit.config import ACTIVATION_NAMES
from mnistkit.estimators.common import (
    check_choice,
    check_count,
    check_in_range,
    check_positive,
    encode_targets,
    resolve_device,
    seed_from,
)
from mnistkit.models import build_model
from mnistkit.solvers.sparse import cpu_threads_for, rows
from mnistkit.training.arrays import MinibatchOptions, minibatch_train


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """Multi-layer perceptron trained with Adam minibatches in torch (scikit-learn's MLPClassifier API).

    The network is ``build_model("mlp", hidden=hidden_layer_sizes, ...)``, the
    same module ``mnistkit train --model mlp`` uses; the loss is
    ``mean CE + alpha * ||weights||^2 / (2 * batch_size)`` like scikit-learn's.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(100,)
    activation : {"relu", "gelu", "tanh", "sigmoid"}, default="relu"
    alpha : float, default=1e-4
        L2 strength on the weights (not the biases).
    batch_size : int or "auto", default="auto"
        ``"auto"`` is ``min(200, n_samples)``.
    learning_rate_init : float, default=1e-3
        Adam step size.
    max_iter : int, default=200
        Maximum epochs.
    tol : float, default=1e-4
        Minimum improvement of the training loss (or validation accuracy with
        ``early_stopping``) that resets the patience counter.
    n_iter_no_change : int, default=10
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data (stratified) and keep the
        weights with the best validation accuracy.
    validation_fraction : float, default=0.1
    dropout : float, default=0.0
    device : str, default="cpu"
    random_state : int, RandomState or None, default=None
        Seeds weight initialisation, shuffling and the validation split.

    Attributes
    ----------
    classes_, n_features_in_, n_iter_ (epochs), loss_, loss_curve_,
    coefs_ (list of ``[in, out]`` arrays), intercepts_ (list of ``[out]`` arrays)

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from mnistkit.estimators import MLPClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = MLPClassifier(hidden_layer_sizes=(64,), random_state=0).fit(X / 16, y)
    >>> [w.shape for w in clf.coefs_]
    [(64, 64), (64, 10)]
    """

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        *,
        activation="relu",
        alpha=1e-4,
        batch_size="auto",
        learning_rate_init=1e-3,
        max_iter=200,
        tol=1e-4,
        n_iter_no_change=10,
        early_stopping=False,
        validation_fraction=0.1,
        dropout=0.0,
        device="cpu",
        random_state=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.dropout = dropout
        self.device = device
        self.random_state = random_state

    def _check_params(self) -> tuple[tuple[int, ...], torch.device]:
        sizes = (
            (self.hidden_layer_sizes,)
            if isinstance(self.hidden_layer_sizes, numbers.Integral)
            else tuple(self.hidden_layer_sizes)
        )
        if not all(isinstance(h, numbers.Integral) and int(h) > 0 for h in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got {self.hidden_layer_sizes!r}")
        check_choice("activation", self.activation, ACTIVATION_NAMES)
        check_positive("alpha", self.alpha, allow_zero=True)
        if self.batch_size != "auto":
            check_count("batch_size", self.batch_size)
        check_positive("learning_rate_init", self.learning_rate_init)
        check_count("max_iter", self.max_iter)
        check_positive("tol", self.tol, allow_zero=True)
        check_count("n_iter_no_change", self.n_iter_no_change)
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        check_in_range("dropout", self.dropout, 0, 0.99, "(a fraction of the units)")
        return tuple(int(h) for h in sizes), resolve_device(self.device)

    def fit(self, X, y):
        """Train on ``X [n_samples, n_features]`` (dense or sparse) and labels ``y``; returns ``self``."""
        sizes, device = self._check_params()
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=[np.float64, np.float32])
        codes = encode_targets(self, y)
        seed = seed_from(self.random_state)
        X_val = y_val = None
        if self.early_stopping:
            from sklearn.model_selection import train_test_split

            X, X_val, codes, y_val = train_test_split(
                X, codes, test_size=self.validation_fraction, random_state=seed, stratify=codes
            )
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global generator
            torch.manual_seed(seed)
            model = build_model(
                "mlp",
                hidden=sizes,
                activation=self.activation,
                dropout=self.dropout,
                in_features=X.shape[1],
                num_classes=len(self.classes_),
            ).to(device)
        with cpu_threads_for(X.shape[0] * X.shape[1], device):
            result = minibatch_train(model, X, codes, self._options(model, X.shape[0], seed), X_val, y_val)
        self.n_iter_, self.loss_curve_, self.loss_ = result.epochs, result.loss_curve, result.loss_curve[-1]
        if self.early_stopping:
            self.validation_scores_ = result.validation_scores
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        self.coefs_ = [m.weight.detach().cpu().numpy().T.copy() for m in linears]
        self.intercepts_ = [m.bias.detach().cpu().numpy().copy() for m in linears]
        # Predictions run in float64 so that they do not depend on how rows are batched.
        self.model_ = model.cpu().double().eval()
        if not result.converged:
            warnings.warn(
                f"Adam did not converge in max_iter={self.max_iter} epochs (tol={self.tol}); increase max_iter",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _options(self, model, n: int, seed: int) -> MinibatchOptions:
        """Adam on ``mean CE + alpha * ||weights||^2 / (2 * batch)``, scikit-learn's MLP objective."""
        weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
        alpha = self.alpha

        def penalty(m, nb):
            return 0.5 * alpha / nb * sum((w * w).sum() for w in weights)

        return MinibatchOptions(
            batch_size=min(200, n) if self.batch_size == "auto" else min(self.batch_size, n),
            max_epochs=self.max_iter,
            tol=self.tol,
            patience=self.n_iter_no_change,
            seed=seed,
            optimizer="adam",
            lr=self.learning_rate_init,
            penalty=penalty,
        )

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", dtype=[np.float64, np.float32], reset=False)
        out = []
        with torch.inference_mode():
            for start in range(0, X.shape[0], 8192):
                idx = np.arange(start, min(start + 8192, X.shape[0]))
                out.append(self.model_(rows(X, idx, torch.float64, torch.device("cpu"))).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)))

    def predict_proba(self, X):
        """Class probabilities ``[n_samples, n_classes]`` in the order of ``classes_``."""
        return softmax(self._logits(X), axis=1)

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`."""
        return log_softmax(self._logits(X), axis=1)

    def decision_function(self, X):
        """Logits ``[n_samples, n_classes]`` (``[n_samples]``, class 1 minus class 0, for two classes)."""
        z = self._logits(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict(self, X):
        """Most probable class label for each row of ``X``."""
        idx = self._logits(X).argmax(axis=1)
        return self.classes_[idx]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.non_deterministic = self.random_state is None
        return tags
