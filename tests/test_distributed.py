"""Data-parallel training under torchrun on loopback (2 CPU processes, gloo).

One launch is expensive on a small shared machine (three Python processes import
torch), so the module trains each reference run once and several tests share it.
The data is a tiny learnable IDX dataset: 10 random binary patterns plus noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import child_env, free_port
from synthetic import make_pattern_dataset

from mnistkit.errors import ConfigError
from mnistkit.training import distributed
from mnistkit.training.distributed import DistContext, DistributedError

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
#: 1,200 images / batch 63 = 19 full global batches + one of 3 (split 2 + 1 across two ranks):
#: exercises unequal per-rank batches, which the gradient hook must weight exactly. fp32 (--no-amp):
#: CPU bf16 autocast would round differently for different per-process batch shapes.
TRAIN_ARGS = [
    "--model",
    "mlp",
    "--hidden",
    "32",
    "--epochs",
    "2",
    "--batch-size",
    "63",
    "--optimizer",
    "sgd",
    "--lr",
    "0.05",
    "--device",
    "cpu",
    "--no-amp",
    "--log-every",
    "5",
    "--deterministic",
]


def torchrun(args: list[str], timeout: float = 150, **env) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 -m mnistkit train ARGS`` bound to 127.0.0.1 on a free port."""
    cmd = [
        str(TORCHRUN),
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "mnistkit",
        "train",
        *args,
    ]
    return subprocess.run(cmd, env=child_env(**env), capture_output=True, text=True, timeout=timeout, cwd=REPO)


def single(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnistkit", "train", *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run_dir / "model.safetensors")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_pattern_dataset(tmp_path_factory.mktemp("patterns"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data) -> dict:
    """One process trains the recipe; two processes train it too, but rank 1 dies in epoch 2
    and a second torchrun ``--resume``s the run (three launches would be too slow here)."""
    root = tmp_path_factory.mktemp("runs")
    one, two = root / "one", root / "two"
    r1 = single(["--dataset", str(data), *TRAIN_ARGS, "--out", str(one)])
    assert r1.returncode == 0, r1.stderr
    # rank 1 exits abruptly after global step 23 (step 3 of epoch 2; 20 steps per epoch)
    died = torchrun(["--dataset", str(data), *TRAIN_ARGS, "--out", str(two)], MNISTKIT_TEST_DIE_AT_STEP="23")
    after_death = sorted(p.name for p in two.iterdir())
    metrics_after_death = (two / "metrics.jsonl").read_text().splitlines()
    resumed = torchrun(["--resume", str(two), "-q"])
    return {
        "one": one,
        "two": two,
        "died": died,
        "after_death": after_death,
        "metrics_after_death": metrics_after_death,
        "resumed": resumed,
    }


# ----------------------------------------------------------------------------- pure functions


def ctx(rank: int, world: int) -> DistContext:
    return DistContext(rank, world, rank, torch.device("cpu"), "gloo")


def test_shards_cover_the_global_batch_once_with_exact_gradient_weights():
    batch = torch.arange(7)
    shards = [ctx(r, 3).take_shard(batch) for r in range(3)]
    assert sorted(torch.cat(shards).tolist()) == list(range(7))
    scales = []
    for r in range(3):
        c = ctx(r, 3)
        c.take_shard(batch)
        scales.append(c.grad_scale)
    # DDP averages over 3 ranks: sum_r scale_r/3 * (mean grad over n_r) == global mean iff scale_r = 3 n_r / 7
    assert scales == pytest.approx([3 * 3 / 7, 3 * 2 / 7, 3 * 2 / 7])


def test_batch_smaller_than_world_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"--batch-size 1 is smaller than the world size 2"):
        distributed.check_batch_size(1, ctx(0, 2))
    distributed.check_batch_size(1, None)


def test_short_last_batch_with_fewer_samples_than_ranks_is_dropped():
    assert distributed.steps_per_epoch(10, 4, None) == 3
    assert distributed.steps_per_epoch(9, 4, ctx(0, 2)) == 2  # last batch of 1 < 2 ranks
    assert distributed.steps_per_epoch(10, 4, ctx(0, 2)) == 3  # last batch of 2: one each


def test_plain_process_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_distributed(torch.device("cpu")) == (None, torch.device("cpu"))


@pytest.mark.parametrize("raw", ["0", "-3", "soon"])
def test_bad_timeout_is_a_config_error(monkeypatch, raw):
    monkeypatch.setenv("MNISTKIT_DIST_TIMEOUT", raw)
    with pytest.raises(ConfigError, match="MNISTKIT_DIST_TIMEOUT"):
        distributed.dist_timeout()


