"""The analyses of the suite, each declared once: its name, what it needs, what it reports.

An :class:`Analysis` names one figure of the suite (``OUT/NAME.png`` + ``OUT/NAME.json``),
says whether it needs a bijective model, where it comes from (a figure of the paper or
beyond it), its headline figures (named numbers, e.g. the demo's ``metrics.json``), a
one-line headline and a report section. The computation and the figure are the method of
the same name of :class:`irevnet.analysis.suite.Context`. ``irevnet analyze``,
``irevnet demo`` and the demo's report read this table; nothing else lists analysis
names or reads their result keys.

This module imports only the standard library: the command line lists the names
without loading torch, scikit-learn or matplotlib.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..model import IRevNet

__all__ = ["ANALYSES", "NAMES", "Analysis", "check_analyses", "default_analyses", "get"]

#: An analysis's JSON-ready result (what ``OUT/NAME.json`` holds).
Result = dict[str, Any]


@dataclass(frozen=True)
class Analysis:
    """One analysis of the suite.

    ``paper``: it reproduces a result of the paper (else it goes beyond it). ``bijective``: it
    needs Φ⁻¹ defined everywhere or a density on Φ. ``figures(result)``: headline figures,
    ``{metric name: JSON value}``, the names unique over all analyses. ``headline(result)``:
    one line of text. ``details(result)``: Markdown shown under the figure in a report (a
    table), or None. ``about``: what the figure shows, one paragraph of Markdown.
    """

    name: str
    title: str
    about: str
    figures: Callable[[Result], dict[str, Any]]
    headline: Callable[[Result], str]
    paper: bool = False
    bijective: bool = False
    details: Callable[[Result], str] | None = field(default=None)

    # ``context`` is an irevnet.analysis.suite.Context; not imported, even for type checking,
    # because the suite imports this registry (no circle of imports in the package).
    def run(self, context: Any) -> tuple[Result, Figure]:
        """``(result, figure)`` of this analysis on the context's model and splits."""
        method: Callable[[], tuple[Result, Figure]] = getattr(context, self.name)
        return method()

    def section(self, result: Result, figure: str, *, level: int = 2) -> str:
        """A Markdown report section: title, what the figure shows, the headline, the figure file, details."""
        parts = [
            f"{'#' * level} {self.title}",
            self.about,
            f"Result: {self.headline(result)}.",
            f"![{self.name}]({figure})",
        ]
        if self.details is not None:
            parts.append(self.details(result))
        return "\n\n".join(parts) + "\n"


def _numbers(values: Sequence[float], fmt: str = ".3g") -> str:
    return ", ".join(format(v, fmt) for v in values)


# -- the paper's analyses ---------------------------------------------------------------------------


def _reconstruct_headline(r: Result) -> str:
    floor = r["floor_relative_error"]
    return (
        f"{r['dtype']}: max abs error {r['max_abs_error']:.2e}, mean relative error "
        f"{r['mean_relative_error']:.2e}" + (f" (conditioning floor {floor:.2e})" if floor is not None else "")
    )


RECONSTRUCT = Analysis(
    "reconstruct",
    title="Reconstructions from Φ",
    about="Top row: test images. Bottom row: Φ⁻¹(Φ(x)), computed from the final representation alone. "
    "Errors are in pixel values; the conditioning floor is the error of the exact (float64) inverse of Φ "
    "rounded to the model's dtype.",
    figures=lambda r: {
        "reconstruction_max_abs_error": r["max_abs_error"],
        "reconstruction_mean_relative_error": r["mean_relative_error"],
        "reconstruction_floor_relative_error": r["floor_relative_error"],
    },
    headline=_reconstruct_headline,
    paper=True,
)

INTERPOLATE = Analysis(
    "interpolate",
    title="Interpolations in Φ (paper, Figure 5)",
    about='Each "Φ" row walks the straight line between Φ(x0) and Φ(x1) and maps it back with Φ⁻¹; '
    "the row below it is the straight line between the images in pixel space.",
    figures=lambda r: {"interpolation_endpoint_max_abs_error": r["endpoint_max_abs_error"]},
    headline=lambda r: f"{len(r['pairs'])} pairs, endpoint error {r['endpoint_max_abs_error']:.2e}",
    paper=True,
)


def _spectrum_headline(r: Result) -> str:
    if r["condition_number"]:
        text = f"condition number {_numbers(r['condition_number'])}"
    else:
        text = f"σ_1/σ_k (lower bound on the condition number) {_numbers(r['top_ratio'])}"
    top, left, h, w = r["window"]
    text += f" on the {h}x{w} window at ({top}, {left}), {r['input_dims']} input dimensions"
    accuracy = r.get("normalized_abs_error")
    if accuracy:  # float32 columns: each σ_i/σ_1 within this of the exact value
        text += f"; float32 Jacobian, σ_i/σ_1 within ±{max(accuracy):.1e}"
    return text


SPECTRUM = Analysis(
    "spectrum",
    title="Local conditioning: singular values of ∂Φ/∂x (paper, Figure 4)",
    about="Normalized singular values σ_i/σ_1 of the Jacobian of Φ at test images, the perturbation "
    "restricted to a pixel window; a fast decay means the local inverse is ill-conditioned.",
    figures=lambda r: {"jacobian_condition_number": r["condition_number"]},
    headline=_spectrum_headline,
    paper=True,
)


