"""Scores of a reconstructed CT against the ground truth, in the conventions papers use.

Papers on this task report PSNR and SSIM computed in different ways (methods.md,
"Metrics: two conventions"); numbers are only comparable within one convention,
so every result here is labelled with its convention. ``evaluate`` computes all
of them; the pieces are importable on their own:

- ``x2ct_metrics``, ``repeat_concatenate_metrics``, ``honest_metrics`` (conventions),
- ``lung_dice``, ``lung_mask``, ``lung_label_ids`` (anatomy),
- ``reprojection_consistency`` and ``ncc`` (agreement with the input X-rays),
- ``psnr``, ``ssim_by_slice``, ``ssim_3d`` (building blocks).
"""

from x2ct.metrics.conventions import honest_metrics, repeat_concatenate_metrics, x2ct_metrics
from x2ct.metrics.core import ncc, psnr, ssim_3d, ssim_by_slice
from x2ct.metrics.evaluation import (CONVENTIONS, DEFAULT_HU_RANGE, evaluate, evaluate_volumes, json_ready,
                                     normalise_hu)
from x2ct.metrics.lung import dice, lung_dice, lung_label_ids, lung_mask
from x2ct.metrics.reprojection import reprojection_consistency

__all__ = [
    "CONVENTIONS", "DEFAULT_HU_RANGE", "dice", "evaluate", "evaluate_volumes", "honest_metrics", "json_ready",
    "lung_dice", "lung_label_ids", "lung_mask", "ncc", "normalise_hu", "psnr", "reprojection_consistency",
    "repeat_concatenate_metrics", "ssim_3d", "ssim_by_slice", "x2ct_metrics",
]
