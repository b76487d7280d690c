import os
import pickle

import pytest
import torch

import irevnet
from irevnet import CheckpointError, create_model, load_model, save_model


def test_round_trip_preserves_config_and_outputs(tmp_path):
    model = create_model("cifar10", blocks=(1, 2, 1), num_classes=5).eval()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    path = save_model(model, tmp_path / "m.pt", note="hello")
    loaded = load_model(path).eval()
    assert loaded.config == model.config
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # extras are kept in the file but do not disturb load_model
    assert torch.load(path, weights_only=True)["note"] == "hello"


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    model = create_model("digits", blocks=(1, 1))
    save_model(model, tmp_path / "m.pt")
    save_model(model, tmp_path / "m.pt")
    assert os.listdir(tmp_path) == ["m.pt"]


def test_missing_file_error_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt"):
        load_model(tmp_path / "nope.pt")


def test_truncated_file_error_names_the_file(tmp_path):
    path = save_model(create_model("digits", blocks=(1, 1)), tmp_path / "m.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*m\.pt.*corrupt or truncated"):
        load_model(path)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "irevnet", "version": 1, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.pt.*execute code"):
        load_model(path)


def test_foreign_file_is_rejected(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not an irevnet checkpoint"):
        load_model(path)


def test_mismatched_weights_are_reported(tmp_path):
    model = create_model("digits", blocks=(1, 1))
    payload = {"format": "irevnet", "version": 1, "config": create_model("digits").config.to_dict(),
               "state_dict": model.state_dict()}
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt.*does not describe a valid model"):
        load_model(tmp_path / "bad.pt")


def test_save_unwraps_wrappers(tmp_path):
    model = create_model("digits", blocks=(1, 1))
    wrapped = torch.nn.Module()
    wrapped.module = model
    save_model(wrapped, tmp_path / "w.pt")
    assert load_model(tmp_path / "w.pt").config == model.config
    with pytest.raises(TypeError, match="expected an IRevNet"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "x.pt")


def test_malformed_payload_is_a_checkpoint_error(tmp_path):
    torch.save({"format": "irevnet", "version": 1, "config": [1, 2], "state_dict": {}}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=r"odd\.pt.*lacks a 'config' or 'state_dict'"):
        load_model(tmp_path / "odd.pt")

