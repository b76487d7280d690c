"""Persistence (irevnet.io): files written before it still load, one resolver of sources, one
safe reader, one fit check."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from irevnet import CheckpointError, IRevNet, create_model, init_weights_from, load_model, save_model
from irevnet.cli.main import main
from irevnet.io.fit import check_fit
from irevnet.io.formats import read_checkpoint
from irevnet.io.safe import load_tensor_file
from irevnet.io.source import resolve_source

#: Files written by irevnet at commit eeefafb (make.py there): `irevnet train --preset digits-b
#: --model blocks=1,1 --epochs 1 --save-pretrained model`, and the logits of run/best.pt.
LEGACY = Path(__file__).parent / "data" / "written-by-eeefafb"


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("source", ["run/best.pt", "run/last.pt", "run", "model", "model/model.safetensors"])
def test_files_written_before_load_with_their_weights_and_outputs(source):
    best = torch.load(LEGACY / "run" / "best.pt", weights_only=True)  # the file's own tensors, read directly
    last = torch.load(LEGACY / "run" / "last.pt", weights_only=True)
    model = load_model(LEGACY / source)
    want = last["state_dict"] if source.endswith("last.pt") else best["state_dict"]
    assert _same_state(model.state_dict(), want)
    assert model.config.to_dict() == best["config"] and model.config.label_names is None
    if source.startswith("model"):
        assert _same_state(IRevNet.from_pretrained(LEGACY / "model").state_dict(), want)
    if source.endswith("last.pt"):
        return  # one epoch: last.pt holds the same model, saved with the trainer state
    x = torch.linspace(-1, 1, 128).reshape(2, 1, 8, 8)
    with torch.no_grad():
        logits = model.eval()(x)
    # The same weights and input: only the CPU's kernels may round differently, ~1e-7 relative on
    # logits of size ~0.1-1 through a two-block float32 network, far below 1e-5.
    expected = torch.tensor(json.loads((LEGACY / "logits.json").read_text())["logits"])
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


def test_files_written_before_round_trip_byte_for_byte(tmp_path):
    """The formats did not change: re-saving an old model folder rewrites the same bytes, and an
    old checkpoint's entries are read as they are."""
    load_model(LEGACY / "model").save_pretrained(tmp_path / "again")
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "again" / name).read_bytes() == (LEGACY / "model" / name).read_bytes(), name
    payload = read_checkpoint(LEGACY / "run" / "last.pt")
    assert {"trainer", "recipe"} <= set(payload) and payload["trainer"]["epoch"] == 1


