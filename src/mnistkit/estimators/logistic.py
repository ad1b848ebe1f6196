"""scikit-learn's ``LogisticRegression`` API over :mod:`mnistkit.solvers` (L-BFGS) or :mod:`mnistkit.training.arrays` (minibatches)."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.extmath import safe_sparse_dot
from sklearn.utils.validation import check_is_fitted, validate_data

from mnistkit.estimators.common import (
    check_choice,
    check_count,
    check_positive,
    encode_targets,
    resolve_device,
    seed_from,
)
from mnistkit.models import build_model
from mnistkit.solvers.lbfgs import fit_logistic
from mnistkit.solvers.sparse import cpu_threads_for
from mnistkit.training.arrays import MinibatchOptions, minibatch_train


class LogisticRegression(ClassifierMixin, BaseEstimator):
    """L2-regularised logistic regression (multinomial; binary for two classes) fitted in torch.

    Solves the same problem as :class:`sklearn.linear_model.LogisticRegression`,
    ``min C * sum_i CE_i + 0.5 * ||W||^2`` with an unpenalised intercept, so ``C``
    means the same and the coefficients agree at convergence. The default
    solver is full-batch L-BFGS (strong-Wolfe line search) on the device, in the
    input's precision (float32 stays float32), preconditioned by the feature
    covariance (MNIST: 38 iterations to ``tol`` instead of 80). On a CPU a
    large, mostly-zero dense ``X`` (such as MNIST pixels) is multiplied as CSR,
    which is several times faster; sparse input is supported the same way.

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength (> 0), as in scikit-learn.
    max_iter : int, default=100
        L-BFGS iterations, or epochs for ``solver="adam"``/``"sgd"``.
    tol : float, default=1e-4
        L-BFGS stops when the largest absolute gradient entry of
        ``mean_i CE_i + ||W||^2 / (2 C n)`` (scikit-learn's scaling, in the
        optimiser's centred coordinates) is below ``tol``; the minibatch solvers
        stop when the epoch loss improved by less than ``tol`` for
        ``n_iter_no_change`` epochs.
    solver : {"lbfgs", "adam", "sgd"}, default="lbfgs"
        ``"adam"`` and ``"sgd"`` (momentum 0.9) use shuffled minibatches.
    batch_size : int, default=256
        Minibatch size for ``"adam"``/``"sgd"``.
    learning_rate : float, default=0.01
        Step size for ``"adam"``/``"sgd"``.
    n_iter_no_change : int, default=5
        Patience in epochs for the minibatch solvers.
    device : str, default="cpu"
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``.
    random_state : int, RandomState or None, default=None
        Seeds minibatch shuffling (L-BFGS is deterministic).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (1, n_features) for two classes, else (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    n_features_in_ : int
    n_iter_ : ndarray of shape (1,)
        Iterations (L-BFGS) or epochs run.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.5)).fit(X, y)
    >>> clf[-1].coef_.shape
    (1, 30)
    """

    def __init__(
        self,
        C=1.0,
        *,
        max_iter=100,
        tol=1e-4,
        solver="lbfgs",
        batch_size=256,
        learning_rate=0.01,
        n_iter_no_change=5,
        device="cpu",
        random_state=None,
    ):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.solver = solver
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.random_state = random_state

    def _check_params(self) -> torch.device:
        check_positive("C", self.C)
        check_count("max_iter", self.max_iter)
        check_positive("tol", self.tol, allow_zero=True)
        check_choice("solver", self.solver, ("lbfgs", "adam", "sgd"))
        check_count("batch_size", self.batch_size)
        check_positive("learning_rate", self.learning_rate)
        check_count("n_iter_no_change", self.n_iter_no_change)
        return resolve_device(self.device)

    def fit(self, X, y):
        """Fit the model to ``X [n_samples, n_features]`` (dense or sparse) and labels ``y [n_samples]``.

        Returns
        -------
        self : LogisticRegression
        """
        device = self._check_params()
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=[np.float64, np.float32])
        codes = encode_targets(self, y)
        binary = len(self.classes_) == 2
        dtype = torch.float32 if X.dtype == np.float32 else torch.float64
        n, d = X.shape
        model = (
            build_model("binary-logreg", in_features=d)
            if binary
            else build_model("logreg", in_features=d, num_classes=len(self.classes_))
        )
        model = model.to(device=device, dtype=dtype)
        lam = 1.0 / (self.C * n)  # sklearn's scaling: mean loss + ||W||^2 / (2 C n)
        with cpu_threads_for(n * d, device):
            if self.solver == "lbfgs":
                fitted = fit_logistic(model, X, torch.from_numpy(codes), lam=lam, tol=self.tol, max_iter=self.max_iter)
                weight, bias, n_iter, converged = fitted.weight, fitted.bias, fitted.n_iter, fitted.converged
            else:
                weight, bias, n_iter, converged = self._fit_minibatch(model, X, codes, lam, dtype)
        if not binary:
            bias = bias - bias.mean()  # the softmax is shift-invariant; sklearn's intercepts also sum to 0
        k = weight.shape[0]
        self.coef_ = weight.detach().cpu().numpy().reshape(k, d)
        self.intercept_ = bias.detach().cpu().numpy().reshape(k)
        self.n_iter_ = np.array([n_iter], dtype=np.int32)
        if not converged:
            warnings.warn(
                f"{self.solver} did not converge in max_iter={self.max_iter} iterations (tol={self.tol}); "
                "increase max_iter or scale the data (e.g. StandardScaler)",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _fit_minibatch(self, model, X, codes, lam: float, dtype):
        """``adam``/``sgd`` (momentum 0.9) epochs from zero weights; returns ``(W, b, epochs, converged)``."""
        weight, bias = model.linear.weight, model.linear.bias
        with torch.no_grad():
            weight.zero_()
            bias.zero_()
        opts = MinibatchOptions(
            batch_size=min(self.batch_size, X.shape[0]),
            max_epochs=self.max_iter,
            tol=self.tol,
            patience=self.n_iter_no_change,
            seed=seed_from(self.random_state),
            optimizer=self.solver,
            lr=self.learning_rate,
            task=model.mnistkit_task,
            dtype=dtype,
            penalty=_l2_penalty(lam),
        )
        result = minibatch_train(model, X, codes, opts)
        return weight, bias, result.epochs, result.converged

    def decision_function(self, X):
        """Logits: ``[n_samples]`` for two classes (positive favours ``classes_[1]``), else ``[n, n_classes]``."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", dtype=[np.float64, np.float32], reset=False)
        scores = safe_sparse_dot(X, self.coef_.T.astype(X.dtype, copy=False), dense_output=True) + self.intercept_
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict_proba(self, X):
        """Class probabilities ``[n_samples, n_classes]`` in the order of ``classes_``."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = expit(scores)
            return np.stack([1 - p, p], axis=1)
        return softmax(scores, axis=1)

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """Most probable class label for each row of ``X``."""
        scores = self.decision_function(X)
        idx = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[idx]

    def to_torch(self):
        """The fitted model as the registry's torch module (``"logreg"`` or ``"binary-logreg"``), in eval mode."""
        check_is_fitted(self)
        k, d = self.coef_.shape
        model = (
            build_model("binary-logreg", in_features=d)
            if len(self.classes_) == 2
            else build_model("logreg", in_features=d, num_classes=k)
        )
        with torch.no_grad():
            model.linear.weight.copy_(torch.as_tensor(self.coef_))
            model.linear.bias.copy_(torch.as_tensor(self.intercept_))
        return model.eval()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _l2_penalty(lam: float):
    """scikit-learn's ``0.5 * lam * ||W||^2`` on the weights (not the intercept), per batch."""

    def penalty(model, n_batch):
        return 0.5 * lam * (model.linear.weight**2).sum()

    return penalty
