"""scikit-learn compatible estimators backed by mnistkit's torch models.

:class:`LogisticRegression` solves exactly scikit-learn's L2-regularised
problem, ``min_W,b  C * sum_i CE_i + 0.5 * ||W||^2`` (intercept unpenalised;
multinomial, binary with one coefficient row for two classes), with
full-batch L-BFGS in torch; :class:`MLPClassifier` trains
``build_model("mlp", ...)`` with Adam minibatches. Both use the registry's
modules and :func:`mnistkit.losses.classification_loss`, the same code as
``mnistkit train``.

scikit-learn is an optional extra: importing this module without it raises
an :class:`ImportError` that says how to install it.

>>> from sklearn.datasets import load_iris
>>> from mnistkit.estimators import LogisticRegression
>>> X, y = load_iris(return_X_y=True)
>>> clf = LogisticRegression(C=1.0).fit(X, y)
>>> clf.coef_.shape, round(clf.score(X, y), 2)
((3, 4), 0.97)
"""

from __future__ import annotations

try:
    import sklearn  # noqa: F401
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ImportError("mnistkit.estimators needs scikit-learn: pip install 'mnistkit[sklearn]'") from None

import concurrent.futures
import contextlib
import itertools
import numbers
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.extmath import safe_sparse_dot
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from mnistkit.losses import classification_loss
from mnistkit.models import build_model
from mnistkit.precision import cpu_has_native_bf16

__all__ = ["LogisticRegression", "MLPClassifier"]

LBFGS_HISTORY = 30  # L-BFGS memory (pairs); 30 converges in ~half the iterations of 10 on MNIST
SPARSE_MAX_DENSITY = 0.35  # CPU: a dense X with fewer nonzeros than this goes through CSR matmuls
SPARSE_MIN_SIZE = 2_000_000  # ...if it has at least this many entries (small X: CSR set-up is not worth it)
CENTRE_ROWS = 10_000  # rows averaged for the centring vector mu
CSR_BLOCKS = (
    8  # row blocks a dense X is converted to CSR in, two threads (MNIST: 8 -> 0.97 s fit, 4 -> 1.04, 2 -> 1.05)
)
SMALL_PROBLEM = 1_000_000  # entries of X below which fits run on one CPU thread (thread hand-offs cost more)
PRECOND_MAX_FEATURES = 4096  # L-BFGS preconditioner (a d x d Cholesky) only up to this many features
PRECOND_ROWS = 10_000  # rows sampled for its feature covariance (it only shapes the steps, not the optimum)
PRECOND_MAX_ENTRIES = 8_000_000  # ...at most this many sampled values (wide sparse X is densified for it)
PRECOND_DAMPING = 1.0  # its damping, in units of the mean feature variance: only the top principal
#   directions are flattened. MNIST / Fashion-MNIST iterations to tol=1e-4: 0 -> 48 / 86, 0.3 -> 43 / 80,
#   1 -> 36 / 73, 3 -> 42 / 61, 10 -> 44 / 86; no preconditioner: 80 / >100.
PRECOND_CURVATURE = 0.003  # softmax curvature assumed near the optimum: the step scale, and a damping floor


# ---------------------------------------------------------------- shared helpers
def _resolve_device(device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"``; unavailable devices raise ValueError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device={device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but torch finds no CUDA GPU; use device='cpu' or 'auto'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} but MPS is not available; use device='cpu' or 'auto'")
    return dev


@contextlib.contextmanager
def _cpu_threads_for(n_entries: int, device: torch.device):
    """One intra-op thread for small CPU problems (faster, and robust on a busy machine); restored after."""
    before = torch.get_num_threads()
    if device.type == "cpu" and n_entries < SMALL_PROBLEM and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of: {', '.join(map(repr, allowed))}")


def _check_positive(name, value, integer=False, allow_zero=False):
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = "integer" if integer else "number"
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} {what}, got {value!r}")


