"""Figures: the plotting API returns matplotlib Figures without touching the global backend,
and the files are fit for a paper (200 dpi PNG, PDF/SVG, wrapped grids and titles, distinct series)."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from floor import check, sensitivity, unit_roundoff
from irevnet.analysis.plotting import PNG_DPI, image_grid, plot_pca, plot_separability, plot_spectrum, save_figure
from irevnet.data.transforms import denormalize

SPECTRUM = {"window": [0, 0, 4, 4], "input_dims": 16, "condition_number": [12.5, 30.0],
            "normalized": [np.geomspace(1, 0.08, 16).tolist(), np.geomspace(1, 0.03, 16).tolist()]}
CURVE = {"blocks": [1, 2, 3], "nn": [0.5, 0.6, 0.7], "svm": [0.55, 0.65, 0.8]}
PCA = {"dims": [1, 2, 4, 8], "nn": [0.3, 0.5, 0.7, 0.72], "svm": [0.35, 0.55, 0.75, 0.78],
       "explained_variance": [0.4, 0.6, 0.8, 1.0], "saturation": {"nn": 4, "svm": 4}}


def test_importing_and_plotting_leave_the_backend_alone():
    code = ("import matplotlib, sys\nbefore = matplotlib.get_backend()\n"
            "import irevnet.analysis.plotting as p\nimport torch\n"
            "fig = p.image_grid([[torch.rand(3, 8, 8)]])\n"
            "print(before, matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    env = {**os.environ, "MPLBACKEND": "svg"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert r.stdout.split() == ["svg", "svg", "False"]


def test_plot_functions_return_figures():
    for fig in (plot_spectrum(SPECTRUM), plot_separability({"trained": CURVE, "untrained": CURVE}), plot_pca(PCA),
                image_grid([[torch.rand(1, 8, 8)] * 3])):
        assert isinstance(fig, Figure)


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_save_figure_writes_exactly_the_path_in_its_format(tmp_path, suffix, magic):
    path = save_figure(plot_spectrum(SPECTRUM), tmp_path / f"spectrum{suffix}")
    assert path == tmp_path / f"spectrum{suffix}" and os.listdir(tmp_path) == [path.name]
    assert path.read_bytes().startswith(magic)
    if suffix == ".png":
        dpi = Image.open(path).info["dpi"]
        assert min(dpi) >= 199.5 and PNG_DPI >= 200
    with pytest.raises(ValueError, match="must end in .png, .pdf, .svg"):
        save_figure(plot_spectrum(SPECTRUM), tmp_path / "spectrum")


def test_math_labels_use_mathtext():
    ax = plot_spectrum(SPECTRUM).axes[0]
    assert ax.get_ylabel() == r"$\sigma_i / \sigma_1$"
    assert "σ_" not in ax.get_title() and r"$\partial\Phi/\partial x$" in ax.get_title()


def test_every_separability_series_is_distinct_in_the_legend():
    ax = plot_separability({"trained": CURVE, "untrained": CURVE}).axes[0]
    handles, labels = ax.get_legend_handles_labels()
    assert labels == ["1-NN, trained", "linear SVM, trained", "1-NN, untrained", "linear SVM, untrained"]
    looks = {(h.get_color(), h.get_linestyle(), h.get_marker(), str(h.get_markerfacecolor())) for h in handles}
    assert len(looks) == 4
    assert {h.get_color() for h in handles}.__len__() == 4  # distinct colours, not only line styles


def test_grids_wrap_and_keep_images_at_full_resolution(tmp_path):
    small = [torch.rand(1, 8, 8) for _ in range(40)]
    fig = image_grid([small, small], row_labels=["a", "b"])
    # 40 columns wrap into 3 groups of 2 rows (one strip of images each): 16, 16, then 8 and white.
    strips = [ax.images[0].get_array() for ax in fig.axes]
    assert len(strips) == 3 * 2 and all(a.shape == strips[0].shape for a in strips)
    at = [j * (8 + 1) for j in range(16)]  # each image's first column (1 white pixel apart)
    for g, k in ((0, 0), (1, 16), (2, 32)):  # group g starts with image k, at full resolution
        assert np.array_equal(strips[2 * g][:, at[0]:at[0] + 8], small[k][0].numpy())
    assert np.array_equal(strips[4][:, at[7]:at[7] + 8], small[39][0].numpy())
    assert strips[4][:, at[7] + 8:].min() == 1.0  # the last group: 8 images, then white
    w, h = Image.open(save_figure(fig, tmp_path / "many.png")).size
    assert w <= 18 * PNG_DPI  # does not grow sideways with the number of images
    big = [torch.rand(3, 224, 224) for _ in range(2)]
    fig = image_grid([big, big], row_labels=["x", "y"], title="t")
    ax = fig.axes[0]
    fig.canvas.draw()
    shown = ax.get_window_extent()
    pixels = ax.images[0].get_array().shape[1]  # two images and the gap between them
    assert pixels > 2 * 224 and shown.width >= pixels * fig.dpi / PNG_DPI - 1  # one screen pixel per image pixel


def test_long_titles_fit_the_figure():
    title = "imagenet-b: reconstructions from Φ (max abs pixel error 1.2e-06) of a_very_long_file_name.png " * 2
    fig = image_grid([[torch.rand(3, 32, 32)] * 2] * 2, title=title, cell=1.6)
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width + 1


@pytest.mark.parametrize("method, unit", [("exact", "column"), ("lanczos", "product")])
def test_the_spectrum_shows_progress_within_one_image(capsys, method, unit):
    from irevnet import create_model
    from irevnet.analysis import jacobian_singular_values

    torch.manual_seed(0)
    model = create_model("digits", blocks=(1, 1))
    s = jacobian_singular_values(model, torch.rand(1, 8, 8), (0, 0, 4, 4), method=method, k=3, chunk_size=4,
                                 progress=True)
    assert len(s) == 3
    err = capsys.readouterr().err
    assert ("Jacobian" if method == "exact" else "Lanczos (top 3)") in err and unit in err


def test_analyze_writes_the_format_asked(tmp_path, capsys):
    from irevnet import create_model, save_model
    from irevnet.cli.main import main

    ckpt = save_model(create_model("digits", blocks=(1, 1)), tmp_path / "m.pt")
    out = tmp_path / "a"
    assert main(["analyze", str(ckpt), "--data", "digits", "--out", str(out), "--only", "spectrum",
                 "--window", "0,0,4,4", "--spectrum-images", "1", "--format", "svg", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["spectrum.json", "spectrum.svg"]
    assert "-> " + str(out / "spectrum") + ".svg/.json" in capsys.readouterr().out


@pytest.mark.parametrize("flag, expected", [([], 3), (["--workers", "0"], 0)])
def test_analyze_workers_default_to_trainings(tmp_path, monkeypatch, flag, expected):
    """Without --workers, analyze loads with training's default_workers of its data set (not a fixed 0)."""
    import irevnet.analysis.suite as suite
    import irevnet.training.data_loading as data_loading
    from irevnet import create_model, save_model
    from irevnet.cli.main import main

    asked, used = [], []
    monkeypatch.setattr(data_loading, "default_workers", lambda data, *a: asked.append(data) or 3)
    monkeypatch.setattr(suite, "run_analyses", lambda *a: used.append(a[-1].workers) or {})
    ckpt = save_model(create_model("digits", blocks=(1, 1)), tmp_path / "m.pt")
    assert main(["analyze", str(ckpt), "--data", "digits", "--out", str(tmp_path / "a"), *flag]) == 0
    assert used == [expected] and asked == ([] if flag else ["digits"])