def _separability_table(r: Result) -> str:
    """Markdown table: accuracy at each analysed block, trained and (when computed) untrained."""
    t, u = r["trained"], r["untrained"]
    head = "| block | 1-NN trained | SVM trained |" + (" 1-NN untrained | SVM untrained |" if u else "")
    rows = [
        f"| {j} | {t['nn'][i]:.3f} | {t['svm'][i]:.3f} |" + (f" {u['nn'][i]:.3f} | {u['svm'][i]:.3f} |" if u else "")
        for i, j in enumerate(r["blocks"])
    ]
    return "\n".join([head, "|---" * head.count("|", 1) + "|", *rows])


SEPARABILITY = Analysis(
    "separability",
    title="Progressive linear separation (paper, Figure 6)",
    about="Spatially averaged, standardized Φ_j; 1-NN and linear SVM fit on the training split, test "
    "accuracy. Dashed: the same network before training (same seed).",
    figures=lambda r: {
        "separability_blocks": r["blocks"],
        "separability_nn_trained": r["trained"]["nn"],
        "separability_svm_trained": r["trained"]["svm"],
        "separability_nn_untrained": (r["untrained"] or {}).get("nn"),
        "separability_svm_untrained": (r["untrained"] or {}).get("svm"),
    },
    headline=lambda r: (
        f"last block 1-NN {r['trained']['nn'][-1]:.4f}, SVM {r['trained']['svm'][-1]:.4f} "
        f"(first block {r['trained']['nn'][0]:.4f}, {r['trained']['svm'][0]:.4f})"
    ),
    paper=True,
    details=_separability_table,
)

PCA = Analysis(
    "pca",
    title="Progressive contraction (paper, Figure 7)",
    about="Accuracy on the top-d principal components of the final averaged features; dotted lines mark "
    "where accuracy comes within the tolerance of its value with all components.",
    figures=lambda r: {"pca_saturation_nn": r["saturation"]["nn"], "pca_saturation_svm": r["saturation"]["svm"]},
    headline=lambda r: (
        f"accuracy saturates at d = {r['saturation']['nn']} (1-NN), {r['saturation']['svm']} (SVM) "
        f"of {r['dims'][-1]}, within {r['tolerance']:g}"
    ),
    paper=True,
)

# -- beyond the paper -------------------------------------------------------------------------------

METAMERS = Analysis(
    "metamers",
    title="Metamers (Jacobsen et al., ICLR 2019)",
    about="Each column: x_a, x_b, and a metamer with the logits of x_a (eval mode) that keeps what the "
    "head discards from x_b.",
    figures=lambda r: {
        "metamer_max_logit_relative_error": r["max_logit_relative_error"],
        "metamer_closer_to_b": r["closer_to_b"],
        "metamer_mean_distance_to_a": r["mean_distance_to_a"],
        "metamer_mean_distance_to_b": r["mean_distance_to_b"],
    },
    headline=lambda r: (
        f"max logit rel. error {r['max_logit_relative_error']:.1e}; closer to x_b for "
        f"{r['closer_to_b']:.0%} of {r['pairs']} pairs (mean distance to x_b "
        f"{r['mean_distance_to_b']:.2f}, to x_a {r['mean_distance_to_a']:.2f})"
    ),
    bijective=True,
)


def _ood_table(r: Result) -> str:
    rows = [f"| {k} | {v:.3f} | {r['mean_log_prob_per_dim'][k]:.3f} |" for k, v in r["auroc"].items()]
    return "\n".join(["| copies | AUROC | mean log p(x) per dimension |", "|---|---|---|", *rows])


OOD = Analysis(
    "ood",
    title="Out-of-distribution detection with exact densities (Nalisnick et al., ICML 2019)",
    about="AUROC of log p(x) = log N(Φ(x); 0, I) + log|det| between the test images and shifted, noised "
    "and inverted copies of them (1: every test image is denser than every copy; 0.5: chance).",
    figures=lambda r: {"ood_auroc": r["auroc"], "ood_test_log_prob_per_dim": r["mean_log_prob_per_dim"]["test"]},
    headline=lambda r: "AUROC of log p(x): " + ", ".join(f"{k} {v:.3f}" for k, v in r["auroc"].items()),
    bijective=True,
    details=_ood_table,
)

EDITS = Analysis(
    "edits",
    title="Edits in Φ",
    about="Φ⁻¹ after swapping a quadrant of Φ or one group of its channels from x_b into x_a, or after "
    "zeroing a group of channels at the end of each stage.",
    figures=lambda r: {"edits_mean_change": r["mean_change"]},
    headline=lambda r: (
        "mean share of the x_a→x_b difference carried: "
        + ", ".join(f"{k} {v:.2f}" for k, v in r["mean_change"].items() if r["kind"][k] != "zero")
    ),
)

#: Every analysis, in the order the suite runs them (PCA reuses the features of separability).
ANALYSES: tuple[Analysis, ...] = (RECONSTRUCT, INTERPOLATE, SPECTRUM, SEPARABILITY, PCA, METAMERS, OOD, EDITS)
#: Their names, in the same order.
NAMES: tuple[str, ...] = tuple(a.name for a in ANALYSES)
_BY_NAME = {a.name: a for a in ANALYSES}


def get(name: str) -> Analysis:
    """The analysis called ``name``; ValueError listing the names if there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown analysis {name!r}; choose from {', '.join(NAMES)}") from None


def check_analyses(names: Sequence[str]) -> list[str]:
    """``names`` in the canonical order of :data:`NAMES`; ValueError naming any unknown one."""
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown:
        raise ValueError(f"unknown analysis {', '.join(map(repr, unknown))}; choose from {', '.join(NAMES)}")
    return [n for n in NAMES if n in names]


def default_analyses(model: IRevNet) -> list[str]:
    """Every analysis that applies to ``model`` (the bijective ones only for a bijective model)."""
    return [a.name for a in ANALYSES if not (a.bijective and model.injective)]
