"""Presets and the training hot path: every preset resolves, builds and trains; fast paths keep results."""

import contextlib

import pytest
import torch

import mnistkit.training.session as session
from mnistkit.config import PRESETS, resolve_config
from mnistkit.models import build_model
from mnistkit.training import fit


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_and_its_model_builds(name):
    cfg = resolve_config(preset=name)
    assert cfg.preset == name
    model = build_model(cfg.model, **cfg.model_options)
    out = model(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["fast", "best-mlp", "cnn"])
def test_tuned_presets_train_no_augmentation_for_mlps(name):
    cfg = resolve_config(preset=name)
    if cfg.model == "mlp":  # the issue asks for plain MLPs: no augmentation in best-mlp / fast
        assert not cfg.augment
    assert cfg.norm == "dataset" and cfg.val_size == 0  # no split by default: train on all 60k


@pytest.mark.parametrize("name", sorted(PRESETS))
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
    assert r.checkpoint.exists() and 0 <= r.test_accuracy <= 100


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
