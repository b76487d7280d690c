"""The paper's analyses, one module each; every function returns plain data (or tensors).

- :mod:`.inversion`: Φ⁻¹(Φ(x)) and interpolations in Φ and in pixel space (Figure 5).
- :mod:`.spectrum`: singular values of ∂Φ/∂x on a pixel window (Figure 4).
- :mod:`.features`: batched, spatially averaged block features Φ_j.
- :mod:`.separability`: 1-NN / linear-SVM accuracy with depth (Figure 6).
- :mod:`.pca`: accuracy on the top-d principal components of Φ (Figure 7).
- :mod:`.invariance`: metamers, inputs with another image's logits and everything else of their own
  (bijective models; Jacobsen et al., ICLR 2019).
- :mod:`.edits`: Φ⁻¹ after swapping regions or channel groups of Φ between images, or zeroing them.
- :mod:`.ood`: AUROC of exact log-densities between test images and shifted copies
  (bijective models; Nalisnick et al., ICML 2019).
- :mod:`.plotting`: the figures; :mod:`.registry`: the suite's analyses, each declared once;
  :mod:`.suite`: all of them as PNG + JSON files.

Names are imported on first use (PEP 562): the classifier and eigensolver stacks
(scikit-learn, SciPy) cost seconds at start-up, and a command that only reconstructs
should not pay for them.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_MODULE_OF = {
    **dict.fromkeys(
        ["FeatureSet", "averaged_features", "extract_splits", "select_blocks", "subsample", "untrained_like"],
        "features",
    ),
    **dict.fromkeys(["head_statistics", "impose_head_statistics", "metamer_report", "metamers"], "invariance"),
    **dict.fromkeys(["edit_and_invert", "quadrants", "representation_edits", "stage_ends"], "edits"),
    **dict.fromkeys(["OOD_SHIFTS", "auroc", "log_prob_per_dim", "ood_detection", "shifted_copies"], "ood"),
    **dict.fromkeys(["log_spaced_dims", "pca_contraction", "pca_from_features", "saturation_dim"], "pca"),
    **dict.fromkeys(
        [
            "Reconstruction",
            "conditioning_floor",
            "interpolate",
            "interpolation_errors",
            "pairs_of_different_classes",
            "pixel_interpolate",
            "reconstruct",
            "reconstruct_batches",
        ],
        "inversion",
    ),
    **dict.fromkeys(
        ["classifier_accuracies", "linear_separability", "separability_from_features", "standardize"], "separability"
    ),
    **dict.fromkeys(
        ["default_window", "float32_error_bound", "jacobian_singular_values", "jacobian_spectrum", "spectrum_summary"],
        "spectrum",
    ),
}

__all__ = sorted(_MODULE_OF)

__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF, globals())
