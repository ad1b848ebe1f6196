"""``mnistkit train`` stopped by SIGINT (Ctrl-C) or SIGTERM (a scheduler, ``kill``), in a real process:
exit code 130 / 143, one line on stderr, and a run directory that ``mnistkit train --resume`` finishes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from helpers import run_cli

#: The real entry point, with every optimiser step slowed by 0.1 s (a global torch hook set up by the
#: test, not by mnistkit) so the signal lands mid-run on any machine.
SLOW_CHILD = """
import sys, time
from torch.optim.optimizer import register_optimizer_step_post_hook
register_optimizer_step_post_hook(lambda *_: time.sleep(0.1))
from mnistkit.cli import main
main(sys.argv[1:])
"""
FINAL_LINE = re.compile(r"^Accuracy of the model on the 200 test images: \d+\.\d\d %$", re.M)


@pytest.mark.timeout(240)
@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, exit_code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_signal_during_training_is_one_line_and_the_run_resumes(
    synthetic_dataset, tmp_path, capsys, sig, exit_code, word
):
    run = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        synthetic_dataset,
        "--model",
        "logreg",
        "--solver",
        "minibatch",
        "--epochs",
        "4",
        "--batch-size",
        "64",
    ]
    args += ["--device", "cpu", "--out", run]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    victim = subprocess.Popen(
        [sys.executable, "-c", SLOW_CHILD, *map(str, args)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run / "last.safetensors").exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert victim.poll() is None, "training ended before the signal: " + victim.communicate()[1]
    victim.send_signal(sig)
    _out, err = victim.communicate(timeout=60)
    resume_line = f"mnistkit: {word}; continue it with: mnistkit train --resume {run}\n"
    assert victim.returncode == exit_code and err == resume_line, (victim.returncode, err)
    assert (run / "last.safetensors").exists() and not (run / "model.safetensors").exists()
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    done_before = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert 1 <= len(done_before) < 4

    code, out, err = run_cli(["train", "--resume", run], capsys)  # the entry point, in this process
    assert code == 0 and err == "", err
    assert f"Resuming {run} after epoch {len(done_before)}/4" in out
    assert FINAL_LINE.search(out), out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4] and (run / "model.safetensors").exists()


def test_an_interrupt_before_the_first_epoch_leaves_a_run_that_resumes_from_epoch_0(
    synthetic_dataset, tmp_path, capsys, monkeypatch
):
    """Ctrl-C while the run is being set up (its folder and config written, no epoch saved): the
    one line says how to continue, and ``--resume`` starts that run again from epoch 0."""
    from mnistkit.cli import Signalled
    from mnistkit.training import loop

    def interrupted(cfg):
        def trainer(session, state, callbacks):
            raise Signalled(signal.SIGINT)  # what the CLI's handler raises on Ctrl-C

        return trainer

    run = tmp_path / "run"
    args = ["train", "--dataset", synthetic_dataset, "--model", "logreg", "--epochs", 2, "--out", run]
    real = loop.trainer_for
    monkeypatch.setattr(loop, "trainer_for", interrupted)
    code, _out, err = run_cli(args, capsys)
    assert code == 130 and err == f"mnistkit: interrupted; continue it with: mnistkit train --resume {run}\n"
    assert (run / "config.json").exists() and not (run / "last.safetensors").exists()

    monkeypatch.setattr(loop, "trainer_for", real)
    code, out, err = run_cli(["train", "--resume", run], capsys)
    assert code == 0 and err == "", err
    assert f"Resuming {run} after epoch 0/2" in out and FINAL_LINE.search(out), out
    assert (run / "model.safetensors").exists()
