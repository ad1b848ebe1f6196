"""Presets and the training hot path: every preset resolves, builds and trains; fast paths keep results."""

import contextlib

import pytest
import torch

import mnistkit.training.session as session
from mnistkit.checkpoint import load_checkpoint
from mnistkit.config import PRESETS, resolve_config
from mnistkit.models import build_model, get_model_spec
from mnistkit.training import fit


def _reads_lines(name: str) -> bool:
    return get_model_spec(resolve_config(preset=name).model).task == "sequence"


DIGIT_PRESETS = [p for p in sorted(PRESETS) if not _reads_lines(p)]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_and_its_model_builds(name):
    cfg = resolve_config(preset=name)
    assert cfg.preset == name
    model = build_model(cfg.model, **cfg.model_options)
    if _reads_lines(name):  # a line reader: 32 px tall lines in, a column of 10 digits + blank per 4 px out
        out = model(torch.zeros(2, 1, 32, 64))
        assert out.shape == (2, 16, 11) and torch.isfinite(out).all()
        return
    out = model(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["fast", "fast-cnn", "best-mlp", "cnn", "fashion-cnn"])
def test_tuned_presets_train_no_augmentation_for_mlps(name):
    cfg = resolve_config(preset=name)
    if cfg.model == "mlp":  # the issue asks for plain MLPs: no augmentation in best-mlp / fast
        assert not cfg.augment
    assert cfg.norm == "dataset" and cfg.val_size == 0  # no split by default: train on all 60k


@pytest.mark.parametrize("name", DIGIT_PRESETS)  # the line reader's: tests/test_reading_train.py
def test_every_preset_dry_runs(synthetic_dataset, tmp_path, name):
    # a preset's validation count (digits-bundled: 5,000 of MNIST) is too large for 600 images: a fraction
    val = {"val_size": 0.1} if resolve_config(preset=name).val_size else {}
    r = fit(
        dataset=str(synthetic_dataset),
        out=str(tmp_path / name),
        preset=name,
        dry_run=True,
        epochs=1,
        echo=False,
        plots=False,
        device="cpu",
        **val,
    )
    cfg = resolve_config(preset=name)
    ck = load_checkpoint(r.checkpoint)
    assert ck.meta["config"]["preset"] == name and ck.meta["config"]["model"] == cfg.model
    reference = build_model(cfg.model, **cfg.model_options).state_dict()
    assert {k: v.shape for k, v in ck.model.state_dict().items()} == {k: v.shape for k, v in reference.items()}
    assert len(r.metrics) == 1 and r.evaluation.n == 200 and sum(map(sum, r.evaluation.confusion)) == 200
    right = sum(r.evaluation.confusion[i][i] for i in range(10))
    assert r.test_accuracy == pytest.approx(100 * right / 200, abs=0.01)


def test_preset_flags_override_the_preset():
    cfg = resolve_config(preset="fast", epochs=7, batch_size=32)
    assert (cfg.epochs, cfg.batch_size) == (7, 32)


@pytest.mark.parametrize("widths, side", [((8,), 14), ((8, 16), 7), ((8, 16, 32), 3), ((4, 4, 4, 4), 1)])
def test_cnn_widths_set_stages_and_head(widths, side):
    model = build_model("cnn", widths=list(widths), dropout=0.0, num_classes=3)
    assert model.head[-1].in_features == widths[-1] * side * side
    x = torch.randn(5, 784, requires_grad=True)
    out = model(x)
    assert out.shape == (5, 3)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_cnn_rejects_bad_widths():
    from mnistkit.errors import ConfigError

    with pytest.raises(ConfigError, match="widths must be 1 to 4 positive channel counts"):
        build_model("cnn", widths=[8, 0])


def test_cnn_kernel_padding_and_hidden_head_shape_the_network():
    model = build_model("cnn", widths=[6, 8], kernel=5, padding="valid", head_hidden=16, dropout=0.0)
    convs = [m for m in model.features.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(5, 5), (5, 5)] and all(c.padding == (0, 0) for c in convs)
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8 * 4 * 4, 16), (16, 10)]  # 28-24-12-8-4
    assert model(torch.randn(3, 784)).shape == (3, 10)
    same5 = build_model("cnn", widths=[4, 4, 4], kernel=5)
    assert same5.head[-1].in_features == 4 * 3 * 3  # same padding: 28-14-7-3, as with 3x3


