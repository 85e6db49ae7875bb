"""The numbers every protocol reports: per-step MSE of rollouts and of the mean image,
the noise floor, error and energy statistics, and hgn's valid prediction time.

Noise floor: the data renders every frame from a freshly noised state, so even a model
that knew the true trajectory could not beat E[render(q + noise)]; its MSE is reported
next to the mean-image baseline (at the paper's noise levels it is a large part of it).

Valid prediction time: the predicted frames before a sequence's per-frame MSE first
exceeds a threshold placed ``vpt_fraction`` of the way from the noise floor to the
mean-image MSE (:func:`vpt_threshold`; default ½: a prediction stops counting once it
has lost half of what separates a perfect model from ignoring the input). A threshold
of ½ × the mean-image MSE alone lies below the noise floor on three-body, where even a
perfect model would score 0. DeepMind's definition is :mod:`hgn.evaluation.dm_vpt`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hgn import data as hgn_data
from hgn.data import to_frames
from hgn.evaluation.physics import bind_rows
from hgn.models import SequenceModel
from hgn.utils import (
    UserError,
    numpy_rng,
)

SCALE = 1e4
"""The paper reports MSE and energy variance multiplied by 1e4."""

NO_STATES = (
    "the data has no true states (imported): the metrics that need them (noise floor, "
    "physical position error, sample physics) are skipped"
)
"""What ``hgn evaluate`` says, once, about imported data."""


@torch.no_grad()
def rollout_errors(
    model: SequenceModel,
    split: hgn_data.Split,
    n: int,
    batch_size: int,
    device: torch.device,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence, per-step MSE ``(n, T+1)`` and learned energy ``(n, T+1)``."""
    steps = split.meta["steps"]
    mses, energies = [], []
    for start in tqdm(
        range(0, n, batch_size), desc=f"evaluate {split.meta['split']}", disable=not progress
    ):
        frames = to_frames(np.asarray(split.images[start : min(start + batch_size, n)]), device)
        out = model.predict(frames, steps)
        mses.append((out["images"].float() - frames).square().mean((2, 3, 4)).cpu())
        energies.append(out["energy"].float().cpu())
    return torch.cat(mses).numpy(), torch.cat(energies).numpy()


def baseline_errors(split: hgn_data.Split, mean: torch.Tensor, n: int) -> np.ndarray:
    """Per-sequence, per-step MSE ``(n, T+1)`` of always predicting ``mean`` (3, H, W)."""
    out = []
    for start in range(0, n, 256):
        frames = to_frames(np.asarray(split.images[start : min(start + 256, n)]), "cpu")
        out.append((frames - mean).square().mean((2, 3, 4)))
    return torch.cat(out).numpy()


def noise_floor(split: hgn_data.Split, n: int, draws: int = 32, seed: int = 0) -> float:
    """The per-pixel MSE of the best possible prediction of the (noisy) frames.

    The data renders q + ε with fresh noise ε in every frame, which no model can
    predict; the optimal prediction under squared error given the true clean states is
    E_ε[render(q + ε)], estimated here from ``draws`` noisy renders (the estimate is
    biased up by about 1/draws of itself). Any model's MSE is at least this number.

    The frames are redrawn by the dataset's own simulator (:func:`hgn.data.system_of`:
    picture style, random colours, varied constants and canvas shifts bound per
    sequence), since any other renderer would put its own differences into the floor.
    Imported data has no states to redraw: a one-line :class:`UserError`.
    """
    meta = split.meta
    if split.q is None:
        raise UserError(f"{split.path}: {NO_STATES}")
    system = bind_rows(hgn_data.system_of(meta), split, slice(0, n))
    q = torch.from_numpy(np.array(split.q[:n])).double()
    rng = numpy_rng(seed, "noise-floor", meta["system"])
    expected = torch.zeros((*q.shape[:2], meta["size"], meta["size"], 3))
    with torch.no_grad():
        for _ in range(draws):
            noisy = q + meta["noise"] * torch.from_numpy(rng.standard_normal(q.shape))
            expected += system.render(noisy, meta["size"]).float() / 255.0
    frames = torch.from_numpy(np.array(split.images[:n])).float() / 255.0
    return float((expected / draws - frames).square().mean())


