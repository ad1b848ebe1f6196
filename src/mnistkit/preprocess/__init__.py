"""The one preprocessing path shared by training, evaluation, prediction and serving.

- :mod:`mnistkit.preprocess.tensor`: uint8 pixels -> normalised float tensors
  (the only place normalisation happens).
- :mod:`mnistkit.preprocess.image`: any photo or drawing -> a 28x28 uint8 image
  made the way MNIST was made (needs Pillow, the ``images`` extra); its steps live in
  :mod:`~mnistkit.preprocess.decode` (reading), :mod:`~mnistkit.preprocess.ink` (finding the
  ink under uneven light) and :mod:`~mnistkit.preprocess.frame` (MNIST's 20x20-in-28x28 framing).
"""

from mnistkit.preprocess.tensor import TUTORIAL_NORM, Normalization, fold_into_linear, normalize

__all__ = ["TUTORIAL_NORM", "Normalization", "fold_into_linear", "normalize"]
