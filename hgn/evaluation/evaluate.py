"""The paper's evaluation protocol (Tables 1–2, Figures 6–8).

The model infers the state from the frames its config says the encoder sees (all of
them in the paper; a prefix of k frames in the stricter protocol), rolls out T steps,
decodes, and every frame 0…T is compared with the ground-truth frame: per-pixel MSE per
step, then averaged over the scored frames and given as mean and standard deviation over
sequences. The scored frames (:func:`~hgn.evaluation.metrics.first_scored_frame`) are
the predicted ones: all T+1 in the paper's protocol, only those after the prefix in the
prefix protocol (the frames the encoder saw are reconstructions, not predictions; ``hgn
reproduce`` uses the same definition). For scale, the same numbers are given for the
mean-image baseline (always predict the training set's average frame), which is what a
model that learned no dynamics converges to (the paper's HNN failure mode), and the
noise floor (:func:`~hgn.evaluation.metrics.noise_floor`).

Energy (Table 2): the learned H along each rollout; its variance over the rollout,
averaged over sequences. Valid prediction time (prefix protocol only): see
:mod:`hgn.evaluation.metrics`.

Imported data (``hgn data import``) has frames but no true states: the numbers that need
them (the noise floor, physical position errors, the physics of prior samples) are
skipped, the valid-prediction threshold falls back to a floor of 0, and evaluate says so
once on the terminal and once in metrics.md (:data:`~hgn.evaluation.metrics.NO_STATES`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hgn import data as hgn_data
from hgn.evaluation.metrics import (
    baseline_errors,
    context_frames,
    energy_stats,
    error_stats,
    first_scored_frame,
    noise_floor,
    rollout_errors,
    valid_prediction_time,
    vpt_threshold,
)
from hgn.models import SequenceModel


def data_name(meta: dict[str, Any]) -> str:
    """What the data is, for reports: its system, or where it was imported from."""
    return str(meta.get("system") or meta.get("source") or "unknown data")


def protocol_of(model: SequenceModel, steps: int) -> dict[str, Any]:
    """How the protocol applies to ``model`` on sequences of ``steps`` steps: the frames
    the encoder reads and the first frame the averages score."""
    context = context_frames(model, steps + 1)
    return {
        "protocol": "paper (encoder sees every frame)" if context > steps else "prefix",
        "context_frames": context,
        "first_scored_frame": first_scored_frame(context, steps),
        "unroll_steps": steps,
    }


@torch.no_grad()
def score_split(
    model: SequenceModel,
    split: hgn_data.Split,
    mean: torch.Tensor,
    *,
    n: int,
    batch_size: int,
    device: torch.device,
    vpt_fraction: float,
    progress: bool = True,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """One split's numbers (Tables 1–2, the valid time in the prefix protocol), and the
    per-sequence, per-step MSE of the model and of the mean image, and the learned
    energy along each rollout."""
    steps = split.meta["steps"]
    where = protocol_of(model, steps)
    context, first = where["context_frames"], where["first_scored_frame"]
    mse, energy = rollout_errors(model, split, n, batch_size, device, progress)
    base = baseline_errors(split, mean, n)
    floor = noise_floor(split, min(n, 200)) if split.has_states else None
    base_mean = float(base[:, first:].mean())
    result: dict[str, Any] = {
        "n": n,
        "mse": error_stats(mse, first),
        "baseline_mse": error_stats(base, first),
        "ratio_to_baseline": float(mse[:, first:].mean()) / base_mean,
        "noise_floor_mse": floor,
        "noise_floor_ratio": None if floor is None else floor / base_mean,
        "energy": energy_stats(energy),
        "vpt": None,
    }
    if context <= steps:
        threshold = vpt_threshold(base_mean, floor, vpt_fraction)
        vpt = valid_prediction_time(mse, context, threshold)
        result["vpt"] = {
            "threshold": threshold,
            "steps_mean": float(vpt.mean()),
            "steps_std": float(vpt.std()),
            "of": steps + 1 - context,
        }
    return result, mse, base, energy
