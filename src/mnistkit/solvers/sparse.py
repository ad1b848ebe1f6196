"""The training matrix on the device: dense, or CSR row blocks for mostly-zero data.

MNIST pixels are about 80 % zeros, and on a CPU ``x @ W.T`` through MKL's CSR
kernels is several times faster than the dense product. The CSR arrays (and those of
the transpose, for the gradient) are built once per fit, in row blocks and two
threads. scipy builds the transposes; without scipy the matrix stays dense.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import sys
import warnings

import numpy as np
import torch

from mnistkit.losses import classification_loss

SPARSE_MAX_DENSITY = 0.35  # CPU: a dense X with fewer nonzeros than this goes through CSR matmuls
SPARSE_MIN_SIZE = 2_000_000  # ...if it has at least this many entries (small X: CSR set-up is not worth it)
CENTRE_ROWS = 10_000  # rows averaged for the centring vector mu
CSR_BLOCKS = (
    8  # row blocks a dense X is converted to CSR in, two threads (MNIST: 8 -> 0.97 s fit, 4 -> 1.04, 2 -> 1.05)
)
SMALL_PROBLEM = 1_000_000  # entries of X below which fits run on one CPU thread (thread hand-offs cost more)


def issparse(X) -> bool:
    """Is ``X`` a scipy sparse matrix? (Without importing scipy: no scipy loaded, no sparse input.)"""
    sp = sys.modules.get("scipy.sparse")
    return sp is not None and sp.issparse(X)


@contextlib.contextmanager
def cpu_threads_for(n_entries: int, device: torch.device):
    """One intra-op thread for small CPU problems (faster, and robust on a busy machine); restored after."""
    before = torch.get_num_threads()
    if device.type == "cpu" and n_entries < SMALL_PROBLEM and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def as_tensor(a, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A tensor view of a numpy array where possible (read-only arrays, e.g. memmaps, are copied)."""
    if isinstance(a, torch.Tensor):
        return a.to(device=device, dtype=dtype)
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:
        a = a.copy()
    return torch.from_numpy(a).to(device=device, dtype=dtype)


def rows(X, idx, dtype, device) -> torch.Tensor:
    """Rows ``idx`` of a dense or sparse array (or a tensor) as a dense tensor ``[len(idx), d]``."""
    if isinstance(X, torch.Tensor):
        return X[torch.as_tensor(idx, device=X.device)].to(device=device, dtype=dtype)
    part = X[idx]
    if issparse(part):
        part = part.toarray()
    return as_tensor(part, dtype, device)


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
    import scipy.sparse as sp

    n, d = x.shape
    flat = x.reshape(-1)
    where = flat.nonzero().squeeze(1)  # row-major positions of the nonzeros, sorted
    row_starts = torch.arange(n + 1, dtype=torch.int64) * d
    indptr = torch.searchsorted(where, row_starts).to(torch.int32)
    indices = (where % d).to(torch.int32)
    values = torch.take(flat, where)
    csr = sp.csr_matrix((values.numpy(), indices.numpy(), indptr.numpy()), shape=(n, d))
    return _csr_tensor(indptr, indices, values, (n, d), x.device), _csr_of_transpose(csr, x.device)


def _csr_of_transpose(csr, device) -> torch.Tensor:
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


def _scipy_available() -> bool:
    try:
        import scipy.sparse  # noqa: F401
    except ImportError:
        return False
    return True


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


class Design:
    """The training matrix on the device, dense or as CSR row blocks, with a centring vector ``mu [d]``.

    ``X`` is a numpy array, a scipy sparse matrix or a tensor (``[n, ...]``, flattened to ``[n, d]``).
    """

    def __init__(self, X, dtype: torch.dtype, device: torch.device):
        self.source = X
        self.blocks: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        if issparse(X):
            X = X.tocsr()
            X.sort_indices()
            self.blocks = [(_csr_tensor(X.indptr, X.indices, X.data, X.shape, device), _csr_of_transpose(X, device))]
            self.mu = torch.as_tensor(np.asarray(X.mean(axis=0)).ravel(), dtype=dtype, device=device)
            return
        x = as_tensor(X, dtype, device)
        x = x.reshape(x.shape[0], -1)
        self.source = x
        # Any centre gives the same problem (b = c - W @ mu absorbs it); evenly spaced rows centre
        # as well as all of them and skip a pass over X.
        self.mu = x[:: max(1, x.shape[0] // CENTRE_ROWS)].mean(0)
        self.x = x
        if device.type == "cpu" and SPARSE_MIN_SIZE <= x.numel() < 2**31 and _scipy_available():  # int32 indices
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
        return rows(self.source, idx, self.mu.dtype, self.mu.device)
