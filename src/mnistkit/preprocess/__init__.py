"""The one preprocessing path shared by training, evaluation, prediction and serving.

- :mod:`mnistkit.preprocess.tensor`: uint8 pixels -> normalised float tensors
  (the only place normalisation happens).
- :mod:`mnistkit.preprocess.image`: any photo or drawing -> a 28x28 uint8 image
  made the way MNIST was made (needs Pillow, the ``images`` extra).
"""

from mnistkit.preprocess.tensor import TUTORIAL_NORM, Normalization, fold_into_linear, normalize

__all__ = ["TUTORIAL_NORM", "Normalization", "fold_into_linear", "normalize"]
