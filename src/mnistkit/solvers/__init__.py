"""Torch solvers shared by ``mnistkit train`` and the scikit-learn estimators: numerics only.

They need torch and numpy only (scipy, when installed, speeds up the CSR set-up and
takes sparse input), so ``mnistkit train --model logreg`` can use the same
preconditioned L-BFGS as :class:`mnistkit.estimators.LogisticRegression` without
scikit-learn. This package sits below :mod:`mnistkit.training`, which imports it; it
imports nothing from there (the estimators' minibatch epochs are
:mod:`mnistkit.training.arrays`, on the one epoch loop).

- :mod:`~mnistkit.solvers.sparse`: the training matrix on the device (dense, or CSR row
  blocks built in a thread pool), its centring vector, and the thread budget for small problems.
- :mod:`~mnistkit.solvers.lbfgs`: preconditioned full-batch L-BFGS for L2-regularised
  logistic regression (multinomial or binary).
"""
