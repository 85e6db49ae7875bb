"""DeepMind's valid prediction time (Botev et al. 2021, "Which priors matter?").

The latent-dynamics benchmark that HGN++ comes from (docs/SCIENCE.md §3a) judges a model
by how many extrapolated frames it predicts before a frame goes wrong. "Wrong" there is
one fixed rule for every dataset: a frame's mean squared pixel error, divided by the
mean squared intensity of the true frame, exceeds 0.025. A sequence's VPT is the number
of leading frames under that bound (the index of the first frame over it, or the whole
length if none is); the benchmark reports the median over sequences, and for models
that also run backwards the average of the forward and the backward medians.

hgn's own valid prediction time (docs/SCIENCE.md §5a) uses a different, per-frame
threshold tied to the mean image; this module is the published one, kept separate so
that numbers can be set beside the benchmark's.

Caveat (:data:`CAVEAT`): dividing by mean(x²) makes the ratio small whenever the true
frame is bright. On hgn's paper-style rendering (light background) an ideal observer
whose states are off by 1 % scores the full length on every system, so the metric does
not discriminate there; it does on the dark-background ``dm-*`` presets, which render
like the benchmark's data.

Two choices of ours, both where the reference leaves a case unhandled:

- a NaN ratio counts as over the bound (a NaN prediction is not a valid one; the
  reference's ``ratio > threshold`` is False for NaN and would count it as valid), and
  so does an all-black true frame (mean(x²) = 0): its ratio is ``inf`` or NaN;
- a ratio exactly equal to the threshold is valid, as in the reference (``>`` fails).
"""

from __future__ import annotations

import torch
from torch import Tensor

THRESHOLD = 0.025
"""The benchmark's bound on a frame's normalised squared error."""

CAVEAT = (
    "DeepMind's VPT divides each frame's squared error by the true frame's mean squared "
    "intensity, so it is lenient on a light background (on hgn's paper-style rendering an "
    "ideal observer with 1 % state error scores full marks on every system) and "
    "discriminates only on the dark-background dm-* presets."
)
"""One sentence that reports print beside a DeepMind VPT number."""


def normalized_errors(truth: Tensor, pred: Tensor) -> Tensor:
    """Per frame: mean over pixels of (x − x̂)², divided by the mean over pixels of x².

    ``truth`` and ``pred`` are ``(B, T, C, H, W)``; returns ``(B, T)`` in at least float32
    (integer frames are converted first). The division is what makes the bound one
    number for every dataset: it is relative to how much signal the true frame holds.
    """
    if truth.shape != pred.shape or truth.dim() != 5:
        raise ValueError(
            f"truth and pred must both be (B, T, C, H, W); got {tuple(truth.shape)} "
            f"and {tuple(pred.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(truth.dtype, pred.dtype), torch.float32)
    x, x_hat = truth.to(dtype), pred.to(dtype)
    pixels = (2, 3, 4)
    return (x - x_hat).square().mean(dim=pixels) / x.square().mean(dim=pixels)


def valid_prediction_time(truth: Tensor, pred: Tensor, threshold: float = THRESHOLD) -> Tensor:
    """Per sequence, the number of leading frames whose normalised error is ≤ ``threshold``.

    ``(B, T, C, H, W)`` frames in, ``(B,)`` int64 frame counts out: ``T`` for a sequence
    that never exceeds the bound, ``k`` for one whose first bad frame is frame ``k``
    (frames after it do not count even if they are good again). A NaN ratio exceeds.
    Pass the extrapolated frames only: frames the model saw are not predictions.
    """
    ratio = normalized_errors(truth, pred)
    valid = ratio <= threshold  # False for NaN, so a NaN frame is invalid
    return torch.cumprod(valid.to(torch.int64), dim=1).sum(dim=1)


def dm_vpt(forward: Tensor, backward: Tensor | None = None) -> float:
    """The benchmark's number: the median VPT over sequences, forward and backward averaged.

    ``forward`` (and ``backward``, for models that run backwards) are the ``(B,)`` outputs
    of :func:`valid_prediction_time`. The median is numpy's (the mean of the two middle
    values for an even count), as in the reference; ``torch.median`` would take the lower.
    """
    medians = [_median(forward)]
    if backward is not None:
        medians.append(_median(backward))
    return sum(medians) / len(medians)


def _median(values: Tensor) -> float:
    """The median of a non-empty 1-D tensor, averaging the two middle values."""
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"expected a non-empty (B,) tensor of VPTs, got {tuple(values.shape)}")
    return float(values.detach().to(torch.float64).quantile(0.5))
