"""Physics read back from pixels: where each body is in a frame, and whether a sequence
of frames obeys the system's own conservation of energy.

Pixel MSE says how different two pictures are, not how wrong the physics is: a disc
drawn one radius off and a faint grey smear can score alike. For the built-in systems
the pictures are simple enough to invert. Every body is a disc of its own palette colour
painted over a constant background (:mod:`hgn.physics.systems`), so a pixel is
``background + Σ_b α_b (colour_b − background)`` with coverages ``α_b`` in [0, 1]. With
three palette colours and three channels the colours' directions form an invertible 3×3
matrix, and one matrix product per pixel *unmixes* the frame into one coverage map per
colour. A body's position is its coverage-weighted centroid, mapped from pixels to world
units with the canvas geometry the renderer used; its coverage mass (in disc areas) and
spatial spread (in disc radii) say whether a compact disc of the right size is there.

Everything is batched over any leading axes (sequences, time): no loop over frames or
pixels, only over chunks that bound memory.

With positions known, a sequence's physics can be checked with the *system's true*
Hamiltonian: momenta from central finite differences (every built-in system has
``K = |p|² / (2M)`` with a constant mass ``M``, read off the system's own ``dH/dp``), and
the spread of ``H(q, p)`` along the sequence measures how far the pictured motion is
from a conserved-energy trajectory. The same pipeline run on the ground-truth frames
gives the reference number, so the finite-difference and recovery errors cancel out of
the comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hgn import data as hgn_data
from hgn.models import SequenceModel
from hgn.physics.systems import PALETTE, System
from hgn.plots import hwc
from hgn.utils import UserError

CHUNK_PIXELS = 1 << 21
"""Frames are unmixed in chunks of about this many pixels (bounds peak memory)."""

MIN_COVERAGE = 0.15
"""Coverage below this counts as background. A model's decoded background is never
exactly the background colour, and over a whole frame those small deviations would
outweigh a disc of a dozen pixels and drag every centroid towards the canvas centre;
rendered frames lose only the faint anti-aliased rim, which is symmetric about the
centre (sub-pixel effect, measured in tests/test_physics_recovery.py)."""

MASS_RANGE = (0.5, 1.6)
"""A body is *found* when its coverage mass is within this range of one disc's area…"""

MAX_SPREAD = 1.5
"""…and its RMS distance from its centroid is at most this many times a uniform disc's
(r/√2, plus half a pixel): a faint smear, a blur or one colour split into two discs
fails one of the two tests."""


def _quantised(colour: Any) -> np.ndarray:
    """Colours as the renderer stores them (uint8: value·255 + 0.5, truncated), in [0, 1]."""
    return np.floor(np.asarray(colour, np.float64) * 255.0 + 0.5) / 255.0


def simulator(split: hgn_data.Split) -> System | None:
    """The dataset's own simulator (:func:`hgn.data.system_of`), or None where there is
    none to trust: imported data, or no clean states stored."""
    if getattr(split, "q", None) is None or getattr(split, "p", None) is None:
        return None
    try:
        return hgn_data.system_of(split.meta)
    except (UserError, KeyError, TypeError):
        return None


def bind_rows(system: System, split: hgn_data.Split, rows: slice) -> System:
    """``system`` with the per-trajectory values (varied constants, colours, canvas
    shifts) of sequences ``rows`` of ``split`` bound, or itself where the data has none:
    a random variant's frames can only be redrawn with each sequence's own values."""
    values = getattr(split, "values", None) or {}
    if not values:
        return system
    return system.bind({k: torch.as_tensor(np.array(v[rows])) for k, v in values.items()})


def readable(split: hgn_data.Split) -> System | None:
    """The simulator if body positions can be read back with one fixed geometry and
    palette for every sequence, else None (random colours, per-trajectory canvas shifts
    or constants: their pictures differ from sequence to sequence)."""
    system = simulator(split)
    if system is None or getattr(split, "values", None) or system.random_colours:
        return None
    if system.vary or system.constants.get("offset", 0) > 0:
        return None
    return system


