"""mnistkit: train, evaluate and use small image classifiers on MNIST-family data.

Importing the package does no work: submodules (and torch) load on first use.

>>> import mnistkit
>>> result = mnistkit.fit(model="logreg", epochs=1)          # doctest: +SKIP
>>> result.test_accuracy                                      # doctest: +SKIP
92.4
>>> mnistkit.predict("my-digit.jpg")[0].label                 # doctest: +SKIP
'7'
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "fit": ("mnistkit.training", "fit"),
    "TrainConfig": ("mnistkit.config", "TrainConfig"),
    "build_model": ("mnistkit.models", "build_model"),
    "list_models": ("mnistkit.models", "list_models"),
    "load_dataset": ("mnistkit.data", "load_dataset"),
    "load_checkpoint": ("mnistkit.checkpoint", "load_checkpoint"),
    "save_checkpoint": ("mnistkit.checkpoint", "save_checkpoint"),
    "evaluate": ("mnistkit.evaluation", "evaluate"),
    "predict": ("mnistkit.api", "predict"),
    "MnistkitError": ("mnistkit.errors", "MnistkitError"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'mnistkit' has no attribute {name!r}")
