"""The command line's error surface: every bad value is refused in one line with exit code 2,
outputs never overwrite inputs or existing files (without --force), files follow the umask.

Bad option values are refused while parsing (before a model is built or data is read), so
these tests are fast. Each case is one class of mistake on one sub-command.
"""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

from irevnet import create_model, save_model
from irevnet.cli.main import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny checkpoint, an image, a text file, a folder, a run folder, and an existing figure."""
    root = tmp_path_factory.mktemp("cli-errors")
    save_model(create_model("digits", blocks=(1, 1)), root / "m.pt")
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).save(root / "img.png")
    (root / "notes.txt").write_text("hello, not a checkpoint\n")
    (root / "folder").mkdir()
    (root / "new-run").mkdir()  # a training run folder before its first checkpoint
    (root / "new-run" / "config.json").write_text("{}")
    (root / "new-run" / "metrics.jsonl").write_text("")
    (root / "existing.png").write_bytes(b"precious")
    return root


def _argv(template: list[str], root) -> list[str]:
    return [a.format(d=root) for a in template]


M, IMG, TXT, DIR = "{d}/m.pt", "{d}/img.png", "{d}/notes.txt", "{d}/folder"
TRAIN = ["train", "--preset", "digits", "--data", "synthetic", "--out", "{d}/run"]
ANALYZE = ["analyze", M, "--data", "digits", "--out", "{d}/analysis"]
INVERT = ["invert", M, IMG]

CASES = {
    # info / export / invert take PRESET|CHECKPOINT
    "info missing": (["info", "{d}/nope.pt"], "neither a preset"),
    "info folder": (["info", DIR], "is a folder"),
    "info text file": (["info", TXT], "is not a checkpoint: not a file written by torch.save"),
    "export size zero": (["export", "digits", "{d}/exp", "--size", "0", "8"], "expected an integer >= 1"),
    "export size negative": (["export", "digits", "{d}/exp", "--size", "8", "-8"], "expected an integer >= 1"),
    "export dst is a file": (["export", "digits", IMG], "is a file, expected a folder"),
    "export text checkpoint": (["export", TXT, "{d}/exp"], "is not a checkpoint"),
    # 8 TB for the example input: refused by the allocator (not a traceback)
    "export size huge": (["export", "digits", "{d}/exp", "--size", "1000000", "1000000"],
                         "DefaultCPUAllocator: "),
    # demo
    "demo epochs zero": (["demo", "--epochs", "0"], "expected an integer >= 1, got '0'"),
    "demo epochs negative": (["demo", "--epochs", "-3"], "expected an integer >= 1"),
    "demo epochs nan": (["demo", "--epochs", "nan"], "expected an integer, got 'nan'"),
    "demo seed negative": (["demo", "--seed", "-1"], "between 0 and 4294967295"),
    "demo seed huge": (["demo", "--seed", str(2**40)], "between 0 and 4294967295"),
    "demo out is a file": (["demo", "--out", IMG], "is a file, expected a folder"),
    "demo nll-weight nan": (["demo", "--nll-weight", "nan"], "argument --nll-weight: expected a finite number >= 0"),
    "demo nll-weight negative": (["demo", "--nll-weight", "-1"], "expected a finite number >= 0, got '-1'"),
    # train
    "train epochs zero": ([*TRAIN, "--epochs", "0"], "argument --epochs: expected an integer >= 1"),
    "train lr nan": ([*TRAIN, "--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
    "train lr inf": ([*TRAIN, "--lr", "inf"], "expected a finite number > 0"),
    "train lr zero": ([*TRAIN, "--lr", "0"], "expected a finite number > 0"),
    "train lr negative": ([*TRAIN, "--lr", "-0.1"], "expected a finite number > 0"),
    "train lr text": ([*TRAIN, "--lr", "fast"], "expected a number, got 'fast'"),
    "train batch zero": ([*TRAIN, "--batch-size", "0"], "argument --batch-size"),
    "train accum zero": ([*TRAIN, "--accum", "0"], "argument --accum"),
    "train eval-every negative": ([*TRAIN, "--eval-every", "-1"], "argument --eval-every"),
    "train workers negative": ([*TRAIN, "--workers", "-2"], "argument --workers"),
    "train synthetic-size zero": ([*TRAIN, "--synthetic-size", "0"], "argument --synthetic-size"),
    "train data-dir missing": ([*TRAIN, "--data-dir", "{d}/nowhere"], "folder '{d}/nowhere' does not exist"),
    "train data-dir is a file": ([*TRAIN, "--data-dir", IMG], "is a file, expected a folder"),
    "train out is a file": (["train", "--preset", "digits", "--data", "synthetic", "--out", IMG],
                            "is a file, expected a folder"),
    "train set lr nan": ([*TRAIN, "--set", "lr=nan"], "recipe lr must be a finite number > 0, got nan"),
    "train set epochs zero": ([*TRAIN, "--set", "epochs=0"], "recipe epochs must be >= 1, got 0"),
    "train set dropout one": ([*TRAIN, "--set", "dropout=1"], "recipe dropout must be in [0, 1)"),
    "train model unknown data key": ([*TRAIN, "--model", "data.crop_pc=1"], "did you mean 'crop_pct'?"),
    "train model data value": ([*TRAIN, "--model", "data.crop_pct=big"],
                               "--model data.crop_pct=...: bad value in override 'data.crop_pct=big': expected a number"),
    "train model data range": ([*TRAIN, "--model", "data.crop_pct=2"], "crop_pct must be in (0, 1], got 2.0"),
    "train model data mean alone": ([*TRAIN, "--model", "data.mean=0.5"], "give both mean and std"),
    # a typo names the closest valid name, and still lists them all
    "train preset typo": (["train", "--preset", "digit", "--data", "digits", "--out", "{d}/r"],
                          "invalid choice: 'digit' (choose from 'cifar10', 'cifar100', 'digits', 'digits-b', "
                          "'imagenet-a', 'imagenet-b'); did you mean 'digits'?"),
    "train preset underscore": (["train", "--preset", "imagenet_b", "--data", "digits", "--out", "{d}/r"],
                                "did you mean 'imagenet-b'?"),
    "train preset hyphen": (["train", "--preset", "cifar-10", "--data", "digits", "--out", "{d}/r"],
                            "did you mean 'cifar10'?"),
    "train data typo": (["train", "--preset", "cifar10", "--data", "cifar-10", "--out", "{d}/r"],
                        "argument --data: invalid choice: 'cifar-10' (choose from 'digits', 'cifar10', 'cifar100', "
                        "'imagefolder', 'synthetic'); did you mean 'cifar10'?"),
    "train recipe typo": ([*TRAIN, "--recipe", "imagenet_adamw"], "did you mean 'imagenet-adamw'?"),
    "convert preset typo": (["convert", M, "{d}/c.pt", "--preset", "imagenet_a"], "did you mean 'imagenet-a'?"),
    "info preset typo": (["info", "digit"], "nor a Hub id (owner/name); did you mean 'digits'?"),
    "export preset typo": (["export", "imagenet_b", "{d}/exp"], "did you mean 'imagenet-b'?"),
    # eval
    "eval missing checkpoint": (["eval", "{d}/nope.pt", "--data", "digits"], "'{d}/nope.pt' does not exist"),
    "eval folder as checkpoint": (["eval", DIR, "--data", "digits"], "is a folder without config.json"),
    "eval run folder without checkpoints": (["eval", "{d}/new-run", "--data", "digits"],
                                            "is a training run folder without best.pt or last.pt yet"),
    "eval text checkpoint": (["eval", TXT, "--data", "digits"], "is not a checkpoint"),
    "eval batch zero": (["eval", M, "--data", "digits", "--batch-size", "0"], "argument --batch-size"),
    "eval data-dir is a file": (["eval", M, "--data", "cifar10", "--data-dir", TXT], "is a file, expected a folder"),
    # predict
    "predict top-k zero": (["predict", M, IMG, "--top-k", "0"], "argument --top-k: expected an integer between 1"),
    "predict missing image": (["predict", M, "{d}/nope.png"], "'{d}/nope.png' does not exist"),
    "predict text as image": (["predict", M, TXT], "cannot decode image"),
    "predict text checkpoint": (["predict", TXT, IMG], "is not a checkpoint"),
    "predict empty folder": (["predict", DIR, IMG], "is a folder without config.json"),
    # analyze
    "analyze pairs zero": ([*ANALYZE, "--pairs", "0"], "argument --pairs: expected an integer between 1 and 100"),
    "analyze pairs huge": ([*ANALYZE, "--pairs", "100000"], "argument --pairs"),
    "analyze steps one": ([*ANALYZE, "--steps", "1"], "argument --steps: expected an integer between 2 and 64"),
    "analyze num-images zero": ([*ANALYZE, "--num-images", "0"], "argument --num-images"),
    "analyze max-test zero": ([*ANALYZE, "--max-test", "0"], "argument --max-test"),
    "analyze every zero": ([*ANALYZE, "--every", "0"], "argument --every"),
    "analyze spectrum-k zero": ([*ANALYZE, "--spectrum-k", "0"], "argument --spectrum-k"),
    "analyze window negative": ([*ANALYZE, "--window=-1,0,2,2"], "TOP,LEFT >= 0"),
    "analyze ood-noise nan": ([*ANALYZE, "--ood-noise", "nan"], "argument --ood-noise: expected a finite number > 0"),
    "analyze ood-noise zero": ([*ANALYZE, "--ood-noise", "0"], "argument --ood-noise: expected a finite number > 0"),
    "analyze unknown analysis": ([*ANALYZE, "--only", "spectra"], "invalid choice: 'spectra'"),
    "analyze text checkpoint": (["analyze", TXT, "--data", "digits", "--out", "{d}/a"], "is not a checkpoint"),
    "analyze out is a file": (["analyze", M, "--data", "digits", "--out", IMG], "is a file, expected a folder"),
    "analyze too few images per class": ([*ANALYZE, "--only", "separability", "--max-train", "12", "--max-test", "4",
                                          "--no-progress"],
                                         "needs at least 3 training images of every class, but class"),
    # convert
    "convert text src": (["convert", TXT, "{d}/out.pt"], "is not a checkpoint: not a file written by torch.save"),
    "convert src missing": (["convert", "{d}/nope.pth", "{d}/out.pt"], "'{d}/nope.pth' does not exist"),
    "convert src folder": (["convert", DIR, "{d}/out.pt"], "is a folder, expected a file"),
    # A folder is a model folder destination; a .pt destination must be a file name.
    "convert dst folder": (["convert", M, "{d}/out.pt/"], "names a folder, expected a file name"),
    "convert dst is src": (["convert", M, M], "it is one of the inputs"),
    "convert dst exists": (["convert", M, IMG], "already exists; pass --force"),
    # invert
    "invert missing image": (["invert", M, "{d}/nope.png", "--out", "{d}/o.png"], "'{d}/nope.png' does not exist"),
    "invert folder as image": (["invert", M, DIR, "--out", "{d}/o.png"], "is a folder, expected a file"),
    "invert text as image": (["invert", M, TXT, "--out", "{d}/o.png"], "cannot decode image"),
    "invert out without suffix": ([*INVERT, "--out", "{d}/inv/x"], "expected a file name ending in .png, .pdf, .svg"),
    "invert out folder": ([*INVERT, "--out", DIR], "is a folder"),
    "invert out is the input": ([*INVERT, "--out", IMG], "it is one of the inputs"),
    "invert out exists": ([*INVERT, "--out", "{d}/existing.png"], "already exists; pass --force"),
    "invert steps one": (["invert", M, "--interpolate", IMG, IMG, "--steps", "1", "--out", "{d}/o.png"],
                         "argument --steps"),
    "invert text checkpoint": (["invert", TXT, IMG, "--out", "{d}/o.png"], "is not a checkpoint"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_value_is_one_line_exit_2(case, files, capsys):
    template, message = CASES[case]
    assert main(_argv(template, files)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"irevnet {template[0]}: error: ")
    assert message.format(d=files) in err
    assert (files / "existing.png").read_bytes() == b"precious"  # nothing was overwritten


def test_a_mistyped_command_or_preset_names_the_closest(capsys):
    from irevnet import create_model
    from irevnet.errors import ConfigError

    assert main(["trian"]) == 2
    assert "invalid choice: 'trian'" in (err := capsys.readouterr().err) and "did you mean 'train'?" in err
    with pytest.raises(ConfigError, match=r"unknown preset 'digit' \(did you mean 'digits'\?\); available presets: "):
        create_model("digit")
    assert main(["train", "--preset", "resnet", "--data", "digits", "--out", "x"]) == 2  # nothing close: no guess
    assert "did you mean" not in capsys.readouterr().err


#: A command line that each command accepts (parsing only: the tests below add to it).
VALID = {
    "info": ["info", "digits"],
    "demo": ["demo", "--out", "{d}/demo"],
    "convert": ["convert", M, "{d}/out.pt"],
    "invert": [*INVERT, "--out", "{d}/o.png"],
    "export": ["export", "digits", "{d}/exp"],
    "train": TRAIN,
    "eval": ["eval", M, "--data", "digits"],
    "predict": ["predict", M, IMG],
    "analyze": ANALYZE,
    "upload": ["upload", M, "someone/digits", "--dry-run", "{d}/upload"],
}


@pytest.mark.parametrize("command", sorted(VALID))
def test_an_unknown_argument_is_refused_by_its_command(command, files, capsys):
    """The command itself refuses it, so the hint points to its own --help, not to `irevnet --help`."""
    from irevnet.cli.main import COMMANDS

    assert sorted(VALID) == sorted(COMMANDS)
    assert main([*_argv(VALID[command], files), "--no-such-option"]) == 2
    assert capsys.readouterr().err == (f"irevnet {command}: error: unrecognized arguments: --no-such-option "
                                       f"(see `irevnet {command} --help`)\n")
    if command in ("info", "convert", "export", "upload"):  # a fixed number of positional arguments: one too many
        assert main([*_argv(VALID[command], files), "surplus"]) == 2
        assert "unrecognized arguments: surplus (see `irevnet " + command in capsys.readouterr().err


def test_options_may_stand_between_positional_arguments(files, tmp_path, capsys):
    out = tmp_path / "o.png"
    img = str(files / "img.png")
    assert main(["invert", str(files / "m.pt"), img, "--no-progress", img, "--out", str(out)]) == 0
    assert [r["path"] for r in json.loads(out.with_suffix(".json").read_text())["images"]] == [img, img]
    assert main(["analyze", "--only", "spectrum", "--data", "digits", str(files / "m.pt"), "--out",
                 str(tmp_path / "a"), "--window", "0,0,2,2", "--no-progress"]) == 0
    assert (tmp_path / "a" / "spectrum.json").exists()


def test_missing_required_option_is_one_line(capsys):
    assert main(["train", "--preset", "digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the following arguments are required: --data, --out" in err


def test_invert_writes_exactly_the_path_given_and_force_overwrites(files, tmp_path, capsys):
    out = tmp_path / "inv" / "x.pdf"
    assert main(["invert", str(files / "m.pt"), str(files / "img.png"), "--out", str(out)]) == 0
    assert f"wrote {out} and {out.with_suffix('.json')}" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.json", "x.pdf"]
    assert out.read_bytes().startswith(b"%PDF")
    assert main(["invert", str(files / "m.pt"), str(files / "img.png"), "--out", str(out)]) == 2
    assert main(["invert", str(files / "m.pt"), str(files / "img.png"), "--out", str(out), "--force"]) == 0


def test_export_refuses_existing_files_unless_forced(files, tmp_path, capsys):
    dst = tmp_path / "exp"
    dst.mkdir()
    (dst / "meta.json").write_text("{}")
    assert main(["export", str(files / "m.pt"), str(dst)]) == 2
    assert "meta.json already exists; pass --force" in capsys.readouterr().err
    assert (dst / "meta.json").read_text() == "{}"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_checkpoints_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = save_model(create_model("digits", blocks=(1, 1)), tmp_path / "m.pt")
        folder = create_model("digits", blocks=(1, 1)).save_pretrained(tmp_path / "folder")
        (tmp_path / "plain").write_text("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {mode}  # model folders too


def _subparser(command: str):
    from irevnet.cli.main import build_parser

    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices[command]


def test_the_cli_lists_of_names_match_the_library():
    """The CLI keeps a few name lists so that parsing imports no torch; they must match the library's."""
    from irevnet.analysis.plotting import FORMATS
    from irevnet.analysis.suite import ANALYSES
    from irevnet.cli.common import FIGURE_FORMATS
    from irevnet.cli.train import AMP_CHOICES, COMPILE_MODES
    from irevnet.compile import MODES
    from irevnet.training.device import AMP_DTYPES

    only = next(a for a in _subparser("analyze")._actions if a.dest == "only")
    assert tuple(only.choices) == ANALYSES and FIGURE_FORMATS == FORMATS
    assert set(AMP_CHOICES) == {k for k in AMP_DTYPES if k}
    assert COMPILE_MODES == tuple(m for m in MODES if m)


