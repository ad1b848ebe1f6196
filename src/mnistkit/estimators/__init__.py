"""scikit-learn compatible estimators backed by mnistkit's torch models.

:class:`LogisticRegression` solves exactly scikit-learn's L2-regularised
problem, ``min_W,b  C * sum_i CE_i + 0.5 * ||W||^2`` (intercept unpenalised;
multinomial, binary with one coefficient row for two classes), with
full-batch L-BFGS in torch; :class:`MLPClassifier` trains
``build_model("mlp", ...)`` with Adam minibatches. Both use the registry's
modules and :func:`mnistkit.losses.classification_loss`, the same code as
``mnistkit train``; the solvers live in :mod:`mnistkit.solvers`, which
``mnistkit train --model logreg`` shares.

- :mod:`~mnistkit.estimators.logistic`: :class:`LogisticRegression`.
- :mod:`~mnistkit.estimators.mlp_classifier`: :class:`MLPClassifier`.
- :mod:`~mnistkit.estimators.common`: parameter checks (the config's), labels and seeds.

scikit-learn is an optional extra: importing this package without it raises
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

from mnistkit.estimators.logistic import LogisticRegression
from mnistkit.estimators.mlp_classifier import MLPClassifier

__all__ = ["LogisticRegression", "MLPClassifier"]
