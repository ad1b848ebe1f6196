"""Preconditioned full-batch L-BFGS for L2-regularised logistic regression.

The problem is scikit-learn's, in its scaling: ``mean_i CE_i + 0.5 * lam * ||W||^2`` with an
unpenalised intercept (``lam = 1 / (C n)``), multinomial or binary. The same function fits
:class:`mnistkit.estimators.LogisticRegression` and ``mnistkit train --model logreg``, so
both give the same model in the same time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mnistkit.precision import cpu_has_native_bf16
from mnistkit.solvers.sparse import Design

LBFGS_HISTORY = 30  # L-BFGS memory (pairs); 30 converges in ~half the iterations of 10 on MNIST
PRECOND_MAX_FEATURES = 4096  # L-BFGS preconditioner (a d x d Cholesky) only up to this many features
PRECOND_ROWS = 10_000  # rows sampled for its feature covariance (it only shapes the steps, not the optimum)
PRECOND_MAX_ENTRIES = 8_000_000  # ...at most this many sampled values (wide sparse X is densified for it)
PRECOND_DAMPING = 1.0  # its damping, in units of the mean feature variance: only the top principal
#   directions are flattened. MNIST / Fashion-MNIST iterations to tol=1e-4: 0 -> 48 / 86, 0.3 -> 43 / 80,
#   1 -> 36 / 73, 3 -> 42 / 61, 10 -> 44 / 86; no preconditioner: 80 / >100.
PRECOND_CURVATURE = 0.003  # softmax curvature assumed near the optimum: the step scale, and a damping floor


@dataclass
class LbfgsResult:
    """A fitted linear model: ``logits = x @ weight.T + bias``."""

    weight: torch.Tensor  # [k, d] (k = 1 for a binary task)
    bias: torch.Tensor  # [k]
    n_iter: int
    converged: bool
    loss: float  # the objective (mean loss + penalty) at the last evaluated point


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


class Preconditioner:
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

    def __init__(self, data: Design, lam: float):
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


def fit_logistic(model, X, target: torch.Tensor, *, lam: float, tol: float, max_iter: int) -> LbfgsResult:
    """Minimise ``mean_i CE_i + 0.5 * lam * ||W||^2`` for the registry's (binary-)logreg ``model``.

    ``X [n, ...]`` (numpy, scipy sparse or a tensor) and the integer ``target [n]`` are read in
    ``model``'s dtype and device; ``model`` itself is left unchanged (the caller copies the result in).
    Stops when the largest absolute gradient entry in ``(W, b)`` is at most ``tol`` (scikit-learn's rule).
    """
    weight0 = model.linear.weight
    dtype, device = weight0.dtype, weight0.device
    data = Design(X, dtype, device)
    # Centred coordinates: logits = (x - mu) @ W.T + c, i.e. b = c - W @ mu. Same problem
    # (W and its penalty unchanged), but far better conditioned for uncentred data such as pixels.
    # L-BFGS moves (v, u), which the preconditioner maps to (W, c).
    precond = Preconditioner(data, lam)
    v = torch.zeros(weight0.shape[0], data.mu.shape[0], dtype=dtype, device=device, requires_grad=True)
    u = torch.zeros(weight0.shape[0], dtype=dtype, device=device, requires_grad=True)
    opt = _lbfgs([v, u], max_iter, dtype)
    objective = _Objective(model, data, precond, target, lam, tol, opt)
    opt.step(objective)
    n_iter = opt.state[v]["n_iter"]
    if not (torch.equal(objective.last["v"], v) and torch.equal(objective.last["u"], u)):
        objective()  # the line search settled on an earlier point: measure the gradient there
    with torch.no_grad():
        w, c = precond.weight(v), precond.intercept(u)
        bias = c - w @ data.mu
    # Stopping short of max_iter without meeting tol means no step can lower the loss any more
    # in this precision (the loss-change test): as converged as the arithmetic allows.
    converged = objective.last["gmax"] <= tol or n_iter < max_iter
    return LbfgsResult(w.detach(), bias.detach(), n_iter, converged, objective.last["loss"])


def _lbfgs(params: list[torch.Tensor], max_iter: int, dtype: torch.dtype) -> torch.optim.LBFGS:
    """torch's L-BFGS with its own stopping tests out of the way: the gradient test is
    :class:`_Objective`'s (scikit-learn's, in ``(W, c)``), and the loss-change test only ends a line
    search that no longer moves (at scikit-learn's ``64 * eps`` it would stop float32 fits early)."""
    return torch.optim.LBFGS(
        params,
        lr=1,
        max_iter=max_iter,
        max_eval=2 * max_iter + 20,
        tolerance_grad=0.0,
        tolerance_change=torch.finfo(dtype).eps * 1e-2,
        history_size=LBFGS_HISTORY,
        line_search_fn="strong_wolfe",
    )


class _Objective:
    """The closure L-BFGS calls: the penalised mean loss at its point ``(v, u)``, with the gradient.

    The stopping rule is scikit-learn's, the largest ``|gradient|`` in ``(W, c)`` at most ``tol``;
    torch would test the gradient in ``(v, u)``, so a converged point is reported by handing L-BFGS
    a zero gradient there. ``last`` holds the point last evaluated and its loss and gradient size.
    """

    def __init__(self, model, data: Design, precond: Preconditioner, target, lam: float, tol: float, opt):
        self.model, self.data, self.precond, self.lam, self.tol, self.opt = model, data, precond, lam, tol, opt
        self.task = model.mnistkit_task
        self.v, self.u = opt.param_groups[0]["params"]
        target = target.to(data.mu.device)
        self.target = target if self.task == "multiclass" else target.to(data.mu.dtype)
        self.last: dict = {}

    def __call__(self) -> torch.Tensor:
        v, u, data = self.v, self.u, self.data
        self.opt.zero_grad(set_to_none=True)
        w, c = self.precond.weight(v), self.precond.intercept(u)
        w.retain_grad()
        c.retain_grad()
        n = data.source.shape[0]
        loss = (
            data.loss_sum(self.model, w, c - w @ data.mu, self.target, self.task) / n + 0.5 * self.lam * (w * w).sum()
        )
        loss.backward()
        assert w.grad is not None and c.grad is not None  # retained above
        gmax = max(w.grad.abs().max().item(), c.grad.abs().max().item())
        self.last.update(v=v.detach().clone(), u=u.detach().clone(), gmax=gmax, loss=loss.item())
        if gmax <= self.tol:
            v.grad.zero_()
            u.grad.zero_()
        return loss
