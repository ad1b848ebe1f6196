"""scikit-learn compatible estimators: the estimator contract, agreement with scikit-learn, errors, MNIST."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import scipy.sparse as sp
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from mnistkit.estimators import LogisticRegression, MLPClassifier

TIGHT = dict(tol=1e-10, max_iter=2000)  # run both solvers to the optimum


def _standardised(loader):
    X, y = loader(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@contextlib.contextmanager
def _ignore_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


# ---------------------------------------------------------------- the scikit-learn contract
# Every check passes; none is skipped by us. (sklearn itself skips check_array_api_input
# unless SCIPY_ARRAY_API=1 is set, and the estimators do not claim array-API support.)
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {"LogisticRegression": {}, "MLPClassifier": {}}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tiny check data, default max_iter
@parametrize_with_checks(
    [LogisticRegression(), MLPClassifier(random_state=0)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS[type(est).__name__],
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------- same problem as scikit-learn
@pytest.mark.parametrize("loader", [load_iris, load_breast_cancer], ids=["iris", "breast_cancer"])
@pytest.mark.parametrize("C", [0.1, 1.0])
def test_coefficients_match_sklearn(loader, C):
    X, y = _standardised(loader)
    sk = SkLogisticRegression(C=C, **TIGHT).fit(X, y)
    ours = LogisticRegression(C=C, **TIGHT).fit(X, y)
    assert ours.coef_.shape == sk.coef_.shape and ours.intercept_.shape == sk.intercept_.shape
    np.testing.assert_allclose(ours.coef_, sk.coef_, atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(ours.intercept_, sk.intercept_, atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), atol=1e-5)
    np.testing.assert_allclose(ours.decision_function(X), sk.decision_function(X), atol=1e-3)


def test_float32_input_stays_float32_and_agrees():
    X, y = _standardised(load_iris)
    ref = LogisticRegression(**TIGHT).fit(X, y)
    with _ignore_convergence():  # float32 may stall just short of tol
        f32 = LogisticRegression(tol=1e-6, max_iter=500).fit(X.astype(np.float32), y)
    assert f32.coef_.dtype == np.float32 and ref.coef_.dtype == np.float64
    np.testing.assert_allclose(f32.coef_, ref.coef_, atol=1e-3, rtol=1e-2)


def test_sparse_input_gives_dense_result():
    X, y = _standardised(load_iris)
    X[np.abs(X) < 0.5] = 0.0
    dense = LogisticRegression(**TIGHT).fit(X, y)
    sparse = LogisticRegression(**TIGHT).fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, atol=1e-6)
    np.testing.assert_allclose(sparse.predict_proba(sp.csr_matrix(X)), dense.predict_proba(X), atol=1e-8)


def _pixel_like(n=2000, d=60, seed=0):
    """Mostly-zero, strongly correlated, unevenly scaled features (like pixels) and 4 noisy classes."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 8))
    X = latent @ rng.normal(size=(8, d)) * rng.uniform(0.1, 3.0, size=d) + 0.3 * rng.normal(size=(n, d))
    X[X < 1.0] = 0.0  # about 65 % zeros
    y = ((latent[:, :2] + rng.normal(size=(n, 2))) > 0) @ np.array([1, 2])
    return X.astype(np.float32), y


def test_dense_input_through_csr_blocks_matches_dense_matmuls(monkeypatch):
    import mnistkit.solvers.sparse as est

    X, y = _pixel_like()
    dense = LogisticRegression(tol=1e-5, max_iter=1000).fit(X, y)
    monkeypatch.setattr(est, "SPARSE_MIN_SIZE", 1)  # take the CSR path (MNIST-sized data takes it by default)
    monkeypatch.setattr(est, "SPARSE_MAX_DENSITY", 0.9)
    calls, build = [], est._dense_to_csr_blocks
    monkeypatch.setattr(est, "_dense_to_csr_blocks", lambda x: calls.append(tuple(x.shape)) or build(x))
    csr = LogisticRegression(tol=1e-5, max_iter=1000).fit(X, y)
    assert calls == [X.shape]
    np.testing.assert_allclose(csr.predict_proba(X), dense.predict_proba(X), atol=2e-3)
    assert (csr.predict(X) == dense.predict(X)).mean() > 0.995


def test_preconditioner_cuts_iterations_not_the_answer(monkeypatch):
    import mnistkit.solvers.lbfgs as est

    X, y = _pixel_like()
    X = X.astype(np.float64)
    pre = LogisticRegression(tol=1e-6, max_iter=2000).fit(X, y)
    monkeypatch.setattr(est, "PRECOND_MAX_FEATURES", 0)  # identity: plain L-BFGS in (W, c)
    plain = LogisticRegression(tol=1e-6, max_iter=2000).fit(X, y)
    assert pre.n_iter_[0] < 0.5 * plain.n_iter_[0], (pre.n_iter_, plain.n_iter_)  # measured: 190 against 553
    np.testing.assert_allclose(pre.coef_, plain.coef_, atol=2e-3)
    np.testing.assert_allclose(pre.predict_proba(X), plain.predict_proba(X), atol=5e-4)


