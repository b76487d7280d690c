"""Publishing on the Hugging Face Hub, offline: push_to_hub and `irevnet upload` against a stand-in
for huggingface_hub.HfApi that copies the commit into a folder (no network), and the model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import irevnet
from irevnet import create_model, load_model
from irevnet.cli.main import main

hub = pytest.importorskip("huggingface_hub")
LEGACY_RUN = Path(__file__).parent / "data" / "written-by-eeefafb" / "run"


class FakeHub:
    """The two calls of HfApi that an upload makes; a commit is copied into ``root/<repo>/<branch>``."""

    instances: list["FakeHub"] = []

    def __init__(self, root: Path, token: str | None = None) -> None:
        self.root, self.token, self.calls = root, token, []
        FakeHub.instances.append(self)

    def create_repo(self, repo_id, *, private=None, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private, exist_ok))

    def upload_folder(self, *, repo_id, folder_path, revision=None, commit_message=None):
        self.calls.append(("upload_folder", repo_id, revision, commit_message))
        shutil.copytree(folder_path, self.root / repo_id / (revision or "main"), dirs_exist_ok=True)
        return SimpleNamespace(commit_url=f"https://hub.invalid/{repo_id}/commit/1")  # as HfApi's CommitInfo


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    FakeHub.instances.clear()
    monkeypatch.setattr(hub, "HfApi", lambda token=None: FakeHub(tmp_path / "hub", token))
    return tmp_path / "hub"


def _pets() -> irevnet.IRevNet:
    model = create_model("cifar10", blocks=(1, 1, 1), num_classes=2, label_names=("cat", "dog"))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def test_push_to_hub_commits_a_loadable_model_folder_with_a_card(fake_hub):
    model = _pets()
    url = model.push_to_hub("me/pets", metrics={"data": "pets", "eval_top1": 0.75}, private=True,
                            commit_message="first")
    assert url == "https://hub.invalid/me/pets/commit/1"
    (api,) = FakeHub.instances
    assert api.calls == [("create_repo", "me/pets", True, True), ("upload_folder", "me/pets", None, "first")]
    folder = fake_hub / "me" / "pets" / "main"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = load_model(folder)
    assert loaded.config.label_names == ("cat", "dog")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    card = hub.ModelCard.load(folder / "README.md")
    assert card.data.library_name == "irevnet" and card.data.license == "mit"
    assert card.data.eval_results[0].metric_value == 0.75 and card.data.eval_results[0].dataset_name == "pets"
    for text in ("| parameters | " + f"{model.num_parameters():,} |", "| kind | injective |", "`cat`, `dog`",
                 "| mean | [0.4914, 0.4822, 0.4465] |", "| eval_top1 | 0.7500 |",
                 'IRevNet.from_pretrained("me/pets")', "title     = {i-RevNet: Deep Invertible Networks}"):
        assert text in card.text, text


def test_a_bad_repo_id_is_refused_before_anything_is_written(fake_hub, monkeypatch):
    def no_writing(*args, **kwargs):
        raise AssertionError("a file was written")

    monkeypatch.setattr(irevnet.IRevNet, "save_pretrained", no_writing)
    with pytest.raises(ValueError, match="not a Hub repository id"):
        _pets().push_to_hub("not a repo")
    assert not FakeHub.instances


def test_a_refusal_of_the_hub_is_one_line_with_exit_2(fake_hub, tmp_path, capsys, monkeypatch):
    from irevnet.errors import HubError

    offline = hub.errors.OfflineModeIsEnabled("Cannot reach https://hub.invalid/api/repos/create: offline mode")

    def refuse(self, repo_id, **kwargs):
        raise offline

    monkeypatch.setattr(FakeHub, "create_repo", refuse)
    with pytest.raises(HubError, match=r"cannot upload to 'me/pets' on the Hugging Face Hub: OfflineModeIsEnabled: "
                       r"Cannot reach") as info:
        _pets().push_to_hub("me/pets")
    assert info.value.__cause__ is offline  # kept for --debug
    _pets().save_pretrained(tmp_path / "pets")
    assert main(["upload", str(tmp_path / "pets"), "me/pets"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("irevnet upload: error: cannot upload to 'me/pets'") and err.count("\n") == 1, err


def test_cli_upload_of_a_run_carries_its_metrics(fake_hub, tmp_path, capsys):
    run = shutil.copytree(LEGACY_RUN, tmp_path / "run")  # written before irevnet.io existed
    assert main(["upload", str(run), "me/digits", "--revision", "dev", "--message", "trained"]) == 0
    assert "uploaded" in capsys.readouterr().out
    folder = fake_hub / "me" / "digits" / "dev"
    best = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    card = hub.ModelCard.load(folder / "README.md")
    assert card.data.eval_results[0].metric_value == best["eval_top1"]
    assert "| data | digits |" in card.text and "| recipe | digits-b |" in card.text
    assert torch.equal(load_model(folder).state_dict()["head.fc.weight"],
                       load_model(run / "best.pt").state_dict()["head.fc.weight"])


def test_cli_upload_never_writes_the_files_it_reads(fake_hub, tmp_path, capsys):
    """--dry-run into the source's own folder is refused even with --force: a model folder's files,
    or a run's config.json (the run's settings, which the card's metrics come from)."""
    run = shutil.copytree(LEGACY_RUN, tmp_path / "run")
    _pets().save_pretrained(tmp_path / "pets")
    before = {p: p.read_bytes() for folder in (run, tmp_path / "pets") for p in folder.iterdir()}
    for source in (run, run / "last.pt", tmp_path / "pets"):
        folder = source if source.is_dir() else source.parent
        assert main(["upload", str(source), "me/x", "--dry-run", str(folder), "--force"]) == 2
        assert "it is one of the inputs" in capsys.readouterr().err
    assert {p: p.read_bytes() for folder in (run, tmp_path / "pets") for p in folder.iterdir()} == before


