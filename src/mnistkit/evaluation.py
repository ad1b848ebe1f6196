"""Evaluation: accuracy, per-class precision/recall/F1, confusion matrix, binary ROC AUC; and a
checkpoint scored on the split it was trained for (:func:`evaluate_checkpoint`, ``mnistkit evaluate``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from mnistkit.ctc import exact_matches, greedy_labels
from mnistkit.errors import ConfigError
from mnistkit.inference import predict_logits
from mnistkit.losses import classification_loss, logits_to_probabilities
from mnistkit.preprocess import Normalization


@dataclass
class EvalResult:
    """Scores of a model on one split. Percentages are 0-100; ``confusion`` rows are true classes."""

    split: str
    n: int
    accuracy: float
    loss: float
    per_class: list[dict]
    confusion: list[list[int]]
    class_names: list[str]
    binary: dict | None = None
    predictions: torch.Tensor | None = field(default=None, repr=False)  # int64 [N]
    probabilities: torch.Tensor | None = field(default=None, repr=False)  # float32 [N, C]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("predictions"), d.pop("probabilities")
        return d


def confusion_matrix(true: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[C, C]`` int64 counts; rows are true classes, columns predicted ones."""
    idx = true.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_scores(cm: torch.Tensor, class_names: list[str]) -> list[dict]:
    """Precision, recall, F1 (percent) and support for each class from a confusion matrix."""
    cm = cm.double()
    tp = cm.diag()
    predicted, support = cm.sum(0), cm.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), torch.zeros_like(tp)
    )
    return [
        {
            "class": name,
            "precision": round(100 * float(p), 2),
            "recall": round(100 * float(r), 2),
            "f1": round(100 * float(f), 2),
            "support": int(s),
        }
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    ]


def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve via the rank-sum (Mann-Whitney) statistic, ties averaged."""
    positive = positive.bool()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = scores.double().argsort()
    sorted_scores = scores.double()[order]
    ranks = torch.empty_like(sorted_scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    # average ranks over ties
    _uniq, inverse, counts = torch.unique(sorted_scores, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts + 1
    avg = (first + (counts - 1) / 2.0).double()
    ranks[order] = avg[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy, precision, recall (percent) and ROC AUC for a one-logit model."""
    pred = (logits > 0).long()
    tp = int(((pred == 1) & (labels == 1)).sum())
    fp = int(((pred == 1) & (labels == 0)).sum())
    fn = int(((pred == 0) & (labels == 1)).sum())
    return {
        "accuracy": round(100 * float((pred == labels).double().mean()), 2),
        "precision": round(100 * tp / (tp + fp), 2) if tp + fp else 0.0,
        "recall": round(100 * tp / (tp + fn), 2) if tp + fn else 0.0,
        "roc_auc": round(roc_auc(logits, labels), 4),
    }


def loss_and_accuracy(
    logits: torch.Tensor, labels: torch.Tensor, task: str, predictions: torch.Tensor
) -> tuple[float, float]:
    """Mean loss and accuracy (percent) of ``logits`` and their ``predictions`` against int ``labels``;
    NaN for an empty split. Shared by :func:`evaluate` and the per-epoch validation."""
    if not len(labels):
        return float("nan"), float("nan")
    loss = float(classification_loss(logits, labels, task))
    if task == "sequence":  # a line is right when every digit is: exact readings
        return loss, 100.0 * int(exact_matches(logits, labels)) / len(labels)
    return loss, 100.0 * float((predictions == labels).double().mean())


def validation_scores(model: torch.nn.Module, split, norm: Normalization, task: str, batch_size: int) -> dict:
    """``val_loss`` and ``val_accuracy`` (percent, unrounded) of ``model`` on a split of uint8 images:
    the per-epoch validation of training, on the same inference path as :func:`evaluate`."""
    if split is None:
        return {"val_loss": None, "val_accuracy": None}
    logits = predict_logits(model, split.images, norm, batch_size)
    labels = split.labels.long().cpu()
    loss, accuracy = loss_and_accuracy(logits, labels, task, _predictions(logits, task))
    return {"val_loss": loss, "val_accuracy": accuracy}


