"""Does this input look like the digits the model was trained on? The one owner of that question.

A classifier's softmax is confident about many things that are not digits (a shirt, a letter,
a scribble): the top probability alone flagged a quarter to a third of them (issue 12). This
module scores an input by how far its features lie from the training digits': class-conditional
Gaussians with one shared covariance, fitted to the network's pooled features, and the distance
to the nearest class mean in the metric of that covariance (the Mahalanobis score of Lee et al.,
"A Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks",
NeurIPS 2018). The features are every convolutional stage's pooled maps, concatenated
(:meth:`~mnistkit.models.cnn.SmallCNN.stage_features`: strokes and parts, not only the last
stage's view); checkpoints made with the last stage alone (feature ``"embed"``) still load and
score as they did.

The fitted means, the precision (inverse covariance) and a threshold live in the checkpoint:
tensors under the ``novelty.`` key prefix (covered by the checkpoint's digest) and a ``novelty``
metadata object saying how the threshold was chosen. :func:`novelty_ratios` is what the unsure
rule (:func:`mnistkit.unsure.unsure_reason`) reads: distance / threshold, above 1 means
"unlike the training digits".

>>> nov = NoveltyModel.fit(features, labels).with_flag_rate(val_distances, val_unsure, 0.015)  # doctest: +SKIP
>>> nov.ratio(embed_images(model, images, norm, nov.feature)) > 1                              # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from mnistkit.errors import CheckpointError
from mnistkit.unsure import NOVELTY_REASON, UNSURE_FLAG_RATE

if TYPE_CHECKING:  # pragma: no cover
    from mnistkit.checkpoint import Checkpoint
    from mnistkit.preprocess import Normalization

#: Checkpoint tensor names of the novelty model start with this.
PREFIX = "novelty."
#: Features a novelty model can be fitted on -> the model method that computes them. ``embed`` is
#: the last stage pooled (the first bundled novelty model's), ``stages`` every stage pooled.
FEATURES = {"embed": "embed", "stages": "stage_features"}
#: What new novelty models are fitted on.
FEATURE = "stages"
#: Added to the covariance's diagonal before inverting it. Some pooled channels are almost
#: always zero (ReLU), which makes the covariance near-singular; 1e-3 is small against the
#: features' variances (order 0.1-1) yet keeps the precision's entries bounded (with it, 90.5 % of
#: Fashion-MNIST and 2.2 % of digits are flagged); it is not tuned further.
DEFAULT_RIDGE = 1e-3
#: :meth:`NoveltyModel.with_threshold`'s percentile: a threshold from in-distribution distances
#: alone (the first bundled novelty model's; new ones use :meth:`NoveltyModel.with_flag_rate`).
DEFAULT_PERCENTILE = 98.0
#: New thresholds: the whole unsure rule may flag at most this share of held-out photographed
#: digits (the rule's budget, :data:`mnistkit.unsure.UNSURE_FLAG_RATE`).
DEFAULT_FLAG_RATE = UNSURE_FLAG_RATE
#: The unsure rule's reason when the ratio is over 1 (the rule owns it).
REASON = NOVELTY_REASON
_TENSORS = ("means", "precision")
_BATCH = 1024


@dataclass(frozen=True)
class NoveltyModel:
    """Class means ``[C, D]``, the shared precision ``[D, D]`` (float64) and a distance threshold.

    ``info`` is how the model and its threshold were made (data, percentile, ridge); it is
    stored in the checkpoint's ``novelty`` metadata beside the threshold.
    """

    means: torch.Tensor
    precision: torch.Tensor
    threshold: float = math.inf
    info: dict = field(default_factory=dict)
    feature: str = FEATURE

    @classmethod
    def fit(
        cls, features: torch.Tensor, labels: torch.Tensor, ridge: float = DEFAULT_RIDGE, feature: str = FEATURE
    ) -> NoveltyModel:
        """Per-class means and the shared (pooled within-class) covariance of ``features`` ``[N, D]``
        (computed by the model's ``feature`` method, see :data:`FEATURES`); every class in
        ``0..labels.max()`` needs at least one row. The threshold starts at infinity."""
        z = torch.as_tensor(features, dtype=torch.float64)
        y = torch.as_tensor(labels, dtype=torch.long)
        counts = torch.bincount(y)
        if len(z) != len(y) or z.dim() != 2 or len(z) < 2 or bool((counts == 0).any()):
            raise ValueError("novelty fit needs features [N, D], N labels, and every class present")
        means = torch.zeros(len(counts), z.shape[1], dtype=torch.float64).index_add_(0, y, z) / counts[:, None]
        centred = z - means[y]
        cov = centred.T @ centred / len(z) + ridge * torch.eye(z.shape[1], dtype=torch.float64)
        return cls(means, torch.linalg.inv(cov), info={"ridge": ridge, "fit_count": len(z)}, feature=feature)

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance to the nearest class mean, float64 ``[N]``."""
        z = torch.as_tensor(features, dtype=torch.float64)
        zp = z @ self.precision
        m = self.means
        d = (zp * z).sum(1)[:, None] - 2 * zp @ m.T + ((m @ self.precision) * m).sum(1)[None, :]
        return d.min(dim=1).values.clamp_min(0)

    def ratio(self, features: torch.Tensor) -> torch.Tensor:
        """Distance / threshold: above 1 is "unlike the training digits"."""
        return self.distance(features) / self.threshold

    def with_threshold(self, distances, percentile: float = DEFAULT_PERCENTILE, **info) -> NoveltyModel:
        """This model with its threshold at ``percentile`` of ``distances`` (held-out in-distribution inputs)."""
        threshold = float(np.percentile(np.asarray(distances, dtype=np.float64), percentile))
        if not math.isfinite(threshold) or threshold <= 0:
            raise ValueError(f"novelty threshold {threshold} is not a positive number")
        return replace(self, threshold=threshold, info={**self.info, "percentile": percentile, **info})

    def with_flag_rate(self, distances, flagged_anyway, rate: float, **info) -> NoveltyModel:
        """This model with the lowest threshold at which at most ``rate`` of held-out in-distribution
        inputs are unsure, counting those the other rules flag already (``flagged_anyway``: no ink,
        several digits, low confidence). The issue's budget is for false alarms of the whole rule,
        so novelty gets what the other rules leave of it, not a percentile of its own."""
        d = np.asarray(distances, dtype=np.float64)
        anyway = np.asarray(flagged_anyway, dtype=bool)
        if d.shape != anyway.shape or d.ndim != 1 or not len(d) or not 0 <= rate < 1:
            raise ValueError("with_flag_rate needs one distance and one flag per input, and 0 <= rate < 1")
        budget = math.floor(rate * len(d) + 1e-9) - int(anyway.sum())
        free = np.sort(d[~anyway])[::-1]  # distances of inputs only novelty could flag, largest first
        if not len(free):
            raise ValueError("every held-out input is flagged by the other rules: no threshold can be chosen")
        # flag the `budget` farthest (strictly above the threshold); none when the budget is spent
        threshold = float(free[min(budget, len(free) - 1)]) if budget > 0 else float(free[0])
        if not math.isfinite(threshold) or threshold <= 0:
            raise ValueError(f"novelty threshold {threshold} is not a positive number")
        flagged = float(np.mean(anyway | (d > threshold)))
        extra = {"flag_rate": rate, "held_out_flagged": round(flagged, 6), "held_out_count": len(d)}
        return replace(self, threshold=threshold, info={**self.info, **extra, **info})

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The checkpoint tensors (float32, under :data:`PREFIX`)."""
        return {PREFIX + "means": self.means.float(), PREFIX + "precision": self.precision.float()}

    def to_meta(self) -> dict:
        """The checkpoint's ``novelty`` metadata object."""
        classes, dims = self.means.shape
        return {"feature": self.feature, "threshold": self.threshold, "classes": classes, "dims": dims, **self.info}

    def stored(self) -> NoveltyModel:
        """This model as it will be after a save and load (float32 tensors): thresholds are chosen on it."""
        return replace(self, means=self.means.float().double(), precision=self.precision.float().double())

    @classmethod
    def from_checkpoint(cls, tensors: dict[str, torch.Tensor], meta: dict, num_classes: int, path) -> NoveltyModel:
        """Rebuild from a checkpoint's ``novelty.*`` tensors and ``novelty`` metadata; every fault is
        a one-line :class:`CheckpointError` (the metadata's own fields were checked by :func:`meta_ok`)."""
        names = sorted(PREFIX + n for n in _TENSORS)
        if sorted(tensors) != names:
            raise CheckpointError(
                f"checkpoint {path} has novelty tensors {sorted(tensors)[:4]}; expected exactly {names}"
            )
        means, precision = tensors[PREFIX + "means"], tensors[PREFIX + "precision"]
        classes, dims = meta["classes"], meta["dims"]
        for name, t, shape in (("means", means, (classes, dims)), ("precision", precision, (dims, dims))):
            if tuple(t.shape) != shape or not t.is_floating_point():
                raise CheckpointError(
                    f"checkpoint {path}: {PREFIX}{name} is {t.dtype} {tuple(t.shape)}; its novelty metadata "
                    f"says a float {shape}"
                )
            if not bool(torch.isfinite(t).all()):
                raise CheckpointError(f"checkpoint {path}: {PREFIX}{name} has non-finite values")
        if classes != num_classes:
            raise CheckpointError(f"checkpoint {path}: novelty has {classes} class means for {num_classes} classes")
        info = {k: v for k, v in meta.items() if k not in ("feature", "threshold", "classes", "dims")}
        return cls(means.double(), precision.double(), float(meta["threshold"]), info, meta["feature"])


def meta_ok(value) -> bool:
    """The checkpoint's ``novelty`` metadata field is well formed (for ``checkpoint.META_FIELDS``)."""

    def positive_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 100_000

    t = value.get("threshold") if isinstance(value, dict) else None
    return (
        isinstance(value, dict)
        and value.get("feature") in FEATURES
        and isinstance(t, (int, float))
        and not isinstance(t, bool)
        and math.isfinite(t)
        and t > 0
        and positive_int(value.get("classes"))
        and positive_int(value.get("dims"))
    )


def split_tensors(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A checkpoint's tensors -> (the model's weights, the ``novelty.*`` tensors)."""
    model = {k: v for k, v in tensors.items() if not k.startswith(PREFIX)}
    return model, {k: v for k, v in tensors.items() if k.startswith(PREFIX)}


def feature_method(model: torch.nn.Module, feature: str = FEATURE):
    """The model's method computing ``feature`` (:data:`FEATURES`), or ``None`` when it has none
    (the MLPs and linear models)."""
    return getattr(model, FEATURES[feature], None)


@torch.inference_mode()
def embed_images(
    model: torch.nn.Module, images: torch.Tensor | np.ndarray, norm: Normalization, feature: str = FEATURE
) -> torch.Tensor | None:
    """The ``feature`` (:data:`FEATURES`) of uint8 ``[N, 28, 28]`` images (normalised with ``norm``),
    float32 ``[N, D]`` on the CPU; ``None`` for models that cannot compute it."""
    from mnistkit.preprocess import normalize

    embed = feature_method(model, feature)
    if embed is None:
        return None
    x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
    device = next(model.parameters()).device
    out = [embed(normalize(x[i : i + _BATCH].to(device), norm)).float().cpu() for i in range(0, len(x), _BATCH)]
    return torch.cat(out) if out else torch.empty(0, 0)


def novelty_ratios(checkpoint: Checkpoint, images: torch.Tensor | np.ndarray) -> np.ndarray | None:
    """Distance / threshold for each uint8 ``[N, 28, 28]`` image, or ``None`` when the checkpoint has
    no novelty model (then the unsure rule uses the probabilities alone)."""
    novelty = checkpoint.novelty
    if novelty is None or len(images) == 0:
        return None
    features = embed_images(checkpoint.model, images, checkpoint.norm, novelty.feature)
    return None if features is None else novelty.ratio(features).numpy()