@dataclass(frozen=True)
class Canvas:
    """The renderer's geometry and colours for one system at one image size.

    The unmixing basis is the paper palette (all three colours, so that a disc of a
    colour the system does not have is seen too) or, in the suite's style, the system's
    own hues; ``own`` says which basis colour each body wears.
    """

    size: int
    extent: float
    """Half-width of the square canvas in world units."""
    background: tuple[float, float, float]
    basis: tuple[tuple[float, float, float], ...]
    radii: tuple[float, ...]
    """Disc radius in world units of each basis colour."""
    own: tuple[int, ...]
    """Basis index of each of the system's bodies, in body order."""

    @classmethod
    def of(cls, system: System, size: int) -> Canvas:
        colours = tuple(tuple(float(v) for v in c) for c in system.colours)
        basis = tuple(PALETTE) if system.style == "paper" else colours
        own = tuple(basis.index(c) for c in colours)
        per_body = system.radii(torch.zeros(1, dtype=torch.float64))
        if isinstance(per_body, Tensor):
            body_radii = [float(r) for r in per_body.reshape(-1)]
        else:
            body_radii = [float(per_body)] * system.bodies
        typical = float(np.mean(body_radii))
        radii = [typical] * len(basis)
        for body, k in enumerate(own):
            radii[k] = body_radii[body]
        return cls(int(size), system.extent(), system.background, basis, tuple(radii), own)

    @property
    def scale(self) -> float:
        """Pixels per world unit."""
        return self.size / (2.0 * self.extent)

    def radii_px(self) -> np.ndarray:
        return np.asarray(self.radii) * self.scale


@dataclass
class Recovered:
    """What :func:`recover` finds in frames ``(..., H, W, 3)``, per basis colour ``K``."""

    positions: np.ndarray
    """``(..., K, 2)`` centroids in world units (the canvas centre where a colour is absent)."""
    mass: np.ndarray
    """``(..., K)`` coverage mass in units of one disc's area (1 for a whole disc)."""
    spread: np.ndarray
    """``(..., K)`` RMS distance from the centroid, in units of a uniform disc's (r/√2)."""
    found: np.ndarray
    """``(..., K)`` bool: a compact disc of about the right size is there."""
    canvas: Canvas

    def bodies(self) -> np.ndarray:
        """``(..., bodies, 2)``: positions of the system's own bodies, in body order."""
        return self.positions[..., list(self.canvas.own), :]

    def right_count(self) -> np.ndarray:
        """``(...)`` bool: every one of the system's bodies is found and no other colour."""
        own = np.zeros(len(self.canvas.basis), bool)
        own[list(self.canvas.own)] = True
        return (self.found == own).all(-1)


def _as_float_hwc(frames: np.ndarray | Tensor) -> Tensor:
    """uint8 or [0, 1] float frames, channels last, as a float32 tensor in [0, 1]."""
    x = frames if isinstance(frames, Tensor) else torch.from_numpy(np.array(frames))
    if x.dtype == torch.uint8:
        return x.to(torch.float32) / 255.0
    return x.to(torch.float32)


