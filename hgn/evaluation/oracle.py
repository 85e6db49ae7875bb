"""The oracle of the extrapolation protocol: the true physics, started from the state
that best explains the frames a model reads (issue 26).

A model can fall short of the data in two ways: it reads the state from the pictures
badly, or its dynamics are wrong. The oracle separates them. For a generated dataset
(which stores its system and its true states) it knows the true system but, like the
model, sees only the context window's frames: the state at the window's state frame
``s0`` is **fitted** to those frames through a differentiable rendering of the true
system (:meth:`hgn.physics.systems.System.render_float`) of a differentiable rollout of
the true dynamics, then rolled out with the accurate simulator
(:meth:`~hgn.physics.systems.System.simulate`), drawn with the data's own renderer and
scored exactly as the protocol scores a model (same truth frames, same mean image, same
noise floor and threshold). The model's valid time as a fraction of the oracle's says
how much of what the pictures allow the model achieves.

The **fit** (:func:`fit_state`): body positions are read back from each window frame
(:func:`hgn.evaluation.physics.recover`) and turned into coordinates
(:func:`~hgn.evaluation.physics.positions_to_q`); q at the state frame and dq/dt come
from a least-squares quadratic in time through the 5 frames nearest it, and
p = M(q) dq/dt with the
system's own inverse mass matrix (dH/dp at unit momenta, as
:func:`~hgn.evaluation.physics.energy_along` does: every built-in H is quadratic in p).
Gauss–Newton steps of the true dynamics on those coordinates (:func:`refine_on_coordinates`,
over windows doubling up to the whole) correct the polynomial's neglect of the forces.
Then Adam minimises the pixel MSE between the rendered rollout over the window (RK4 with
a quarter of the simulator's sub-steps, forward of ``s0`` with dt and backward with
−dt) and the frames, in coordinates scaled by the data's per-coordinate state spread,
with a cosine learning-rate decay, keeping each sequence's best iterate. Batched over
sequences, no randomness (repeatable up to floating-point round-off). Data whose
pictures differ per sequence (random colours, canvas shifts, varied constants) has no
fixed geometry to read positions with and is skipped, as is imported data.

The **sensitivity curve** (:func:`sensitivity`): the true state at ``s0`` perturbed by a
relative error ε — ``x + ε · s ⊙ z`` with ``s`` the standard deviation of each state
coordinate (q and p) over the data's sequences and frames, ``z`` a seeded standard normal
draw, the same ``z`` for every ε — rolled forward and scored. The fitted state's error is
measured in the same units (RMS over coordinates of ``(x̂ − x) / s``; angles wrapped), so
it can be read against the curve.

The **comparison** (:func:`compare`): per rollout, the ratio of the means over sequences
(model ``vpt_mean`` / oracle ``vpt_mean``), chosen over a mean of per-sequence ratios
because a sequence on which the oracle itself fails at once would make its ratio
undefined or huge; None where the oracle's mean is 0.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from hgn import data as hgn_data
from hgn.data import to_frames
from hgn.evaluation import physics
from hgn.evaluation.metrics import score
from hgn.evaluation.truth import Truth
from hgn.physics.integrators import rollout
from hgn.physics.systems import System, one_thread
from hgn.utils import numpy_rng

if TYPE_CHECKING:  # extrapolate imports this module: at run time its names are imported late
    from hgn.evaluation.extrapolate import Rollout

ERRORS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
"""Relative state errors of the sensitivity curve (0.01 % to 3 %)."""

ITERATIONS = 100
"""Adam iterations of the fit."""

LEARNING_RATE = 1e-2
"""Adam's initial step in units of the per-coordinate state spread (cosine-decayed to
1 % of it). Measured on 16 clean 32×32 sequences, 5-frame windows at dt 0.125: from the
refined start (off by 0.03–0.25 % on pendulum, 0.3–4 % on two-body) 100 iterations end
below 0.01 % on pendulum and at 0.03–0.14 % on two-body (3e-3 leaves two-body up to
0.14 % too; without the Gauss–Newton start, 3e-3 left pendulum sequences at 1.4 %)."""

COARSER = 4
"""The fit's rollout takes this many times fewer RK4 sub-steps than the simulator's
(:meth:`~hgn.physics.systems.System.substeps`, tuned for 1e-6): over a 31-frame window at
dt 0.125 the positions move by at most 2e-5 (pendulum, radians) and 5e-6 (two-body,
world units), under 0.1 % of a pixel at 32×32, for a quarter of the cost."""

GAUSS_NEWTON = 3
"""Gauss–Newton steps of the start on the read-back coordinates, per window length."""

POLYNOMIAL_FRAMES = 5
"""Frames nearest the state frame that the start's polynomial in time is fitted to."""

