"""Metrics against brute-force reference computations."""

import itertools

import pytest
import torch

from mnistkit.evaluation import binary_scores, confusion_matrix, per_class_scores, roc_auc


def test_confusion_matrix_counts_pairs():
    true = torch.tensor([0, 0, 1, 2, 2, 2])
    pred = torch.tensor([0, 1, 1, 2, 0, 2])
    assert confusion_matrix(true, pred, 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_per_class_scores_match_hand_computation():
    cm = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    rows = per_class_scores(cm, ["a", "b", "c"])
    assert rows[0] == {"class": "a", "precision": 50.0, "recall": 50.0, "f1": 50.0, "support": 2}
    assert rows[1]["precision"] == 50.0 and rows[1]["recall"] == 100.0 and rows[1]["f1"] == 66.67
    assert rows[2]["precision"] == 100.0 and rows[2]["recall"] == 66.67


def test_class_never_predicted_has_zero_precision_not_nan():
    rows = per_class_scores(torch.tensor([[2, 0], [1, 0]]), ["x", "y"])
    assert rows[1]["precision"] == 0.0 and rows[1]["f1"] == 0.0


def _brute_auc(scores, labels):
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_equals_pairwise_definition_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (40,), generator=g).float()  # many ties
    labels = torch.randint(0, 2, (40,), generator=g)
    assert roc_auc(scores, labels) == pytest.approx(_brute_auc(scores.tolist(), labels.tolist()))


def test_binary_scores():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0])
    labels = torch.tensor([1, 1, 0, 0])
    s = binary_scores(logits, labels)
    assert s["accuracy"] == 50.0 and s["precision"] == 50.0 and s["recall"] == 50.0
    assert s["roc_auc"] == pytest.approx(0.75)


def test_bf16_inference_stays_close_to_fp32_and_fp32_is_the_default():
    from mnistkit.inference import predict_logits
    from mnistkit.models import build_model
    from mnistkit.preprocess import TUTORIAL_NORM

    torch.manual_seed(0)
    model = build_model("seed-mlp")
    images = torch.randint(0, 256, (300, 28, 28), dtype=torch.uint8)
    exact = predict_logits(model, images, TUTORIAL_NORM)
    assert torch.equal(exact, predict_logits(model, images, TUTORIAL_NORM, bf16=False))
    fast = predict_logits(model, images, TUTORIAL_NORM, bf16=True)
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    assert (fast - exact).abs().max() < 0.1  # bf16 where the CPU has it, identical fp32 elsewhere
