"""The unsure rule: when a prediction is not a confidently read single digit, and its thresholds.

The one owner of the rule and its constants. Prediction, the server, number reading, checkpoints
and the model card all ask this module; it imports nothing of the package at run time, so any
layer may use it. How the thresholds were chosen is in bench/README.md ("How the presets and
thresholds are chosen").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mnistkit.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from mnistkit.preprocess.image import DigitAnalysis

#: Below this top probability a prediction is unsure, for a model without a threshold of its own
#: (:func:`model_min_confidence`): the highest value tried on photographed digits that flags at most
#: ~2 % of true digits in every lighting condition.
DEFAULT_MIN_CONFIDENCE = 0.6
#: The share of true digits the whole rule may flag when a model's own thresholds are chosen
#: (:func:`choose_min_confidence`, :meth:`mnistkit.novelty.NoveltyModel.with_flag_rate`): half the
#: 2 % budget, a margin for writers the validation digits do not have.
UNSURE_FLAG_RATE = 0.01
#: A digit whose 28x28 frame is more than this share solid ink is a blob or an object, not a digit
#: (0.1 % of MNIST's training digits pass 0.36).
MAX_BOX_FILL = 0.4
#: Ink over more than this share of the whole picture: a texture or a dark photo, not a written digit.
MAX_INK_SHARE = 0.35
#: The reason given when the features are unlike the training digits' (a novelty ratio over 1).
NOVELTY_REASON = "unlike the digits this model was trained on"


def unsure_reason(
    analysis: DigitAnalysis,
    probabilities: Sequence[float],
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    novelty: float | None = None,
    classifier: Sequence[float] | None = None,
) -> str | None:
    """Why this input is not a confidently read single digit, or ``None`` when it is.

    ``analysis`` is what preprocessing found (:func:`mnistkit.preprocess.image.analyze_image`),
    ``probabilities`` the model's calibrated probabilities for it, ``novelty`` its distance from
    the training digits over the checkpoint's threshold (:func:`mnistkit.novelty.novelty_ratios`;
    ``None`` for checkpoints without a novelty model). In order: no ink at all; several separate
    digits; ink filling the picture or the digit's frame (an object, a texture, a blot); the top
    probability below ``min_confidence``; features unlike the training digits' (``novelty > 1``:
    a shirt or a letter the model is sure of). When ``probabilities`` join the line reader's reading
    with the classifier's own (``classifier``; :func:`mnistkit.prediction.with_line_readings`) and
    both read the same ink, the classifier must be sure on its own too: two partners agreeing on a
    shirt or a letter make a sure joint answer that neither gave.
    """
    if analysis.digits_found == 0:
        return "no ink found"
    if analysis.digits_found > 1:
        return f"{analysis.digits_found} separate digits (read numbers with --number)"
    if analysis.ink_share > MAX_INK_SHARE or analysis.box_fill > MAX_BOX_FILL:
        return "ink fills the frame: not a written digit"
    top = float(np.max(probabilities))
    if top < min_confidence:
        return f"top probability {top:.2f} is below --min-confidence {min_confidence:g}"
    alone = float(np.max(classifier)) if classifier is not None and analysis.same_ink else 1.0
    if analysis.line_probs is not None and alone < min_confidence:
        return f"the digit model alone gives {alone:.2f}, below --min-confidence {min_confidence:g}"
    if novelty is not None and novelty > 1:
        return NOVELTY_REASON
    return None


def check_min_confidence(value: float | None) -> float | None:
    """``--min-confidence`` (or ``min_confidence=``) as given at a boundary, the CLI, the server or
    the Python API: a probability, or None for the model's own (:func:`model_min_confidence`)."""
    if value is not None and not 0.0 <= value <= 1.0:
        raise ConfigError(f"--min-confidence must be between 0 and 1, got {value}")
    return value


def model_min_confidence(meta: dict, default: float = DEFAULT_MIN_CONFIDENCE) -> float:
    """A model's own threshold from its checkpoint metadata: the one chosen when it was packaged
    (:func:`choose_min_confidence`), else ``default``."""
    own = meta.get("min_confidence")
    return default if own is None else float(own)


def min_confidence_for(model, given: float | None) -> float:
    """The threshold that judges a prediction: the one given, else the model's own (``model``: a
    :class:`~mnistkit.checkpoint.Checkpoint` or a :class:`~mnistkit.reading.model.LineReader`, anything
    with a ``min_confidence``)."""
    return model.min_confidence if given is None else given


def choose_min_confidence(top: np.ndarray, flagged_otherwise: np.ndarray, flag_rate: float = UNSURE_FLAG_RATE) -> float:
    """The highest ``--min-confidence`` (3 decimals, rounded down) at which the whole unsure rule flags at
    most ``flag_rate`` of a set of true digits: ``top`` their top calibrated probabilities, and
    ``flagged_otherwise`` whether another part of the rule (no ink, several digits, novelty...) flags
    each already. 0 when those alone are over the budget.

    A model trained with ``--negatives`` gives low probabilities to what is not a digit, so its
    threshold is worth choosing for it rather than taking :data:`DEFAULT_MIN_CONFIDENCE`.
    """
    top, other = np.asarray(top, np.float64), np.asarray(flagged_otherwise, bool)
    spare = int(np.floor(flag_rate * len(top) + 1e-9)) - int(other.sum())
    if spare < 0:
        return 0.0
    candidates = np.sort(top[~other])
    if spare >= len(candidates):
        return 1.0
    return float(np.floor(candidates[spare] * 1000) / 1000)  # below it: at most `spare` digits