MIN_FRAMES = 3
"""The fewest frames the oracle reads: a model that reads fewer (one frame carries no
velocity at all) is compared with an oracle that reads the frames from the same start
up to this many."""

ANGULAR = ("pendulum", "double-pendulum")
"""Systems whose coordinates are angles: their errors are wrapped to (−π, π]."""


# ----------------------------------------------------------------------------- state


def state_scale(split: hgn_data.Split, n: int) -> Tensor:
    """Per-coordinate spread ``(2 dof,)`` of the true states (q then p): the standard
    deviation over the first ``n`` sequences and all their frames (a tiny floor keeps a
    constant coordinate usable)."""
    q = np.asarray(split.q[:n], np.float64)
    p = np.asarray(split.p[:n], np.float64)
    both = np.concatenate([q, p], -1).reshape(-1, q.shape[-1] * 2)
    spread = torch.from_numpy(both.std(0))
    return spread.clamp(min=1e-6 * float(spread.max().clamp(min=1e-12)))


def relative_error(system: System, q_hat: Tensor, p_hat: Tensor, q: Tensor, p: Tensor,
                   scale: Tensor) -> Tensor:  # fmt: skip
    """Per sequence: RMS over coordinates of ``(x̂ − x) / scale`` for states ``(n, dof)``,
    angles wrapped (a pendulum's angle is only known modulo 2π from a picture)."""
    dq = q_hat.double() - q.double()
    if system.name in ANGULAR:
        dq = torch.remainder(dq + math.pi, 2.0 * math.pi) - math.pi
    diff = torch.cat([dq, p_hat.double() - p.double()], -1) / scale
    return diff.square().mean(-1).sqrt()


def momentum_of(system: System, q: Tensor, velocity: Tensor) -> Tensor:
    """``p`` with ``dH/dp(q, p) = velocity``: every built-in H is quadratic in p, so
    ``dH/dp = M(q)⁻¹ p``, whose columns are dH/dp at the unit momenta."""
    unit = torch.eye(q.shape[-1], dtype=q.dtype)
    columns = [system.grad(q, unit[i].expand_as(q))[1] for i in range(q.shape[-1])]
    return torch.linalg.solve(torch.stack(columns, -1), velocity.unsqueeze(-1)).squeeze(-1)