def test_cnn_defaults_keep_the_parameter_names_of_older_checkpoints():
    names = set(build_model("cnn").state_dict())
    assert {"features.0.0.weight", "features.2.1.running_mean", "head.2.weight", "head.2.bias"} <= names
    assert not any(n.startswith("head.4") for n in names)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"kernel": 4}, "kernel must be 3 or 5"),
        ({"padding": "full"}, "padding must be 'same' or 'valid'"),
        ({"head_hidden": -1}, "head_hidden must be a whole number >= 0"),
        ({"widths": [4, 4, 4], "kernel": 5, "padding": "valid"}, "shrink a 28x28 image to nothing"),
    ],
)
def test_cnn_rejects_bad_shape_options(options, message):
    from mnistkit.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        build_model("cnn", **options)


def test_cnn_gives_the_same_logits_for_every_input_layout():
    torch.manual_seed(0)
    model = build_model("cnn", widths=[4, 8]).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)
        assert torch.allclose(model(x.view(3, 784)), ref, atol=1e-6)
        assert torch.allclose(model(x.view(3, 28, 28)), ref, atol=1e-6)
        assert torch.allclose(model(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-6)


def test_cpu_autocast_follows_amp_and_the_cpu(monkeypatch):
    from mnistkit import precision

    cpu = torch.device("cpu")
    assert session._autocast is precision.autocast  # training and inference share one rule
    assert precision.autocast(cpu, False) is contextlib.nullcontext
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.autocast(cpu, True) is contextlib.nullcontext  # emulated bf16 would be slower: stay fp32
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    with precision.autocast(cpu, True)():
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_train_one_epoch_has_no_per_step_host_sync(synthetic_dataset, tmp_path, monkeypatch):
    """With logging off, the epoch reads no device scalar per step (``.item()`` is a sync on GPUs)."""
    calls = []
    real_item = torch.Tensor.item

    def counting_item(self):
        calls.append(1)
        return real_item(self)

    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    fit(
        dataset=str(synthetic_dataset),
        out=str(tmp_path / "r"),
        model="mlp",
        epochs=1,
        batch_size=8,
        log_every=0,
        echo=False,
        plots=False,
        device="cpu",
    )
    assert len(calls) < 600 // 8  # 75 steps: fewer .item() calls than steps


def _readme_table():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "readme_table.py"
    spec = importlib.util.spec_from_file_location("readme_table", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_table_rewrites_only_between_the_markers(tmp_path):
    import json

    mod = _readme_table()
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"table": "| a | b |\n|---|---|\n| 1 | 2 |"}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{mod.START}\nold table\n{mod.END}\ntail\n")
    assert mod.main(["--results", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(f"# x\n{mod.START}\n| a | b |") and text.endswith(f"{mod.END}\ntail\n")
    assert "old table" not in text


def test_readme_table_leaves_a_readme_without_markers_alone(tmp_path, capsys):
    import json

    mod = _readme_table()
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"table": "| a |"}))
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    assert mod.main(["--results", str(results), "--readme", str(readme)]) == 1
    assert readme.read_text() == "# no markers here\n"
    assert "no <!-- bench:start --> ... <!-- bench:end --> markers; left unchanged" in capsys.readouterr().err


def test_mlp_max_norm_caps_every_hidden_unit_in_training_and_at_eval():
    torch.manual_seed(0)
    model = build_model("mlp", hidden=[16, 8], max_norm=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(50)
    model.eval()  # putting it in eval mode caps the weights it is evaluated and saved with
    hidden = [m for m in model.net if isinstance(m, torch.nn.Linear)]
    for layer in hidden[:-1]:
        assert layer.weight.norm(dim=1).max() <= 0.5 + 1e-5
    assert hidden[-1].weight.norm(dim=1).max() > 1  # the output layer is left alone
    with torch.no_grad():
        hidden[0].weight.mul_(10)
    model.train()
    model(torch.randn(2, 784))  # a training forward projects before it computes
    assert hidden[0].weight.norm(dim=1).max() <= 0.5 + 1e-5


def test_mlp_input_dropout_drops_pixels_in_training_only_and_keeps_layer_names():
    torch.manual_seed(0)
    plain, dropped = build_model("mlp", hidden=[8]), build_model("mlp", hidden=[8], input_dropout=0.5)
    assert set(plain.state_dict()) == set(dropped.state_dict())  # older checkpoints load as they are
    dropped.load_state_dict(plain.state_dict())
    x = torch.rand(4, 784)
    assert torch.equal(dropped.eval()(x), plain.eval()(x))
    dropped.train()
    seen = []
    dropped.net[0].register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    dropped(x)
    zero_share = (seen[0] == 0).float().mean().item()
    assert 0.4 < zero_share < 0.6 and torch.allclose(seen[0][seen[0] != 0], (x * 2)[seen[0] != 0])