def test_digits_accuracy_within_point_two_of_sklearn():
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.3, random_state=0, stratify=y)
    sk = SkLogisticRegression(max_iter=1000).fit(Xtr, ytr).score(Xte, yte)
    ours = LogisticRegression(max_iter=1000).fit(Xtr, ytr).score(Xte, yte)
    assert abs(ours - sk) * 100 <= 0.2, (ours, sk)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_minibatch_solvers_reach_lbfgs_accuracy(solver):
    X, y = _standardised(load_breast_cancer)
    ref = LogisticRegression().fit(X, y).score(X, y)
    clf = LogisticRegression(solver=solver, batch_size=64, max_iter=60, random_state=0)
    with _ignore_convergence():
        clf.fit(X, y)
    assert clf.score(X, y) >= ref - 0.01 and clf.n_iter_[0] >= 1


# ---------------------------------------------------------------- use from scikit-learn
def test_pipeline_and_grid_search():
    X, y = load_breast_cancer(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), LogisticRegression())
    search = GridSearchCV(pipe, {"logisticregression__C": [0.01, 1.0]}, cv=3).fit(X, y)
    assert search.best_params_["logisticregression__C"] in (0.01, 1.0)
    assert search.score(X, y) > 0.95


def test_string_labels_binary_and_multiclass():
    X, y = _standardised(load_iris)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = LogisticRegression().fit(X, names)
    assert list(clf.classes_) == ["setosa", "versicolor", "virginica"]
    assert set(clf.predict(X)) <= set(names) and clf.score(X, names) > 0.9
    two = names != "setosa"
    binary = LogisticRegression().fit(X[two], names[two])
    assert binary.coef_.shape == (1, 4) and binary.decision_function(X[two]).shape == (two.sum(),)
    assert binary.predict_proba(X[two]).shape == (two.sum(), 2)
    mlp = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=100, random_state=0)
    with _ignore_convergence():
        mlp.fit(X, names)
    assert mlp.predict(X).dtype == names.dtype and mlp.score(X, names) > 0.9


