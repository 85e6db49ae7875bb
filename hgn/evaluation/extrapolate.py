"""The extrapolation protocol (docs/SCIENCE.md §5a): do the learned dynamics hold far past the
training window, backward in time, faster and slower?

On a long test set (e.g. 90 steps), per sequence, in batches: the model reads its
``context_frames`` frames from frame ``start`` on, and the state it infers describes
frame ``start + model.state_offset``. By default (``align="start"``) a model whose state
sits later in its window (HGN++: the last of its k frames) is first taken back to the
window's first frame with its own dynamics, as its ``predict`` does for the paper's
protocol, so that every model is scored from the same frame ``s0 = start`` over the
same frames (issue 10's table: 60 steps forward and 30 backward from frame 30 on a
90-step set). The frames between ``start`` and the inferred state were read by the
encoder and are predicted anyway, just as the paper's HGN predicts the 31 frames it
reads. ``align="state"`` starts every rollout at the inferred state instead
(``s0 = start + state_offset``): no frame the encoder read is ever scored. From that
one state at ``s0`` it rolls out

* **forward** to the last frame (dt),
* **backward** to frame 0 (dt → −dt),
* at **2×** speed to the last frame (dt → 2dt; the model sub-steps at its trained dt),
* at **½** speed (dt → dt/2) for as many steps as forward, i.e. half the time,

and each predicted frame is compared with the simulator's frame at the same physical
time. Times between stored frames (½×) are simulated afresh from the stored clean state
at ``s0`` with the dataset's own system and rendered the way the data was (with the
data's observation noise, drawn from a seed derived from the dataset's); stored frames
are used wherever they exist. A quick check that rendering a stored state reproduces its
stored frame guards this; without it (or without a known system) only the steps that land
on stored frames are compared.

Numbers per rollout: the per-step MSE curve; its ratio to the mean-image MSE on the same
frames (1 = no better than always drawing the average frame); the valid prediction time,
the predicted steps before a frame's MSE first exceeds ``floor + f·(mean − floor)``,
with ``mean`` that frame's own mean-image MSE, ``f = ½`` and ``floor`` the data's noise
floor (:func:`hgn.evaluation.evaluate.noise_floor`; 0 on clean data, where the rule is
"half the mean-image error"); and, for the built-in systems, the RMS error of the body
positions read back from the predicted frames (:mod:`hgn.evaluation.physics`) against
the true states, in world units. Besides: the spread of the learned H along a
1,000-step rollout (a conserved H stays flat) and whether the model's integrator can run
backwards at all (measured round trip; an irreversible model still gets its numbers).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from hgn import data as hgn_data
from hgn import plots as viz
from hgn.checks import check_range
from hgn.data import mean_frame, to_frames
from hgn.evaluation import physics
from hgn.evaluation.evaluate import (
    SCALE,
    data_name,
    noise_floor,
    open_run,
    valid_prediction_time,
    vpt_threshold,
)
from hgn.models import SequenceModel, State
from hgn.physics.systems import System
from hgn.utils import (
    UserError,
    atomic_path,
    claim_output_dir,
    numpy_rng,
    positive_int,
    resolve_device,
)

NO_STATES_EXTRAPOLATE = (
    "the data has no true states (imported): rollouts are compared with the stored frames "
    "only (½ speed on every other step), with a noise floor of 0 and no physical position "
    "error"
)
"""What the protocol says, once, about imported data (evaluate's :data:`NO_STATES`
names metrics this protocol does not have)."""

DEFAULT_START = 30
ALIGNS = ("start", "state")
"""Where rollouts start: the window's first frame (default) or the inferred state's."""
DRIFT_STEPS = 1000
DRIFT_SEQUENCES = 16
ROUND_TRIP_STEPS = 30
REVERSIBLE_TOLERANCE = 1e-4
"""Relative round-trip error (forward then backward) below which an integrator counts
as reversible: float32 round-off over tens of steps stays near 1e-6, while Euler or an
explicit leapfrog on a non-separable H miss by a fraction of the step."""

FILES = {
    "json": "extrapolate.json",
    "md": "extrapolate.md",
    "strip": "extrapolate-rollouts.png",
    "gif": "extrapolate-rollouts.gif",
    "errors": "extrapolate-errors.png",
    "energy": "extrapolate-energy.png",
}


@dataclass(frozen=True)
class Rollout:
    """One rollout of the protocol: its name, its speed (dt multiplier; negative runs
    backwards) and how many steps it takes from the state at frame ``s0``."""

    name: str
    label: str
    speed: float

    def steps(self, s0: int, last: int) -> int:
        if self.speed < 0:
            return s0
        if self.speed > 1:
            return (last - s0) // round(self.speed)
        return last - s0

    def frame_of(self, s0: int, steps: int) -> np.ndarray:
        """Physical time of each rollout state, in (possibly fractional) frames."""
        return s0 + self.speed * np.arange(steps + 1)


ROLLOUTS = (
    Rollout("forward", "forward (dt)", 1.0),
    Rollout("backward", "backward (−dt)", -1.0),
    Rollout("2x", "2× speed (2dt)", 2.0),
    Rollout("half", "½ speed (dt/2)", 0.5),
)


# ----------------------------------------------------------------------------- plan


def check_start(start: Any) -> int:
    """``--start`` as an int, or a one-line error for a negative or fractional one."""
    if isinstance(start, bool) or not isinstance(start, int | np.integer) or start < 0:
        raise UserError(f"--start must be a non-negative integer (a frame index), got {start!r}")
    return int(start)


LONGER_GENERATED = "hgn data generate --steps 90"
LONGER_IMPORTED = "hgn data import with longer sequences, e.g. --frames 91 for a video"
"""How to get a longer test set, for the refusals of :func:`plan`: generated data is
regenerated; imported data has no simulator to extend it."""


def plan(
    frames: int, start: int, context: int, offset: int, longer: str = LONGER_GENERATED
) -> dict[str, int]:
    """Check that the protocol fits a test set of ``frames`` frames and return the state
    frame ``s0`` and the steps of each rollout; a one-line :class:`UserError` otherwise,
    whose hint ends in ``longer`` (how to make a longer test set)."""
    last = frames - 1
    start = check_start(start)
    if start > last:
        raise UserError(
            f"--start {start} is past the last frame ({last}) of the test set; "
            f"use a smaller --start or a longer test set ({longer})"
        )
    if start + context - 1 > last:
        raise UserError(
            f"the model reads {context} frames, so a window from --start {start} runs past "
            f"the last frame ({last}); use --start ≤ {max(0, last - context + 1)} or a "
            f"longer test set ({longer})"
        )
    s0 = start + offset
    if last - s0 < 2:
        raise UserError(
            f"the test set is too short for the protocol: the inferred state is at frame "
            f"{s0} and the last frame is {last}; forward and 2× rollouts need at least 2 "
            f"frames after it (make a longer test set: {longer})"
        )
    if s0 < 1:
        raise UserError(
            "--start 0 leaves no earlier frame to roll backward to; use --start ≥ 1 "
            f"(the default is {DEFAULT_START} on a 90-step test set)"
        )
    return {"s0": s0, **{r.name: r.steps(s0, last) for r in ROLLOUTS}}


# ----------------------------------------------------------------------------- truth


class Truth:
    """The simulator's frames (and clean states) of a test split at any multiple of its
    frame step, for a batch of sequences."""

    def __init__(self, split: hgn_data.Split) -> None:
        self.split, self.meta = split, split.meta
        self.render_error: int | None = None
        self.simulation_error: float | None = None
        self.system: System | None = physics.simulator(split)
        if self.system is not None:
            self._check(split)

    def _check(self, split: hgn_data.Split) -> None:
        """Render a few stored (noisy) states and re-simulate a few clean ones: both must
        reproduce what is stored, or in-between times are not trusted."""
        k, t = min(len(split), 4), min(3, self.meta["steps"] + 1)
        system = self.bound(slice(0, k))
        noisy = getattr(split, "q_noisy", None)
        if noisy is not None:
            drawn = system.render(np.array(noisy[:k, :t]), self.meta["size"])
            stored = np.array(split.images[:k, :t])
            self.render_error = int(np.abs(drawn.astype(np.int16) - stored).max())
        q0 = torch.from_numpy(np.array(split.q[:k, 0]))
        p0 = torch.from_numpy(np.array(split.p[:k, 0]))
        qs, _ = system.simulate(q0, p0, self.meta["dt"], t - 1)
        self.simulation_error = float(np.abs(qs.numpy() - np.array(split.q[:k, :t])).max())

    def bound(self, rows: slice) -> System:
        """The simulator with the per-trajectory values (varied constants, colours,
        canvas shifts) of sequences ``rows`` bound, if the data has any."""
        assert self.system is not None
        return physics.bind_rows(self.system, self.split, rows)

    @property
    def resimulates(self) -> bool:
        """Whether times between stored frames can be simulated (else they are skipped)."""
        return (
            self.system is not None
            and self.render_error is not None
            and self.render_error <= 1
            and self.simulation_error is not None
            and self.simulation_error < 1e-3
        )

    def frames(
        self,
        images: np.ndarray,
        q: np.ndarray | None,
        p: np.ndarray | None,
        s0: int,
        speed: float,
        steps: int,
        key: int | str,
        rows: slice,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Frames ``(n, steps+1, H, W, 3)`` uint8, clean states ``(n, steps+1, dof)`` (None
        without states) and which steps are available ``(steps+1,)``, for a batch whose
        whole sequences are ``images (n, T+1, H, W, 3)`` and states ``q, p (n, T+1, dof)``.
        States at ``s0 + k·speed`` frames (``k = 0…steps``); ``key`` (e.g. the rollout
        and the batch's first row) seeds the observation noise of simulated frames;
        ``rows`` (the batch's rows of the split) picks their per-trajectory values."""
        last = images.shape[1] - 1
        when = s0 + speed * np.arange(steps + 1)
        index = np.clip(np.round(when).astype(np.int64), 0, last)
        stored = (np.abs(when - index) < 1e-9) & (when >= 0) & (when <= last)
        out = images[:, index].copy()
        states = None if q is None else q[:, index].astype(np.float64)
        available = stored.copy()
        if not stored.all() and self.resimulates:
            assert states is not None and q is not None and p is not None
            system = self.bound(rows)
            qs, _ = system.simulate(
                torch.from_numpy(q[:, s0]),
                torch.from_numpy(p[:, s0]),
                self.meta["dt"] * speed,
                steps,
            )
            missing = ~stored
            clean = qs.numpy()[:, missing]
            rng = numpy_rng(self.meta["seed"], "extrapolate-truth", key)
            noisy = clean + self.meta["noise"] * rng.standard_normal(clean.shape)
            out[:, missing] = system.render(noisy, self.meta["size"])
            states[:, missing] = clean
            available[:] = True
        if states is not None:
            states[:, ~available] = np.nan
        return out, states, available