def test_run_metrics_of_each_checkpoint(tmp_path):
    """best.pt's metrics are those of the first epoch with the highest eval top-1 (as training chose
    it); last.pt's those of the last epoch."""
    from irevnet.training.run_dir import RunDir

    run = RunDir(tmp_path)
    run.write_config({"train": {"data": "digits", "recipe": {"name": "digits"}}})
    for epoch, top1 in ((1, 0.5), (2, 0.75), (3, 0.75), (4, 0.6)):
        run.append_metrics({"epoch": epoch, "loss": 1.0 / epoch, "top1": top1, "eval_loss": 2.0 / epoch,
                            "eval_top1": top1, "eval_top5": 1.0})
    best, last = run.model_metrics("best.pt"), run.model_metrics("last.pt")
    assert best == {"data": "digits", "recipe": "digits", "epochs trained": 4, "epoch of these weights": 2,
                    "train_loss": 0.5, "train_top1": 0.75, "eval_loss": 1.0, "eval_top1": 0.75, "eval_top5": 1.0}
    assert last["epoch of these weights"] == 4 and last["eval_top1"] == 0.6
    assert run.model_metrics("m.pt") == {} and RunDir(tmp_path / "elsewhere").model_metrics("best.pt") == {}


def test_cli_upload_dry_run_writes_what_would_be_uploaded(fake_hub, tmp_path, capsys):
    _pets().save_pretrained(tmp_path / "pets")
    out = tmp_path / "preview"
    assert main(["upload", str(tmp_path / "pets"), "me/pets", "--dry-run", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert "No training metrics were given" in (out / "README.md").read_text()
    assert not FakeHub.instances  # nothing uploaded
    assert main(["upload", str(tmp_path / "pets"), "me/pets", "--dry-run", str(out)]) == 2
    assert "already exist; pass --force" in capsys.readouterr().err
    assert main(["upload", str(tmp_path / "pets"), "me/pe ts"]) == 2
    assert "expected a Hub repository id owner/name" in capsys.readouterr().err
