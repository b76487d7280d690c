"""Progress of the long steps: a bar on stderr (hidden with progress=False / --no-progress) for
each analysis that inverts or optimizes many times, for export, and a numbered, timed log line
per analysis.

The bars are observed where tqdm closes them: what matters is that a bar exists, has a total
(so an ETA) and reaches it, not how tqdm draws it.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import pytest
import torch
import tqdm.std
from torch.utils.data import TensorDataset

import irevnet.io.formats as ckpt
from irevnet import create_model, save_model
from irevnet.analysis.suite import AnalysisOptions, run_analyses
from irevnet.cli.main import main


class Bar(NamedTuple):
    desc: str
    n: int
    total: int | None


@pytest.fixture
def bars(monkeypatch) -> list[Bar]:
    """The shown (not disabled) progress bars, in the order they were closed, with their final count."""
    closed: list[Bar] = []
    close = tqdm.std.tqdm.close

    def recording_close(self) -> None:
        if not self.disable:  # close() disables the bar: each is recorded once
            closed.append(Bar(self.desc, self.n, self.total))
        close(self)

    monkeypatch.setattr(tqdm.std.tqdm, "close", recording_close)
    return closed


def _named(bars: list[Bar], desc: str) -> Bar:
    found = [bar for bar in bars if bar.desc == desc]
    assert len(found) == 1, (desc, bars)
    return found[0]


def _split(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 10)


@pytest.mark.parametrize("progress", [True, False])
def test_the_analyses_show_a_bar_each_and_log_their_time(tmp_path, capsys, caplog, bars, progress):
    model = create_model("digits-b", blocks=(1, 1))
    options = AnalysisOptions(pairs=2, metamer_pairs=2, metamer_steps=3, steps=3, batch_size=8, progress=progress)
    with caplog.at_level(logging.INFO, logger="irevnet"):
        run_analyses(model, _split(20, 0), _split(20, 1), tmp_path, ["interpolate", "metamers", "ood", "edits"],
                     options)
    err = capsys.readouterr().err
    names = ["interpolate", "metamers", "log p(x), test", "log p(x), noised", "edits"]
    if progress:
        assert all(f"{name}:" in err for name in names), err  # drawn on stderr
        assert all(_named(bars, name) for name in names)
        # Bars with a total (so an ETA) that they reach: the interpolation's 3 steps, the
        # metamer search's 3 steps of its one batch.
        assert _named(bars, "interpolate")[1:] == _named(bars, "metamers")[1:] == (3, 3)
        assert all(bar.n == bar.total for bar in bars if bar.total is not None), bars
    else:
        assert bars == [] and not any(f"{name}:" in err for name in names), err
    for i, name in enumerate(["interpolate", "metamers", "ood", "edits"], 1):
        assert f"analysis {i}/4: {name} done in " in caplog.text


def test_export_shows_a_bar_over_its_programs(tmp_path, capsys, bars):
    save_model(create_model("digits", blocks=(1, 1)), tmp_path / "m.pt")
    assert main(["export", str(tmp_path / "m.pt"), str(tmp_path / "a")]) == 0
    assert "export (torch)" in capsys.readouterr().err
    assert bars == [Bar("export (torch)", 2, 2)]  # the forward and the inverse program
    assert main(["export", str(tmp_path / "m.pt"), str(tmp_path / "b"), "--no-progress"]) == 0
    assert "export (torch)" not in capsys.readouterr().err and len(bars) == 1


def test_invert_shows_the_reading_and_the_interpolation(tmp_path, capsys, bars):
    import numpy as np
    from PIL import Image

    save_model(create_model("digits", blocks=(1, 1)), tmp_path / "m.pt")
    images = []
    for k in range(2):
        Image.fromarray(np.full((8, 8), 90 * k, np.uint8)).save(tmp_path / f"{k}.png")
        images.append(str(tmp_path / f"{k}.png"))
    assert main(["invert", str(tmp_path / "m.pt"), *images, "--out", str(tmp_path / "r.png")]) == 0
    assert "read" in capsys.readouterr().err and _named(bars, "read") == Bar("read", 2, 2)  # one per image
    assert main(["invert", str(tmp_path / "m.pt"), "--interpolate", *images, "--steps", "3",
                 "--out", str(tmp_path / "i.png")]) == 0
    assert "interpolate" in capsys.readouterr().err
    assert _named(bars, "interpolate") == Bar("interpolate", 3, 3)  # one per step


def test_training_shows_its_evaluation_too(tmp_path, capsys, bars):
    assert main(["train", "--preset", "digits", "--data", "synthetic", "--synthetic-size", "64", "--model",
                 "blocks=1,1", "--epochs", "1", "--batch-size", "16", "--accum", "2", "--device", "cpu",
                 "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "eval 1/1" in err
    # The epoch's bar counts optimizer steps (two batches each with accum 2), all of them.
    steps = ckpt.read_checkpoint(tmp_path / "last.pt")["trainer"]["step"]
    assert _named(bars, "epoch 1/1") == Bar("epoch 1/1", steps, steps) and steps >= 2
    evaluation = _named(bars, "eval 1/1")
    assert evaluation.total is not None and evaluation.n == evaluation.total >= 1


def test_convert_says_what_it_reads_and_writes(tmp_path, caplog):
    import reference_impl as ref_impl

    ref = ref_impl.imagenet_b(blocks=(1, 1, 1, 1), in_shape=(3, 32, 32), num_classes=10)
    src = ref_impl.save_reference_checkpoint(ref, tmp_path / "ref.pth.tar")
    with caplog.at_level(logging.INFO, logger="irevnet"):
        assert main(["convert", str(src), str(tmp_path / "b.pt"), "--model", "blocks=1,1,1,1", "--model",
                     "input_shape=3,32,32", "--model", "num_classes=10"]) == 0
    assert f"converting {src} (" in caplog.text and f"writing {tmp_path / 'b.pt'} ..." in caplog.text