# ----------------------------------------------------------------------------- scoring


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
    :func:`~hgn.evaluation.evaluate.vpt_threshold` of that frame's own mean-image MSE,
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
        "per_step_mse": _listed(curve),
        "per_step_mean_image_mse": _listed(base_curve),
        "per_step_threshold": _listed(np.where(available, threshold_curve, np.nan)),
    }


def _listed(values: np.ndarray) -> list[float | None]:
    """NaN-free JSON list (None where a value is missing)."""
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(values, float)]


# ----------------------------------------------------------------------------- model


def check_align(align: str) -> str:
    """``--align`` as given, or a one-line error naming the choices."""
    if align not in ALIGNS:
        raise UserError(f"--align must be one of {', '.join(ALIGNS)}, got {align!r}")
    return align


def rolled_back(model: SequenceModel, align: str) -> int:
    """Steps the inferred state is taken back before the rollouts start: the model's
    ``state_offset`` with ``align="start"`` (where it can run backwards to do it),
    else 0."""
    check_align(align)
    return model.state_offset if align == "start" and model.can_run_backwards else 0


def cannot(model: SequenceModel, dt: float) -> str | None:
    """Why ``model`` cannot roll out at ``dt`` (its :meth:`SequenceModel.check_rollout`
    refusal, one line), or None where it can. The protocol records such a rollout as
    ``{"skipped": reason, ...}`` instead of scoring it (RGN, LSTM, GRU: backwards and
    other speeds are not defined for a one-way discrete step)."""
    try:
        model.check_rollout(dt)
    except UserError as err:
        return str(err)
    return None


