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
floor (:func:`hgn.evaluation.metrics.noise_floor`; 0 on clean data, where the rule is
"half the mean-image error"); and, for the built-in systems, the RMS error of the body
positions read back from the predicted frames (:mod:`hgn.evaluation.physics`) against
the true states, in world units. Besides: the spread of the learned H along a
1,000-step rollout (a conserved H stays flat) and whether the model's integrator can run
backwards at all (measured round trip; an irreversible model still gets its numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from hgn import data as hgn_data
from hgn import plots as viz
from hgn.data import to_frames
from hgn.evaluation import physics
from hgn.evaluation.evaluate import data_name
from hgn.evaluation.metrics import SCALE, listed, noise_floor, score
from hgn.evaluation.truth import Truth
from hgn.models import SequenceModel, State
from hgn.utils import (
    UserError,
    positive_int,
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


def check_start(start: Any, flag: str = "--start") -> int:
    """``--start`` as an int, or a one-line error for a negative or fractional one."""
    if isinstance(start, bool) or not isinstance(start, int | np.integer) or start < 0:
        raise UserError(f"{flag} must be a non-negative integer (a frame index), got {start!r}")
    return int(start)


END = "end"
"""``--backward-start end``: the last window that fits in the test set."""


def backward_window(value: Any, frames: int, context: int) -> int | None:
    """The first frame of the backward rollout's own window: ``None`` (the forward
    rollouts' window, today's protocol), a frame index, or :data:`END` (the last window
    of ``context`` frames in a test set of ``frames``). A long backward rollout needs a
    window near the end, as a long forward one needs one near the start."""
    if value is None:
        return None
    if value == END:
        return max(0, frames - context)
    return check_start(value, "--backward-start")


LONGER_GENERATED = "hgn data generate --frames 91"
LONGER_IMPORTED = "hgn data import with longer sequences, e.g. --frames 91 for a video"
"""How to get a longer test set, for the refusals of :func:`plan`: generated data is
regenerated; imported data has no simulator to extend it."""


def plan(
    frames: int,
    start: int,
    context: int,
    offset: int,
    longer: str = LONGER_GENERATED,
    backward_only: bool = False,
) -> dict[str, int]:
    """Check that the protocol fits a test set of ``frames`` frames and return the state
    frame ``s0`` and the steps of each rollout; a one-line :class:`UserError` otherwise,
    whose hint ends in ``longer`` (how to make a longer test set). ``backward_only``: the
    window of the backward rollout alone (``--backward-start``), which needs no frames
    after it."""
    last = frames - 1
    flag = "--backward-start" if backward_only else "--start"
    start = check_start(start, flag)
    if start > last:
        raise UserError(
            f"{flag} {start} is past the last frame ({last}) of the test set; "
            f"use a smaller {flag} or a longer test set ({longer})"
        )
    if start + context - 1 > last:
        raise UserError(
            f"the model reads {context} frames, so a window from {flag} {start} runs past "
            f"the last frame ({last}); use {flag} ≤ {max(0, last - context + 1)} or a "
            f"longer test set ({longer})"
        )
    s0 = start + offset
    if last - s0 < 2 and not backward_only:
        raise UserError(
            f"the test set is too short for the protocol: the inferred state is at frame "
            f"{s0} and the last frame is {last}; forward and 2× rollouts need at least 2 "
            f"frames after it (make a longer test set: {longer})"
        )
    if s0 < 1:
        raise UserError(
            f"{flag} 0 leaves no earlier frame to roll backward to; use {flag} ≥ 1 "
            f"(the default --start is {DEFAULT_START} on a 90-step test set)"
        )
    return {"s0": s0, **{r.name: r.steps(s0, last) for r in ROLLOUTS}}


# ----------------------------------------------------------------------------- truth


# ----------------------------------------------------------------------------- scoring


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


CANNOT_RUN_BACKWARDS = "the model cannot run backwards"
"""How the reversibility of a one-way model (RGN, LSTM, GRU) is decided."""


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


class _Tally:
    """Per-rollout, per-batch arrays of one protocol run, concatenated at the end."""

    def __init__(self) -> None:
        self.parts: dict[str, dict[str, list[np.ndarray]]] = {
            key: {r.name: [] for r in ROLLOUTS}
            for key in ("mse", "base", "pos_err", "pos_floor", "pos_base")
        }
        self.available: dict[str, np.ndarray] = {}

    def add(self, key: str, rollout: str, values: np.ndarray) -> None:
        self.parts[key][rollout].append(values)

    def joined(self, key: str, rollout: str) -> np.ndarray:
        return np.concatenate(self.parts[key][rollout])


def _score_batch(
    roll: _Rollouts,
    images: np.ndarray,
    states: tuple[np.ndarray | None, np.ndarray | None],
    rows: slice,
    ctx: dict[str, Any],
    tally: _Tally,
    pictures: dict[str, Any],
) -> None:
    """Every rollout of one batch against the truth: per-step MSEs of the model and the
    mean image, and (where the data's system is readable) body-position errors."""
    device, mean, reader, plan_ = ctx["device"], ctx["mean"], ctx["reader"], ctx["plan"]
    s0, shown = plan_["s0"], pictures.get("index") if rows.start == 0 else None
    for r in ctx["runs"]:
        if r.name in ctx["skipped"]:
            continue
        pred, _ = roll(plan_[r.name], ctx["dt"] * r.speed)
        assert pred is not None
        frames, true_states, tally.available[r.name] = ctx["truth"].frames(
            images, *states, s0, r.speed, plan_[r.name], f"{r.name}/{rows.start}", rows
        )
        target = to_frames(frames, device)
        tally.add("mse", r.name, (pred.float() - target).square().mean((2, 3, 4)).cpu().numpy())
        tally.add("base", r.name, (target - mean).square().mean((2, 3, 4)).cpu().numpy())
        if shown is not None:
            pictures[r.name] = viz.hwc(pred[shown])
        if true_states is not None and reader is not None:
            true_pos = physics.true_positions(reader, true_states)
            found = physics.recover(viz.hwc(pred), reader).bodies()
            seen = physics.recover(frames, reader).bodies()
            tally.add("pos_err", r.name, physics.position_rms(found, true_pos))
            tally.add("pos_floor", r.name, physics.position_rms(seen, true_pos))
            tally.add("pos_base", r.name, physics.position_rms(ctx["mean_pos"], true_pos))


def _summary(r: Rollout, tally: _Tally, ctx: dict[str, Any], fraction: float) -> dict[str, Any]:
    """One rollout's numbers (:func:`~hgn.evaluation.metrics.score`), where it ran and,
    with readable physics, its RMS position errors against the true states; a rollout
    the model cannot do is recorded with the reason instead of numbers."""
    if r.name in ctx["skipped"]:
        dt = ctx["dt"] * r.speed
        return {"skipped": ctx["skipped"][r.name], "label": r.label, "speed": r.speed, "dt": dt}
    available, s0, steps = tally.available[r.name], ctx["plan"]["s0"], ctx["plan"][r.name]
    result = score(
        tally.joined("mse", r.name), tally.joined("base", r.name), available, ctx["floor"],
        fraction,
    )  # fmt: skip
    result.update(
        label=r.label,
        speed=r.speed,
        dt=ctx["dt"] * r.speed,
        frames=[float(s0), float(r.frame_of(s0, steps)[-1])],
        compared_steps=int(available[1:].sum()),
    )
    if tally.parts["pos_err"][r.name]:
        use = available.copy()
        use[0] = False
        for key, part in (
            ("position_rms", "pos_err"),
            ("position_rms_truth_frames", "pos_floor"),
            ("position_rms_mean_image", "pos_base"),
        ):
            values = tally.joined(part, r.name)[:, use]
            result[key] = float(np.sqrt(np.square(values).mean()))
        err = tally.joined("pos_err", r.name)
        curve = np.where(available, np.sqrt(np.square(err).mean(0)), np.nan)
        result["per_step_position_rms"] = listed(curve)
    return result


def _drift_and_reversibility(
    model: SequenceModel, roll: _Rollouts, drift_steps: int, trip_steps: int, dt: float
) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """The learned H along a long rollout (its spread: a conserved H stays flat) and
    whether the model returns to its start after ``trip_steps`` forward and back."""
    energy = roll(drift_steps, dt, images=False)[1].float().cpu().numpy()
    spread = physics.relative_spread(energy)
    start_level = np.maximum(np.abs(energy[:, :1]), 1e-12)
    drift = {
        "steps": drift_steps,
        "sequences": len(energy),
        "relative_spread_mean": float(spread.mean()),
        "relative_spread_median": float(np.median(spread)),
        "relative_spread_max": float(spread.max()),
        "max_relative_deviation": float(
            (np.abs(energy - energy[:, :1]) / start_level).max(1).mean()
        ),
    }
    measured = roll.round_trip(trip_steps, dt)
    declared = model.exactly_reversible()
    # a slow (e.g. untrained) H barely moves the state, so Euler's round trip can look
    # exact: an integrator that is irreversible by construction stays so
    reversible = (
        model.can_run_backwards
        and declared is not False
        and (measured is None or measured < REVERSIBLE_TOLERANCE)
    )
    how = "measured round trip" if measured is not None else "from the integrator"
    return (
        energy,
        drift,
        {
            "reversible": bool(reversible),
            "round_trip_relative_error": measured,
            "round_trip_steps": trip_steps if measured is not None else None,
            "integrator": getattr(model.config, "integrator", None),
            "declared": declared,
            "how": how if model.can_run_backwards else CANNOT_RUN_BACKWARDS,
        },
    )


def _context(
    model: SequenceModel, split: hgn_data.Split, mean: Tensor, start: int, align: str, n: int
) -> dict[str, Any]:
    """What every batch of a protocol run shares: the plan, the truth, the noise floor,
    the mean image and where it puts the bodies, and the rollouts it runs."""
    meta = split.meta
    back = rolled_back(model, align)
    plan_ = plan(
        meta["steps"] + 1, start, model.context_frames, model.state_offset - back,
        _longer(split),
    )  # fmt: skip
    truth = Truth(split)
    floor = 0.0
    if (meta.get("noise") or 0) > 0 and truth.system is not None:
        floor = noise_floor(split, min(n, 50))
    reader = physics.readable(split)  # None: no physical units for this data
    mean_pos = None
    if reader is not None:  # where the mean image puts the bodies: the no-skill level
        mean_pos = physics.recover(viz.hwc(mean.cpu()), reader).bodies()
    return {
        "device": mean.device, "mean": mean, "plan": plan_, "back": back, "truth": truth,
        "floor": floor, "reader": reader, "mean_pos": mean_pos, "dt": model.trained_dt,
        "start": start, "runs": ROLLOUTS,
        "skipped": {
            r.name: why for r in ROLLOUTS if (why := cannot(model, model.trained_dt * r.speed))
        },
    }  # fmt: skip


def _backward_context(
    model: SequenceModel, split: hgn_data.Split, ctx: dict[str, Any], start: int
) -> dict[str, Any]:
    """The backward rollout alone, from its own window at ``start`` (``--backward-start``):
    ``ctx``'s truth, noise floor and mean image (computed once), its own plan."""
    plan_ = plan(
        split.meta["steps"] + 1, start, model.context_frames, model.state_offset - ctx["back"],
        _longer(split), backward_only=True,
    )  # fmt: skip
    runs = tuple(r for r in ROLLOUTS if r.name == "backward")
    return {**ctx, "plan": plan_, "start": start, "runs": runs}


def _longer(split: hgn_data.Split) -> str:
    """How to get a longer test set than ``split``, for :func:`plan`'s refusals."""
    return LONGER_GENERATED if split.has_states else LONGER_IMPORTED


def _header(
    model: SequenceModel, split: hgn_data.Split, ctx: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    """The protocol's settings and the truth it compared with, for the results."""
    meta, truth, floor, fraction = split.meta, ctx["truth"], ctx["floor"], settings["vpt_fraction"]
    reader = ctx["reader"]
    return {
        "protocol": "extrapolate",
        "system": data_name(meta),
        "has_states": split.has_states,
        "frames": meta["steps"] + 1,
        "noise": meta.get("noise"),
        **settings,
        "context_frames": model.context_frames,
        "state_offset": model.state_offset,
        "rolled_back_steps": ctx["back"],
        "state_frame": ctx["plan"]["s0"],
        "dt": ctx["dt"],
        "noise_floor_mse_x1e4": floor * SCALE,
        "threshold": (
            f"{fraction:g} × each frame's mean-image MSE"
            if floor == 0
            else f"noise floor + {fraction:g} × (each frame's mean-image MSE − floor)"
        ),
        "truth": {
            "between_frames": "re-simulated and rendered with the dataset's system"
            if truth.resimulates
            else "not available: only steps that land on stored frames are compared",
            "render_check_max_abs_uint8": truth.render_error,
            "simulation_check_max_abs": truth.simulation_error,
            "noise_seed": f"numpy_rng({meta.get('seed')}, 'extrapolate-truth', 'NAME/ROW')",
        },
        "position_units": None
        if reader is None
        else {
            "world_units_per_pixel": 1.0 / physics.Canvas.of(reader, meta["size"]).scale,
            "canvas_half_width": physics.Canvas.of(reader, meta["size"]).extent,
        },
    }


def _scored(
    model: SequenceModel,
    split: hgn_data.Split,
    ctx: dict[str, Any],
    n: int,
    batch_size: int,
    vpt_fraction: float,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The rollouts of ``ctx`` on the first ``n`` sequences, batch by batch, from the
    window at ``ctx["start"]``: their summaries, and the pictures of the first batch's
    liveliest sequence."""
    start, context, tally = ctx["start"], model.context_frames, _Tally()
    pictures: dict[str, Any] = {"s0": ctx["plan"]["s0"]}
    for lo in tqdm(range(0, n, batch_size), desc="extrapolate", disable=not progress):
        rows = slice(lo, min(lo + batch_size, n))
        images = np.array(split.images[rows])
        states = tuple(None if a is None else np.array(a[rows]) for a in (split.q, split.p))
        window = to_frames(images[:, start : start + context], ctx["device"])
        if lo == 0:  # the picture shows the first batch's liveliest sequence
            shown = int(np.asarray(images, np.float32).std(1).mean((1, 2, 3)).argmax())
            pictures.update(truth=images[shown], index=shown)
        roll = _Rollouts(model, window, ctx["back"])
        _score_batch(roll, images, states, rows, ctx, tally, pictures)  # type: ignore[arg-type]
    return {r.name: _summary(r, tally, ctx, vpt_fraction) for r in ctx["runs"]}, pictures


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
    oracle: bool = False,
    backward_start: int | str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the protocol on ``split`` with mean image ``mean (3, H, W)``, the rollouts
    starting at the window's first frame or at the inferred state (``align``, see the
    module docs). Returns the results (JSON-ready) and the arrays the pictures need
    (the shown sequence). With ``oracle``, ``results["oracle"]`` holds the true physics
    from a state fitted to the same frames (:mod:`hgn.evaluation.oracle`) and each
    rollout its ``vpt_fraction_of_oracle``. ``backward_start`` (a frame, or
    :data:`END`): the backward rollout reads its own window there, so that a long test
    set is rolled far backwards as well as forwards (None: from ``start``'s window)."""
    n = min(positive_int(max_sequences, "--max-sequences"), len(split))
    batch_size = positive_int(batch_size, "--batch-size")
    b_start = backward_window(backward_start, split.meta["steps"] + 1, model.context_frames)
    ctx = _context(model, split, mean, start, align, n)
    back_ctx = None
    if b_start is not None and "backward" not in ctx["skipped"]:
        back_ctx = _backward_context(model, split, ctx, b_start)
    rollouts, pictures = _scored(model, split, ctx, n, batch_size, vpt_fraction, progress)
    if back_ctx is not None:
        back, back_pictures = _scored(model, split, back_ctx, n, batch_size, vpt_fraction, progress)
        rollouts["backward"] = back["backward"]
        pictures["backward"] = back_pictures["backward"]
    # the long rollout and the round trip on the first few sequences only
    few = np.array(split.images[: min(n, DRIFT_SEQUENCES), start : start + model.context_frames])
    roll = _Rollouts(model, to_frames(few, ctx["device"]), ctx["back"])
    trip_steps = min(ROUND_TRIP_STEPS, ctx["plan"]["backward"])
    energy, drift, reversible = _drift_and_reversibility(
        model, roll, drift_steps, trip_steps, ctx["dt"]
    )
    settings = {"sequences": n, "start": start, "align": align, "vpt_fraction": vpt_fraction}
    if back_ctx is not None:
        settings["backward_start"] = b_start
    results = _header(model, split, ctx, settings)
    results.update(reversible=reversible, energy_drift=drift, rollouts=rollouts)
    if oracle:
        from hgn.evaluation.oracle import run_oracle

        backward = None if back_ctx is None else (b_start, back_ctx["plan"])
        results["oracle"] = run_oracle(
            split, rollouts, n=n, start=start, context_frames=model.context_frames,
            plan=ctx["plan"], mean=mean, floor=ctx["floor"], fraction=vpt_fraction,
            batch_size=batch_size, backward=backward,
        )  # fmt: skip
    pictures["energy"] = energy
    results["shown"] = pictures["index"]
    return results, pictures