def test_to_torch_uses_the_registry_model():
    X, y = _standardised(load_iris)
    clf = LogisticRegression().fit(X, y)
    module = clf.to_torch()
    assert module.mnistkit_name == "logreg"
    with torch.no_grad():
        logits = module(torch.as_tensor(X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(logits, clf.decision_function(X), atol=1e-4)
    assert LogisticRegression().fit(X[y < 2], y[y < 2]).to_torch().mnistkit_name == "binary-logreg"


def test_convergence_warning_when_max_iter_is_hit():
    X, y = load_digits(return_X_y=True)
    with pytest.warns(ConvergenceWarning, match="did not converge in max_iter=3"):
        clf = LogisticRegression(max_iter=3).fit(X, y)
    assert clf.n_iter_[0] == 3


def test_mlp_attributes():
    X, y = load_digits(return_X_y=True)
    clf = MLPClassifier(
        hidden_layer_sizes=(32, 16), learning_rate_init=3e-3, max_iter=40, early_stopping=True, random_state=0
    )
    with _ignore_convergence():
        clf.fit(X / 16.0, y)
    assert [w.shape for w in clf.coefs_] == [(64, 32), (32, 16), (16, 10)]
    assert [b.shape for b in clf.intercepts_] == [(32,), (16,), (10,)]
    assert clf.score(X / 16.0, y) > 0.9 and len(clf.validation_scores_) == clf.n_iter_
    np.testing.assert_allclose(clf.predict_proba(X[:5] / 16.0).sum(1), 1.0)


# ---------------------------------------------------------------- errors name the problem
@pytest.mark.parametrize("make", [LogisticRegression, MLPClassifier])
def test_input_errors(make):
    X, y = _standardised(load_iris)
    with pytest.raises(NotFittedError):
        make().predict(X)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make().fit(bad, y)
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        make().fit(bad, y)
    with pytest.raises(ValueError, match="Expected 2D array"):
        make().fit(X[:, 0], y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        make().fit(X, y[:-1])
    with pytest.raises(ValueError, match="only one class"):
        make().fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="Unknown label type"):
        make().fit(X, y + 0.5)
    fitted = make(max_iter=5).set_params(tol=0.1)
    with _ignore_convergence():
        fitted.fit(X, y)
    with pytest.raises(ValueError, match="has 3 features, but .* is expecting 4"):
        fitted.predict(X[:, :3])


def test_parameter_errors():
    X, y = _standardised(load_iris)
    with pytest.raises(ValueError, match="C must be a positive number, got -1"):
        LogisticRegression(C=-1).fit(X, y)
    with pytest.raises(ValueError, match="unknown solver 'newton'; choose one of: lbfgs, adam, sgd"):
        LogisticRegression(solver="newton").fit(X, y)
    with pytest.raises(ValueError, match="unknown activation 'swish'; choose one of: relu, gelu, sigmoid, tanh"):
        MLPClassifier(activation="swish").fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes must be positive integers"):
        MLPClassifier(hidden_layer_sizes=(0,)).fit(X, y)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            LogisticRegression(device="cuda").fit(X, y)


# ---------------------------------------------------------------- optional dependency
def test_import_mnistkit_does_not_import_sklearn():
    code = "import sys, mnistkit, mnistkit.models; mnistkit.build_model('logreg'); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_sklearn_gives_install_hint():
    code = "import sys; sys.modules['sklearn'] = None; import mnistkit.estimators"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "ImportError: mnistkit.estimators needs scikit-learn: pip install 'mnistkit[sklearn]'" in out.stderr


# ---------------------------------------------------------------- real MNIST
@pytest.mark.slow
def test_mnist_accuracy_at_sklearn_level(mnist_root):
    from mnistkit.data import load_dataset

    ds = load_dataset("mnist", data_dir=mnist_root, download=False)
    X = ds.train.images.reshape(len(ds.train.labels), -1).numpy().astype(np.float32) / 255
    Xt = ds.test.images.reshape(len(ds.test.labels), -1).numpy().astype(np.float32) / 255
    clf = LogisticRegression().fit(X, ds.train.labels.numpy())
    accuracy = clf.score(Xt, ds.test.labels.numpy()) * 100
    assert accuracy >= 92.3, f"{accuracy:.2f}% (scikit-learn: 92.56%)"


@pytest.mark.parametrize("n", [3, 100])
def test_csr_blocks_forward_and_backward_match_dense(n):
    """Row blocks (some empty, some all-zero) give the dense product and its weight gradient."""
    import mnistkit.solvers.sparse as est

    x = torch.zeros(n, 20)
    x[n // 2 :, 3] = 1.0
    x[-1, 7] = 2.5
    w = torch.randn(5, 20, requires_grad=True)
    out = est._SparseLinear.apply(w, est._dense_to_csr_blocks(x))
    g = torch.randn(n, 5)
    out.backward(g)
    torch.testing.assert_close(out, x @ w.detach().t())
    torch.testing.assert_close(w.grad, g.t() @ x)


@pytest.mark.parametrize("d", [3000, 5000])  # preconditioned (sample capped by entries), and too wide for it
def test_wide_sparse_input_agrees_with_sklearn(d):
    rng = np.random.default_rng(0)
    X = sp.random(400, d, density=0.01, format="csr", random_state=0, dtype=np.float64)
    y = np.asarray(X[:, :50].sum(axis=1)).ravel() + 0.05 * rng.normal(size=400) > 0.12
    ours = LogisticRegression(C=10.0, tol=1e-8, max_iter=3000).fit(X, y)
    sk = SkLogisticRegression(C=10.0, tol=1e-10, max_iter=5000).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), atol=1e-4)


# ---------------------------------------------------------------- the CLI's logreg
@pytest.mark.parametrize("norm", ["tutorial", "dataset"])
def test_cli_logreg_fits_the_estimators_model(synthetic_dataset, tmp_path, capsys, norm):
    """`mnistkit train --model logreg` (L-BFGS by default) gives LogisticRegression()'s model on pixels / 255,
    whatever --norm: the same weights on raw pixels and the same test accuracy."""
    import json

    from helpers import run_cli

    from mnistkit.checkpoint import load_checkpoint
    from mnistkit.data import load_dataset
    from mnistkit.preprocess.tensor import fold_into_linear

    out = tmp_path / "run"
    code, stdout, _ = run_cli(
        ["train", "--dataset", synthetic_dataset, "--model", "logreg", "--norm", norm, "--out", out], capsys
    )
    assert code == 0 and "by full-batch L-BFGS" in stdout
    ckpt = load_checkpoint(out / "model.safetensors")
    weight, bias = fold_into_linear(ckpt.model.linear.weight, ckpt.model.linear.bias, ckpt.norm)  # raw 0..255 pixels
    weight, bias = (weight * 255).numpy(), bias.numpy()  # pixels / 255

    ds = load_dataset(str(synthetic_dataset), download=False)
    X = ds.train.images.reshape(len(ds.train.labels), -1).numpy().astype(np.float32) / 255
    Xt = ds.test.images.reshape(len(ds.test.labels), -1).numpy().astype(np.float32) / 255
    est = LogisticRegression().fit(X, ds.train.labels.numpy())
    np.testing.assert_allclose(weight, est.coef_, atol=0.02 * np.abs(est.coef_).max())
    np.testing.assert_allclose(bias - bias.mean(), est.intercept_, atol=0.02 * np.abs(est.intercept_).max() + 0.01)
    accuracy = json.loads((out / "eval.json").read_text())["accuracy"]
    assert accuracy == pytest.approx(100 * est.score(Xt, ds.test.labels.numpy()), abs=0.5)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["iterations"] >= 1 and rows[0]["converged"] is True
