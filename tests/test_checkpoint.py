"""Checkpoint round trip, tamper detection and crash-safe writes."""

import errno
import os
import pickle

import pytest
import torch

from mnistkit.checkpoint import load_checkpoint, load_tensors, save_checkpoint, save_tensors
from mnistkit.errors import CheckpointError
from mnistkit.models import build_model

META = {"dataset": "mnist", "norm": {"mean": 0.5, "std": 0.5}, "class_names": [str(i) for i in range(10)]}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model("mlp", hidden=[16])
    path = save_checkpoint(tmp_path / "m.safetensors", model, META)
    return model, path


def test_round_trip_gives_identical_outputs_and_metadata(saved):
    model, path = saved
    ck = load_checkpoint(path)
    x = torch.randn(3, 1, 28, 28)
    model.eval()
    torch.testing.assert_close(ck.model(x), model(x), rtol=0, atol=0)
    assert not ck.model.training
    assert ck.meta["model"] == "mlp" and ck.meta["model_options"]["hidden"] == [16]
    assert ck.class_names == META["class_names"] and ck.norm.mean == 0.5
    assert ck.meta["versions"]["torch"] == torch.__version__


def test_file_is_plain_safetensors(saved):
    from safetensors.torch import load_file

    tensors = load_file(str(saved[1]))
    assert "net.0.weight" in tensors


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["tensor data", "metadata", "last byte"])
def test_a_flipped_byte_is_refused(saved, where):
    path = saved[1]
    size = path.stat().st_size
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    offset = {
        "tensor data": 8 + header_len + 100,
        "metadata": path.read_bytes().index(b'"dataset') + 3,
        "last byte": size - 1,
    }[where]
    _flip(path, offset)
    with pytest.raises(CheckpointError, match="corrupt|not a valid|modified"):
        load_checkpoint(path)


def test_truncated_file_is_refused(saved):
    path = saved[1]
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_pickle_renamed_to_safetensors_is_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint .*pickle"):
        load_checkpoint(path)
    torch_path = tmp_path / "torch.safetensors"
    torch.save({"w": torch.zeros(3)}, torch_path)
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        load_checkpoint(torch_path)
    assert not (tmp_path / "pwned").exists()


def test_plain_safetensors_without_our_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointError, match="not an mnistkit checkpoint"):
        load_checkpoint(tmp_path / "x.safetensors")


def test_weights_of_another_model_are_refused_with_key_lists(saved, tmp_path):
    _model, path = saved
    tensors, meta = load_tensors(path)
    meta = {k: v for k, v in meta.items() if k != "format"}
    meta["model"], meta["model_options"] = "logreg", {}
    save_tensors(tmp_path / "other.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match=r"does not fit model 'logreg': missing keys \['linear.bias'"):
        load_checkpoint(tmp_path / "other.safetensors")


def test_unknown_model_name_in_metadata_is_refused(saved, tmp_path):
    tensors, meta = load_tensors(saved[1])
    meta = {k: v for k, v in meta.items() if k != "format"}
    meta["model"] = "transformer-xl"
    save_tensors(tmp_path / "u.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="cannot be rebuilt: unknown model 'transformer-xl'"):
        load_checkpoint(tmp_path / "u.safetensors")


def test_missing_and_directory_paths(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_failed_write_keeps_previous_checkpoint_and_leaves_no_temp(saved, monkeypatch):
    _model, path = saved
    before = path.read_bytes()

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device; any previous file there is unchanged"):
        save_checkpoint(path, build_model("mlp", hidden=[16]), META)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    load_checkpoint(path)
