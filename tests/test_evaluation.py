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
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
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


def test_bf16_inference_runs_in_bf16_where_supported_and_fp32_is_the_default(monkeypatch):
    """bf16=True must really run the layers in bf16 where the CPU has it (close to fp32, not equal),
    and be exactly fp32 where it has not; the hardware check is patched so both paths run here."""
    import mnistkit.precision
    from mnistkit.inference import predict_logits
    from mnistkit.models import build_model
    from mnistkit.preprocess import TUTORIAL_NORM

    torch.manual_seed(0)
    model = build_model("seed-mlp")
    seen: list[torch.dtype] = []
    for layer in model.modules():
        if isinstance(layer, torch.nn.Linear):
            layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    images = torch.randint(0, 256, (300, 28, 28), dtype=torch.uint8)
    exact = predict_logits(model, images, TUTORIAL_NORM)
    assert torch.equal(exact, predict_logits(model, images, TUTORIAL_NORM, bf16=False))
    assert seen and set(seen) == {torch.float32}

    monkeypatch.setattr(mnistkit.precision, "cpu_has_native_bf16", lambda: False)
    assert torch.equal(exact, predict_logits(model, images, TUTORIAL_NORM, bf16=True))  # no slow emulation

    monkeypatch.setattr(mnistkit.precision, "cpu_has_native_bf16", lambda: True)
    seen.clear()
    fast = predict_logits(model, images, TUTORIAL_NORM, bf16=True)
    assert torch.bfloat16 in seen, seen
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    assert 0 < (fast - exact).abs().max() < 0.1  # bf16 rounding: close to fp32, but not fp32


def _sparse_digits(n: int, seed: int = 0) -> torch.Tensor:
    """uint8 images that are black outside a centred box, like MNIST's digits."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[:, 5:23, 6:22] = torch.randint(0, 256, (n, 18, 16), generator=g, dtype=torch.uint8)
    images[images < 128] = 0  # most of the box black too
    return images


@pytest.mark.parametrize(
    "name,options",
    [("seed-mlp", {}), ("mlp", {"hidden": (64, 32), "dropout": 0.2}), ("logreg", {}), ("binary-logreg", {})],
)
@pytest.mark.parametrize("norm", [(0.5, 0.5), (0.1307, 0.3081)])
def test_sparse_pixel_path_gives_the_models_own_logits(name, options, norm, monkeypatch):
    """predict_logits folds the normalisation into the first Linear and leaves out the pixels that
    are black in the whole batch: the logits must be the model's own on normalised input."""
    monkeypatch.setattr("mnistkit.inference.SPARSE_MIN_IMAGES", 1)
    from mnistkit.inference import _SparsePixelForward, predict_logits
    from mnistkit.models import build_model
    from mnistkit.preprocess import Normalization, normalize

    torch.manual_seed(1)
    model = build_model(name, **options)
    norm = Normalization(*norm)
    images = _sparse_digits(700)
    images[3] = 255  # one all-white image: no pixel of that batch may be skipped
    with torch.inference_mode():
        model.eval()
        reference = model(normalize(images, norm))
    for batch_size in (1, 64, 1024):
        got = predict_logits(model, images, norm, batch_size=batch_size)
        assert got.shape == reference.shape
        torch.testing.assert_close(got, reference, rtol=1e-5, atol=2e-5)
    # the path really skips: a batch without the white image keeps only (some of) the box's
    # pixels; with it, nothing is skipped
    forward = _SparsePixelForward(*model.split_input_layer(), norm)
    kept = forward.kept_pixels(images[4:100].reshape(96, -1))
    assert kept is not None and 200 < len(kept) <= 18 * 16
    assert forward.kept_pixels(images[:100].reshape(100, -1)) is None


def test_sparse_pixel_path_handles_all_black_batches_and_single_images(monkeypatch):
    monkeypatch.setattr("mnistkit.inference.SPARSE_MIN_IMAGES", 1)
    from mnistkit.inference import predict_logits
    from mnistkit.models import build_model
    from mnistkit.preprocess import TUTORIAL_NORM, normalize

    torch.manual_seed(0)
    model = build_model("seed-mlp").eval()
    black = torch.zeros(5, 28, 28, dtype=torch.uint8)
    with torch.inference_mode():
        torch.testing.assert_close(
            predict_logits(model, black, TUTORIAL_NORM), model(normalize(black, TUTORIAL_NORM)), rtol=1e-5, atol=2e-5
        )
        one = _sparse_digits(1)[0]  # [28, 28]
        torch.testing.assert_close(
            predict_logits(model, one, TUTORIAL_NORM), model(normalize(one, TUTORIAL_NORM)), rtol=1e-5, atol=2e-5
        )
    assert predict_logits(model, torch.zeros(0, 28, 28, dtype=torch.uint8), TUTORIAL_NORM).numel() == 0


def test_models_without_an_input_linear_and_small_calls_take_the_plain_path(monkeypatch):
    from mnistkit.inference import SPARSE_MIN_IMAGES, _raw_pixel_forward
    from mnistkit.models import build_model
    from mnistkit.preprocess import TUTORIAL_NORM

    cpu = torch.device("cpu")
    assert _raw_pixel_forward(build_model("seed-mlp"), TUTORIAL_NORM, _sparse_digits(SPARSE_MIN_IMAGES), cpu)
    # one image (a served request) is not worth folding the weights for
    assert _raw_pixel_forward(build_model("seed-mlp"), TUTORIAL_NORM, _sparse_digits(1), cpu) is None
    monkeypatch.setattr("mnistkit.inference.SPARSE_MIN_IMAGES", 1)
    images = _sparse_digits(4)
    assert _raw_pixel_forward(build_model("cnn"), TUTORIAL_NORM, images, torch.device("cpu")) is None
    assert _raw_pixel_forward(build_model("seed-mlp"), TUTORIAL_NORM, images, torch.device("cpu")) is not None
    # a model for other image sizes keeps the plain path (and its usual shape error)
    assert (
        _raw_pixel_forward(build_model("logreg", in_features=100), TUTORIAL_NORM, images, torch.device("cpu")) is None
    )