def test_a_closed_pipe_is_not_a_traceback():
    """`irevnet info imagenet-b | head -1`: the reader is gone before irevnet writes (deterministically here)."""
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = subprocess.run([sys.executable, "-m", "irevnet", "info", "imagenet-b"], stdout=write_end,
                           stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    assert r.returncode == 141 and r.stderr == "", r.stderr


# Every command that writes, with its outputs at {o}: refused in one line before any work.
WRITERS = {
    "train": ["train", "--preset", "digits", "--data", "synthetic", "--synthetic-size", "64", "--epochs", "1",
              "--out", "{o}/run"],
    "train save-pretrained": ["train", "--preset", "digits", "--data", "synthetic", "--synthetic-size", "64",
                              "--epochs", "1", "--out", "{d}/fresh-run", "--save-pretrained", "{o}/model"],
    "invert": ["invert", M, IMG, "--out", "{o}/inv.png"],
    "invert interpolate": ["invert", M, "--interpolate", IMG, IMG, "--out", "{o}/strip.png"],
    "export": ["export", M, "{o}/exp"],
    "analyze": ["analyze", M, "--data", "digits", "--only", "reconstruct", "--no-progress", "--out", "{o}/analysis"],
    "demo": ["demo", "--epochs", "1", "--epochs-b", "1", "--no-progress", "--out", "{o}/demo"],
    "convert": ["convert", M, "{o}/converted.pt"],
    "upload dry-run": ["upload", M, "someone/model", "--dry-run", "{o}/folder"],
}


def _no_work(monkeypatch):
    """Make the work of train and invert fail the test if it starts (it must not: the check comes first)."""
    import irevnet.analysis
    import irevnet.training.trainer

    def work(*args, **kwargs):
        raise AssertionError("the command started its work before checking that its outputs can be written")

    monkeypatch.setattr(irevnet.training.trainer, "train", work)
    monkeypatch.setattr(irevnet.analysis, "reconstruct", work)
    monkeypatch.setattr(irevnet.analysis, "interpolate", work)


def _refused(command: str, files, out: str, message: str, capsys) -> None:
    argv = [a.format(d=files, o=out) for a in WRITERS[command]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"irevnet {argv[0]}: error: cannot write to "), err
    assert message in err, err


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_an_output_under_a_file_is_refused_before_any_work(command, files, capsys, monkeypatch):
    """A path through a regular file cannot be created by anyone, root included."""
    _no_work(monkeypatch)
    _refused(command, files, f"{files}/notes.txt/sub", f"'{files}/notes.txt' is a file, not a folder", capsys)
    assert not (files / "fresh-run").exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
@pytest.mark.parametrize("command", ["train", "invert", "analyze", "export"])
def test_an_output_in_proc_is_refused(command, files, capsys, monkeypatch):
    """Nobody, root included, creates files in /proc: the check probes, it does not read permission bits."""
    _no_work(monkeypatch)
    _refused(command, files, "/proc/irevnet-test", "no file can be created in '/proc'", capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("command", sorted(WRITERS))
def test_an_output_in_a_read_only_folder_is_refused(command, files, tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        _refused(command, files, str(locked), "Permission denied", capsys)
    finally:
        locked.chmod(0o755)


def test_a_failed_write_is_one_line(files, tmp_path, capsys, monkeypatch):
    """A location that turns unwritable after the check (or a full disk) is still one line, exit 2."""
    import errno

    import irevnet.export

    def full(model, example, dst, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(irevnet.export, "export_model", full)
    assert main(["export", str(files / "m.pt"), str(tmp_path / "exp")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"No space left on device: '{tmp_path / 'exp'}'" in err, err