class _Rollouts:
    """Rollouts of one batch from one inferred state: the state is inferred once for all
    four rollouts, then taken ``back`` steps back with the trained −dt."""

    def __init__(self, model: SequenceModel, window: Tensor, back: int = 0) -> None:
        self.model = model
        self.state = model.encode(window)
        if back:
            states = model.rollout(self.state, back, -model.trained_dt)
            self.state = State(states.q[:, -1], states.p[:, -1])

    def __call__(self, steps: int, dt: float, images: bool = True) -> tuple[Tensor | None, Tensor]:
        """Images (or None) and energies ``(B, steps + 1)``, NaN where the model has no
        Hamiltonian."""
        states = self.model.rollout(self.state, steps, self.model.check_rollout(dt))
        energy = self.model.hamiltonian(states)
        if energy is None:
            energy = torch.full(states.q.shape[:2], math.nan, device=states.q.device)
        return (self.model.decode(states) if images else None), energy

    def round_trip(self, steps: int, dt: float) -> float | None:
        """Relative error of rolling ``steps`` forward then back (None where the model
        cannot run backwards)."""
        if not self.model.can_run_backwards:
            return None
        ahead = self.model.rollout(self.state, steps, dt)
        end = State(ahead.q[:, -1], ahead.p[:, -1])
        back = self.model.rollout(end, steps, -dt)
        q, p = self.state
        miss = (back.q[:, -1] - q).square().sum() + (back.p[:, -1] - p).square().sum()
        size = q.square().sum() + p.square().sum()
        return float((miss / size.clamp(min=1e-30)).sqrt())


