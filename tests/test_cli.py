"""The CLI: every command's --help, a dry run, JSON output, and one-line errors with exit code 2."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

from mnistkit.cli import COMMANDS

MNISTKIT = [sys.executable, "-m", "mnistkit"]


def assert_one_line_error(code, err, pattern):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    import re

    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    code, out, _ = run_cli([command, "--help"], capsys)
    assert code == 0 and "Usage:" in out


def test_top_level_help_and_version(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0 and "train" in out and "evaluate" in out
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and "mnistkit" in out


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, mnistkit, mnistkit.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_dry_run_json_then_evaluate(synthetic_dataset, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(
        ["train", "--dataset", str(synthetic_dataset), "--dry-run", "--epochs", "1", "--out", str(out_dir), "--json"],
        capsys,
    )
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["model"] == "seed-mlp" and summary["epochs"] == 1
    assert {"dataset", "model", "epochs", "test_accuracy", "train_seconds", "checkpoint"} <= set(summary)
    assert Path(summary["checkpoint"]).exists()
    code, out, err = run_cli(["evaluate", str(out_dir), "--json"], capsys)
    assert code == 0, err
    ev = json.loads(out)
    assert ev["n"] == 200 and len(ev["confusion"]) == 10 and len(ev["per_class"]) == 10
    code, out, err = run_cli(["evaluate", str(out_dir / "model.safetensors")], capsys)
    assert code == 0 and "Accuracy of the model on the 200 test images" in out and "Confusion matrix" in out


def test_quiet_prints_only_the_accuracy_line(synthetic_dataset, tmp_path, capsys):
    code, out, _ = run_cli(
        [
            "train",
            "--dataset",
            str(synthetic_dataset),
            "--model",
            "logreg",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "q"),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0
    assert out.strip().splitlines() == [out.strip()] and out.startswith("Accuracy of the model on the 200 test images")


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["train", "--dataset", "cifar"], "unknown dataset 'cifar'"),
        (["train", "--model", "resnet", "--dry-run"], "unknown model 'resnet'"),
        (["train", "--epochs", "0"], "Invalid value for '--epochs'"),
        (["train", "--classes", "3,x"], "not a comma-separated list"),
        (["train", "--optimizer", "rmsprop"], "Invalid value for '--optimizer'"),
        (["train", "--no-such-flag"], "No such option"),
        (["evaluate", "missing.safetensors"], "checkpoint not found: missing.safetensors"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args, pattern, capsys, synthetic_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, pattern)


def test_flipped_byte_checkpoint_is_one_line_exit_2(synthetic_dataset, tmp_path, capsys):
    run_cli(
        [
            "train",
            "--dataset",
            str(synthetic_dataset),
            "--model",
            "logreg",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "r"),
            "-q",
        ],
        capsys,
    )
    ck = tmp_path / "r" / "model.safetensors"
    data = bytearray(ck.read_bytes())
    data[-5] ^= 0xFF
    ck.write_bytes(bytes(data))
    code, _, err = run_cli(["evaluate", str(ck)], capsys)
    assert_one_line_error(code, err, "corrupt or was modified")


@pytest.mark.parametrize(
    "damage, pattern",
    [
        ("truncate", r"t10k-images-idx3-ubyte.gz.*(truncated|corrupt|payload)"),
        ("garbage", r"t10k-images-idx3-ubyte.gz"),
    ],
)
def test_broken_idx_dataset_is_one_line_exit_2(synthetic_dataset, tmp_path, capsys, damage, pattern):
    import shutil

    folder = tmp_path / "broken"
    shutil.copytree(synthetic_dataset, folder)
    f = folder / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:300] if damage == "truncate" else b"\x00garbage" * 40)
    code, _, err = run_cli(["train", "--dataset", str(folder), "--dry-run", "--out", str(tmp_path / "x")], capsys)
    assert_one_line_error(code, err, pattern)


def test_real_process_exit_code_and_single_stderr_line(tmp_path):
    p = subprocess.run(MNISTKIT + ["evaluate", str(tmp_path / "nope.safetensors")], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip() == f"mnistkit: error: checkpoint not found: {tmp_path / 'nope.safetensors'}"


def test_train_reshapes_the_tutorials_network(synthetic_dataset, tmp_path, capsys):
    """The tutorial's closing exercise: more hidden layers (and another activation) on seed-mlp."""
    from mnistkit.checkpoint import load_checkpoint

    out_dir = tmp_path / "deeper"
    code, _, err = run_cli(
        [
            "train",
            "--dataset",
            str(synthetic_dataset),
            "--dry-run",
            "--epochs",
            "1",
            "--hidden",
            "64,32,16",
            "--activation",
            "tanh",
            "--out",
            str(out_dir),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    ck = load_checkpoint(out_dir / "model.safetensors")
    assert ck.meta["config"]["model"] == "seed-mlp"
    assert [m.out_features for m in ck.model.modules() if hasattr(m, "out_features")] == [64, 32, 16, 10]
    code, _, err = run_cli(["train", "--dataset", str(synthetic_dataset), "--dry-run", "--dropout", "0.2"], capsys)
    assert_one_line_error(code, err, r"model 'seed-mlp' has no option 'dropout'; its options are: hidden, activation")


def test_top_level_help_does_not_import_torch():
    """``mnistkit --help`` lists the commands without loading their registries (torch)."""
    code = (
        "import sys; from mnistkit.cli import cli; cli.main(['--help'], standalone_mode=False); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_train_help_is_grouped_and_reads_the_registries(capsys):
    from mnistkit.config import PRESETS
    from mnistkit.data import list_datasets
    from mnistkit.models import list_models

    code, out, _ = run_cli(["train", "--help"], capsys)
    text = " ".join(out.split()).replace("- ", "-")  # undo click's line wrapping (it breaks after hyphens)
    assert code == 0
    for heading in ("Data:", "Model:", "Optimizer:", "Augmentation:", "Execution:", "Output:"):
        assert f"\n{heading}\n" in out, heading
    assert "[" + "|".join(list_models()) + "]" in text
    assert "[" + "|".join(PRESETS) + "]" in text
    assert all(name in text for name in list_datasets())
    # what --model logreg really uses, not only the global default
    assert "[default: tutorial; logreg, binary-logreg, crnn: dataset]" in text
    assert "[seed-mlp: sigmoid; mlp: relu]" in text


def test_train_says_where_the_run_went_after_the_accuracy_line(synthetic_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(
        [
            "train",
            "--dataset",
            str(synthetic_dataset),
            "--model",
            "logreg",
            "--dry-run",
            "--epochs",
            "1",
            "--out",
            str(run),
        ],
        capsys,
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    accuracy = next(i for i, line in enumerate(lines) if line.startswith("Accuracy of the model"))
    assert re.fullmatch(r"Accuracy of the model on the 200 test images: \d+\.\d\d %", lines[accuracy])
    assert lines[accuracy + 1] == f"Saved {run / 'model.safetensors'}"
    assert lines[accuracy + 2].startswith(f"Next: mnistkit predict {run} ") and f"mnistkit report {run}" in lines[-1]
    assert (run / "model.safetensors").is_file()


def test_evaluate_refuses_a_dataset_with_other_class_names(synthetic_dataset, tmp_path, capsys):
    """An MNIST model scored on Fashion-MNIST gave 8.66 % without a word; now it is refused."""
    from PIL import Image
    from synthetic import make_images

    run = tmp_path / "run"
    code, _, err = run_cli(
        ["train", "--dataset", str(synthetic_dataset), "--dry-run", "--epochs", "1", "--out", str(run), "-q"], capsys
    )
    assert code == 0, err
    letters = tmp_path / "letters"  # ten classes, named a..j, as an image folder
    images, labels = make_images(60, seed=3)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = letters / "abcdefghij"[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.numpy()).save(folder / f"{i}.png")
    code, out, err = run_cli(["evaluate", str(run), "--dataset", str(letters)], capsys)
    assert_one_line_error(
        code, err, r"has the classes a, b, c, d, \.\.\. but the checkpoint predicts 0, 1, 2, 3, \.\.\."
    )
    assert "--other-classes" in err and out == ""
    code, out, err = run_cli(["evaluate", str(run), "--dataset", str(letters), "--other-classes", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["class_names"] == list("0123456789")


@pytest.mark.parametrize("train_fails", [False, True])
def test_demo_ends_by_saying_how_to_put_mnistkit_on_the_path(tmp_path, train_fails):
    """``make demo`` leaves mnistkit in .venv; its last line says how to activate it (after a
    successful run only). The interpreter is a stand-in that records what it was asked to run."""
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "activate").write_text("")
    python = bin_dir / "python"
    fail = 'case "$*" in *" train "*) exit 3;; esac\n' if train_fails else ""
    python.write_text(f'#!/bin/sh\necho "ran: $*" >> "{tmp_path}/calls"\n{fail}exit 0\n')
    python.chmod(0o755)
    script = Path(__file__).resolve().parent.parent / "scripts" / "demo.sh"
    done = subprocess.run(["bash", str(script), str(python)], cwd=tmp_path, capture_output=True, text=True)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "ran: -m mnistkit data fetch mnist" and calls[1].startswith(
        "ran: -m mnistkit train --out runs/demo-"
    )
    if train_fails:
        assert done.returncode == 3 and "activate" not in done.stdout
    else:
        assert done.returncode == 0, done.stderr
        assert f"run '. {bin_dir}/activate' in your shell first" in done.stdout.strip().splitlines()[-1]


def test_an_internal_error_is_one_line_with_a_hint_and_exit_1(capsys, monkeypatch):
    """A bug (an unexpected exception, not a user error) ends as exit code 1 and one line naming it,
    with how to see the traceback; MNISTKIT_DEBUG=1 lets the exception through."""
    import importlib

    module, attr = COMMANDS["models"].split(":")
    command = getattr(importlib.import_module(module), attr)

    def broken(*_args, **_kwargs):
        raise RuntimeError("the registry\nis broken")

    monkeypatch.setattr(command, "callback", broken)
    monkeypatch.delenv("MNISTKIT_DEBUG", raising=False)
    code, out, err = run_cli(["models"], capsys)
    assert code == 1 and out == ""
    assert (
        err
        == "mnistkit: internal error: RuntimeError: the registry is broken (set MNISTKIT_DEBUG=1 for the traceback)\n"
    )
    monkeypatch.setenv("MNISTKIT_DEBUG", "1")
    with pytest.raises(RuntimeError, match="the registry"):
        run_cli(["models"], capsys)


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["train", "--dataset", "mnsit", "--dry-run"], "unknown dataset 'mnsit' (did you mean 'mnist'?)"),
        (["train", "--model", "cnnn", "--dry-run"], "unknown model 'cnnn' (did you mean 'cnn'?)"),
    ],
)
def test_a_mistyped_name_gets_a_did_you_mean(args, hint, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == 2 and hint in err and err.count("\n") == 1


def test_a_mistyped_run_folder_is_one_error_before_anything_is_read(tmp_path, capsys):
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.new("L", (28, 28), 255).save(photo)
    code, out, err = run_cli(["predict", str(tmp_path / "runs" / "nope"), str(photo)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no such run directory or checkpoint" in err


def _every_command():
    """(path, command) for every command and subcommand of ``mnistkit``, the top level included."""
    import click

    from mnistkit.cli import cli

    found, todo = [], [("mnistkit", cli)]
    while todo:
        path, command = todo.pop()
        found.append((path, command))
        if isinstance(command, click.Group):
            ctx = click.Context(command, info_name=path)
            todo += [(f"{path} {name}", command.get_command(ctx, name)) for name in command.list_commands(ctx)]
    return found


def test_every_option_of_every_command_has_help():
    """Each option says what it does in ``--help`` (read as shown, so help built from a registry counts)."""
    import click

    commands = _every_command()
    assert len(commands) > len(COMMANDS)  # the subcommands of `data` too
    missing = []
    for path, command in commands:
        ctx = click.Context(command, info_name=path)
        for param in command.get_params(ctx):
            record = param.get_help_record(ctx)
            said = re.sub(r"\[[^\]]*\]", "", record[1]) if record is not None else ""  # less [default: ...]
            if isinstance(param, click.Option) and not said.strip():
                missing.append(f"{path} {param.opts[0]}")
    assert not missing, f"options without help: {missing}"


def test_every_train_option_of_a_config_field_reads_the_field():
    """A config field's option has the field's help and shows the field's default: one source for both."""
    import click

    from mnistkit.cli.options import shown
    from mnistkit.cli.train import train
    from mnistkit.config import field_default, option_fields, option_help

    ctx = click.Context(train, info_name="mnistkit train")
    options = {p.name: p for p in train.params}
    for f in option_fields():
        option = options[f.name]
        assert option.default is None  # "not given": resolve_config merges it over model defaults and presets
        _, text = option.get_help_record(ctx)
        text = " ".join(text.split())
        assert text.startswith(" ".join(option_help(f.name).split())), f.name
        shown_default = f.metadata.get("default_text") or shown(field_default(f.name))
        assert f"[default: {shown_default}" in text, f.name


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (["train", "--model"], "mnistkit train"),  # a missing value: click raises it without a context
        (["train", "--epochs", "0"], "mnistkit train"),
        (["train", "--modl", "cnn"], "mnistkit train"),
        (["data", "fetch", "--data-dir"], "mnistkit data fetch"),
        (["data", "info"], "mnistkit data info"),
        (["trian"], "mnistkit"),
    ],
)
def test_every_usage_error_ends_with_the_help_to_read(args, path, capsys):
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, r"^mnistkit: error: ")
    assert err.rstrip("\n").endswith(f"; see '{path} --help'"), err