def recover(frames: np.ndarray | Tensor, system: System) -> Recovered:
    """Unmix frames ``(..., H, W, 3)`` (channels last, uint8 or floats in [0, 1]) into
    per-colour coverage and return each basis colour's centroid, mass and spread."""
    x = _as_float_hwc(frames)
    if x.ndim < 3 or x.shape[-1] != 3 or x.shape[-2] != x.shape[-3]:
        raise ValueError(f"expected square frames (..., H, W, 3), got {tuple(x.shape)}")
    canvas = Canvas.of(system, x.shape[-2])
    background = torch.from_numpy(_quantised(canvas.background)).float()
    directions = torch.from_numpy(_quantised(canvas.basis) - _quantised(canvas.background))
    unmix = torch.linalg.pinv(directions.float())  # (3 channels, K colours)
    size = canvas.size
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / canvas.scale
    xs = centres - canvas.extent  # world x of each column
    ys = canvas.extent - centres  # world y of each row
    lead = x.shape[:-3]
    flat = x.reshape(-1, size, size, 3)
    chunk = max(1, CHUNK_PIXELS // (size * size))
    outs: list[tuple[Tensor, ...]] = []
    for lo in range(0, len(flat), chunk):
        alpha = (flat[lo : lo + chunk] - background) @ unmix  # (n, H, W, K)
        w = torch.where(alpha >= MIN_COVERAGE, alpha.clamp(max=1.0), torch.zeros(()))
        mass = w.sum((1, 2))  # (n, K)
        safe = mass.clamp(min=1e-6)
        cx = torch.einsum("nhwk,w->nk", w, xs) / safe
        cy = torch.einsum("nhwk,h->nk", w, ys) / safe
        dx2 = torch.einsum("nhwk,w->nk", w, xs.square()) / safe - cx.square()
        dy2 = torch.einsum("nhwk,h->nk", w, ys.square()) / safe - cy.square()
        absent = mass < 1e-3
        cx, cy = cx.masked_fill(absent, 0.0), cy.masked_fill(absent, 0.0)
        rms = (dx2 + dy2).clamp(min=0.0).sqrt() * canvas.scale  # pixels
        outs.append((torch.stack([cx, cy], -1), mass, rms))
    pos, mass, rms = (torch.cat(parts).double().numpy() for parts in zip(*outs, strict=True))
    r_px = canvas.radii_px()
    disc_rms = r_px / math.sqrt(2.0)
    mass = mass / (math.pi * r_px**2)
    spread = rms / disc_rms
    limit = MAX_SPREAD + 0.5 / disc_rms
    found = (mass >= MASS_RANGE[0]) & (mass <= MASS_RANGE[1]) & (spread <= limit)
    k = len(canvas.basis)
    return Recovered(
        positions=pos.reshape(*lead, k, 2),
        mass=mass.reshape(*lead, k),
        spread=spread.reshape(*lead, k),
        found=found.reshape(*lead, k),
        canvas=canvas,
    )


def true_positions(system: System, q: np.ndarray | Tensor) -> np.ndarray:
    """World positions ``(..., bodies, 2)`` of the discs for states ``q (..., dof)``."""
    q = torch.as_tensor(np.asarray(q), dtype=torch.float64)
    return system.positions(q).numpy()


def position_rms(recovered: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """RMS over bodies of the distance between ``(..., bodies, 2)`` position sets."""
    return np.sqrt(np.square(recovered - truth).sum(-1).mean(-1))


def _angle(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Angle from the downward vertical of a rod ``(dx, dy)``, unwrapped along the time
    axis (the last of ``dx``) so finite differences do not jump by 2π."""
    return np.unwrap(np.arctan2(dx, -dy), axis=-1)


def positions_to_q(system: System, positions: np.ndarray) -> np.ndarray:
    """Generalised coordinates ``(..., T, dof)`` of body positions ``(..., T, bodies, 2)``,
    the inverse of ``system.positions``: pendulum angles (the double pendulum's second
    one from the first bob to the second), the spring's x, n-body coordinates as they are."""
    if system.name == "pendulum":
        return _angle(positions[..., 0, 0], positions[..., 0, 1])[..., None]
    if system.name == "double-pendulum":
        first = _angle(positions[..., 0, 0], positions[..., 0, 1])
        rod = positions[..., 1, :] - positions[..., 0, :]
        return np.stack([first, _angle(rod[..., 0], rod[..., 1])], -1)
    if system.dim == 1:
        return positions[..., 0, :1]
    return positions.reshape(*positions.shape[:-2], -1)


def energy_along(system: System, q: np.ndarray, dt: float) -> np.ndarray:
    """The system's true H at the interior frames of trajectories ``q (..., T+1, dof)``,
    with momenta from central differences: ``(..., T-1)``.

    Every built-in system's kinetic energy is quadratic in p, ``K = pᵀ M(q)⁻¹ p / 2``, so
    ``dH/dp = M(q)⁻¹ p``: the system's own gradient at the unit momenta gives the columns
    of ``M(q)⁻¹``, and ``p = M(q) dq/dt`` is one batched linear solve (a constant mass
    for the spring and the n-body systems, a q-dependent one for the double pendulum).
    """
    if q.shape[-2] < 3:
        raise ValueError("energy along a sequence needs at least 3 frames")
    qt = torch.from_numpy(np.ascontiguousarray(q, np.float64))
    velocity = (qt[..., 2:, :] - qt[..., :-2, :]) / (2.0 * dt)
    mid = qt[..., 1:-1, :]
    unit = torch.eye(mid.shape[-1], dtype=mid.dtype)
    columns = [system.grad(mid, unit[i].expand_as(mid))[1] for i in range(mid.shape[-1])]
    inverse_mass = torch.stack(columns, -1)  # (..., dof, dof)
    momentum = torch.linalg.solve(inverse_mass, velocity.unsqueeze(-1)).squeeze(-1)
    return system.hamiltonian(mid, momentum).numpy()


def relative_spread(energy: np.ndarray) -> np.ndarray:
    """std / |mean| of each row of ``(..., T)`` energies: 0 for a conserved energy."""
    return energy.std(-1) / np.maximum(np.abs(energy.mean(-1)), 1e-12)


MATCHED_FRACTION = 1 / 8
"""Share of the ground-truth sequences (at least :data:`MATCHED_MIN`) nearest in mean
energy that a sequence is compared with by :func:`matched_spread_ratios`…"""

MATCHED_MIN = 5
"""…and the fewest of them."""


def matched_spread_ratios(energy: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per sequence of ``energy (N, T)``: its energy's standard deviation along time over
    the median one of the ``reference (M, T')`` sequences nearest to it in mean energy
    (:data:`MATCHED_FRACTION` of them, at least :data:`MATCHED_MIN`): ``(N,)``, 1 = as
    well conserved as real data *at the same energy*.

    Why not the ratio of median ``std / |mean|`` alone: the errors of the recovery from
    pixels and of the finite differences grow more slowly than the energy, so
    ``std / |mean|`` of even the ground truth grows as the energy falls (pp20b's test
    data: median 0.061 below E = 0.05, 0.013 between 0.4 and 1), and that ratio mixes how
    physical the samples are with which energies they happen to have; and ``|mean|``
    depends on the arbitrary zero of the potential energy (the double pendulum's H is
    negative at rest and can pass through 0). This ratio compares like with like: it is
    unchanged by adding a constant to H, by H's units, and by how the samples' energies
    are distributed within the data's range (a sample with more or less energy than any
    data sequence is held to the nearest ones; :func:`samples_physics` reports how many
    there are)."""
    mean, spread = reference.mean(-1), reference.std(-1)
    k = min(len(mean), max(MATCHED_MIN, round(MATCHED_FRACTION * len(mean))))
    distance = np.abs(energy.mean(-1)[:, None] - mean[None, :])  # (N, M)
    nearest = np.argsort(distance, axis=1, kind="stable")[:, :k]
    return energy.std(-1) / np.maximum(np.median(spread[nearest], axis=1), 1e-300)


def sequence_physics(frames: np.ndarray | Tensor, system: System, dt: float) -> dict[str, Any]:
    """Score sequences of frames ``(N, T+1, H, W, 3)`` against the system's physics:
    per-sequence relative spread of the true energy of the recovered motion, and per
    frame whether exactly the system's bodies are found. ``"energy"`` holds the
    recovered energies ``(N, T−1)`` (an array, not reported)."""
    rec = recover(frames, system)
    q = positions_to_q(system, rec.bodies())
    energy = energy_along(system, q, dt)
    # H is undefined where the read-back bodies coincide (an n-body 1/r at r = 0) or a
    # body is missing: such sequences are counted, not averaged as inf or NaN
    defined = np.isfinite(energy).all(-1)
    energy = energy[defined]
    spread = relative_spread(energy)
    right = rec.right_count()
    return {
        "energy": energy,
        "sequences": int(defined.size),
        "energy_defined_fraction": float(defined.mean()),
        "frames": int(right.size),
        "energy_spread_median": _statistic(np.median, spread),
        "energy_spread_mean": _statistic(np.mean, spread),
        "energy_spread_p90": _statistic(lambda a: np.quantile(a, 0.9), spread),
        "right_body_count_fraction": float(right.mean()),
    }


def _statistic(stat: Callable[[np.ndarray], Any], values: np.ndarray) -> float:
    """``stat(values)`` as a float, NaN (shown as n/a) when there are none."""
    return float(stat(values)) if values.size else math.nan


def _shown(value: float, spec: str) -> str:
    """``value`` formatted by ``spec`` for a report, or n/a where it is not a number."""
    return format(value, spec) if math.isfinite(value) else "n/a"


def samples_physics(
    samples: np.ndarray | Tensor, truth: np.ndarray | Tensor, system: System, dt: float
) -> dict[str, Any]:
    """:func:`sequence_physics` of sampled sequences next to ground-truth ones (same
    pipeline, so recovery and finite-difference errors affect both alike), with the
    ratio of their median energy spreads (1 = as physical as the data)."""
    sampled = sequence_physics(samples, system, dt)
    reference = sequence_physics(truth, system, dt)
    ratio = sampled["energy_spread_median"] / max(reference["energy_spread_median"], 1e-12)
    energy, truth_energy = sampled.pop("energy"), reference.pop("energy")
    level, truth_level = energy.mean(-1), truth_energy.mean(-1)
    if len(energy) and len(truth_energy):
        matched = matched_spread_ratios(energy, truth_energy)
        outside = (level < truth_level.min()) | (level > truth_level.max())
    else:  # no sequence with a defined energy on one side: nothing to match
        matched = outside = np.empty(0)
    return {
        "samples": sampled,
        "ground_truth": reference,
        "energy_spread_ratio": ratio,
        "energy_matched_ratio": _statistic(np.median, matched),
        "energy_matched_ratio_p90": _statistic(lambda a: np.quantile(a, 0.9), matched),
        "energy_outside_data_fraction": _statistic(np.mean, outside),
        "energy_level_median": _statistic(np.median, level),
        "truth_energy_level_median": _statistic(np.median, truth_level),
    }


SAMPLE_COUNT = 64
"""Prior samples scored by ``hgn evaluate`` (and ground-truth sequences beside them)."""


@torch.no_grad()
def score_samples(
    model: SequenceModel,
    split: hgn_data.Split,
    n: int = SAMPLE_COUNT,
    seed: int = 0,
) -> dict[str, Any]:
    """Draw ``n`` sequences from the model (``seed`` fixes the draws, without touching
    the global generator), as long as ``split``'s, and score them with
    :func:`samples_physics` next to the split's first ``n`` sequences; ``"sampled_from"``
    records where z came from (an HGN++ is fitted by :func:`fit_recorded` first where
    its training data is known). A model without a prior, or data of an unknown system,
    gives ``{"skipped": reason}``."""
    meta = split.meta
    system = readable(split)
    if system is None:
        return {"skipped": "the data has no simulator or no fixed picture geometry to read"}
    device = next(model.parameters()).device
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            samples = model.sample(n, meta["steps"])
    except UserError as exc:
        return {"skipped": str(exc)}
    truth = np.asarray(split.images[: min(n, len(split))])
    result = samples_physics(hwc(samples), truth, system, meta["dt"])
    result.update(seed=seed, steps=meta["steps"])
    result["sampled_from"] = model.sampling_from
    return result


def samples_markdown(result: dict[str, Any]) -> str:
    """The paragraph ``hgn evaluate`` writes about :func:`score_samples`."""
    if "skipped" in result:
        return f"Samples from the prior: not scored ({result['skipped']})."
    s, g = result["samples"], result["ground_truth"]
    return "\n".join(
        [
            f"Samples ({s['sequences']} sequences of {result['steps']} steps, seed "
            f"{result['seed']}, z from the {result.get('sampled_from', 'prior')}), read back "
            "as physics (hgn.evaluation.physics: body positions from colours, momenta by "
            "finite differences, the system's true H):",
            "",
            "| sequences | true-energy spread, median (p90) "
            "| frames with exactly the right bodies |",
            "|---|---|---|",
            f"| sampled | {_shown(s['energy_spread_median'], '.3f')} "
            f"({_shown(s['energy_spread_p90'], '.3f')}) "
            f"| {100 * s['right_body_count_fraction']:.1f} % |",
            f"| ground truth (test) | {_shown(g['energy_spread_median'], '.3f')} "
            f"({_shown(g['energy_spread_p90'], '.3f')}) "
            f"| {100 * g['right_body_count_fraction']:.1f} % |",
            "",
            f"Energy spread = std / abs(mean) of H along a sequence; the samples' median is "
            f"{_shown(result['energy_spread_ratio'], '.2f')}× the ground truth's (1 = as "
            "physical as the data, read through the same recovery).",
            *undefined_lines(result),
            *matched_lines(result),
        ]
    )


def undefined_lines(result: dict[str, Any]) -> list[str]:
    """How many sequences' true energy could not be read (absent from older metrics)."""
    shares = [result[k].get("energy_defined_fraction", 1.0) for k in ("samples", "ground_truth")]
    if min(shares) >= 1.0:
        return []
    return [
        "",
        f"H is undefined (read-back bodies coincide or are missing) along "
        f"{100 * (1 - shares[0]):.0f} % of the sampled sequences and "
        f"{100 * (1 - shares[1]):.0f} % of the ground-truth ones; the spreads above are "
        "those of the rest (n/a: none left).",
    ]


def matched_lines(result: dict[str, Any]) -> list[str]:
    """The energy-matched comparison's sentence (absent from older metrics files)."""
    if "energy_matched_ratio" not in result:
        return []
    return [
        "",
        f"At matched energy (hgn.evaluation.physics.matched_spread_ratios: each "
        f"sample's std of H over that of the ground-truth sequences nearest in mean H), "
        f"the median sample drifts {_shown(result['energy_matched_ratio'], '.2f')}× as much as "
        f"the data (p90 {_shown(result['energy_matched_ratio_p90'], '.2f')}×); median H "
        f"{_shown(result['energy_level_median'], '.3g')} sampled vs "
        f"{_shown(result['truth_energy_level_median'], '.3g')} in the data, "
        f"{_shown(100 * result['energy_outside_data_fraction'], '.0f')} % of samples outside "
        "the data's range of H.",
    ]