def error_stats(mse: np.ndarray, first: int = 0) -> dict[str, Any]:
    """Per-step curve (every frame given) and the average over the frames ``first``…T,
    mean ± std over sequences; ``first`` is :func:`first_scored_frame`."""
    per_seq = mse[:, first:].mean(1)
    return {
        "per_step_mean": mse.mean(0).tolist(),
        "per_step_std": mse.std(0).tolist(),
        "mean": float(per_seq.mean()),
        "std": float(per_seq.std()),
        "mean_x1e4": float(per_seq.mean() * SCALE),
        "std_x1e4": float(per_seq.std() * SCALE),
    }


def energy_stats(energy: np.ndarray) -> dict[str, float]:
    """H's level and its variance along each rollout (Table 2), over sequences."""
    var = energy.var(1)
    level = np.abs(energy.mean(1))
    return {
        "mean": float(energy.mean()),
        "var_mean": float(var.mean()),
        "var_std": float(var.std()),
        "var_mean_x1e4": float(var.mean() * SCALE),
        "relative_std": float((np.sqrt(var) / np.maximum(level, 1e-12)).mean()),
    }


def first_scored_frame(context: int, steps: int) -> int:
    """The first frame the averaged errors count: ``context`` in the prefix protocol
    (the encoder saw frames 0…context-1; only the rest are predictions), 0 in the paper's
    protocol (the encoder sees all T+1 frames and the paper scores all of them)."""
    return context if context <= steps else 0


def vpt_threshold(baseline_mse: float, floor: float | None, fraction: float = 0.5) -> float:
    """The valid-prediction threshold: ``floor + fraction × (baseline_mse − floor)``.

    ``baseline_mse`` is the mean-image MSE over the scored frames and ``floor`` the
    noise floor (:func:`noise_floor`), None where it is not known (then 0: the old
    ``fraction × baseline``). Without the floor, the threshold on noisy data can lie
    below what a perfect model achieves.
    """
    floor = 0.0 if floor is None else floor
    return floor + fraction * (baseline_mse - floor)


def valid_prediction_time(
    mse: np.ndarray, context: int, threshold: float | np.ndarray
) -> np.ndarray:
    """Predicted frames after the first ``context`` before the MSE first exceeds
    ``threshold`` (all of them if it never does), per sequence. ``threshold`` is one
    number or one per predicted frame (broadcast against ``mse[:, context:]``)."""
    predicted = mse[:, context:]
    bad = predicted > threshold
    return np.where(bad.any(1), bad.argmax(1), predicted.shape[1]).astype(np.int64)


def context_frames(model: SequenceModel, total: int) -> int:
    """How many leading frames the model infers its state from."""
    return min(model.context_frames, total)


def score(
    mse: np.ndarray,
    baseline: np.ndarray,
    available: np.ndarray,
    floor: float = 0.0,
    fraction: float = 0.5,
) -> dict[str, Any]:
    """Numbers of one rollout from per-sequence, per-step MSEs ``(n, steps+1)`` of the
    model and of the mean image; step 0 (the inferred state itself) is not a prediction
    and is left out of the ratio and the valid prediction time. Steps that are not
    ``available`` (no truth) are skipped. The valid-prediction threshold is per frame:
    :func:`~hgn.evaluation.metrics.vpt_threshold` of that frame's own mean-image MSE,
    i.e. ``fraction`` × it on clean data (floor 0) and a level between the noise floor
    and the mean image on noisy data, where no model can beat the floor."""
    steps = mse.shape[1] - 1
    use = available.copy()
    use[0] = False
    model_mean, base_mean = float(mse[:, use].mean()), float(baseline[:, use].mean())
    limit = vpt_threshold(baseline, floor, fraction)
    # frames without truth (and step 0) can never end the valid time: an infinite limit
    vpt = valid_prediction_time(mse, 1, np.where(use, limit, np.inf)[:, 1:])
    curve = np.where(available, mse.mean(0), np.nan)
    threshold_curve = limit.mean(0)
    base_curve = np.where(available, baseline.mean(0), np.nan)
    return {
        "steps": steps,
        "mse_x1e4": model_mean * SCALE,
        "mean_image_mse_x1e4": base_mean * SCALE,
        "ratio": model_mean / max(base_mean, 1e-30),
        "vpt_mean": float(vpt.mean()),
        "vpt_std": float(vpt.std()),
        "vpt_median": float(np.median(vpt)),
        "vpt_full_fraction": float((vpt == steps).mean()),
        "per_step_mse": listed(curve),
        "per_step_mean_image_mse": listed(base_curve),
        "per_step_threshold": listed(np.where(available, threshold_curve, np.nan)),
    }


def listed(values: np.ndarray) -> list[float | None]:
    """NaN-free JSON list (None where a value is missing)."""
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(values, float)]