def initial_state(
    system: System, frames: np.ndarray | Tensor, dt: float, state_index: int,
    reader: System | None = None, refine: int = GAUSS_NEWTON,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The fit's start: q and p at frame ``state_index`` of ``frames (B, k, H, W, 3)``
    from the body positions read back from every frame (``reader``: the unbound system
    whose fixed palette and geometry the pictures have; ``system`` by default), through a
    least-squares polynomial in time (degree 2, less for fewer frames) over the
    :data:`POLYNOMIAL_FRAMES` frames nearest the state frame, then ``refine``
    Gauss–Newton steps of the true dynamics on those coordinates
    (:func:`refine_on_coordinates`) over windows around the state frame that double in
    length up to all k frames (a long window's oscillations defeat a polynomial, and a
    poor start can lead Gauss–Newton astray on it)."""
    reader = system if reader is None else reader
    positions = physics.recover(frames, reader).bodies()  # (B, k, bodies, 2)
    q_seen = torch.from_numpy(physics.positions_to_q(reader, positions)).double()  # (B, k, dof)
    k = q_seen.shape[1]
    near = _around(k, state_index, POLYNOMIAL_FRAMES)
    length = near.stop - near.start
    degree = min(2, length - 1)
    t = torch.arange(near.start, near.stop, dtype=torch.float64) - state_index
    basis = torch.stack([t**d for d in range(degree + 1)], -1)  # (length, degree + 1)
    coef = torch.linalg.lstsq(basis.expand(len(q_seen), length, -1), q_seen[:, near]).solution
    q0 = coef[:, 0]
    velocity = coef[:, 1] / dt if degree >= 1 else torch.zeros_like(q0)
    p0 = momentum_of(system, q0, velocity)
    while refine and length >= 2:
        part = _around(k, state_index, length)
        q0, p0 = refine_on_coordinates(
            system, q0, p0, q_seen[:, part], dt, state_index - part.start, refine
        )
        if length >= k:
            break
        length = min(2 * length, k)
    return q0, p0


def _around(k: int, index: int, length: int) -> slice:
    """``length`` consecutive frames of ``k`` (all if fewer), centred on ``index`` as far
    as the ends allow."""
    length = min(length, k)
    lo = min(max(0, index - length // 2), k - length)
    return slice(lo, lo + length)


def refine_on_coordinates(
    system: System, q: Tensor, p: Tensor, q_seen: Tensor, dt: float, state_index: int,
    steps: int = 3,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Gauss–Newton steps on ``Σ |window_rollout(q, p) − q_seen|²`` over the window's
    coordinates ``q_seen (B, k, dof)`` (read back from the pictures), with a
    finite-difference Jacobian (one rollout per state coordinate, no graph): the
    polynomial start ignores the forces, which the true dynamics know, and is off by up
    to ~15 % at the window's edge; a few steps bring it to what the read-back positions
    allow."""
    x = torch.cat([q, p], -1)
    dof, k = q.shape[-1], q_seen.shape[1]
    with one_thread(), torch.no_grad():
        for _ in range(steps):
            base = window_rollout(system, x[:, :dof], x[:, dof:], dt, state_index, k)
            residual = (base - q_seen).flatten(1)  # (B, k dof)
            columns = []
            for j in range(2 * dof):
                h = 1e-6 * (1.0 + x[:, j].abs())
                y = x.clone()
                y[:, j] += h
                moved = window_rollout(system, y[:, :dof], y[:, dof:], dt, state_index, k)
                columns.append((moved - base).flatten(1) / h[:, None])
            jacobian = torch.stack(columns, -1)  # (B, k dof, 2 dof)
            step = torch.linalg.lstsq(jacobian, -residual.unsqueeze(-1)).solution.squeeze(-1)
            x = torch.where(torch.isfinite(step).all(-1, keepdim=True), x + step, x)
    return x[:, :dof], x[:, dof:]


def window_rollout(system: System, q: Tensor, p: Tensor, dt: float, state_index: int,
                   frames: int, substeps: int | None = None) -> Tensor:  # fmt: skip
    """Differentiable positions ``(B, frames, dof)`` of the true dynamics through a
    window whose frame ``state_index`` holds the state ``(q, p)``: RK4 (the simulator's
    method) forward with dt and backward with −dt, ``substeps`` per frame (by default
    :data:`COARSER` times fewer than the simulator's)."""
    sub = max(1, math.ceil(system.substeps(dt) / COARSER)) if substeps is None else substeps
    parts = []
    if state_index > 0:
        back, _ = rollout(system.field, q, p, -dt, state_index, method=system.method,
                          substeps=sub)  # fmt: skip
        parts.append(back.flip(0)[:-1])
    ahead, _ = rollout(system.field, q, p, dt, frames - 1 - state_index,
                       method=system.method, substeps=sub)  # fmt: skip
    parts.append(ahead)
    return torch.cat(parts).transpose(0, 1)


def fit_state(
    system: System,
    frames: np.ndarray | Tensor,
    dt: float,
    state_index: int,
    *,
    scale: Tensor | None = None,
    iterations: int = ITERATIONS,
    lr: float = LEARNING_RATE,
    substeps: int | None = None,
    init: tuple[Tensor, Tensor] | None = None,
    reader: System | None = None,
) -> tuple[Tensor, Tensor]:
    """The state ``(q, p)``, each ``(B, dof)`` float64, at frame ``state_index`` of the
    window ``frames (B, k, H, W, 3)`` (uint8, or floats in [0, 1]) that best explains all
    k frames under the true dynamics of ``system`` (bound to the B sequences' values
    where the data has per-trajectory ones).

    Starts from :func:`initial_state` (or ``init``) and runs ``iterations`` Adam steps
    on the pixel MSE of :meth:`~hgn.physics.systems.System.render_float` of
    :func:`window_rollout`, in coordinates divided by ``scale (2 dof,)`` (the data's
    per-coordinate spread, :func:`state_scale`; ones by default); returns each
    sequence's lowest-loss iterate."""
    x = frames if isinstance(frames, Tensor) else torch.from_numpy(np.asarray(frames))
    target = x.double() / 255.0 if x.dtype == torch.uint8 else x.double()
    batch, k, size = target.shape[0], target.shape[1], target.shape[-2]
    q0, p0 = initial_state(system, frames, dt, state_index, reader) if init is None else init
    q0, p0 = q0.double(), p0.double()
    dof = q0.shape[-1]
    scale = torch.ones(2 * dof, dtype=torch.float64) if scale is None else scale.double()
    u = torch.zeros(batch, 2 * dof, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.Adam([u], lr=lr)
    best = torch.full((batch,), math.inf, dtype=torch.float64)
    best_u = torch.zeros(batch, 2 * dof, dtype=torch.float64)
    with one_thread(), torch.enable_grad():
        for i in range(iterations + 1):
            shift = u * scale
            qs = window_rollout(system, q0 + shift[:, :dof], p0 + shift[:, dof:], dt,
                                state_index, k, substeps)  # fmt: skip
            loss = (system.render_float(qs, size) - target).square().mean((1, 2, 3, 4))
            with torch.no_grad():
                better = loss < best
                best = torch.where(better, loss, best)
                best_u[better] = u[better]
            if i == iterations:
                break
            for group in optimiser.param_groups:  # cosine decay to 1 % of lr
                group["lr"] = lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * i / iterations)))
            optimiser.zero_grad()
            loss.sum().backward()
            optimiser.step()
    shift = best_u * scale
    return q0 + shift[:, :dof], p0 + shift[:, dof:]


