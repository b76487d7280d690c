"""Model folders (config.json + model.safetensors): save_pretrained / from_pretrained, local and Hub cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import reference_impl as ref_impl
from irevnet import CheckpointError, IRevNet, create_model, load_model
from irevnet.extras import MissingExtraError

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _tiny(seed: int = 0) -> IRevNet:
    return ref_impl.randomize(create_model("cifar10", blocks=(1, 1, 1), num_classes=4), seed=seed)


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_round_trip_is_exact(tmp_path):
    model = _tiny()
    assert model.save_pretrained(tmp_path / "m") == tmp_path / "m"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    assert doc["format"] == "irevnet" and doc["config"]["data"]["mean"] == [0.4914, 0.4822, 0.4465]
    for loaded in (IRevNet.from_pretrained(tmp_path / "m"), load_model(tmp_path / "m")):
        assert loaded.config == model.config and loaded.training
        want, got = model.state_dict(), loaded.state_dict()
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    # Saving again over the folder replaces both files and leaves no temporary files behind.
    _tiny(seed=1).save_pretrained(tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]
    assert not torch.equal(load_model(tmp_path / "m").state_dict()["head.fc.weight"], model.state_dict()["head.fc.weight"])


@pytest.fixture
def folder(tmp_path) -> Path:
    return _tiny().save_pretrained(tmp_path / "model")


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_missing_file_is_named(folder, missing):
    (folder / missing).unlink()
    before = _listing(folder)
    with pytest.raises(CheckpointError, match=f"lacks {missing}"):
        IRevNet.from_pretrained(folder)
    assert _listing(folder) == before  # nothing written


def test_weights_that_do_not_match_the_config_are_named(folder):
    weights = folder / "model.safetensors"
    state = load_file(weights)
    state["head.fc.weight"] = torch.zeros(3, 3)
    del state["blocks.0.bottleneck.conv1.weight"]
    state["blocks.0.extra"] = torch.zeros(1)
    save_file(state, weights)
    before = _listing(folder)
    with pytest.raises(CheckpointError, match=r"missing tensors: blocks\.0\.bottleneck\.conv1\.weight; "
                       r"unexpected tensors: blocks\.0\.extra; mis-shaped tensors: head\.fc\.weight \(3, 3\) "
                       r"\(expected \(4, 512\)\)") as info:
        load_model(folder)
    assert "model.safetensors" in str(info.value)
    assert _listing(folder) == before


def test_corrupt_weights_and_bad_config_are_named(folder):
    (folder / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="model.safetensors.*corrupt or truncated"):
        IRevNet.from_pretrained(folder)
    doc = json.loads((folder / "config.json").read_text())
    doc["config"]["num_clases"] = 4
    (folder / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"config\.json.*unknown key 'num_clases'.*did you mean 'num_classes'"):
        IRevNet.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"cannot read .*config\.json"):
        IRevNet.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet50"}))
    with pytest.raises(CheckpointError, match="not an irevnet model config"):
        IRevNet.from_pretrained(folder)


def test_not_a_folder_nor_a_hub_id(tmp_path):
    with pytest.raises(CheckpointError, match="neither an existing model folder nor a Hub id"):
        IRevNet.from_pretrained(tmp_path / "nowhere" / "deeper")
    (tmp_path / "m.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is a file, not a model folder"):
        IRevNet.from_pretrained(tmp_path / "m.pt")


def test_hub_id_without_huggingface_hub_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import now raises ImportError
    with pytest.raises(MissingExtraError, match=r"huggingface_hub.*pip install 'irevnet\[hub\]'"):
        IRevNet.from_pretrained("someone/irevnet-tiny")


_HUB_SCRIPT = """
import sys, torch
from irevnet import CheckpointError, IRevNet, load_model
model = IRevNet.from_pretrained("someone/irevnet-tiny")
ref = load_model(sys.argv[1])
assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
assert model.config == ref.config
try:
    IRevNet.from_pretrained("someone/not-cached")
except CheckpointError as e:
    print("ERROR", e)
from irevnet.cli.main import main
assert main(["info", "someone/irevnet-tiny"]) == 0  # every command takes a Hub id
assert main(["eval", "someone/not-cached", "--data", "digits"]) == 2
print("OK")
"""


@pytest.mark.slow
def test_hub_id_from_a_local_cache_offline(folder, tmp_path):
    """The Hub cache layout (refs/main -> snapshots/<commit>/...) read with HF_HUB_OFFLINE=1: no network."""
    pytest.importorskip("huggingface_hub")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--someone--irevnet-tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((folder / name).read_bytes())
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": SRC,
           "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", _HUB_SCRIPT, str(folder)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("OK\n")
    assert "cannot fetch 'someone/not-cached' from the Hugging Face Hub" in out.stdout
    assert "4 classes" in out.stdout
    # One line, exit 2 (checked above), for a Hub id that is not in the cache.
    assert out.stderr.startswith("irevnet eval: error: cannot fetch 'someone/not-cached' from the Hugging Face Hub")
    assert out.stderr.count("\n") == 1, out.stderr


def test_cli_commands_read_model_folders(folder, capsys):
    from irevnet.cli.main import main

    assert main(["info", str(folder)]) == 0
    assert "4 classes" in capsys.readouterr().out
    assert main(["eval", str(folder), "--data", "synthetic", "--synthetic-size", "16", "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 4
