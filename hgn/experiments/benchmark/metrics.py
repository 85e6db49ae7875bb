"""The benchmark's glue to the published metrics: DeepMind's valid prediction time
(:mod:`hgn.evaluation.dm_vpt`) and SyMetric (:mod:`hgn.evaluation.symetric`), computed
from any :class:`~hgn.models.SequenceModel` through its declared interface only.

**DeepMind VPT.** Forward: the model reads the first ``context_frames`` frames of a test
sequence; its state (at frame ``state_offset`` of them) is rolled out with the trained
dt and decoded, and the ``horizon`` frames *after the last frame it read* are scored
against the true ones (frames the encoder saw are not predictions). Backward, for a
model that can run backwards: the same from the window of the *last* ``context_frames``
frames, rolled out with −dt, scoring the ``horizon`` frames before that window. The
number is the median over sequences, the two directions averaged
(:func:`hgn.evaluation.dm_vpt.dm_vpt`); a model that cannot run backwards gets its
forward median and the reason, never an invented backward one. Its caveat
(:data:`hgn.evaluation.dm_vpt.CAVEAT`) is printed wherever it is shown.

**SyMetric's latents: sliding windows.** The state at frame t is what the model infers
from the ``context_frames`` frames whose ``state_offset``-th is t (the window starting at
``t − state_offset``), so every model is asked for the state *of the same frame*, each
from its own context: ``symetric_steps`` consecutive frames per trajectory, with the
simulator's (q, p) at the same frames as the truth. The latent is the state flattened,
[q, p] (HGN's 16×4×4 q and p become 256 + 256 dimensions, which SyMetric fits at order 1).

**SyMetric's variances: model-agnostic.** SyMetric keeps latent pairs whose mean
posterior variance is below 0.5, a rule written for a VAE's z under a unit-normal prior.
Not every model's state is such a z (HGN's state is f_ψ(z); RGN's, LSTM's are not
variational at all), so we measure the same thing from outside: per state dimension,
the variance of ``encode(frames, sample=True)`` over :data:`SAMPLE_DRAWS` draws (the
posterior spread, propagated through whatever maps z to the state), divided by that
plus the variance of the posterior means over all the batch's points. This is the
posterior variance in units in which the aggregate posterior has unit variance: where
the aggregate matches the unit prior (the VAE case the rule was written for) it is the
reference's number, and it is blind to the arbitrary scale of a state that is not z. A
deterministic model's draws do not spread: every dimension that varies is kept (the
reference's rule for deterministic models); one that never varies carries nothing and is
dropped (its ratio is set to 1).

Each SyMetric batch is :data:`SYMETRIC_TRAJECTORIES` trajectories × ``symetric_steps``
states, scored on its own; the score, R² and sym reported are means over batches, as
the reference reports its score (20 batches of 5 × 60).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from hgn import data as hgn_data
from hgn import plots
from hgn.data import to_frames
from hgn.evaluation.dm_vpt import THRESHOLD, dm_vpt, valid_prediction_time
from hgn.evaluation.symetric import symetric
from hgn.models import SequenceModel, State
from hgn.utils import UserError

SYMETRIC_TRAJECTORIES = 5
"""Trajectories per SyMetric batch (the reference's)."""
SAMPLE_DRAWS = 8
"""Posterior draws per state for the variance estimate."""
NO_STATES = "no true states (imported data)"


def flat(state: State) -> Tensor:
    """A state with leading axis B as ``(B, 2m)``, laid out [q, p]. Where p is not the
    partner of q (its size differs: an LSTM's or a GRU's p is its recurrent memory, not a
    momentum), the phase space a model claims is the latent it decodes, q, read as its
    halves [q₁, q₂]."""
    q, p = state.q.flatten(1), state.p.flatten(1)
    if q.shape[1] != p.shape[1]:
        return q
    return torch.cat([q, p], dim=1)


def _windows(frames: Tensor, count: int, context: int) -> Tensor:
    """``count`` windows of ``context`` frames from ``frames (T, 3, H, W)``, starting at
    frames 0, 1, …: ``(count, context, 3, H, W)``."""
    index = torch.arange(count)[:, None] + torch.arange(context)
    return frames[index.to(frames.device)]


@torch.no_grad()
def sliding_states(
    model: SequenceModel, frames: Tensor, steps: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, int]:
    """The state of each of ``steps`` consecutive frames of every sequence of ``frames``
    ``(N, T, 3, H, W)``, each from the window that puts it at ``state_offset``.

    Returns the posterior means ``(N, S, 2m)``, the posterior variances over
    :data:`SAMPLE_DRAWS` draws ``(N, S, 2m)``, and the first frame described (the states
    are of frames ``first … first + S − 1``; ``S = min(steps, T − context + 1)``).
    """
    context, offset = model.context_frames, model.state_offset
    count = min(steps, frames.shape[1] - context + 1)
    if count < 2:
        raise UserError(
            f"the test sequences ({frames.shape[1]} frames) leave fewer than 2 windows of "
            f"the model's {context} frames"
        )
    means, variances = [], []
    with torch.random.fork_rng(devices=_devices(frames)):
        torch.manual_seed(seed)
        for sequence in frames:
            windows = _windows(sequence, count, context)
            mean = flat(model.encode(windows))
            draws = torch.stack(
                [flat(model.encode(windows, sample=True)) for _ in range(SAMPLE_DRAWS)]
            )
            means.append(mean.double().cpu().numpy())
            variances.append(draws.double().var(0, unbiased=False).cpu().numpy())
    return np.stack(means), np.stack(variances), offset


def relative_variance(means: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """Per dimension ``(2m,)``: mean posterior variance / (itself + the variance of the
    posterior means over all points); 1 for a dimension that never varies."""
    spread = means.reshape(-1, means.shape[-1]).var(axis=0)
    posterior = variances.reshape(-1, variances.shape[-1]).mean(axis=0)
    total = spread + posterior
    return np.where(total > 0, posterior / np.where(total > 0, total, 1.0), 1.0)


@torch.no_grad()
def symetric_of(
    model: SequenceModel,
    split: hgn_data.Split,
    batches: int,
    steps: int,
    device: torch.device,
    seed: int = 0,
) -> dict[str, Any]:
    """SyMetric of ``model`` on ``split``'s first ``batches`` × 5 trajectories, or
    ``{"n/a": reason}`` on data without true states."""
    if not split.has_states:
        return {"n/a": NO_STATES}
    n = min(len(split), batches * SYMETRIC_TRAJECTORIES)
    results = []
    for lo in range(0, n, SYMETRIC_TRAJECTORIES):
        hi = min(lo + SYMETRIC_TRAJECTORIES, n)
        frames = to_frames(np.asarray(split.images[lo:hi]), device)
        try:
            z, var, first = sliding_states(model, frames, steps, seed)
        except UserError as exc:
            return {"n/a": str(exc)}
        frames_used = slice(first, first + z.shape[1])
        q = np.asarray(split.q[lo:hi])[:, frames_used]
        p = np.asarray(split.p[lo:hi])[:, frames_used]
        s = np.concatenate([q, p], axis=-1)
        results.append(symetric(z, relative_variance(z, var), s, seed=seed))
    return {
        "score": float(np.mean([r.score for r in results])),
        "r2": float(np.mean([r.r2 for r in results])),
        "sym": float(np.mean([r.sym for r in results])),
        "orders": [r.order for r in results],
        "kept": [r.kept for r in results],
        "reasons": [r.reason for r in results],
        "batches": len(results),
        "trajectories_per_batch": SYMETRIC_TRAJECTORIES,
        "states_per_trajectory": int(z.shape[1]),
        "latent_dims": int(z.shape[-1]),
        "variance": "posterior draws / (draws + spread of means), see metrics.py",
    }


def _devices(frames: Tensor) -> list[int]:
    return [frames.device.index or 0] if frames.device.type == "cuda" else []


@torch.no_grad()
def dm_vpt_of(
    model: SequenceModel,
    split: hgn_data.Split,
    horizon: int,
    max_sequences: int,
    batch_size: int,
    device: torch.device,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """DeepMind's VPT of ``model`` on ``split`` (module docs), and the first sequence's
    forward prediction and truth (uint8 ``(H, h, w, 3)``, from frame ``first``, the one
    after the window) for the rollout strip."""
    context, offset, dt = model.context_frames, model.state_offset, model.trained_dt
    length = split.meta["steps"] + 1
    horizon = min(horizon, length - context)
    if horizon < 1:
        reason = (
            f"the test sequences ({length} frames) leave no frame after a {context}-frame window"
        )
        return {"n/a": reason}, {}
    backward_cannot = None
    try:
        model.check_rollout(-dt)
    except UserError as exc:
        backward_cannot = str(exc)
    n = min(len(split), max_sequences)
    forward, backward = [], []
    strip: dict[str, np.ndarray] = {}
    for lo in range(0, n, batch_size):
        frames = to_frames(np.asarray(split.images[lo : min(lo + batch_size, n)]), device)
        state = model.encode(frames[:, :context])
        ahead = context - 1 - offset  # steps from the state to the window's last frame
        pred = model.decode(model.rollout(state, ahead + horizon, dt))[:, ahead + 1 :]
        truth = frames[:, context : context + horizon]
        forward.append(valid_prediction_time(truth, pred.float()))
        if lo == 0:
            strip = {
                "truth": _uint8(truth[0]),
                "forward": _uint8(pred[0]),
                "first": np.asarray(context),  # the frame index of forward[0]
            }
        if backward_cannot is None:
            first = length - context  # the last window's first frame
            state = model.encode(frames[:, first:])
            pred = model.decode(model.rollout(state, offset + horizon, -dt))[:, offset + 1 :]
            truth = frames[:, first - horizon : first].flip(1)
            backward.append(valid_prediction_time(truth, pred.float()))
    fwd = torch.cat(forward)
    bwd = torch.cat(backward) if backward else None
    result: dict[str, Any] = {
        "vpt": dm_vpt(fwd, bwd),
        "forward_median": dm_vpt(fwd),
        "backward_median": None if bwd is None else dm_vpt(bwd),
        "horizon": horizon,
        "sequences": n,
        "threshold": THRESHOLD,
        "forward_per_sequence": fwd.tolist(),
        "backward_per_sequence": None if bwd is None else bwd.tolist(),
    }
    if backward_cannot is not None:
        result["backward_cannot"] = backward_cannot
    return result, strip


def _uint8(images: Tensor) -> np.ndarray:
    return plots.to_uint8(plots.hwc(images.float().clamp(0, 1)))