# ----------------------------------------------------------------------------- scoring


def _score_rollouts(
    system: System, q0: Tensor, p0: Tensor, truth: list[np.ndarray], meta: dict[str, Any],
    speeds: list[float], mean: Tensor,
) -> tuple[list[np.ndarray], list[np.ndarray]]:  # fmt: skip
    """Per-step MSEs ``(n, steps+1)`` of the true system's rollouts from ``(q0, p0)`` at
    each speed against ``truth`` frames, and of the mean image on the same frames."""
    mses, bases = [], []
    for speed, frames in zip(speeds, truth, strict=True):
        steps = frames.shape[1] - 1
        qs, _ = system.simulate(q0, p0, meta["dt"] * speed, steps)
        pred = to_frames(system.render(qs, meta["size"]), "cpu")
        target = to_frames(frames, "cpu")
        mses.append((pred - target).square().mean((2, 3, 4)).numpy())
        bases.append((target - mean.cpu()).square().mean((2, 3, 4)).numpy())
    return mses, bases


def oracle_rollouts(
    split: hgn_data.Split,
    rows: slice,
    start: int,
    context_frames: int,
    state_index: int,
    plan: dict[str, int],
    *,
    mean: Tensor,
    floor: float = 0.0,
    fraction: float = 0.5,
    batch_size: int = 32,
    iterations: int = ITERATIONS,
    scale: Tensor | None = None,
    names: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """The oracle on sequences ``rows`` of a generated ``split``: the state at frame
    ``plan["s0"]`` (= ``start + state_index``) fitted to the ``context_frames`` frames
    from ``start`` (at least :data:`MIN_FRAMES`), the protocol's four rollouts
    (:data:`hgn.evaluation.extrapolate.ROLLOUTS`, steps from ``plan``; ``names``: only
    those) simulated from it, rendered as the data is and scored as the protocol scores
    a model. Returns ``{"rollouts": {name: score}, "state_error": {...}, "fit": {...}}``."""
    from hgn.evaluation.extrapolate import ROLLOUTS

    runs = tuple(r for r in ROLLOUTS if names is None or r.name in names)
    meta, s0 = split.meta, plan["s0"]
    reader = _position_reader(split, start, state_index, s0)
    truth = Truth(split)
    read = min(max(context_frames, MIN_FRAMES, state_index + 1), meta["steps"] + 1 - start)
    scale = state_scale(split, rows.stop) if scale is None else scale
    fit = functools.partial(
        fit_state, dt=meta["dt"], state_index=state_index, scale=scale,
        iterations=iterations, reader=reader,
    )  # fmt: skip
    parts: dict[str, dict[str, list[np.ndarray]]] = {"mse": {}, "base": {}}
    available: dict[str, np.ndarray] = {}
    errors, position_errors = [], []
    for lo in range(rows.start or 0, rows.stop, batch_size):
        batch = slice(lo, min(lo + batch_size, rows.stop))
        images = np.array(split.images[batch])
        q, p = np.array(split.q[batch]), np.array(split.p[batch])
        system = truth.bound(batch)
        q_hat, p_hat = (x.detach() for x in fit(system, images[:, start : start + read]))
        relative, position = _state_errors(system, q_hat, p_hat, q[:, s0], p[:, s0], scale)
        errors.append(relative)
        position_errors.append(position)
        for r in runs:
            frames, _, available[r.name] = truth.frames(
                images, q, p, s0, r.speed, plan[r.name], f"{r.name}/{lo}", batch
            )
            (mse,), (base,) = _score_rollouts(system, q_hat, p_hat, [frames], meta, [r.speed], mean)
            parts["mse"].setdefault(r.name, []).append(mse)
            parts["base"].setdefault(r.name, []).append(base)
    return {
        "rollouts": _rollout_scores(runs, parts, available, floor, fraction),
        "state_error": _state_error(np.concatenate(errors), np.concatenate(position_errors)),
        "fit": _fit_settings(read, state_index, iterations),
    }


def _position_reader(split: hgn_data.Split, start: int, state_index: int, s0: int) -> System:
    """The system that reads the split's body positions from its frames (the fit starts
    from them); a plan whose first state is not the fitted frame is a caller's bug."""
    if s0 != start + state_index:
        raise ValueError(f"plan's s0 {s0} is not start {start} + state_index {state_index}")
    reader = physics.readable(split)
    assert reader is not None, "oracle_rollouts needs data whose positions can be read"
    return reader


def _state_errors(
    system: System, q_hat: Tensor, p_hat: Tensor, q: np.ndarray, p: np.ndarray, scale: Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence, how far the fitted state is from the true one ``(q, p)``: relative to
    the data's spread (:func:`relative_error`), and as the RMS distance of the bodies'
    positions in world units (what the pictures show)."""
    q_true, p_true = torch.from_numpy(q), torch.from_numpy(p)
    relative = relative_error(system, q_hat, p_hat, q_true, p_true, scale).numpy()
    found = system.positions(q_hat) - system.positions(q_true)
    return relative, found.square().sum(-1).mean(-1).sqrt().numpy()


def _rollout_scores(
    runs: tuple[Rollout, ...],
    parts: dict[str, dict[str, list[np.ndarray]]],
    available: dict[str, np.ndarray],
    floor: float,
    fraction: float,
) -> dict[str, dict[str, Any]]:
    """Each protocol rollout's score over all batches, as the protocol scores a model's
    (the same :func:`~hgn.evaluation.metrics.score`), so the two sit in one table."""
    rollouts = {}
    for r in runs:
        mse, base = (np.concatenate(parts[key][r.name]) for key in ("mse", "base"))
        result = score(mse, base, available[r.name], floor, fraction)
        rollouts[r.name] = {"label": r.label, **_headline(result)}
    return rollouts


def _state_error(err: np.ndarray, pos: np.ndarray) -> dict[str, Any]:
    """How far the fitted states are from the true ones, per sequence ``err`` relative
    and ``pos`` in world units: the oracle's own error, which bounds how good it can be."""
    return {
        "relative_mean": float(err.mean()),
        "relative_median": float(np.median(err)),
        "relative_max": float(err.max()),
        "position_rms_world": float(np.sqrt(np.square(pos).mean())),
        "units": "RMS over q and p coordinates of (fitted − true) / (the coordinate's "
        "std over the data), angles wrapped",
    }


def _fit_settings(read: int, state_index: int, iterations: int) -> dict[str, Any]:
    """How the states were fitted, recorded with the scores so a reader can redo it."""
    return {
        "frames_read": read,
        "state_index": state_index,
        "iterations": iterations,
        "learning_rate": LEARNING_RATE,
        "optimiser": "Adam, cosine-decayed, best iterate per sequence",
        "start": "positions read back from the frames, quadratic fit in time, p = M(q) dq/dt",
    }


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a :func:`~hgn.evaluation.metrics.score` a comparison needs."""
    keys = ("steps", "mse_x1e4", "ratio", "vpt_mean", "vpt_std", "vpt_median",
            "vpt_full_fraction", "per_step_mse")  # fmt: skip
    return {k: result[k] for k in keys}


def sensitivity(
    split: hgn_data.Split,
    errors: tuple[float, ...] = ERRORS,
    *,
    rows: slice,
    s0: int,
    steps: int,
    mean: Tensor,
    floor: float = 0.0,
    fraction: float = 0.5,
    seed: int = 0,
    batch_size: int = 64,
    scale: Tensor | None = None,
) -> list[dict[str, Any]]:
    """The forward valid time of the true system started from the true state at frame
    ``s0`` perturbed by each relative error ε in ``errors``: ``x + ε · scale ⊙ z``
    (``scale`` the per-coordinate spread of :func:`state_scale`, ``z`` standard normal
    from ``seed``, the same for every ε), ``steps`` steps forward, scored like the
    protocol's forward rollout. One entry per ε: ``vpt_mean``, ``vpt_median``,
    ``vpt_full_fraction``."""
    meta, truth = split.meta, Truth(split)
    scale = state_scale(split, rows.stop) if scale is None else scale
    out: dict[float, dict[str, list[np.ndarray]]] = {e: {"mse": [], "base": []} for e in errors}
    available = np.ones(steps + 1, bool)
    for lo in range(rows.start or 0, rows.stop, batch_size):
        batch = slice(lo, min(lo + batch_size, rows.stop))
        images = np.array(split.images[batch])
        q, p = np.array(split.q[batch]), np.array(split.p[batch])
        frames, _, available = truth.frames(images, q, p, s0, 1.0, steps, f"forward/{lo}", batch)
        system = truth.bound(batch)
        x = torch.from_numpy(np.concatenate([q[:, s0], p[:, s0]], -1))
        z = torch.from_numpy(numpy_rng(seed, "oracle-sensitivity", lo).standard_normal(x.shape))
        dof = q.shape[-1]
        for e in errors:
            y = x + e * scale * z
            mses, bases = _score_rollouts(system, y[:, :dof], y[:, dof:], [frames], meta,
                                          [1.0], mean)  # fmt: skip
            out[e]["mse"].append(mses[0])
            out[e]["base"].append(bases[0])
    curve = []
    for e in errors:
        result = score(np.concatenate(out[e]["mse"]), np.concatenate(out[e]["base"]),
                       available, floor, fraction)  # fmt: skip
        curve.append({
            "relative_error": e, "steps": steps, "vpt_mean": result["vpt_mean"],
            "vpt_median": result["vpt_median"], "vpt_full_fraction": result["vpt_full_fraction"],
        })  # fmt: skip
    return curve


def compare(model: dict[str, Any], oracle: dict[str, Any]) -> dict[str, float | None]:
    """Per rollout name in both: the model's valid time as a fraction of the oracle's,
    the ratio of their means over the same sequences (None where the oracle's is 0)."""
    return {
        name: (model[name]["vpt_mean"] / o["vpt_mean"] if o["vpt_mean"] > 0 else None)
        for name, o in oracle.items()
        if name in model
    }


def skip_reason(split: hgn_data.Split) -> str | None:
    """Why the oracle cannot run on ``split``, or None where it can."""
    if not split.has_states or physics.simulator(split) is None:
        return "the data has no simulator or true states (imported): there is no true physics"
    if physics.readable(split) is None:
        return (
            "the pictures differ per sequence (random colours, canvas shifts or varied "
            "constants): the fit's starting positions cannot be read back"
        )
    return None


def run_oracle(
    split: hgn_data.Split,
    model_rollouts: dict[str, dict[str, Any]],
    *,
    n: int,
    start: int,
    context_frames: int,
    plan: dict[str, int],
    mean: Tensor,
    floor: float = 0.0,
    fraction: float = 0.5,
    batch_size: int = 32,
    iterations: int = ITERATIONS,
    errors: tuple[float, ...] = ERRORS,
    backward: tuple[int, dict[str, int]] | None = None,
) -> dict[str, Any]:
    """``results["oracle"]`` of the protocol for the model's ``model_rollouts`` (whose
    entries get ``vpt_fraction_of_oracle``) on the first ``n`` sequences, or
    ``{"skipped": reason}``. ``backward``: the start and plan of the backward rollout's
    own window (``--backward-start``), fitted there as the model reads it there."""
    reason = skip_reason(split)
    if reason is not None:
        return {"skipped": reason}
    rows = slice(0, n)
    scale = state_scale(split, n)
    state_index = plan["s0"] - start
    result = oracle_rollouts(
        split, rows, start, context_frames, state_index, plan, mean=mean, floor=floor,
        fraction=fraction, batch_size=batch_size, iterations=iterations, scale=scale,
    )  # fmt: skip
    if backward is not None:
        b_start, b_plan = backward
        back = oracle_rollouts(
            split, rows, b_start, context_frames, b_plan["s0"] - b_start, b_plan, mean=mean,
            floor=floor, fraction=fraction, batch_size=batch_size, iterations=iterations,
            scale=scale, names=("backward",),
        )  # fmt: skip
        result["rollouts"]["backward"] = back["rollouts"]["backward"]
        result["backward_state_error"] = back["state_error"]
    result["sensitivity"] = sensitivity(
        split, errors, rows=rows, s0=plan["s0"], steps=plan["forward"], mean=mean,
        floor=floor, fraction=fraction, scale=scale,
    )  # fmt: skip
    fractions = compare(model_rollouts, result["rollouts"])
    for name, value in fractions.items():
        model_rollouts[name]["vpt_fraction_of_oracle"] = value
    result["comparison"] = "model vpt_mean / oracle vpt_mean over the same sequences"
    return result


def oracle_markdown(results: dict[str, Any]) -> str:
    """The oracle's paragraph and tables for ``extrapolate.md`` ("" without an oracle)."""
    oracle = results.get("oracle")
    if not oracle:
        return ""
    if "skipped" in oracle:
        return f"Oracle: not run ({oracle['skipped']})."
    err, fit = oracle["state_error"], oracle["fit"]
    lines = [
        "## The oracle: true physics from the same frames",
        "",
        f"The true system, started from the state that best explains the {fit['frames_read']} "
        f"frame(s) from frame {results.get('start', '?')} (fitted through a differentiable "
        "rendering; hgn.evaluation.oracle), rolled out and scored like the model. Fitted "
        f"state error: {100 * err['relative_median']:.3f} % median, "
        f"{100 * err['relative_mean']:.3f} % mean ({err['units']}); body positions off "
        f"by {err['position_rms_world']:.4f} world units RMS. A model far below the oracle "
        "falls short of the physics (or of reading the state); an oracle that itself fails "
        "early says the frames do not pin the state down well enough.",
        "",
        "| rollout | steps | model valid time: mean, median, all steps "
        "| oracle valid time: mean, median, all steps | model / oracle (ratio of means) |",
        "|---|---|---|---|---|",
    ]
    for name, o in oracle["rollouts"].items():
        m = results["rollouts"].get(name, {})
        fraction = m.get("vpt_fraction_of_oracle")
        shown = "n/a" if fraction is None else f"{fraction:.2f}"
        lines.append(f"| {o['label']} | {o['steps']} | {_vpts(m)} | {_vpts(o)} | {shown} |")
    lines += [
        "",
        "Sensitivity: the oracle's forward valid time from the true state with a relative "
        "error ε (each coordinate moved by ε × its std over the data, seeded normal draw):",
        "",
        "| ε | valid time mean | median | all steps |",
        "|---|---|---|---|",
    ]
    for row in oracle["sensitivity"]:
        lines.append(
            f"| {100 * row['relative_error']:g} % | {row['vpt_mean']:.1f} of {row['steps']} "
            f"| {row['vpt_median']:.0f} | {100 * row['vpt_full_fraction']:.0f} % |"
        )
    return "\n".join(lines)


def _vpts(r: dict[str, Any]) -> str:
    if "vpt_mean" not in r:
        return "n/a"
    return f"{r['vpt_mean']:.1f}, {r['vpt_median']:.0f}, {100 * r['vpt_full_fraction']:.0f} %"