def test_a_run_written_before_is_read_by_every_command_and_fine_tuning(tmp_path, capsys):
    from irevnet.training.run_dir import RunDir
    from irevnet.training.state import check_resumable

    run = shutil.copytree(LEGACY / "run", tmp_path / "run")
    assert main(["info", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "digits-b"
    assert main(["eval", str(run), "--data", "digits", "--no-progress", "--json"]) == 0
    via_run = json.loads(capsys.readouterr().out)
    assert main(["eval", str(run / "best.pt"), "--data", "digits", "--no-progress", "--json"]) == 0
    via_best = json.loads(capsys.readouterr().out)
    assert via_run["top1"] == via_best["top1"] and via_run["loss"] == via_best["loss"]
    assert via_best["top1"] == pytest.approx(RunDir(run).read_metrics()[-1]["eval_top1"])
    target = create_model("digits-b", blocks=(1, 1), num_classes=3)
    assert init_weights_from(target, run) is False
    # The configuration training resolves today carries class names; the old run still resumes.
    payload = read_checkpoint(run / "last.pt")
    today = load_model(run / "last.pt").config.replace(label_names=tuple("0123456789"))
    assert check_resumable(run / "last.pt", payload, today, payload["recipe"])["epoch"] == 1


@pytest.mark.parametrize("source", ["run/best.pt", "run", "model"])
def test_map_location_moves_the_built_model(source):
    """The weights are read on the CPU and the built model is moved once: to the meta device too,
    which no weights can be copied out of (reading them there first would fail)."""
    model = load_model(LEGACY / source, map_location="meta")
    assert {p.device.type for p in model.state_dict().values()} == {"meta"}
    assert model.state_dict().keys() == load_model(LEGACY / source).state_dict().keys()
    if source == "model":
        assert next(IRevNet.from_pretrained(LEGACY / source, map_location="meta").parameters()).is_meta


def test_the_resolver_tells_the_kinds_apart(tmp_path, monkeypatch):
    model = create_model("digits", blocks=(1, 1))
    save_model(model, tmp_path / "m.pt")
    model.save_pretrained(tmp_path / "folder")
    (tmp_path / "run").mkdir()
    save_model(model, tmp_path / "run" / "last.pt")
    assert resolve_source(tmp_path / "m.pt").kind == "checkpoint"
    assert resolve_source(tmp_path / "folder").path == tmp_path / "folder"
    assert resolve_source(tmp_path / "folder" / "model.safetensors").path == tmp_path / "folder"
    assert resolve_source(tmp_path / "run").path == tmp_path / "run" / "last.pt"
    save_model(model, tmp_path / "run" / "best.pt")
    assert resolve_source(tmp_path / "run").path == tmp_path / "run" / "best.pt"  # best.pt first
    monkeypatch.chdir(tmp_path)
    assert resolve_source("owner/name@v1").kind == "hub"
    for local in ("run/nope", "owner/name.pt", "owner/model.safetensors"):  # a folder that exists, a file name
        with pytest.raises(CheckpointError, match=f"'{local}' does not exist: it is neither an existing "
                           "checkpoint file, model folder or training run folder nor a Hub id"):
            resolve_source(local)
    with pytest.raises(CheckpointError, match="'m.pt' is a file, not a model folder or Hub id"):
        IRevNet.from_pretrained("m.pt")
    with pytest.raises(CheckpointError, match="'run' is a training run folder, not a model folder"):
        IRevNet.from_pretrained("run")


def test_the_one_reader_refuses_code_and_names_foreign_files(tmp_path):
    tensors = {"w": torch.arange(6.0).reshape(2, 3)}
    save_file(tensors, tmp_path / "t.safetensors")
    torch.save(tensors, tmp_path / "t.pt")
    for name in ("t.safetensors", "t.pt"):
        assert torch.equal(load_tensor_file(tmp_path / name)["w"], tensors["w"])
    torch.save({"w": torch.zeros(1), "code": os.path.join}, tmp_path / "evil.pt")  # a function: pickled code
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.pt.*execute code"):
        load_tensor_file(tmp_path / "evil.pt")
    (tmp_path / "notes.pt").write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.pt' is not a checkpoint: not a file written by torch\.save "
                       r"or safetensors \(it starts with b'hell'\)"):
        load_tensor_file(tmp_path / "notes.pt")
    (tmp_path / "t.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match=r"t\.safetensors.*corrupt or truncated"):
        load_tensor_file(tmp_path / "t.safetensors")


def test_the_fit_check_names_every_kind_of_difference():
    expected = {"a": torch.zeros(2), "b": torch.zeros(3, 4), "c": torch.zeros(1)}
    fit = check_fit(expected, {"b": torch.zeros(4, 3), "c": torch.zeros(1), "d": torch.zeros(1), "e": "text"})
    assert fit.missing == ["a"] and fit.unexpected == ["d", "e"] and fit.misshaped == [("b", (4, 3), (3, 4))]
    assert fit.describe() == ("missing tensors: a; unexpected tensors: d, e; "
                              "mis-shaped tensors: b (4, 3) (expected (3, 4))")
    assert check_fit(expected, {**expected, "a": torch.ones(2)}).ok
    assert check_fit(expected, {"b": torch.zeros(3, 4)}, optional=["a", "c"]).ok
    many = check_fit({f"k{i}": torch.zeros(1) for i in range(8)}, {})
    assert many.describe(limit=3) == "missing tensors: k0, k1, k2 and 5 more"


def test_a_model_that_does_not_fit_is_never_half_loaded(tmp_path):
    """Mis-shaped tensors in a fine-tuning source leave the model untouched (load_state_dict alone
    would copy what fits before it refuses)."""
    model = create_model("digits", blocks=(1, 1))
    state = dict(model.state_dict())
    state["blocks.1.bottleneck.conv3.weight"] = torch.zeros(1)
    target = create_model("digits", blocks=(1, 1))
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    model.save_pretrained(tmp_path / "f")
    shutil.copy(tmp_path / "w.safetensors", tmp_path / "f" / "model.safetensors")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"f/model\.safetensors' does not fit the model: mis-shaped tensors: "
                       r"blocks\.1\.bottleneck\.conv3\.weight \(1,\)"):
        init_weights_from(target, tmp_path / "f")
    assert _same_state(target.state_dict(), before)