def _seed_from(random_state) -> int:
    """A torch seed from sklearn's ``random_state`` convention (None, int or RandomState)."""
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def _encode_targets(estimator, y):
    """Set ``classes_``; return integer codes ``[n]`` (a single class raises ValueError)."""
    check_classification_targets(y)
    estimator.classes_, codes = np.unique(y, return_inverse=True)
    if len(estimator.classes_) < 2:
        raise ValueError(
            f"{type(estimator).__name__} needs samples of at least 2 classes in the data, "
            f"but the data contain only one class: {estimator.classes_[0]!r}"
        )
    return codes.astype(np.int64)


def _tensor(a: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A tensor view of a numpy array where possible (read-only arrays, e.g. memmaps, are copied)."""
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:
        a = a.copy()
    return torch.from_numpy(a).to(device=device, dtype=dtype)


def _csr_tensor(indptr, indices, values, shape, device) -> torch.Tensor:
    """A torch CSR tensor with int32 indices (MKL's fast path on CPU)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.as_tensor(indptr, dtype=torch.int32),
            torch.as_tensor(indices, dtype=torch.int32),
            torch.as_tensor(values),
            size=shape,
            device=device,
            check_invariants=False,
        )


def _dense_to_csr(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR tensors (int32 indices) of a dense 2-D CPU tensor ``x [n, d]`` and of its transpose.

    The nonzeros come from one vectorised ``nonzero`` pass; the transpose's CSR is the CSC of
    ``x``, which scipy builds from the CSR arrays in a single counting pass (about 10x faster
    than transposing the dense matrix and scanning it again).
    """
    n, d = x.shape
    flat = x.reshape(-1)
    where = flat.nonzero().squeeze(1)  # row-major positions of the nonzeros, sorted
    row_starts = torch.arange(n + 1, dtype=torch.int64) * d
    indptr = torch.searchsorted(where, row_starts).to(torch.int32)
    indices = (where % d).to(torch.int32)
    values = torch.take(flat, where)
    csr = sp.csr_matrix((values.numpy(), indices.numpy(), indptr.numpy()), shape=(n, d))
    return _csr_tensor(indptr, indices, values, (n, d), x.device), _csr_of_transpose(csr, x.device)


def _csr_of_transpose(csr: sp.csr_matrix, device) -> torch.Tensor:
    """``csr.T`` as a torch CSR tensor: the CSC arrays of ``csr`` are exactly the CSR arrays of its transpose."""
    csc = csr.tocsc()
    csc.sort_indices()
    return _csr_tensor(csc.indptr, csc.indices, csc.data, csc.shape[::-1], device)


def _dense_to_csr_blocks(x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`_dense_to_csr` of ``CSR_BLOCKS`` row blocks of ``x``, built in two threads.

    torch's ``nonzero`` and scipy's CSC conversion are largely serial and release the GIL, so
    blocks built side by side take about 60 % of the time of one big matrix; the matmuls
    lose nothing (a sum over blocks for ``x.T @ g``).
    """
    bounds = np.linspace(0, x.shape[0], CSR_BLOCKS + 1).astype(int)
    blocks = [x[lo:hi] for lo, hi in itertools.pairwise(bounds) if hi > lo]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(_dense_to_csr, blocks))


class _SparseLinear(torch.autograd.Function):
    """``x @ W.T`` for ``x`` held as CSR row blocks ``[(x_b, x_b.T), ...]`` (prebuilt transposes: none per step)."""

    @staticmethod
    def forward(ctx, weight, blocks):
        ctx.blocks = blocks
        wt = weight.t().contiguous()
        return torch.cat([xb @ wt for xb, _ in blocks])

    @staticmethod
    def backward(ctx, grad_out):
        grad_out = grad_out.contiguous()
        grad, start = None, 0
        for xb, xtb in ctx.blocks:
            part = xtb @ grad_out[start : start + xb.shape[0]]
            grad = part if grad is None else grad.add_(part)
            start += xb.shape[0]
        return grad.t(), None


class _Design:
    """The training matrix on the device, dense or as CSR row blocks, with a centring vector ``mu [d]``."""

    def __init__(self, X, dtype: torch.dtype, device: torch.device):
        self.source = X
        self.blocks = None
        if sp.issparse(X):
            X = X.tocsr()
            X.sort_indices()
            self.blocks = [(_csr_tensor(X.indptr, X.indices, X.data, X.shape, device), _csr_of_transpose(X, device))]
            self.mu = torch.as_tensor(np.asarray(X.mean(axis=0)).ravel(), dtype=dtype, device=device)
            return
        x = _tensor(X, dtype, device)
        # Any centre gives the same problem (b = c - W @ mu absorbs it); evenly spaced rows centre
        # as well as all of them and skip a pass over X.
        self.mu = x[:: max(1, x.shape[0] // CENTRE_ROWS)].mean(0)
        self.x = x
        if device.type == "cpu" and SPARSE_MIN_SIZE <= x.numel() < 2**31:  # int32 CSR indices
            sample = x[:: max(1, x.shape[0] // 2000)]
            if (sample != 0).float().mean().item() < SPARSE_MAX_DENSITY:
                self.blocks = _dense_to_csr_blocks(x)

    def logits(self, model, weight, bias) -> torch.Tensor:
        """Logits of the registry ``model`` evaluated at ``(weight, bias)``: ``[n, C]`` or ``[n]`` (binary)."""
        if self.blocks is None:
            params = {"linear.weight": weight, "linear.bias": bias}
            return torch.func.functional_call(model, params, (self.x,))
        out = _SparseLinear.apply(weight, self.blocks) + bias
        return out.squeeze(1) if model.mnistkit_task == "binary" else out

    def loss_sum(self, model, weight, bias, target, task) -> torch.Tensor:
        """Summed :func:`classification_loss` of the model at ``(weight, bias)``.

        Multiclass logits go to the loss class-major (``[1, C, n]``): the log-softmax then runs
        along contiguous memory, about 6x faster on a CPU than over rows of 10 classes.
        """
        logits = self.logits(model, weight, bias)
        if task == "multiclass":
            logits, target = logits.t().contiguous().unsqueeze(0), target.unsqueeze(0)
        return classification_loss(logits, target, task, reduction="sum")

    def sample_rows(self, m: int) -> torch.Tensor:
        """At most ``m`` evenly spaced rows of ``X`` as a dense tensor (for the preconditioner)."""
        n = self.source.shape[0]
        idx = np.arange(0, n, max(1, n // m))[:m]
        return _rows(self.source, idx, self.mu.dtype, self.mu.device)


def _gram(a: torch.Tensor) -> torch.Tensor:
    """``a.T @ a`` for the preconditioner, in bf16 where the CPU multiplies bf16 natively.

    The preconditioner only shapes L-BFGS's steps, so three significant digits are plenty:
    31 ms against 63 ms in fp32 for MNIST's 10,000 x 784 sample (numpy's syrk took 38 ms but
    its BLAS threads then slowed the fit down by 7 %).
    """
    if a.device.type == "cpu" and cpu_has_native_bf16():
        low = a.to(torch.bfloat16)
        return (low.t() @ low).to(a.dtype)
    return a.t() @ a


class _Preconditioner:
    """A fixed change of variables that makes L-BFGS see a rounder problem.

    The Hessian of the mean cross-entropy is close to ``A (x) S`` (softmax curvature times the
    feature covariance ``S``), plus ``lam * I`` from the penalty. With ``L L^T = S + delta * I``,
    L-BFGS optimises ``V`` where ``W = V L^-1 / sqrt(a)`` (and the intercept ``c = u / sqrt(a)``):
    the few dominant, strongly correlated directions of ``S`` (neighbouring pixels) are scaled
    down to the rest. The damping ``delta`` (about the mean feature variance) keeps the many
    weak directions as they are: whitening them fully was slower (see ``PRECOND_DAMPING``).
    The problem itself, its optimum and the stopping test (on the gradient in ``W``) are
    unchanged; only the coordinates L-BFGS moves in are. Wide data (more than
    ``PRECOND_MAX_FEATURES``) and a failed Cholesky fall back to the identity.
    """

    def __init__(self, data: _Design, lam: float):
        self.scale = PRECOND_CURVATURE**-0.5
        self.chol = None
        d = data.mu.shape[0]
        if d > PRECOND_MAX_FEATURES:
            return
        rows = data.sample_rows(max(1, min(PRECOND_ROWS, PRECOND_MAX_ENTRIES // d))) - data.mu
        cov = _gram(rows) / rows.shape[0]
        mean_var = float(cov.diagonal().mean())
        damping = max(lam / PRECOND_CURVATURE, PRECOND_DAMPING * mean_var, torch.finfo(cov.dtype).eps * mean_var * d)
        for _ in range(4):  # grow the damping if rounding leaves cov + damping * I indefinite
            chol, info = torch.linalg.cholesky_ex(cov + damping * torch.eye(d, dtype=cov.dtype, device=cov.device))
            if int(info) == 0:
                self.chol = chol
                return
            damping *= 100

    def weight(self, v: torch.Tensor) -> torch.Tensor:
        """``W = V L^-1 / sqrt(a)`` (``V [k, d]``)."""
        if self.chol is None:
            return v
        return torch.linalg.solve_triangular(self.chol.t(), v.t(), upper=True).t() * self.scale

    def intercept(self, u: torch.Tensor) -> torch.Tensor:
        return u if self.chol is None else u * self.scale


def _rows(X, idx, dtype, device) -> torch.Tensor:
    """Rows ``idx`` of a dense or sparse array as a dense tensor (minibatches)."""
    rows = X[idx]
    if sp.issparse(rows):
        rows = rows.toarray()
    return _tensor(rows, dtype, device)


def _minibatch_train(
    est,
    model,
    X,
    target,
    task,
    penalty,
    dtype,
    device,
    optimizer,
    batch_size,
    max_iter,
    tol,
    n_iter_no_change,
    seed,
    X_val=None,
    y_val=None,
):
    """Epochs of shuffled minibatches; stops when the loss (or validation score) stops improving.

    ``penalty(model, n_batch)`` returns the regulariser for one batch. Sets ``est.n_iter_``,
    ``est.loss_curve_``, ``est.loss_``; returns whether it converged.
    """
    n = X.shape[0]
    gen = np.random.default_rng(seed)
    y_all = torch.from_numpy(target).to(device)
    x_all = None if sp.issparse(X) else _tensor(X, dtype, device)  # dense data lives on the device once
    best, best_state, stall = np.inf, None, 0
    est.loss_curve_, est.validation_scores_ = [], []
    model.train()  # the only mode switch during training; predictions use coefficients / eval mode
    for epoch in range(1, max_iter + 1):  # noqa: B007 (the count after the loop is n_iter_)
        # one epoch: sum of per-sample losses / n
        total = 0.0
        order = gen.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            rows = torch.from_numpy(idx).to(device)
            xb = _rows(X, idx, dtype, device) if x_all is None else x_all[rows]
            yb = y_all[rows]
            loss = classification_loss(model(xb), yb, task) + penalty(model, len(idx))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        est.loss_curve_.append(total / n)
        # stopping rule (sklearn's MLP): no improvement by tol for n_iter_no_change epochs
        if X_val is not None:
            model.eval()
            with torch.inference_mode():
                pred = model(_rows(X_val, slice(None), dtype, device)).argmax(1).cpu().numpy()
            model.train()
            score = float(np.mean(pred == y_val))
            est.validation_scores_.append(score)
            current = -score
        else:
            current = est.loss_curve_[-1]
        if current < best - tol:
            best, stall = current, 0
            if X_val is not None:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stall += 1
        if stall >= n_iter_no_change:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    est.n_iter_ = epoch
    est.loss_ = est.loss_curve_[-1]
    return stall >= n_iter_no_change


# ---------------------------------------------------------------- logistic regression
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

    def _check_params(self):
        _check_positive("C", self.C)
        _check_positive("max_iter", self.max_iter, integer=True)
        _check_positive("tol", self.tol, allow_zero=True)
        _check_choice("solver", self.solver, ("lbfgs", "adam", "sgd"))
        _check_positive("batch_size", self.batch_size, integer=True)
        _check_positive("learning_rate", self.learning_rate)
        _check_positive("n_iter_no_change", self.n_iter_no_change, integer=True)
        return _resolve_device(self.device)

    def fit(self, X, y):
        """Fit the model to ``X [n_samples, n_features]`` (dense or sparse) and labels ``y [n_samples]``.

        Returns
        -------
        self : LogisticRegression
        """
        device = self._check_params()
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=[np.float64, np.float32])
        codes = _encode_targets(self, y)
        binary = len(self.classes_) == 2
        task = "binary" if binary else "multiclass"
        dtype = torch.float32 if X.dtype == np.float32 else torch.float64
        n, d = X.shape
        model = (
            build_model("binary-logreg", in_features=d)
            if binary
            else build_model("logreg", in_features=d, num_classes=len(self.classes_))
        )
        model = model.to(device=device, dtype=dtype)
        k = 1 if binary else len(self.classes_)
        with _cpu_threads_for(n * d, device):
            if self.solver == "lbfgs":
                weight, bias, n_iter, converged = self._fit_lbfgs(model, X, codes, task, k, dtype, device)
            else:
                weight, bias, n_iter, converged = self._fit_minibatch(model, X, codes, task, dtype, device)
        if not binary:
            bias = bias - bias.mean()  # the softmax is shift-invariant; sklearn's intercepts also sum to 0
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

    def _fit_lbfgs(self, model, X, codes, task, k, dtype, device):
        """Full-batch L-BFGS; returns ``(W [k, d], b [k], iterations, converged)``."""
        n, d = X.shape
        data = _Design(X, dtype, device)
        y = torch.from_numpy(codes).to(device)
        lam = 1.0 / (self.C * n)  # sklearn's scaling: mean loss + ||W||^2 / (2 C n)
        # Centred coordinates: logits = (x - mu) @ W.T + c, i.e. b = c - W @ mu. Same problem
        # (W and its penalty unchanged), but far better conditioned for uncentred data such as pixels.
        # L-BFGS moves (v, u), which the preconditioner maps to (W, c).
        precond = _Preconditioner(data, lam)
        v = torch.zeros(k, d, dtype=dtype, device=device, requires_grad=True)
        u = torch.zeros(k, dtype=dtype, device=device, requires_grad=True)
        # The stopping rule is sklearn's: the largest |gradient| in (W, c) at most tol. torch's own
        # test would look at the gradient in (v, u), so it is set to 0 and the closure reports a
        # converged point by handing L-BFGS a zero gradient there. The loss-change test only ends
        # a line search that no longer moves; at sklearn's 64 * eps it would stop float32 fits early.
        eps = torch.finfo(dtype).eps
        opt = torch.optim.LBFGS(
            [v, u],
            lr=1,
            max_iter=self.max_iter,
            max_eval=2 * self.max_iter + 20,
            tolerance_grad=0.0,
            tolerance_change=eps * 1e-2,
            history_size=LBFGS_HISTORY,
            line_search_fn="strong_wolfe",
        )
        target = y if task == "multiclass" else y.to(dtype)
        last = {}

        def closure():
            opt.zero_grad(set_to_none=True)
            w, c = precond.weight(v), precond.intercept(u)
            w.retain_grad()
            c.retain_grad()
            loss = data.loss_sum(model, w, c - w @ data.mu, target, task) / n + 0.5 * lam * (w * w).sum()
            loss.backward()
            gmax = max(w.grad.abs().max().item(), c.grad.abs().max().item())
            last.update(v=v.detach().clone(), u=u.detach().clone(), gmax=gmax)
            if gmax <= self.tol:
                v.grad.zero_()
                u.grad.zero_()
            return loss

        opt.step(closure)
        n_iter = opt.state[v]["n_iter"]
        if not (torch.equal(last["v"], v) and torch.equal(last["u"], u)):
            closure()  # the line search settled on an earlier point: measure the gradient there
        with torch.no_grad():
            w, c = precond.weight(v), precond.intercept(u)
            bias = c - w @ data.mu
        # Stopping short of max_iter without meeting tol means no step can lower the loss any more
        # in this precision (the loss-change test): as converged as the arithmetic allows.
        return w, bias, n_iter, last["gmax"] <= self.tol or n_iter < self.max_iter

    def _fit_minibatch(self, model, X, codes, task, dtype, device):
        n = X.shape[0]
        lam = 1.0 / (self.C * n)
        weight, bias = model.linear.weight, model.linear.bias
        with torch.no_grad():
            weight.zero_()
            bias.zero_()
        if self.solver == "adam":
            optimizer = torch.optim.Adam(model.parameters(), lr=self.learning_rate)
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=self.learning_rate, momentum=0.9)
        target = codes if task == "multiclass" else codes.astype(np.float64)
        converged = _minibatch_train(
            self,
            model,
            X,
            target,
            task,
            lambda m, nb: 0.5 * lam * (m.linear.weight**2).sum(),
            dtype,
            device,
            optimizer,
            min(self.batch_size, n),
            self.max_iter,
            self.tol,
            self.n_iter_no_change,
            _seed_from(self.random_state),
        )
        del self.loss_curve_, self.validation_scores_, self.loss_
        n_iter, self.n_iter_ = self.n_iter_, None
        return weight, bias, n_iter, converged

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


# ---------------------------------------------------------------- multi-layer perceptron
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

    def _check_params(self):
        sizes = (
            (self.hidden_layer_sizes,)
            if isinstance(self.hidden_layer_sizes, numbers.Integral)
            else tuple(self.hidden_layer_sizes)
        )
        if not all(isinstance(h, numbers.Integral) and h > 0 for h in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got {self.hidden_layer_sizes!r}")
        _check_choice("activation", self.activation, ("relu", "gelu", "tanh", "sigmoid"))
        _check_positive("alpha", self.alpha, allow_zero=True)
        if self.batch_size != "auto":
            _check_positive("batch_size", self.batch_size, integer=True)
        _check_positive("learning_rate_init", self.learning_rate_init)
        _check_positive("max_iter", self.max_iter, integer=True)
        _check_positive("tol", self.tol, allow_zero=True)
        _check_positive("n_iter_no_change", self.n_iter_no_change, integer=True)
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        return tuple(int(h) for h in sizes), _resolve_device(self.device)

    def fit(self, X, y):
        """Train on ``X [n_samples, n_features]`` (dense or sparse) and labels ``y``; returns ``self``."""
        sizes, device = self._check_params()
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=[np.float64, np.float32])
        codes = _encode_targets(self, y)
        seed = _seed_from(self.random_state)
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
        optimizer = torch.optim.Adam(model.parameters(), lr=self.learning_rate_init)
        weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
        batch = min(200, X.shape[0]) if self.batch_size == "auto" else min(self.batch_size, X.shape[0])

        def penalty(m, nb):
            return 0.5 * self.alpha / nb * sum((w * w).sum() for w in weights)

        with _cpu_threads_for(X.shape[0] * X.shape[1], device):
            converged = _minibatch_train(
                self,
                model,
                X,
                codes,
                "multiclass",
                penalty,
                torch.float32,
                device,
                optimizer,
                batch,
                self.max_iter,
                self.tol,
                self.n_iter_no_change,
                seed,
                X_val,
                y_val,
            )
        if not self.early_stopping:
            del self.validation_scores_
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        self.coefs_ = [m.weight.detach().cpu().numpy().T.copy() for m in linears]
        self.intercepts_ = [m.bias.detach().cpu().numpy().copy() for m in linears]
        # Predictions run in float64 so that they do not depend on how rows are batched.
        self.model_ = model.cpu().double().eval()
        if not converged:
            warnings.warn(
                f"Adam did not converge in max_iter={self.max_iter} epochs (tol={self.tol}); increase max_iter",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", dtype=[np.float64, np.float32], reset=False)
        out = []
        with torch.inference_mode():
            for start in range(0, X.shape[0], 8192):
                rows = np.arange(start, min(start + 8192, X.shape[0]))
                out.append(self.model_(_rows(X, rows, torch.float64, torch.device("cpu"))).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)))

    def predict_proba(self, X):
        """Class probabilities ``[n_samples, n_classes]`` in the order of ``classes_``."""
        return softmax(self._logits(X), axis=1)

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`."""
        from scipy.special import log_softmax

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
