"""The four physical systems of the HGN paper: Hamiltonians, exact gradients, initial
states, accurate ground-truth trajectories and rendering to RGB frames.

Every system works on batches of flat states ``q, p`` of shape ``(..., dof)`` in float64
(``dof = 1`` for mass-spring and pendulum, ``2 * bodies`` laid out ``x1, y1, x2, y2, ...``
for the n-body systems). Gradients are written out by hand rather than taken by autograd:
the simulator calls them millions of times and needs neither graphs nor parameters.

Geometry is tied to one length scale per system (the largest spring amplitude, the
pendulum length, the largest orbit radius), so overriding a constant (a longer pendulum,
a stiffer spring) keeps every body inside the same fixed canvas and the pictures look
alike; the canvas and disc size are recorded with every dataset through :meth:`render_info`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from hgn.physics.integrators import rollout
from hgn.utils import UserError

BACKGROUND = (0.88, 0.88, 0.88)
"""Light grey: constant, non-black, and distinct from every body colour."""

PALETTE = ((0.85, 0.15, 0.15), (0.15, 0.60, 0.25), (0.20, 0.35, 0.85))
"""Red, green, blue: one colour per body, in order."""

RENDER_PIXELS = 1 << 20
"""Frames are rendered in chunks of about this many pixels, bounding peak memory."""


class System:
    """A Hamiltonian system with its sampling, simulation and rendering.

    Subclasses set the class attributes and implement the physics; everything that
    depends only on those (validation, simulation, rejection sampling, rendering) lives
    here so the four systems share one implementation.
    """

    name: ClassVar[str]
    bodies: ClassVar[int] = 1
    """Discs drawn per frame."""
    dim: ClassVar[int] = 1
    """Coordinates per body: 1 for the 1-D systems, 2 for the planar n-body ones."""
    defaults: ClassVar[dict[str, float]]
    """Constants and their paper values (``r_min``/``r_max`` bound the initial radius r)."""
    may_be_zero: ClassVar[frozenset[str]] = frozenset({"r_min"})
    """Constants that may be 0; all others must be positive."""
    default_noise: ClassVar[float]
    canvas: ClassVar[float]
    """Half-width of the square canvas, in units of :meth:`length_scale`."""
    disc: ClassVar[float]
    """Disc radius, in units of :meth:`length_scale`."""
    phase_per_substep: ClassVar[float]
    """Integrator sub-step as a fraction of 1/:meth:`frequency`; tuned so the ground truth
    matches SciPy's DOP853 to better than 1e-6 (see tests/test_systems.py)."""
    method: ClassVar[str] = "rk4"
    """Ground-truth integrator. RK4 beats the symplectic yoshida4 here: for the same
    accuracy against DOP853 over a 30-frame trajectory it needs about a third of the
    gradient evaluations, and its energy drift over so short a time is below 1e-7."""

    def __init__(self, noise: float | None = None, **overrides: float) -> None:
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise UserError(
                f"unknown constant(s) {', '.join(unknown)} for system {self.name!r}; "
                f"valid: {', '.join(self.defaults)}"
            )
        constants = dict(self.defaults)
        for key, value in overrides.items():
            constants[key] = _finite(value, f"constant {key}")
        for key, value in constants.items():
            if value < 0 or (value == 0 and key not in self.may_be_zero):
                raise UserError(f"constant {key} of {self.name} must be positive, got {value}")
        if constants["r_min"] > constants["r_max"]:
            raise UserError(
                f"r_min ({constants['r_min']}) must not exceed r_max ({constants['r_max']})"
            )
        self.constants: dict[str, float] = constants
        self.noise = self.default_noise if noise is None else _finite(noise, "noise")
        if self.noise < 0:
            raise UserError(f"noise must be >= 0, got {self.noise}")

    @property
    def dof(self) -> int:
        """Length of q (and of p) per state."""
        return self.bodies * self.dim

    # --- physics (per system) -------------------------------------------------------
    def hamiltonian(self, q: Tensor, p: Tensor) -> Tensor:
        """Energy of states ``(..., dof)`` -> ``(...)``."""
        raise NotImplementedError

    def grad(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """``(dH/dq, dH/dp)``; a ``grad_fn`` for :mod:`hgn.physics.integrators`."""
        raise NotImplementedError

    def sample_initial(self, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """``n`` initial states ``(n, dof)`` float64, the paper's way (see SPEC.md §2)."""
        raise NotImplementedError

    def positions(self, q: Tensor) -> Tensor:
        """World coordinates ``(..., bodies, 2)`` of the discs for positions ``q``."""
        raise NotImplementedError

    def length_scale(self) -> float:
        """The distance that sets the canvas and disc sizes."""
        raise NotImplementedError

    def frequency(self) -> float:
        """A typical angular frequency, so that sub-steps follow the time scale."""
        raise NotImplementedError

    def valid(self, qs: Tensor, ps: Tensor) -> Tensor:
        """Which trajectories ``(n, T+1, dof)`` to keep; all finite ones by default."""
        return torch.isfinite(qs).all(-1).all(-1) & torch.isfinite(ps).all(-1).all(-1)

    # --- simulation -----------------------------------------------------------------
    def substeps(self, dt: float) -> int:
        """Integrator sub-steps per frame interval for accuracy far below 1e-6."""
        return max(1, math.ceil(abs(dt) * self.frequency() / self.phase_per_substep))

    def simulate(self, q0: Tensor, p0: Tensor, dt: float, steps: int) -> tuple[Tensor, Tensor]:
        """Ground-truth trajectories ``(n, steps + 1, dof)`` float64 from ``(n, dof)``.

        Runs on one thread: the tensors are small (a few thousand states), and PyTorch's
        intra-op threading then costs far more than it saves (100x slower on a busy
        2-core machine).
        """
        with one_thread():
            qs, ps = rollout(
                self.grad,
                q0.to(torch.float64),
                p0.to(torch.float64),
                dt,
                steps,
                method=self.method,
                substeps=self.substeps(dt),
            )
        return qs.transpose(0, 1).contiguous(), ps.transpose(0, 1).contiguous()

    def sample_trajectories(
        self, n: int, rng: np.random.Generator, dt: float, steps: int, max_rounds: int = 12
    ) -> tuple[Tensor, Tensor]:
        """``n`` valid trajectories ``(n, steps + 1, dof)``, by rejection.

        Candidates are drawn in rounds sized from the acceptance rate seen so far, and
        the accepted ones are kept in draw order, so the result depends only on ``rng``.
        """
        kept_q: list[Tensor] = []
        kept_p: list[Tensor] = []
        have, drawn, accepted = 0, 0, 0
        for _ in range(max_rounds):
            need = n - have
            if need <= 0:
                break
            rate = max(accepted / drawn, 0.02) if drawn else 1.0
            m = math.ceil(need / rate * 1.1) + (8 if drawn else 0)
            qs, ps = self.simulate(*self.sample_initial(m, rng), dt, steps)
            ok = self.valid(qs, ps)
            drawn, accepted = drawn + m, accepted + int(ok.sum())
            kept_q.append(qs[ok][:need])
            kept_p.append(ps[ok][:need])
            have += len(kept_q[-1])
        if have < n:
            raise UserError(
                f"only {accepted} of {drawn} sampled {self.name} trajectories stay on the "
                f"canvas without close encounters over {steps} steps of dt={dt}; "
                "use fewer steps or a smaller dt"
            )
        return torch.cat(kept_q), torch.cat(kept_p)

    # --- rendering ------------------------------------------------------------------
    def render_info(self) -> dict[str, Any]:
        """Canvas geometry and colours, recorded with a dataset."""
        return {
            "extent": self.canvas * self.length_scale(),
            "radius": self.disc * self.length_scale(),
            "colours": [list(c) for c in self.colours],
            "background": list(BACKGROUND),
            "min_size": self.min_size,
        }

    colour: ClassVar[int] = 0
    """Palette entry of a one-body system."""

    @property
    def colours(self) -> tuple[tuple[float, float, float], ...]:
        return PALETTE[: self.bodies] if self.bodies > 1 else (PALETTE[self.colour],)

    @property
    def min_size(self) -> int:
        """Smallest image size at which every disc is at least one pixel in radius."""
        return math.ceil(2.0 * self.canvas / self.disc - 1e-9)

    def check_size(self, size: int) -> int:
        """Validate an image size, naming the minimum for this system."""
        if isinstance(size, bool) or int(size) != size or size < self.min_size:
            raise UserError(
                f"image size {size} is too small to draw {self.name}: the minimum is "
                f"{self.min_size} (discs need a radius of at least one pixel)"
            )
        return int(size)

    def render(self, q: np.ndarray | Tensor, size: int) -> np.ndarray | Tensor:
        """Draw positions ``(..., dof)`` as uint8 RGB frames ``(..., size, size, 3)``.

        Each body is an anti-aliased disc (coverage = clamp(radius - distance + 0.5))
        painted over the background in body order. Only a small square patch around
        each disc is evaluated and scattered into the frame, which makes the cost
        proportional to the disc area rather than the image area. Returns a NumPy array
        for NumPy input and a tensor for tensor input.
        """
        size = self.check_size(size)
        as_numpy = not isinstance(q, Tensor)
        q = torch.from_numpy(np.array(q, np.float64)) if as_numpy else q.to(torch.float64)
        lead = q.shape[:-1]
        flat = q.reshape(-1, q.shape[-1])
        chunk = max(1, RENDER_PIXELS // (size * size))
        parts = [self._render_chunk(flat[i : i + chunk], size) for i in range(0, len(flat), chunk)]
        out = (parts[0] if len(parts) == 1 else torch.cat(parts)).reshape(*lead, size, size, 3)
        return out.numpy() if as_numpy else out

    def _render_chunk(self, q: Tensor, size: int) -> Tensor:
        n = q.shape[0]
        extent = self.canvas * self.length_scale()
        scale = size / (2.0 * extent)  # pixels per world unit
        radius = self.disc * self.length_scale() * scale
        # pixel coordinates of the disc centres; pixel i covers [i, i + 1)
        pos = self.positions(q)
        cx = ((pos[..., 0] + extent) * scale).to(torch.float32)  # (n, bodies)
        cy = ((extent - pos[..., 1]) * scale).to(torch.float32)
        patch = min(size, math.ceil(2.0 * radius + 2.0))
        offsets = torch.arange(patch)
        background = torch.tensor(BACKGROUND) * 255.0
        # one frame, then broadcast: expanding the 3-byte pixel directly copies byte by
        # byte and is several times slower
        frame = (background + 0.5).to(torch.uint8).repeat(size * size)
        pixels = frame.expand(n, -1).contiguous().view(n * size * size, 3)
        first_pixel = (torch.arange(n) * (size * size))[:, None, None]
        for body, colour in enumerate(self.colours):
            # patch origin, kept inside the frame; coverage is computed at true pixel
            # centres, so a clamped patch still holds every visible pixel of its disc
            x0 = (cx[:, body] - radius - 0.5).floor().clamp(0, size - patch).long()
            y0 = (cy[:, body] - radius - 0.5).floor().clamp(0, size - patch).long()
            xs = x0[:, None] + offsets  # (n, patch)
            ys = y0[:, None] + offsets
            dx2 = (xs + 0.5 - cx[:, body, None]).square()
            dy2 = (ys + 0.5 - cy[:, body, None]).square()
            dist = (dy2[:, :, None] + dx2[:, None, :]).sqrt()
            alpha = (radius + 0.5 - dist).clamp(0.0, 1.0).reshape(-1, 1)
            index = (first_pixel + ys[:, :, None] * size + xs[:, None, :]).reshape(-1)
            # the first disc lands on plain background: no need to read the frame
            under = background if body == 0 else pixels.index_select(0, index).to(torch.float32)
            painted = torch.addcmul(under + 0.5, alpha, torch.tensor(colour) * 255.0 - under)
            pixels.index_copy_(0, index, painted.to(torch.uint8))
        return pixels.view(n, size, size, 3)

    def __repr__(self) -> str:
        consts = ", ".join(f"{k}={v:g}" for k, v in self.constants.items())
        return f"{type(self).__name__}({consts}, noise={self.noise:g})"


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the body with PyTorch's intra-op threading off, restoring it afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _finite(value: Any, what: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise UserError(f"{what} must be finite, got {value}")
    return value


def _on_circle(n: int, rng: np.random.Generator, r_min: float, r_max: float) -> tuple[Tensor, ...]:
    """The paper's 1-D sampler: r ~ U(r_min, r_max), (q, p) uniform on the circle of radius r."""
    r = rng.uniform(r_min, r_max, size=n)
    theta = rng.uniform(0.0, 2.0 * math.pi, size=n)
    q = torch.from_numpy(r * np.cos(theta))[:, None]
    p = torch.from_numpy(r * np.sin(theta))[:, None]
    return q, p


class MassSpring(System):
    """H = k q² / 2 + p² / (2m); the mass moves horizontally about the canvas centre."""

    name = "mass-spring"
    defaults: ClassVar[dict[str, float]] = {"k": 2.0, "m": 0.5, "r_min": 0.1, "r_max": 1.0}
    default_noise = 0.1
    canvas = 1.5
    disc = 0.25
    colour = 2
    phase_per_substep = 0.03

    def hamiltonian(self, q: Tensor, p: Tensor) -> Tensor:
        k, m = self.constants["k"], self.constants["m"]
        return (0.5 * k * q.square() + p.square() / (2.0 * m)).sum(-1)

    def grad(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        return self.constants["k"] * q, p / self.constants["m"]

    def sample_initial(self, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        return _on_circle(n, rng, self.constants["r_min"], self.constants["r_max"])

    def positions(self, q: Tensor) -> Tensor:
        return torch.stack([q[..., 0], torch.zeros_like(q[..., 0])], -1)[..., None, :]

    def length_scale(self) -> float:
        """Largest amplitude: H <= r² max(k/2, 1/(2m)) and H = k A² / 2."""
        k, m = self.constants["k"], self.constants["m"]
        return self.constants["r_max"] * math.sqrt(max(1.0, 1.0 / (k * m)))

    def frequency(self) -> float:
        return math.sqrt(self.constants["k"] / self.constants["m"])


class Pendulum(System):
    """H = 2 m g l (1 − cos q) + p² / (2 m l²) (the paper's, factor 2 included); the bob
    is drawn at (l sin q, −l cos q) around a pivot at the canvas centre."""

    name = "pendulum"
    defaults: ClassVar[dict[str, float]] = {
        "g": 3.0,
        "m": 0.5,
        "l": 1.0,
        "r_min": 1.3,
        "r_max": 2.3,
    }
    default_noise = 0.1
    canvas = 1.35
    disc = 0.25
    colour = 0
    phase_per_substep = 0.04

    def hamiltonian(self, q: Tensor, p: Tensor) -> Tensor:
        g, m, length = self.constants["g"], self.constants["m"], self.constants["l"]
        potential = 2.0 * m * g * length * (1.0 - torch.cos(q))
        return (potential + p.square() / (2.0 * m * length**2)).sum(-1)

    def grad(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        g, m, length = self.constants["g"], self.constants["m"], self.constants["l"]
        return 2.0 * m * g * length * torch.sin(q), p / (m * length**2)

    def sample_initial(self, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        return _on_circle(n, rng, self.constants["r_min"], self.constants["r_max"])

    def positions(self, q: Tensor) -> Tensor:
        length, angle = self.constants["l"], q[..., :1]
        return torch.stack([length * torch.sin(angle), -length * torch.cos(angle)], -1)

    def length_scale(self) -> float:
        return self.constants["l"]

    def frequency(self) -> float:
        """Small-angle frequency sqrt(2g/l), raised for energetic (rotating) states."""
        g, m, length = self.constants["g"], self.constants["m"], self.constants["l"]
        return max(math.sqrt(2.0 * g / length), self.constants["r_max"] / (m * length**2))


class NBody(System):
    """Planar gravitation, H = Σ ‖pᵢ‖²/(2m) − Σ_{i<j} g m² / ‖qᵢ − qⱼ‖, equal masses.

    Initial states: the bodies on a regular polygon of radius r ~ U(r_min, r_max) about
    the origin (their centre of mass), rotated at random, moving on the circular-orbit
    velocity in a random sense plus an isotropic perturbation of relative size
    ``orbit_noise``; the mean velocity is then removed, so total momentum is zero.
    Trajectories that come closer than ``min_distance`` (in units of r_min) or leave the
    canvas are rejected (see :meth:`System.sample_trajectories`).
    """

    dim = 2
    may_be_zero = frozenset({"orbit_noise"})
    canvas = 2.0
    disc = 0.25
    max_drift = 1e-7
    """Relative energy drift above which a trajectory is rejected as numerically
    unreliable (a close approach between frames)."""

    def hamiltonian(self, q: Tensor, p: Tensor) -> Tensor:
        g, m = self.constants["g"], self.constants["m"]
        dx, dy = self._pairs(q)
        potential = -g * m * m * (dx.square() + dy.square()).rsqrt().sum(-1)
        return p.square().sum(-1) / (2.0 * m) + potential

    def _pairs(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """Displacements qᵢ − qⱼ for the pairs i < j, as x and y parts ``(..., pairs)``.

        x and y are kept apart because reductions over a trailing axis of length 2 are
        far slower in PyTorch than plain arithmetic on the two parts.
        """
        i, j = torch.triu_indices(self.bodies, self.bodies, 1)
        x, y = q[..., 0::2], q[..., 1::2]
        return x[..., i] - x[..., j], y[..., i] - y[..., j]

    def grad(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        g, m = self.constants["g"], self.constants["m"]
        dx, dy = self._pairs(q)
        r2 = dx.square() + dy.square()
        strength = g * m * m / (r2 * r2.sqrt())
        # pair forces onto bodies: +1 for body i, -1 for body j of each pair
        i, j = torch.triu_indices(self.bodies, self.bodies, 1)
        pairs = torch.arange(len(i))
        incidence = torch.zeros(len(i), self.bodies, dtype=q.dtype)
        incidence[pairs, i], incidence[pairs, j] = 1.0, -1.0
        dv_dx, dv_dy = (dx * strength) @ incidence, (dy * strength) @ incidence
        return torch.stack([dv_dx, dv_dy], -1).flatten(-2), p / m

    def circular_speed(self, r: np.ndarray) -> np.ndarray:
        """Speed of each body of a regular n-gon of radius r on its circular orbit."""
        g, m, n = self.constants["g"], self.constants["m"], self.bodies
        ring = sum(1.0 / (4.0 * math.sin(math.pi * k / n)) for k in range(1, n))
        return np.sqrt(g * m * ring / r)

    def sample_initial(self, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        c = self.constants
        r = rng.uniform(c["r_min"], c["r_max"], size=n)
        angle = rng.uniform(0.0, 2.0 * math.pi, size=n)[:, None]
        angle = angle + 2.0 * math.pi * np.arange(self.bodies) / self.bodies
        radial = np.stack([np.cos(angle), np.sin(angle)], -1)  # (n, bodies, 2)
        sense = rng.choice([-1.0, 1.0], size=n)[:, None, None]
        tangent = sense * np.stack([-radial[..., 1], radial[..., 0]], -1)
        speed = self.circular_speed(r)[:, None, None]
        kick = c["orbit_noise"] * speed * rng.standard_normal((n, self.bodies, 2))
        velocity = speed * tangent + kick
        velocity -= velocity.mean(1, keepdims=True)
        q = r[:, None, None] * radial
        p = c["m"] * velocity
        return torch.from_numpy(q.reshape(n, -1)), torch.from_numpy(p.reshape(n, -1))

    def positions(self, q: Tensor) -> Tensor:
        return q.unflatten(-1, (self.bodies, 2))

    def length_scale(self) -> float:
        return self.constants["r_max"]

    def frequency(self) -> float:
        """Angular velocity of the tightest circular orbit, with headroom for eccentricity."""
        c = self.constants
        r = c["min_distance"] * c["r_min"]
        return float(self.circular_speed(np.float64(r))) / r

    def valid(self, qs: Tensor, ps: Tensor) -> Tensor:
        c = self.constants
        limit = (self.canvas - self.disc) * self.length_scale()
        inside = (qs.abs() <= limit).all(-1).all(-1)
        dx, dy = self._pairs(qs)
        closest = (dx.square() + dy.square()).amin(-1).amin(-1).sqrt()
        energy = self.hamiltonian(qs, ps)
        drift = ((energy - energy[:, :1]).abs() / energy[:, :1].abs()).amax(-1)
        ok = inside & (closest >= c["min_distance"] * c["r_min"]) & (drift <= self.max_drift)
        return super().valid(qs, ps) & ok


class TwoBody(NBody):
    name = "two-body"
    bodies = 2
    defaults: ClassVar[dict[str, float]] = {
        "g": 1.0,
        "m": 1.0,
        "r_min": 0.5,
        "r_max": 1.5,
        "orbit_noise": 0.1,
        "min_distance": 0.5,
    }
    default_noise = 0.05
    phase_per_substep = 0.04


class ThreeBody(NBody):
    name = "three-body"
    bodies = 3
    defaults: ClassVar[dict[str, float]] = {
        "g": 1.0,
        "m": 1.0,
        "r_min": 0.9,
        "r_max": 1.2,
        "orbit_noise": 0.1,
        "min_distance": 0.5,
    }
    default_noise = 0.2
    phase_per_substep = 0.02


SYSTEMS: dict[str, type[System]] = {
    cls.name: cls for cls in (MassSpring, Pendulum, TwoBody, ThreeBody)
}
"""System classes by name."""


def get_system(name: str, **overrides: Any) -> System:
    """Build a system by name; ``overrides`` replace constants (and ``noise``)."""
    try:
        cls = SYSTEMS[name]
    except KeyError:
        raise UserError(f"unknown system {name!r}; choose one of: {', '.join(SYSTEMS)}") from None
    return cls(**overrides)