@pytest.mark.numerics
def test_analyses_show_and_measure_pixels_not_normalized_inputs(tmp_path, monkeypatch):
    """A CIFAR model's inputs are normalized; its reconstruct/interpolate figures show the pixels."""
    from torch.utils.data import TensorDataset

    import irevnet.analysis.plotting as plotting
    import irevnet.analysis.suite as suite
    from irevnet import create_model

    torch.manual_seed(0)
    model = create_model("cifar10", blocks=(1, 1, 1))
    dc = model.config.data_config
    pixels = torch.rand(12, 3, 32, 32)
    mean, std = (torch.tensor(v).view(-1, 1, 1) for v in (dc["mean"], dc["std"]))
    data = TensorDataset((pixels - mean) / std, torch.arange(12) % 3)
    shown = []
    monkeypatch.setattr(plotting, "image_grid", lambda rows, **kw: shown.append(rows) or image_grid(rows[:1], **kw))
    res = suite.run_analyses(model, data, data, tmp_path, ["reconstruct", "interpolate"],
                             suite.AnalysisOptions(num_images=4, pairs=2, steps=3, progress=False))
    originals = torch.stack(shown[0][0])
    # Normalized and back, elementwise: (p - m)/s·s + m rounds four times, each within u of its result.
    u = unit_roundoff(torch.float32)
    check((originals - pixels[:4]).abs(), 4 * u * (pixels[:4].abs() + 2 * mean.abs()), "pixels")
    ends = torch.stack([shown[1][1][0], shown[1][1][-1]])  # the pixel-space row starts and ends at pixels
    assert 0 <= float(ends.min()) and float(ends.max()) <= 1
    rec = res["reconstruct"]
    assert "pixel" in rec["error_units"]
    # Every test image reconstructed, each within its bound in pixel units (tests/floor.py).
    kappa = sensitivity(model.eval(), data.tensors[0], to_pixels=partial(denormalize, config=model.config))
    check(rec["mean_relative_error"], kappa.bound().mean(), "suite")



def test_invert_shows_progress_per_image(tmp_path, capsys):
    from irevnet import create_model, save_model
    from irevnet.cli.main import main

    save_model(create_model("digits", blocks=(1, 1)), tmp_path / "m.pt")
    images = []
    for k in range(3):
        Image.fromarray(np.full((8, 8), 40 * k, np.uint8)).save(tmp_path / f"{k}.png")
        images.append(str(tmp_path / f"{k}.png"))
    assert main(["invert", str(tmp_path / "m.pt"), *images, "--out", str(tmp_path / "o.png")]) == 0
    err = capsys.readouterr().err
    assert "reconstruct:" in err and "/3 [" in err  # one step per image