def test_a_failed_collective_is_one_error_naming_the_rank_and_the_phase(monkeypatch):
    import torch.distributed as dist

    def timed_out(*args, **kwargs):
        raise RuntimeError("[../gloo/transport/tcp/pair.cc:534] Timed out waiting 30000ms for recv\nmore detail")

    monkeypatch.setenv("MNISTKIT_DIST_TIMEOUT", "30")
    monkeypatch.setattr(dist, "all_reduce", timed_out)
    monkeypatch.setattr(dist, "broadcast", timed_out)
    monkeypatch.setattr(dist, "barrier", timed_out)
    cases = [
        (lambda c: c.sum_across_ranks(torch.tensor(1.0)), "summing the epoch's metrics across ranks"),
        (lambda c: c.agree(True), "taking rank 0's decision (early stopping)"),
        (lambda c: c.barrier(), "waiting for rank 0 to finish the run"),
    ]
    for call, phase in cases:
        with pytest.raises(DistributedError) as info:
            call(ctx(1, 2))
        message = str(info.value)
        assert message.startswith(f"rank 1: {phase} failed: [../gloo/transport/tcp/pair.cc:534] Timed out")
        assert "\n" not in message and "MNISTKIT_DIST_TIMEOUT is 30 s" in message


def test_the_end_of_run_wait_is_not_bounded_by_the_training_timeout(monkeypatch):
    """Rank 0 scores and writes the run while the others wait in the end-of-run barrier: that barrier is
    on its own group, whose timeout outlasts a short MNISTKIT_DIST_TIMEOUT (a busy machine took over 30 s)."""
    import torch.distributed as dist

    seen = []
    monkeypatch.setattr(dist, "barrier", lambda **kwargs: seen.append(kwargs))
    finish_group = object()
    DistContext(1, 2, 1, torch.device("cpu"), "gloo", finish_group=finish_group).barrier()
    assert seen == [{"group": finish_group}]
    monkeypatch.setenv("MNISTKIT_DIST_TIMEOUT", "30")
    assert distributed.finish_timeout().total_seconds() == distributed.FINISH_TIMEOUT_S >= 600
    monkeypatch.setenv("MNISTKIT_DIST_TIMEOUT", str(2 * distributed.FINISH_TIMEOUT_S))
    assert distributed.finish_timeout().total_seconds() == 2 * distributed.FINISH_TIMEOUT_S


# ----------------------------------------------------------------------------- real torchrun


@pytest.mark.timeout(300)
def test_a_dead_rank_fails_the_whole_job_instead_of_hanging(runs):
    died = runs["died"]
    assert died.returncode != 0
    assert "exitcode" in died.stderr and "rank      : 1" in died.stderr  # torchrun names the dead rank
    assert "model.safetensors" not in runs["after_death"] and "last.safetensors" in runs["after_death"]
    assert len(runs["metrics_after_death"]) == 1


@pytest.mark.timeout(300)
def test_resume_under_torchrun_finishes_the_run(runs):
    resumed = runs["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("Accuracy of the model") == 1  # rank 0 only
    assert len((runs["two"] / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.timeout(300)
def test_two_processes_match_one_process_with_the_same_global_batch(runs):
    one, two = tensors(runs["one"]), tensors(runs["two"])
    assert one.keys() == two.keys()
    for k in one:  # the exact-global-mean gradient hook: equal up to float summation order
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5)
    acc1 = json.loads((runs["one"] / "summary.json").read_text())["test_accuracy"]
    acc2 = json.loads((runs["two"] / "summary.json").read_text())["test_accuracy"]
    assert acc1 > 90 and abs(acc1 - acc2) <= 1.0


@pytest.mark.timeout(300)
def test_only_rank_zero_writes_and_prints(runs):
    run = runs["two"]
    assert sorted(p.name for p in run.glob("*.safetensors")) == ["last.safetensors", "model.safetensors"]
    assert sorted(p.name for p in run.glob("log*")) == ["log.txt"]
    lines = (run / "log.txt").read_text().splitlines()
    assert sum("Accuracy of the model" in line for line in lines) == 1
    assert sum(line.startswith("Epoch [1/2], Step [5/20]") for line in lines) == 1  # not once per rank
    assert (
        sum(line.startswith("Epoch [2/2], Step [5/20]") for line in lines) == 1
    )  # the resumed run (the dead run stopped before step 5)


#: Loaded by a child's interpreter at start-up (``sitecustomize``): rank 0 takes longer to score and
#: write the finished run than the training timeout allows a collective, as on a busy machine.
SLOW_FINISH = """
import os, time
if os.environ.get("RANK") == "0":
    import mnistkit.training.loop as loop
    real = loop.finish_run
    def slow_finish(*args, **kwargs):
        time.sleep(float(os.environ["SLOW_FINISH_S"]))
        return real(*args, **kwargs)
    loop.finish_run = slow_finish
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_other_ranks_wait_for_a_slow_end_of_run_past_the_training_timeout(data, tmp_path):
    """Rank 0 scores and writes the run for longer than MNISTKIT_DIST_TIMEOUT while rank 1 waits at the
    end-of-run barrier: the job still succeeds (rank 1 once timed out there, and the agent killed rank 0)."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SLOW_FINISH)
    path = os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")]))
    r = torchrun(
        ["--dataset", str(data), *TRAIN_ARGS, "--epochs", "1", "--out", str(tmp_path / "run")],
        MNISTKIT_DIST_TIMEOUT="5",
        SLOW_FINISH_S="12",
        PYTHONPATH=path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("Accuracy of the model") == 1 and (tmp_path / "run" / "model.safetensors").is_file()