@torch.no_grad()
def rollout_with_truth(
    model: SequenceModel,
    split: hgn_data.Split,
    index: int,
    steps: int,
    speed: float,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Sequence ``index``'s rollout at ``speed`` × the trained dt (negative: backwards)
    from the state the model infers from its first frames, and the simulator's frames at
    the same times: both ``(steps+1, 3, H, W)``, grey where no truth exists. Used by
    ``hgn rollout``: with a known system the truth exists at every time, between stored
    frames and before the first one as well."""
    context = model.context_frames
    images = np.array(split.images[index : index + 1])
    q = None if split.q is None else np.array(split.q[index : index + 1])
    p = None if split.p is None else np.array(split.p[index : index + 1])
    roll = _Rollouts(model, to_frames(images[:, :context], device))
    pred, _ = roll(steps, model.trained_dt * speed)
    s0 = model.state_offset
    rows = slice(index, index + 1)
    frames, _, available = Truth(split).frames(
        images, q, p, s0, speed, steps, f"rollout/{index}", rows
    )
    truth = to_frames(frames[0], device)
    truth[torch.from_numpy(~available).to(device)] = 0.5
    assert pred is not None
    return pred[0], truth


# ----------------------------------------------------------------------------- protocol


@torch.no_grad()
def run_protocol(
    model: SequenceModel,
    split: hgn_data.Split,
    mean: Tensor,
    *,
    start: int = DEFAULT_START,
    max_sequences: int = 1000,
    batch_size: int = 32,
    vpt_fraction: float = 0.5,
    drift_steps: int = DRIFT_STEPS,
    align: str = "start",
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the protocol on ``split`` with mean image ``mean (3, H, W)``, the rollouts
    starting at the window's first frame or at the inferred state (``align``, see the
    module docs). Returns the results (JSON-ready) and the arrays the pictures need
    (the shown sequence)."""
    device = mean.device
    meta = split.meta
    context, offset = model.context_frames, model.state_offset
    back = rolled_back(model, align)
    longer = LONGER_GENERATED if split.has_states else LONGER_IMPORTED
    p = plan(meta["steps"] + 1, start, context, offset - back, longer)
    s0 = p["s0"]
    n = min(positive_int(max_sequences, "--max-sequences"), len(split))
    batch_size = positive_int(batch_size, "--batch-size")
    truth = Truth(split)
    floor = 0.0
    if (meta.get("noise") or 0) > 0 and truth.system is not None:
        floor = noise_floor(split, min(n, 50))
    dt = model.trained_dt
    skipped = {r.name: why for r in ROLLOUTS if (why := cannot(model, dt * r.speed)) is not None}
    mse = {r.name: [] for r in ROLLOUTS}
    base = {r.name: [] for r in ROLLOUTS}
    pos_err = {r.name: [] for r in ROLLOUTS}
    pos_floor = {r.name: [] for r in ROLLOUTS}
    pos_base = {r.name: [] for r in ROLLOUTS}
    reader = physics.readable(split)  # None: no physical units for this data
    mean_pos = None
    if reader is not None:  # where the mean image puts the bodies: the no-skill level
        mean_pos = physics.recover(viz.hwc(mean.cpu()), reader).bodies()
    avail: dict[str, np.ndarray] = {}
    pictures: dict[str, Any] = {"s0": s0}
    for lo in tqdm(range(0, n, batch_size), desc="extrapolate", disable=not progress):
        hi = min(lo + batch_size, n)
        images = np.array(split.images[lo:hi])
        q = None if split.q is None else np.array(split.q[lo:hi])
        pm = None if split.p is None else np.array(split.p[lo:hi])
        window = to_frames(images[:, start : start + context], device)
        roll = _Rollouts(model, window, back)
        if lo == 0:  # the picture shows the first batch's liveliest sequence
            shown = int(np.asarray(images, np.float32).std(1).mean((1, 2, 3)).argmax())
            pictures.update(truth=images[shown], index=shown)
        for r in ROLLOUTS:
            if r.name in skipped:
                continue
            steps = p[r.name]
            pred, _ = roll(steps, dt * r.speed)
            assert pred is not None
            key = f"{r.name}/{lo}"
            frames, states, avail[r.name] = truth.frames(
                images, q, pm, s0, r.speed, steps, key, slice(lo, hi)
            )
            target = to_frames(frames, device)
            mse[r.name].append((pred.float() - target).square().mean((2, 3, 4)).cpu().numpy())
            base[r.name].append((target - mean).square().mean((2, 3, 4)).cpu().numpy())
            if lo == 0:
                pictures[r.name] = viz.hwc(pred[shown])
            if states is not None and reader is not None:
                true_pos = physics.true_positions(reader, states)
                found = physics.recover(viz.hwc(pred), reader).bodies()
                seen = physics.recover(frames, reader).bodies()
                pos_err[r.name].append(physics.position_rms(found, true_pos))
                pos_floor[r.name].append(physics.position_rms(seen, true_pos))
                pos_base[r.name].append(physics.position_rms(mean_pos, true_pos))
    rollouts: dict[str, Any] = {}
    for r in ROLLOUTS:
        if r.name in skipped:
            rollouts[r.name] = {
                "skipped": skipped[r.name],
                "label": r.label,
                "speed": r.speed,
                "dt": dt * r.speed,
            }
            continue
        m, b = np.concatenate(mse[r.name]), np.concatenate(base[r.name])
        result = score(m, b, avail[r.name], floor, vpt_fraction)
        result.update(
            label=r.label,
            speed=r.speed,
            dt=dt * r.speed,
            frames=[float(s0), float(r.frame_of(s0, p[r.name])[-1])],
            compared_steps=int(avail[r.name][1:].sum()),
        )
        if pos_err[r.name]:
            use = avail[r.name].copy()
            use[0] = False
            err = np.concatenate(pos_err[r.name])
            for key, parts in (
                ("position_rms", pos_err),
                ("position_rms_truth_frames", pos_floor),
                ("position_rms_mean_image", pos_base),
            ):
                values = np.concatenate(parts[r.name])[:, use]
                result[key] = float(np.sqrt(np.square(values).mean()))
            result["per_step_position_rms"] = _listed(
                np.where(avail[r.name], np.sqrt(np.square(err).mean(0)), np.nan)
            )
        rollouts[r.name] = result
    # the long rollout and the round trip on the first few sequences only
    few = min(n, DRIFT_SEQUENCES)
    images = np.array(split.images[:few, start : start + context])
    roll = _Rollouts(model, to_frames(images, device), back)
    energy = roll(drift_steps, dt, images=False)[1].float().cpu().numpy()
    spread = physics.relative_spread(energy)
    start_level = np.maximum(np.abs(energy[:, :1]), 1e-12)
    trip_steps = min(ROUND_TRIP_STEPS, p["backward"])
    measured = roll.round_trip(trip_steps, dt)
    declared = model.exactly_reversible()
    # a slow (e.g. untrained) H barely moves the state, so Euler's round trip can look
    # exact: an integrator that is irreversible by construction stays so
    reversible = (
        model.can_run_backwards
        and declared is not False
        and (measured is None or measured < REVERSIBLE_TOLERANCE)
    )
    system = reader
    results: dict[str, Any] = {
        "protocol": "extrapolate",
        "system": data_name(meta),
        "has_states": split.has_states,
        "frames": meta["steps"] + 1,
        "noise": meta.get("noise"),
        "sequences": n,
        "start": start,
        "context_frames": context,
        "state_offset": offset,
        "align": align,
        "rolled_back_steps": back,
        "state_frame": s0,
        "dt": dt,
        "vpt_fraction": vpt_fraction,
        "noise_floor_mse_x1e4": floor * SCALE,
        "threshold": (
            f"{vpt_fraction:g} × each frame's mean-image MSE"
            if floor == 0
            else f"noise floor + {vpt_fraction:g} × (each frame's mean-image MSE − floor)"
        ),
        "truth": {
            "between_frames": "re-simulated and rendered with the dataset's system"
            if truth.resimulates
            else "not available: only steps that land on stored frames are compared",
            "render_check_max_abs_uint8": truth.render_error,
            "simulation_check_max_abs": truth.simulation_error,
            "noise_seed": f"numpy_rng({meta.get('seed')}, 'extrapolate-truth', 'NAME/ROW')",
        },
        "reversible": {
            "reversible": bool(reversible),
            "round_trip_relative_error": measured,
            "round_trip_steps": trip_steps if measured is not None else None,
            "integrator": getattr(model.config, "integrator", None),
            "declared": declared,
            "how": "measured round trip"
            if measured is not None and declared is not False
            else "from the integrator"
            if model.can_run_backwards
            else "the model cannot run backwards",
        },
        "energy_drift": {
            "steps": drift_steps,
            "sequences": len(energy),
            "relative_spread_mean": float(spread.mean()),
            "relative_spread_median": float(np.median(spread)),
            "relative_spread_max": float(spread.max()),
            "max_relative_deviation": float(
                (np.abs(energy - energy[:, :1]) / start_level).max(1).mean()
            ),
        },
        "position_units": None
        if system is None
        else {
            "world_units_per_pixel": 1.0 / physics.Canvas.of(system, meta["size"]).scale,
            "canvas_half_width": physics.Canvas.of(system, meta["size"]).extent,
        },
        "rollouts": rollouts,
    }
    pictures["energy"] = energy
    results["shown"] = pictures["index"]
    return results, pictures


def extrapolate(
    run: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    start: int = DEFAULT_START,
    max_sequences: int = 1000,
    batch_size: int = 32,
    device: str = "auto",
    vpt_fraction: float = 0.5,
    drift_steps: int = DRIFT_STEPS,
    align: str = "start",
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``hgn evaluate RUN --data LONGTEST --protocol extrapolate``: run the protocol on
    the test split and write ``extrapolate.{json,md}`` and pictures into ``out`` (each
    file atomically; ``out`` must be new, empty or an earlier ``hgn evaluate`` output).
    ``warn`` hears at once when the data is not what the run was trained on (the length
    may differ: that is the point)."""
    start = check_start(start)
    check_range(vpt_fraction, "--vpt-fraction", gt=0, le=1)
    drift_steps = positive_int(drift_steps, "drift steps")
    check_align(align)  # before the run is opened
    out = Path(out)
    dev = resolve_device(device)
    model, saved, splits, mismatch = open_run(run, data, out, dev, warn)
    split, train = splits["test"], splits["train"]
    source = train if len(train) else split
    mean = mean_frame(source).to(dev)
    results, pictures = run_protocol(
        model,
        split,
        mean,
        start=start,
        max_sequences=max_sequences,
        batch_size=batch_size,
        vpt_fraction=vpt_fraction,
        drift_steps=drift_steps,
        align=align,
        progress=progress,
    )
    if not split.has_states and warn is not None:  # once the protocol is known to fit
        warn(NO_STATES_EXTRAPOLATE)
    results = {
        "run": str(run),
        "data": str(data),
        "model": saved["config"]["model"]["name"],
        "trained_steps": int(saved["step"]),
        "trained_seconds": float(saved["seconds"]),
        "mean_image": f"average frame of the {source.meta['split']} split of {data} "
        f"({min(len(source), 1000)} sequences)",
        "data_mismatch": mismatch,
        **results,
    }
    write(results, pictures, claim_output_dir(out, "evaluate"))
    return results


# ----------------------------------------------------------------------------- reports


def write(results: dict[str, Any], pictures: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write the JSON, the Markdown table and the pictures into ``out``, atomically."""
    paths = {key: out / name for key, name in FILES.items()}
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(markdown(results))
    strip, movie = rollout_pictures(pictures, results)
    _labelled_strip(strip, results, paths["strip"])
    viz.save_animation(paths["gif"], movie, fps=8)
    plot_errors(results, paths["errors"])
    plot_drift(pictures["energy"], results, paths["energy"])
    return paths


def _reversibility(rev: dict[str, Any]) -> str:
    """One sentence: the measured round trip, what the integrator is, the verdict."""
    parts = []
    if rev["how"] == "the model cannot run backwards":
        return "the model cannot run backwards (its dynamics are one-way): not reversible."
    if rev["round_trip_relative_error"] is not None:
        parts.append(
            f"{rev['round_trip_steps']} steps forward then back miss the start by "
            f"{rev['round_trip_relative_error']:.1e} (relative)"
        )
    if rev["declared"] is False:
        parts.append(
            f"integrator `{rev['integrator']}` is not time-reversible for this H "
            "(Euler and RK4 never are, leapfrog only for a separable H)"
        )
    verdict = (
        "reversible."
        if rev["reversible"]
        else "**not reversible**: the backward row shows what the model does with −dt anyway."
    )
    return "; ".join(parts) + (" — " if parts else "") + verdict


def _vpt(r: dict[str, Any]) -> str:
    return (
        f"{r['vpt_mean']:.1f} ± {r['vpt_std']:.1f} of {r['steps']} "
        f"(all {r['steps']}: {100 * r['vpt_full_fraction']:.0f} %)"
    )


def _where(results: dict[str, Any]) -> str:
    """Where the rollouts start, in words."""
    inferred = results["start"] + results.get("state_offset", 0)
    back = results.get("rolled_back_steps", 0)
    if not back:
        return (
            f"its state describes frame {results['state_frame']}, and every rollout starts there."
        )
    return (
        f"its state describes frame {inferred} and is first taken {back} steps back with "
        f"the model's own dynamics to frame {results['state_frame']}, the window's first, "
        f"where every rollout starts (frames {results['state_frame'] + 1}–{inferred} were "
        "read by the encoder and are predicted anyway, as the paper's HGN predicts the "
        "frames it reads; `--align state` starts at the inferred state instead)."
    )


def markdown(results: dict[str, Any]) -> str:
    """The protocol's table and what it rests on, for people."""
    rev = results["reversible"]
    unit = results.get("position_units")
    noise = "unknown" if results["noise"] is None else results["noise"]
    lines = [] if results.get("has_states", True) else [f"**Note: {NO_STATES_EXTRAPOLATE}.**", ""]
    lines += [
        f"# Extrapolation of `{results.get('run', 'model')}`",
        "",
        f"Model `{results.get('model', '?')}` after {results.get('trained_steps', '?')} steps "
        f"on {results['system']}; test data `{results.get('data', '?')}`: "
        f"{results['sequences']} sequences of {results['frames']} frames, observation "
        f"noise {noise}. The model reads {results['context_frames']} frame(s) "
        f"from frame {results['start']}; {_where(results)} Each predicted frame is compared "
        "with the simulator's frame at the same physical time.",
        "",
        f"Ratio = model MSE / mean-image MSE on the same frames (mean image: "
        f"{results.get('mean_image', 'the training frames')}); 1.0 is no better than "
        "drawing the average frame. Valid prediction time = predicted steps before a "
        f"frame's MSE first exceeds {results['threshold']}"
        + (
            f" (noise floor {results['noise_floor_mse_x1e4']:.2f} ×1e4)."
            if results["noise_floor_mse_x1e4"]
            else "."
        ),
        "",
        "| rollout | dt | steps | frames covered | MSE ×1e4 | mean image ×1e4 | ratio "
        "| valid prediction time (steps) | RMS position error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["rollouts"].items():
        label = r["label"]
        if "skipped" in r:
            lines.append(f"| {label} | {r['dt']:+.4g} | cannot | — | — | — | — | — | — |")
            continue
        if name == "backward" and not rev["reversible"]:
            label += " — integrator not reversible"
        pos = "n/a"
        if "position_rms" in r and unit:
            px = r["position_rms"] / unit["world_units_per_pixel"]
            no_skill = r["position_rms_mean_image"]
            pos = f"{r['position_rms']:.3f} ({px:.2f} px; mean image {no_skill:.3f})"
        a, b = r["frames"]
        lines.append(
            f"| {label} | {r['dt']:+.4g} | {r['steps']} | {a:g} → {b:g} "
            f"| {r['mse_x1e4']:.2f} | {r['mean_image_mse_x1e4']:.2f} | {r['ratio']:.3f} "
            f"| {_vpt(r)} | {pos} |"
        )
    drift = results["energy_drift"]
    cannot_do = [
        f"{r['label']}: {r['skipped']}" for r in results["rollouts"].values() if "skipped" in r
    ]
    if cannot_do:
        lines += ["", "Rollouts the model cannot do (not scored): " + "; ".join(cannot_do) + "."]
    energy = (
        f"Learned H along a {drift['steps']}-step forward rollout ({drift['sequences']} "
        f"sequences): relative spread (std / abs(mean)) {drift['relative_spread_mean']:.2e} "
        f"mean, {drift['relative_spread_median']:.2e} median, "
        f"{drift['relative_spread_max']:.2e} max; largest deviation from the start "
        f"{drift['max_relative_deviation']:.2e} of its level."
    )
    if math.isnan(drift["relative_spread_max"]):  # NaN energies: a model without an H
        energy = "Learned H: none (the model has no Hamiltonian; the drift numbers are NaN)."
    lines += [
        "",
        energy,
        "",
        "Reversibility: " + _reversibility(rev),
        "",
        f"Truth between stored frames: {results['truth']['between_frames']} (render check: "
        f"max difference {results['truth']['render_check_max_abs_uint8']}/255; simulation "
        f"check: {results['truth']['simulation_check_max_abs']}).",
    ]
    if unit:
        lines += [
            "",
            "RMS position error: body positions read back from the predicted frames "
            "(colour-unmixed centroids, hgn.evaluation.physics) against the true states, in "
            f"world units (canvas ±{unit['canvas_half_width']:.3g}); 'mean image' is the "
            "error of the positions read from the average frame (no skill). The same "
            "recovery on the truth frames is off by "
            + ", ".join(
                f"{r['position_rms_truth_frames']:.3f} ({n})"
                for n, r in results["rollouts"].items()
                if "position_rms_truth_frames" in r
            )
            + " (the recovery's own error, with the data's noise).",
        ]
    lines += [
        "",
        f"Pictures of test sequence {results.get('shown', 0)} (the first batch's liveliest): "
        f"`{FILES['strip']}` (rows: truth, forward, backward, 2×, ½×; columns: "
        f"frames), `{FILES['gif']}` (columns named, one frame per stored frame; 2× "
        "holds each state for two frames; blank where a rollout does not "
        f"reach), `{FILES['errors']}`, "
        f"`{FILES['energy']}`.",
    ]
    return "\n".join(lines) + "\n"


def _columns(s0: int, last: int, count: int = 16) -> np.ndarray:
    """Frames shown in the strip: an even stride through ``s0``, so that every rollout
    (2× lands on every other frame, ½× on every half frame) has a state there."""
    stride = 2 * max(1, math.ceil(last / (2 * (count - 1))))
    return np.arange(s0 - (s0 // stride) * stride, last + 1, stride)


def _state_at(
    pictures: dict[str, Any], results: dict[str, Any], name: str, frame: float, hold: bool
) -> np.ndarray | None:
    """Rollout ``name``'s predicted frame at physical time ``frame``, if it has one
    there; with ``hold``, its latest state before ``frame`` (2× has a state only every
    other frame, and an animation should not flicker)."""
    r = results["rollouts"][name]
    if "skipped" in r:  # a rollout the model cannot do: blank
        return None
    k = (frame - results["state_frame"]) / r["speed"]
    if hold:
        k = math.floor(k + 1e-9)
    if k < -1e-9 or k > r["steps"] + 1e-9 or abs(k - round(k)) > 1e-9:
        return None
    return pictures[name][round(k)]


def rollout_pictures(
    pictures: dict[str, Any], results: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """The strip ``(5, columns, H, W, 3)`` and the animation frames ``(T+1, H', W', 3)``
    of the shown test sequence; white where a rollout does not reach."""
    truth = pictures["truth"].astype(np.float32) / 255.0  # (T+1, H, W, 3)
    blank = np.ones_like(truth[0])
    last = truth.shape[0] - 1
    factor = max(1, 96 // truth.shape[1])

    def row_at(frame: int, hold: bool) -> np.ndarray:
        cells = [truth[frame]]
        for r in ROLLOUTS:
            img = _state_at(pictures, results, r.name, frame, hold)
            cells.append(blank if img is None else img)
        return np.stack(cells)

    columns = _columns(results["state_frame"], last)
    strip = np.stack([row_at(int(c), hold=False) for c in columns], 1)
    movie = np.stack(
        [viz.grid(viz.upscale(row_at(t, hold=True)[None], factor)) for t in range(last + 1)]
    )
    names = ["truth", *(r.name for r in ROLLOUTS)]
    header = _header(names, truth.shape[1] * factor, movie.shape[2])
    movie = np.concatenate([np.broadcast_to(header, (len(movie), *header.shape)), movie], 1)
    return viz.upscale(strip, factor), movie


def _header(names: list[str], cell: int, width: int, height: int = 16) -> np.ndarray:
    """A white bar ``(height, width, 3)`` uint8 naming the columns of a
    :func:`hgn.plots.grid` row of ``cell``-pixel cells (drawn once, by matplotlib)."""
    plt = viz.pyplot()
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    for i, name in enumerate(names):
        centre = 1 + i * (cell + 1) + cell / 2
        fig.text(centre / width, 0.45, name, ha="center", va="center", fontsize=7)
    fig.canvas.draw()
    bar = np.asarray(fig.canvas.buffer_rgba())[:height, :width, :3].copy()
    plt.close(fig)
    return bar


def _labelled_strip(strip: np.ndarray, results: dict[str, Any], path: Path) -> None:
    """The strip with row names and frame numbers (matplotlib), PNG, atomically."""
    plt = viz.pyplot()
    image = viz.grid(strip)
    rows, cols = strip.shape[:2]
    cell_h, cell_w = strip.shape[2] + 1, strip.shape[3] + 1
    size = (1.0 + image.shape[1] / 100, 0.6 + image.shape[0] / 100)
    fig, ax = plt.subplots(figsize=size, dpi=100)
    ax.imshow(image)
    names = ["truth", *(r.label for r in ROLLOUTS)]
    ax.set_yticks([1 + cell_h * (i + 0.5) for i in range(rows)], names, fontsize=8)
    columns = _columns(results["state_frame"], results["frames"] - 1)
    ticks = [1 + cell_w * (j + 0.5) for j in range(cols)]
    ax.set_xticks(ticks, [str(c) for c in columns], fontsize=7)
    where = f"window from frame {results['start']}, rollouts from frame {results['state_frame']}"
    if results.get("rolled_back_steps"):
        where += f" (state inferred at {results['state_frame'] + results['rolled_back_steps']})"
    ax.set_xlabel(f"frame ({where})", fontsize=8)
    title = f"{results['system']}: truth and rollouts of test sequence {results['shown']}"
    ax.set_title(title, fontsize=9)
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.tick_params(length=0)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_errors(results: dict[str, Any], path: Path) -> None:
    """Per-frame MSE (and RMS position error) of every rollout against physical time."""
    plt = viz.pyplot()
    has_pos = any("per_step_position_rms" in r for r in results["rollouts"].values())
    fig, axes = plt.subplots(1, 2 if has_pos else 1, figsize=(11 if has_pos else 6, 4), dpi=110)
    axes = np.atleast_1d(axes)
    s0 = results["state_frame"]
    for i, (name, r) in enumerate(results["rollouts"].items()):
        if "skipped" in r:
            continue
        when = s0 + r["speed"] * np.arange(r["steps"] + 1)
        colour = f"C{i}"
        curve = np.array([np.nan if v is None else v for v in r["per_step_mse"]])
        axes[0].plot(when, curve, "-", color=colour, label=r["label"], lw=1.4)
        if name in ("forward", "backward"):
            base = np.array([np.nan if v is None else v for v in r["per_step_mean_image_mse"]])
            thr = np.array([np.nan if v is None else v for v in r["per_step_threshold"]])
            first = i == 0
            axes[0].plot(when, base, "--", color="0.4", lw=1, label="mean image" if first else None)
            axes[0].plot(
                when, thr, ":", color="0.4", lw=1, label="VPT threshold" if first else None
            )
        if has_pos and "per_step_position_rms" in r:
            pos = np.array([np.nan if v is None else v for v in r["per_step_position_rms"]])
            axes[1].plot(when, pos, "-", color=colour, label=r["label"], lw=1.4)
    axes[0].set(xlabel="frame (physical time)", ylabel="per-pixel MSE", yscale="log")
    axes[0].set_title("image error along each rollout", fontsize=9)
    if has_pos:
        axes[1].set(xlabel="frame (physical time)", ylabel="RMS position error (world units)")
        axes[1].set_title("body positions read back from the frames", fontsize=9)
    for ax in axes:
        ax.axvline(s0, color="k", lw=0.8, alpha=0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_drift(energy: np.ndarray, results: dict[str, Any], path: Path, count: int = 8) -> None:
    """The learned H along the long forward rollouts, relative to its start."""
    plt = viz.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    level = np.maximum(np.abs(energy[:, :1]), 1e-12)
    for row in ((energy - energy[:, :1]) / level)[:count]:
        ax.plot(np.arange(len(row)), row, lw=1)
    ax.set(
        xlabel="rollout step",
        ylabel="(H − H₀) / |H₀|",
        title=f"learned H over {results['energy_drift']['steps']} steps",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
