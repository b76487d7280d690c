"""The paper's analyses (irevnet.analysis) and `irevnet analyze`: properties, reproducibility, plots, CLI."""

from __future__ import annotations

import copy
import json
import warnings

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn
from torch.utils.data import TensorDataset

import irevnet
from floor import LAMBDA, check, sensitivity, unit_roundoff
from irevnet.analysis.separability import accuracies_of
from irevnet.analysis import (
    averaged_features,
    classifier_accuracies,
    default_window,
    interpolate,
    jacobian_spectrum,
    linear_separability,
    log_spaced_dims,
    pairs_of_different_classes,
    pca_contraction,
    pixel_interpolate,
    reconstruct,
    reconstruct_batches,
    saturation_dim,
    select_blocks,
    spectrum_summary,
    standardize,
    subsample,
    untrained_like,
)
from irevnet.analysis.plotting import plot_pca, plot_separability, plot_spectrum, save_figure
from irevnet.analysis.suite import ANALYSES, BIJECTIVE_ONLY, AnalysisOptions, run_analyses
from irevnet.cli.main import main
from irevnet.data import load_digits_split
from trained import briefly_trained_cifar
from irevnet.modes import eval_mode


def _randomize_batchnorms(model: irevnet.IRevNet, seed: int) -> irevnet.IRevNet:
    """``model`` with random BatchNorm statistics and scales, so that ∂Φ/∂x is far from an isometry."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.05 + 2 * torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(4 * torch.rand(m.weight.shape, generator=g))
    return model


def _small_model(seed: int = 0, blocks: tuple[int, int] = (1, 1)) -> irevnet.IRevNet:
    """A small digits network whose BatchNorms are randomized, so ∂Φ/∂x is far from an isometry."""
    torch.manual_seed(seed)
    return _randomize_batchnorms(irevnet.create_model("digits", blocks=blocks).eval(), seed)


def _reference_jacobian(model: irevnet.IRevNet, x: torch.Tensor) -> torch.Tensor:
    """∂Φ/∂x as a (Φ.numel(), C, H, W) float64 tensor, by plain reverse-mode autograd."""
    net = copy.deepcopy(model).double().eval()
    jac = torch.autograd.functional.jacobian(lambda v: net.forward_features(v.unsqueeze(0)).flatten(), x.double())
    return jac.detach()


@pytest.fixture(scope="module")
def digits() -> tuple[TensorDataset, TensorDataset]:
    return load_digits_split()


@pytest.fixture(scope="module")
def small_splits(digits) -> tuple[TensorDataset, TensorDataset]:
    train, test = digits
    return subsample(train, 300, seed=1), subsample(test, 120, seed=1)


# -- spectrum -------------------------------------------------------------------------
@pytest.mark.numerics
@pytest.mark.parametrize("window", [None, (2, 3, 4, 5)])
def test_spectrum_matches_svd_of_the_full_jacobian(window):
    model = _small_model()
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(3))
    jac = _reference_jacobian(model, x)
    if window is not None:
        top, left, h, w = window
        jac = jac[:, :, top:top + h, left:left + w]
    expected = torch.linalg.svdvals(jac.flatten(1))
    expected = expected / expected[0]
    got = jacobian_spectrum(model, x, window)
    assert got.shape == expected.shape == (jac[0].numel(),)
    assert torch.all(got[:-1] >= got[1:]) and got[0] == 1
    # Weyl: |Δσ_i| <= ‖ΔJ‖₂, so |Δ(σ_i/σ_0)| <= (1 + σ_i/σ_0)‖ΔJ‖/σ_0. Two float64 Jacobians
    # (JVPs, reverse mode), each column a derivative of Φ accurate to LAMBDA·u·κ like Φ (tests/floor.py),
    # and two SVDs, backward stable to n·u (n input dimensions).
    u, n, flat = unit_roundoff(torch.float64), jac[0].numel(), jac.flatten(1)
    rel = 2 * (LAMBDA * u * sensitivity(model, x.unsqueeze(0)).forward.item() + n * u)
    check((got - expected).abs(), (1 + expected) * rel * flat.norm() / torch.linalg.matrix_norm(flat, ord=2), "spectrum")
    assert 1 / got[-1] > 2, "the randomized BatchNorms should make the Jacobian ill-conditioned"


def test_lanczos_matches_the_exact_top_values():
    model = _small_model(seed=1)
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(4))
    window = (1, 1, 6, 6)
    exact = jacobian_spectrum(model, x, window, method="exact")
    top = jacobian_spectrum(model, x, window, method="lanczos", k=6)
    assert top.shape == (6,)
    # Lanczos stops at its relative tolerance (1e-6, the library's default), not at rounding.
    torch.testing.assert_close(top, exact[:6], rtol=1e-5, atol=0)
    # The exact method dispatches by size: a budget below the window's 36 dims means Lanczos.
    auto = jacobian_spectrum(model, x, window, k=6, exact_max_dims=10)
    torch.testing.assert_close(auto, top, rtol=1e-5, atol=0)


def test_the_default_spectrum_agrees_with_the_exact_one_within_its_stated_accuracy():
    """On a 300-dimensional window the default is the float32 Jacobian, with a bound on its error."""
    torch.manual_seed(0)
    model = _randomize_batchnorms(irevnet.create_model("cifar10", blocks=(1, 1, 1)).eval(), seed=0)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    window = (11, 11, 10, 10)
    got = spectrum_summary(model, x, window, progress=False)
    exact = jacobian_spectrum(model, x[0], window, method="exact")
    assert got["method"] == "float32" and got["input_dims"] == 300 and got["complete"]
    bound = got["normalized_abs_error"][0]
    deviation = (torch.tensor(got["normalized"][0], dtype=torch.float64) - exact).abs().max()
    assert deviation <= bound
    # Not vacuous: the bound is 2 ‖Ĵ‖_F/σ₁ (<= 2 sqrt(300)) times the float32 columns' relative error, at
    # most ~100 float32 roundings (2^-24) through 3 blocks; the smallest value it must resolve is 10x more.
    assert 0 < bound <= 2 * 300**0.5 * 100 * 2**-24 < 0.1 * float(exact[-1])
    assert got["condition_number"][0] == pytest.approx(1 / float(exact[-1]), rel=2 * bound / float(exact[-1]))
    assert 1 / float(exact[-1]) > 10, "the randomized BatchNorms should make the Jacobian ill-conditioned"


def test_spectrum_summary_and_bad_inputs():
    model = _small_model()
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    res = spectrum_summary(model, images, progress=False)
    assert res["complete"] and res["input_dims"] == 64 and res["window"] == [0, 0, 8, 8]
    for values, kappa in zip(res["normalized"], res["condition_number"]):
        assert kappa == pytest.approx(1 / values[-1])
    assert default_window((1, 8, 8)) is None and default_window((1, 32, 32)) is None  # up to 1,024 values
    # Above: the paper's 100 of 224 pixels per side, centred.
    assert default_window((3, 224, 224)) == (62, 62, 100, 100)
    assert default_window((3, 32, 32)) == (9, 9, 14, 14) and default_window((3, 64, 48)) == (17, 13, 29, 21)
    with pytest.raises(ValueError, match="does not fit"):
        jacobian_spectrum(model, images[0], (4, 4, 8, 8))
    with pytest.raises(ValueError, match="one input"):
        jacobian_spectrum(model, images)


# -- reconstruct / interpolate helpers --------------------------------------------------
def test_pixel_interpolation_and_pairs(digits):
    x, y = digits[1].tensors
    pairs = pairs_of_different_classes(y[:100], 12)
    assert len(pairs) == 12 and all(y[i] != y[j] for i, j in pairs)
    i0, i1 = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    line = pixel_interpolate(x[i0], x[i1], steps=5)
    assert line.shape == (12, 5, 1, 8, 8)
    torch.testing.assert_close(line[:, 0], x[i0])
    torch.testing.assert_close(line[:, -1], x[i1])
    torch.testing.assert_close(line[:, 2], (x[i0] + x[i1]) / 2)
    # Φ-space interpolation has the same end points (Φ⁻¹(Φ(x)) = x) but another path. (Not
    # with blocks=(1, 1): its first block pads all the image into one half, and the path is
    # then a straight line.)
    model = _small_model(blocks=(2, 1))
    strip = interpolate(model, x[i0], x[i1], steps=5)
    torch.testing.assert_close(strip[:, 0], reconstruct(model, x[i0]).x_hat, atol=0, rtol=0)  # t = 1: Φ⁻¹(Φ(x0))
    assert (strip[:, 2] - line[:, 2]).abs().max() > 1e-3


@pytest.mark.numerics
def test_reconstruct_reports_the_floor_and_float64_is_exact():
    model = briefly_trained_cifar().train()
    x = torch.rand(6, 3, 32, 32)
    rec = reconstruct(model, x, batch_size=4)
    assert model.training and rec.x_hat.dtype == torch.float32 and rec.relative_error.shape == (6,)
    floor = rec.floor_relative_error
    # The floor of this model depends on the kernels its training ran (2e-7 with torch 2.4 on 2
    # threads, 3e-5..3e-3 with torch 2.14); it is reported, and the error bounded (tests/floor.py).
    assert floor is not None and floor.shape == (6,) and floor.min() > 0
    with eval_mode(model):  # reconstruct works in eval mode
        kappa = sensitivity(model, x)
    check(rec.relative_error, kappa.bound(), "float32")
    diff = (rec.x_hat.double() - x.double()).flatten(1)
    torch.testing.assert_close(rec.max_abs_error, diff.abs().amax(dim=1), rtol=0, atol=0)
    rec64 = reconstruct(model, x, batch_size=4, float64=True)
    assert rec64.x_hat.dtype == torch.float64 and rec64.floor_relative_error is None
    # The floor of the leading images only (its float64 passes cost more than the reconstruction):
    # the same values, batch by batch, until the count is reached; the errors of every image.
    parts = list(reconstruct_batches(model, x.split(4), floor_images=5))
    assert [len(p.relative_error) for p in parts] == [4, 2]
    assert [len(p.floor_relative_error) for p in parts] == [4, 1]
    torch.testing.assert_close(parts[0].floor_relative_error, floor[:4], rtol=0, atol=0)  # the same batch
    # One image where `floor` had a batch of two: float64 kernels may sum in another order. Each floor
    # is ‖x̂ - x‖/‖x‖ of a float64 round trip, within LAMBDA·u64·κ of the exact one (tests/floor.py), and
    # | ‖a - x‖ - ‖b - x‖ | <= ‖a - b‖: the two differ by at most twice that. (Φ is rounded to float32
    # in between: the same values unless an entry lies within float64 noise of a rounding boundary,
    # ~1e-8 odds per entry.)
    check((parts[1].floor_relative_error - floor[4:5]).abs(), kappa.bound(dtype=torch.float64, computations=2)[4:5],
          "floor of a batch of one")
    check(rec64.relative_error, kappa.bound(dtype=torch.float64), "float64")
    # The rounding model puts the two errors 2^29 = 5e8 apart (the same κ, u 2^-24 against
    # 2^-53), each draw within a small factor of it: 1e-3 leaves 5e5x.
    assert rec64.relative_error.max() < 1e-3 * rec.relative_error.min()
    assert next(model.parameters()).dtype == torch.float32 and model.training  # the model is not changed


# -- features ---------------------------------------------------------------------------
@pytest.mark.numerics
def test_averaged_features_equal_forward_intermediates(small_splits):
    model = _small_model()
    ds = small_splits[1]
    feats = averaged_features(model, ds, [1, 2], batch_size=50, progress=False)
    x, y = ds[:]
    with torch.no_grad():
        _, inter = model.forward_intermediates(x)
    u = unit_roundoff(torch.float32)
    for j in (1, 2):
        # Two float32 computations of Φ_j (batches of 50 and of 120), each within LAMBDA·u·κ‖Φ_j‖
        # (tests/floor.py), then averaged over P positions (a contraction by 1/sqrt(P), and sums
        # of P entries rounding by u(‖Φ_j‖/sqrt(P) + ‖mean‖) each).
        phi, pooled = inter[j - 1].double(), inter[j - 1].double().mean(dim=(2, 3))
        norms, root_p = phi.flatten(1).norm(dim=1), phi[0, 0].numel() ** 0.5
        forward = sensitivity(model, x, depth=j).bound("forward", computations=2) * norms
        bound = (forward + 2 * u * norms) / root_p + 2 * u * pooled.norm(dim=1)
        check((torch.from_numpy(feats.features[j]).double() - pooled).norm(dim=1), bound, f"block {j}")
    np.testing.assert_array_equal(feats.labels, y.numpy())
    assert select_blocks(8, 3) == [3, 6, 8] and select_blocks(8) == list(range(1, 9))
    # By default about 8 depths: all of a shallow network, evenly spaced ones of a deep one.
    assert select_blocks(54) == [7, 14, 21, 28, 35, 42, 49, 54] and select_blocks(100) == [*range(13, 100, 13), 100]


def test_untrained_baseline_is_the_seeded_initialization():
    torch.manual_seed(7)
    model = irevnet.create_model("digits", blocks=(1, 1))
    state = torch.get_rng_state()
    baseline = untrained_like(model, seed=7)
    assert torch.equal(torch.get_rng_state(), state), "the global RNG must not move"
    for (k, a), b in zip(model.state_dict().items(), baseline.state_dict().values()):
        assert torch.equal(a, b), k


def test_standardize_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    train, test = rng.normal(3, 2, size=(200, 4)), rng.normal(-5, 1, size=(50, 4))
    s_train, s_test = standardize(train, test)
    # float64, 200 values of size <= 5: each mean within (200 + 3)·u·5 ~ 1e-13 of exact, in any order.
    np.testing.assert_allclose(s_train.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(s_train.std(0), 1)
    np.testing.assert_allclose(s_test, (test - train.mean(0)) / train.std(0))


# -- separability and PCA -----------------------------------------------------------------
def test_classifier_fits_on_threads_give_the_sequential_results():
    gen = np.random.default_rng(3)
    y_train, y_test = np.arange(90) % 3, np.arange(30) % 3
    problems = [(gen.normal(size=(90, d)) + 2 * y_train[:, None], gen.normal(size=(30, d)) + 2 * y_test[:, None])
                for d in (2, 5, 9, 17, 150)]  # 150 > N: where the dual solver (shared RNG) would be chosen
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            quiet = [f for f in warnings.filters if f[2] is ConvergenceWarning]
            runs.append(accuracies_of([lambda p=p: p for p in problems], y_train, y_test, seed=1))
            # The ConvergenceWarning filter of the fits is gone afterwards, however the threads overlapped.
            # (Not the whole list: a library imported on first use may add its own filters meanwhile.)
            assert [f for f in warnings.filters if f[2] is ConvergenceWarning] == quiet
    finally:
        torch.set_num_threads(threads)
    assert runs[0] == runs[1] == [classifier_accuracies(a, y_train, b, y_test, seed=1) for a, b in problems]
    assert runs[0][3]["svm"] > 0.9  # d = 17: separable by construction


def test_separability_is_reproducible_and_sane(small_splits):
    model = _small_model()
    runs = [linear_separability(model, *small_splits, baseline_seed=0, max_train=200, seed=2, progress=False)
            for _ in range(2)]
    assert runs[0] == runs[1]
    res = runs[0]
    assert res["blocks"] == [1, 2] and res["train_images"] == 200 and res["test_images"] == 120
    for curve in (res["trained"], res["untrained"]):
        assert curve["blocks"] == [1, 2] and curve["dims"] == [64, 256]
        assert all(0 <= a <= 1 for a in curve["nn"] + curve["svm"])
    # Whole-image features of the last block separate digits far better than chance.
    assert res["trained"]["svm"][-1] > 0.5
    other_seed = linear_separability(model, *small_splits, baseline_seed=None, max_train=200, seed=3, progress=False)
    assert other_seed["untrained"] is None and other_seed["trained"] != res["trained"]


def test_classifier_accuracies_on_separable_data():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, size=(3, 5))
    y = np.repeat(np.arange(3), 40)
    x = centres[y] + rng.normal(0, 0.5, size=(120, 5))
    acc = classifier_accuracies(x[::2], y[::2], x[1::2], y[1::2], seed=0)
    assert acc["nn"] == 1.0 and acc["svm"] == 1.0
    noise = classifier_accuracies(x[::2], rng.permutation(y[::2]), x[1::2], y[1::2], seed=0)
    assert noise["nn"] < 0.8


@pytest.mark.slow
def test_pca_is_reproducible_and_rotation_invariant(small_splits):
    model = _small_model()
    runs = [pca_contraction(model, *small_splits, seed=0, progress=False) for _ in range(2)]
    assert runs[0] == runs[1]
    res = runs[0]
    assert res["dims"] == log_spaced_dims(256) and res["dims"][-1] == 256
    assert all(np.diff(res["explained_variance"]) >= 0) and res["explained_variance"][-1] == pytest.approx(1)
    assert res["saturation"]["nn"] in res["dims"] and res["saturation"]["svm"] in res["dims"]
    # All components: a rotation of the standardized features, so 1-NN (ℓ2) is unchanged.
    train, test = averaged_features(model, small_splits[0], [2], progress=False), \
        averaged_features(model, small_splits[1], [2], progress=False)
    s_train, s_test = standardize(train.features[2], test.features[2])
    full = classifier_accuracies(s_train, train.labels, s_test, test.labels)
    assert res["nn"][-1] == pytest.approx(full["nn"], abs=1 / len(test))


def test_saturation_and_dims():
    assert saturation_dim([1, 2, 4, 8], [0.2, 0.5, 0.9, 0.9]) == 4
    assert saturation_dim([1, 2, 4, 8], [0.2, 0.95, 0.5, 0.9], tolerance=0.1) == 8
    assert saturation_dim([1, 2, 4, 8], [0.2, 0.5, 0.895, 0.9], tolerance=0.01) == 4
    dims = log_spaced_dims(100, num=5)
    assert dims == [1, 3, 10, 32, 100]


# -- plots ------------------------------------------------------------------------------
def _assert_png(path):
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert img.std() > 0, f"{path} is blank"


def test_plots_render(tmp_path):
    spectrum = {"window": [0, 0, 8, 8], "input_dims": 3, "complete": True, "normalized": [[1, 0.5, 0.01]],
                "condition_number": [100.0]}
    curve = {"blocks": [1, 2, 3], "nn": [0.2, 0.5, 0.9], "svm": [0.3, 0.6, 0.95]}
    pca = {"dims": [1, 3, 10], "nn": [0.2, 0.8, 0.9], "svm": [0.3, 0.85, 0.95], "explained_variance": [0.3, 0.7, 1.0],
           "saturation": {"nn": 10, "svm": 10}}
    _assert_png(save_figure(plot_spectrum(spectrum), tmp_path / "s.png"))
    _assert_png(save_figure(plot_separability({"trained": curve, "untrained": curve}), tmp_path / "sep.png"))
    _assert_png(save_figure(plot_pca(pca), tmp_path / "p.png"))


# -- registry ---------------------------------------------------------------------------
def _analysis_name_literals() -> dict[str, list[str]]:
    """``{name: ["path:line", ...]}``: every string literal of src/irevnet equal to an analysis name.

    Progress-bar labels (``desc=``) say what a bar counts, and ``__all__``/``_MODULE_OF`` list Python
    functions and modules (``analysis.spectrum``): neither names an analysis.
    """
    import ast
    from pathlib import Path

    from irevnet.analysis.registry import NAMES

    root = Path(irevnet.__file__).parent
    found: dict[str, list[str]] = {name: [] for name in NAMES}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        skip = set()
        for node in ast.walk(tree):
            values = []
            if isinstance(node, ast.keyword) and node.arg == "desc":
                values.append(node.value)
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ("__all__", "_MODULE_OF")
                                                    for t in node.targets):
                values.append(node.value)
            if isinstance(node, ast.arguments):  # the default of a parameter called desc
                params = [*node.posonlyargs, *node.args][-len(node.defaults):] if node.defaults else []
                values += [d for p, d in [*zip(params, node.defaults), *zip(node.kwonlyargs, node.kw_defaults)]
                           if p.arg == "desc" and d is not None]
            for value in values:
                skip.update(id(n) for n in ast.walk(value))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in found and id(node) not in skip:
                found[node.value].append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_each_analysis_name_is_written_once():
    """The registry is the one list: the CLI, the suite and the demo read it instead of mirroring names."""
    for name, places in _analysis_name_literals().items():
        assert len(places) == 1 and places[0].startswith("analysis/registry.py:"), (name, places)


def test_every_registered_analysis_runs_and_reports():
    from irevnet.analysis.registry import ANALYSES, default_analyses
    from irevnet.analysis.suite import Context
    from irevnet.cli.demo import BIJECTIVE_ANALYSES, PAPER_ANALYSES

    assert all(callable(getattr(Context, a.name, None)) for a in ANALYSES)
    # The demo runs the paper's analyses on the injective `digits`, the others on the bijective `digits-b`.
    assert not any(a.bijective for a in ANALYSES if a.name in PAPER_ANALYSES)
    assert sorted(PAPER_ANALYSES + BIJECTIVE_ANALYSES) == sorted(a.name for a in ANALYSES)
    assert default_analyses(irevnet.create_model("digits", blocks=(1, 1))) == list(PAPER_ANALYSES) + [
        a.name for a in ANALYSES if not a.paper and not a.bijective]

    class Anything(dict):
        """A stand-in result: every key holds another one."""

        def __getitem__(self, key):
            return Anything()

        def get(self, key, default=None):
            return Anything()

        def __bool__(self):
            return True

    figures = [key for a in ANALYSES for key in a.figures(Anything())]
    assert len(figures) == len(set(figures)), "headline figure names must be unique over the analyses"


# -- CLI --------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_end_to_end(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = irevnet.save_model(irevnet.create_model("digits", blocks=(1, 1)), tmp_path / "m.pt")
    out = tmp_path / "out"
    rc = main(["analyze", str(ckpt), "--data", "digits", "--out", str(out), "--max-train", "200",
               "--max-test", "80", "--spectrum-images", "2", "--pairs", "3", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    for name in ANALYSES:
        if name in BIJECTIVE_ONLY:  # skipped by default for this injective model
            assert not (out / f"{name}.json").exists()
            continue
        assert name in printed
        _assert_png(out / f"{name}.png")
        json.loads((out / f"{name}.json").read_text())
    rec = json.loads((out / "reconstruct.json").read_text())
    assert rec["images"] == 80 and rec["dtype"] == "float32"
    # The floor of the 16 images shown by default (float64 passes); the errors of all 80.
    assert rec["floor_images"] == len(rec["per_image_floor_relative_error"]) == 16
    assert len(rec["per_image_relative_error"]) == 80
    # The 80 images are among the test split's; each within its bound (tests/floor.py; digits
    # needs no normalization, so pixel units are the model's).
    kappa = sensitivity(irevnet.load_model(ckpt).eval(), load_digits_split()[1].tensors[0])
    check(rec["mean_relative_error"], kappa.bound().max(), "analyze")
    inter = json.loads((out / "interpolate.json").read_text())
    # At t = 1 the Φ path is Φ⁻¹(Φ(x0)): it differs from x0 by the reconstruction error only.
    assert len(inter["pairs"]) == 3 and inter["mean_abs_difference_from_pixel_path"][0] <= rec["max_abs_error"]
    spec = json.loads((out / "spectrum.json").read_text())
    assert len(spec["condition_number"]) == 2 and all(k >= 1 for k in spec["condition_number"])
    sep = json.loads((out / "separability.json").read_text())
    assert sep["train_images"] == 200 and sep["untrained"] is not None


def test_cli_only_and_errors(tmp_path, capsys):
    ckpt = irevnet.save_model(irevnet.create_model("digits", blocks=(1, 1)), tmp_path / "m.pt")
    out = tmp_path / "out"
    assert main(["analyze", str(ckpt), "--data", "digits", "--out", str(out), "--only", "spectrum",
                 "--window", "0,0,4,4", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["spectrum.json", "spectrum.png"]
    assert json.loads((out / "spectrum.json").read_text())["input_dims"] == 16
    assert main(["analyze", str(ckpt), "--data", "digits", "--out", str(out), "--only", "pca", "spectra"]) == 2
    assert "invalid choice: 'spectra' (choose from 'reconstruct', 'interpolate'" in capsys.readouterr().err
    assert main(["analyze", str(ckpt), "--data", "digits", "--out", str(out), "--window", "1,2,3"]) == 2
    assert "TOP,LEFT,HEIGHT,WIDTH" in capsys.readouterr().err
    assert main(["analyze", str(ckpt), "--data", "digits", "--out", str(out), "--only", "spectrum",
                 "--window", "6,6,4,4", "--force"]) == 2
    assert "does not fit" in capsys.readouterr().err
    rgb = irevnet.save_model(irevnet.create_model("cifar10", blocks=(1, 1, 1)), tmp_path / "rgb.pt")
    assert main(["analyze", str(rgb), "--data", "digits", "--out", str(tmp_path / "rgb")]) == 2
    assert "expects 3 channel" in capsys.readouterr().err
    model = irevnet.create_model("digits", blocks=(1, 1))
    with pytest.raises(ValueError, match="unknown analysis 'spectra'"):
        run_analyses(model, *load_digits_split(), out, ["spectra"], AnalysisOptions(progress=False))
    renamed = run_analyses(model, *load_digits_split(), tmp_path / "renamed", ["spectrum"],
                           AnalysisOptions(spectrum_images=1, progress=False), stems={"spectrum": "jacobian"})
    assert sorted(p.name for p in (tmp_path / "renamed").iterdir()) == ["jacobian.json", "jacobian.png"]
    assert json.loads((tmp_path / "renamed" / "jacobian.json").read_text()) == renamed["spectrum"]


def test_the_suite_measures_the_floor_of_as_many_images_as_asked(tmp_path):
    """floor_images=N: N floors; 0: none (not the default, the images shown); the errors of every image."""
    torch.manual_seed(0)
    model = irevnet.create_model("digits", blocks=(1, 1))
    train, test = load_digits_split()
    test = TensorDataset(*(t[:20] for t in test.tensors))
    for asked, floors in ((None, 4), (7, 7), (0, 0)):
        res = run_analyses(model, train, test, tmp_path / str(asked), ["reconstruct"],
                           AnalysisOptions(num_images=4, floor_images=asked, progress=False))["reconstruct"]
        assert res["floor_images"] == floors and len(res["per_image_relative_error"]) == 20
        assert (res["floor_relative_error"] is None) == (floors == 0)


def test_cli_analyzes_one_tree_of_class_folders_with_val_split(tmp_path, capsys):
    """The held-out part is the test split, the rest the training split; without --val-split the
    refusal names the flag, which analyze has."""
    from PIL import Image

    for c in ("ant", "bee"):
        (tmp_path / "flat" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "flat" / c / f"{i}.png")
    model = irevnet.create_model("digits", blocks=(1, 1), input_shape=(3, 8, 8), num_classes=2)
    ckpt = irevnet.save_model(model, tmp_path / "m.pt")
    args = ["analyze", str(ckpt), "--data", "imagefolder", "--data-dir", str(tmp_path / "flat"), "--only",
            "reconstruct", "--no-progress", "--out"]
    assert main([*args, str(tmp_path / "whole")]) == 2
    assert "analyze: error: " in (err := capsys.readouterr().err) and "(see --val-split)" in err
    assert main([*args, str(tmp_path / "out"), "--val-split", "0.5"]) == 0
    assert json.loads((tmp_path / "out" / "reconstruct.json").read_text())["images"] == 6  # 3 of each class
