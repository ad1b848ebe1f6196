"""Models: the registry (:mod:`mnistkit.models.registry`) and the built-in networks
(:mod:`~mnistkit.models.linear`, :mod:`~mnistkit.models.mlp`, :mod:`~mnistkit.models.cnn`).

``build_model(name, **options)`` is the only way models are made, so a
checkpoint that stores ``(name, options)`` can always rebuild its network, and
``tests/test_models.py`` can run every registered model.
"""

from mnistkit.models.registry import MODELS, ModelSpec, build_model, get_model_spec, list_models, register_model

__all__ = ["MODELS", "ModelSpec", "build_model", "get_model_spec", "list_models", "register_model"]