def evaluate(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    norm: Normalization,
    class_names: list[str],
    task: str = "multiclass",
    split: str = "test",
    batch_size: int = 1024,
    device=None,
    bf16: bool = False,
) -> EvalResult:
    """Score ``model`` on uint8 ``images [N, 28, 28]`` with int ``labels [N]`` (eval mode, inference mode;
    ``bf16``: see :func:`mnistkit.inference.predict_logits`)."""
    logits = predict_logits(model, images, norm, batch_size, device, bf16)
    labels = labels.long().cpu()
    if task == "sequence":
        return _sequence_result(logits, labels, class_names, split)
    probs = logits_to_probabilities(logits, task)
    pred = probs.argmax(1)
    cm = confusion_matrix(labels, pred, len(class_names))
    loss, acc = loss_and_accuracy(logits, labels, task, pred)
    return EvalResult(
        split=split,
        n=len(labels),
        accuracy=round(acc, 2),
        loss=round(loss, 5),
        per_class=per_class_scores(cm, class_names),
        confusion=cm.tolist(),
        class_names=list(class_names),
        binary=binary_scores(logits, labels) if task == "binary" else None,
        predictions=pred,
        probabilities=probs,
    )


def _predictions(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Each row's predicted class (a sequence model's: its best-path reading, padded)."""
    return greedy_labels(logits) if task == "sequence" else logits_to_probabilities(logits, task).argmax(1)


def _sequence_result(logits: torch.Tensor, labels: torch.Tensor, class_names: list[str], split: str) -> EvalResult:
    """A sequence model's scores: exact readings (``accuracy``) and CTC loss; no per-class table
    (a line's digits are not aligned to its label's, so a confusion matrix would be guesswork)."""
    loss, acc = loss_and_accuracy(logits, labels, "sequence", labels)
    return EvalResult(
        split=split,
        n=len(labels),
        accuracy=round(acc, 2),
        loss=round(loss, 5),
        per_class=[],
        confusion=[],
        class_names=list(class_names),
        predictions=greedy_labels(logits),
    )


def evaluate_checkpoint(
    checkpoint,
    split: str = "test",
    dataset: str | None = None,
    data_dir=None,
    download: bool = True,
    batch_size: int = 1024,
    device: str = "auto",
    bf16: bool = False,
    other_classes: bool = False,
):
    """Load a checkpoint, rebuild the split it was trained for, and score it.

    A dataset whose class names differ from the checkpoint's (Fashion-MNIST for a digit model)
    is refused: its score would mean nothing. ``other_classes=True`` scores it anyway (a
    relabelled copy of the same classes); the number of classes must still match.
    """
    from mnistkit.checkpoint import load_checkpoint
    from mnistkit.config import TrainConfig, resolve_device
    from mnistkit.data import load_dataset
    from mnistkit.data.task import make_task

    dev = resolve_device(device)
    ck = load_checkpoint(checkpoint, device=dev)
    saved = dict(ck.meta.get("config") or {})
    cfg = TrainConfig.from_dict(saved) if saved else TrainConfig(dataset=ck.meta.get("dataset", "mnist"))
    if split == "val" and not cfg.val_size:
        raise ConfigError("--split val: this model was trained without a validation split (--val-size 0)")
    # the checkpoint's own data_dir is never searched: a file from elsewhere must not choose where
    # data is read from or downloaded to; the caller's data_dir, the environment and the standard roots do
    ds = load_dataset(dataset or cfg.dataset, data_dir=data_dir, download=download)
    data = make_task(  # the splits the model was trained for: same validation rows, same task
        ds,
        val_size=cfg.val_size,
        seed=cfg.seed,
        positive=cfg.positive,
        classes=cfg.classes,
        binary=ck.task == "binary",
        model=cfg.model,
        norm=cfg.norm,
    )
    if len(data.class_names) != len(ck.class_names):
        raise ConfigError(
            f"dataset {dataset or cfg.dataset!r} has {len(data.class_names)} classes but the checkpoint "
            f"predicts {len(ck.class_names)}"
        )
    if list(data.class_names) != list(ck.class_names) and not other_classes:
        raise ConfigError(
            f"dataset {dataset or cfg.dataset!r} has the classes {_class_list(data.class_names)} but the checkpoint "
            f"predicts {_class_list(ck.class_names)}: its score would mean nothing (pass --other-classes to score it anyway)"
        )
    chosen = data.split(split)
    return evaluate(
        ck.model, chosen.images, chosen.labels, ck.norm, ck.class_names, ck.task, split, batch_size, dev, bf16
    )


def _class_list(names) -> str:
    """A few class names for a one-line message."""
    shown = ", ".join(map(str, list(names)[:4]))
    return f"{shown}, ..." if len(names) > 4 else shown
