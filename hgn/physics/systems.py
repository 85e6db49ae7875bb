"""The physical systems: Hamiltonians, exact gradients, initial states, accurate
ground-truth trajectories and rendering to RGB frames.

The four systems of the HGN paper (mass-spring, pendulum, two-body, three-body) and the
double pendulum of the DeepMind Hamiltonian dynamics suite. Every system works on
batches of flat states ``q, p`` of shape ``(..., dof)`` in float64 (``dof = 1`` for
mass-spring and pendulum, 2 angles for the double pendulum, ``2 * bodies`` laid out
``x1, y1, x2, y2, ...`` for the n-body systems). Gradients are written out by hand rather
than taken by autograd: the simulator calls them millions of times and needs neither
graphs nor parameters (a test checks each against autograd).

Variants (the suite's, written here from the physics):

* **friction** ``γ`` (a constant of every system, 0 by default): the momentum equation
  becomes ``dp/dt = −∂H/∂q − γ ∂H/∂p``, a damping force proportional to the velocity.
  Such data is **not Hamiltonian** (energy decays); it exists to test what a
  Hamiltonian prior does on dissipative data.
* **random constants**: ``vary={"l": (0.5, 1.0), ...}`` draws each trajectory's constants
  uniformly from ranges (:meth:`System.sample_variant`); the canvas is sized for the
  whole range so every trajectory stays in frame.
* **random colours**: each trajectory's discs get random hues.
* **canvas offset** (constant ``offset``, world units): each trajectory's scene is shifted
  by a uniform random vector in ``[−offset, offset]²``; the canvas grows by ``offset``.

Per-trajectory values are bound with :meth:`System.bind`; a bound system's methods take
batches whose leading axis is the trajectory. Geometry is tied to one length scale per
system (the largest spring amplitude, the pendulum length, the largest orbit radius), so
overriding a constant keeps every body inside the same canvas; the canvas and disc size
are recorded with every dataset through :meth:`System.render_info`.

Two picture styles: ``"paper"`` (discs of :data:`PALETTE` colours with a one-pixel
linear anti-aliased edge on the light grey :data:`BACKGROUND`) and ``"dm"`` (the suite's:
discs of equally spaced hues with a sigmoid edge, radius √(m/π), on :data:`DM_BACKGROUND`).

Why one file of more than 600 lines: :class:`System` holds what every system shares
(constants and their per-trajectory variants, simulation, the uint8 renderer and its
differentiable twin), and each system is a short subclass below it; split by concern,
a system's physics and its picture would be read in different files.
"""

from __future__ import annotations

import colorsys
import contextlib
import copy
import difflib
import itertools
import math
from collections.abc import Iterator, Mapping
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

DM_BACKGROUND = (0.321, 0.349, 0.368)
"""The DeepMind suite's dark grey background (style ``"dm"``)."""

DM_SHARPNESS = 80.0
"""The suite's disc edge: coverage = sigmoid(−80 (d − r)) with d, r in canvas widths."""

STYLES = ("paper", "dm")

RENDER_PIXELS = 1 << 22
"""Frames are rendered in chunks of about this many pixels, bounding peak memory."""

RANDOM_SATURATION, RANDOM_VALUE = 0.75, 0.9
"""Random colours are random hues at this HSV saturation and value: vivid, and far
from both backgrounds."""


def hue_colours(n: int, start: float = 0.0) -> tuple[tuple[float, float, float], ...]:
    """``n`` colours of equally spaced hues from ``start`` (the suite's body colours)."""
    return tuple(
        colorsys.hsv_to_rgb((start + k / n) % 1.0, RANDOM_SATURATION, RANDOM_VALUE)
        for k in range(n)
    )


class System:
    """A physical system with its sampling, simulation and rendering.

    Subclasses set the class attributes and implement the physics; everything that
    depends only on those (validation, variants, simulation, rejection sampling,
    rendering) lives here so all systems share one implementation.
    """

    name: ClassVar[str]
    bodies: ClassVar[int] = 1
    """Discs drawn per frame."""
    dim: ClassVar[int] = 1
    """Coordinates per body in q: 1 for the 1-D systems, 2 for the planar n-body ones."""
    defaults: ClassVar[dict[str, float]]
    """Constants and their paper values (``r_min``/``r_max`` bound the initial radius r)."""
    shared: ClassVar[dict[str, float]] = {"friction": 0.0, "offset": 0.0}
    """Constants every system has (see the module docstring), zero by default."""
    may_be_zero: ClassVar[frozenset[str]] = frozenset({"r_min"})
    """Constants that may be 0 (besides :attr:`shared`); all others must be positive."""
    default_noise: ClassVar[float]
    canvas: ClassVar[float]
    """Half-width of the square canvas, in units of :meth:`length_scale`."""
    disc: ClassVar[float]
    """Disc radius (style ``"paper"``), in units of :meth:`length_scale`."""
    phase_per_substep: ClassVar[float]
    """Integrator sub-step as a fraction of 1/:meth:`frequency`; tuned so the ground truth
    matches SciPy's DOP853 to better than 1e-6 (see tests/test_systems.py)."""
    method: ClassVar[str] = "rk4"
    """Ground-truth integrator. RK4 beats the symplectic yoshida4 here: for the same
    accuracy against DOP853 over a 30-frame trajectory it needs about a third of the
    gradient evaluations, and its energy drift over so short a time is below 1e-7."""
    mass_keys: ClassVar[tuple[str, ...]] = ("m",)
    """The constant holding each body's mass (one name per body, or one for all)."""

    def __init__(
        self,
        noise: float | None = None,
        style: str = "paper",
        vary: Mapping[str, tuple[float, float]] | None = None,
        random_colours: bool = False,
        **overrides: float,
    ) -> None:
        known = {**self.defaults, **self.shared}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise UserError(
                f"unknown constant(s) {', '.join(unknown)} for system {self.name!r}; "
                f"valid: {', '.join(known)}"
            )
        constants = dict(known)
        for key, value in overrides.items():
            constants[key] = _finite(value, f"constant {key}")
        zero_ok = self.may_be_zero | set(self.shared)
        for key, value in constants.items():
            if value < 0 or (value == 0 and key not in zero_ok):
                raise UserError(f"constant {key} of {self.name} must be positive, got {value}")
        if constants["r_min"] > constants["r_max"]:
            raise UserError(
                f"r_min ({constants['r_min']}) must not exceed r_max ({constants['r_max']})"
            )
        if style not in STYLES:
            raise UserError(f"unknown style {style!r}; choose one of: {', '.join(STYLES)}")
        self.constants: dict[str, float] = constants
        self.noise = self.default_noise if noise is None else _finite(noise, "noise")
        if self.noise < 0:
            raise UserError(f"noise must be >= 0, got {self.noise}")
        self.style = style
        self.random_colours = bool(random_colours)
        self.vary = self._check_ranges(vary or {})
        self.values: dict[str, Tensor] = {}
        """Per-trajectory values bound by :meth:`bind` (constants, colours, shifts)."""

    def _check_ranges(
        self, vary: Mapping[str, tuple[float, float]]
    ) -> dict[str, tuple[float, float]]:
        """Validate per-trajectory ranges: physical constants only, positive, ordered."""
        ranges = {}
        for key, span in vary.items():
            if key not in self.defaults or key.startswith("r_"):
                raise UserError(
                    f"cannot vary {key!r} per trajectory for {self.name}; varying works for: "
                    f"{', '.join(k for k in self.defaults if not k.startswith('r_'))}"
                )
            try:
                lo, hi = (_finite(v, f"range of {key}") for v in span)
            except (TypeError, ValueError):
                raise UserError(f"the range of {key} must be two numbers, got {span!r}") from None
            if not 0 < lo <= hi:
                raise UserError(f"the range of {key} must satisfy 0 < low <= high, got {span}")
            ranges[key] = (lo, hi)
        return ranges

    @property
    def dof(self) -> int:
        """Length of q (and of p) per state."""
        return self.bodies * self.dim

    def const(self, key: str, like: Tensor | None = None) -> float | Tensor:
        """Constant ``key``: a float, or, on a bound system whose trajectories differ in
        it, a tensor shaped to broadcast against ``like`` along its leading
        (trajectory) axis."""
        value = self.values.get(key)
        if value is None:
            return self.constants[key]
        if like is None:
            raise RuntimeError(f"{key} differs per trajectory; pass the batch it applies to")
        return value.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)

    # --- physics (per system) -------------------------------------------------------
    def hamiltonian(self, q: Tensor, p: Tensor) -> Tensor:
        """Energy of states ``(..., dof)`` -> ``(...)``."""
        raise NotImplementedError

    def grad(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """``(dH/dq, dH/dp)``; a ``grad_fn`` for :mod:`hgn.physics.integrators`."""
        raise NotImplementedError

    def sample_initial(self, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """``n`` initial states ``(n, dof)`` float64, the paper's way (see docs/SCIENCE.md §2)."""
        raise NotImplementedError

    def positions(self, q: Tensor) -> Tensor:
        """World coordinates ``(..., bodies, 2)`` of the disc centres for positions ``q``."""
        raise NotImplementedError

    def _length_scale(self, c: Mapping[str, float]) -> float:
        """The distance that sets the canvas and disc sizes, for constants ``c``."""
        raise NotImplementedError

    def _frequency(self, c: Mapping[str, float]) -> float:
        """A typical angular frequency for constants ``c``, so sub-steps follow it."""
        raise NotImplementedError

    def valid(self, qs: Tensor, ps: Tensor) -> Tensor:
        """Which trajectories ``(n, T+1, dof)`` to keep; all finite ones by default."""
        return torch.isfinite(qs).all(-1).all(-1) & torch.isfinite(ps).all(-1).all(-1)

    # --- constants over their ranges ------------------------------------------------
    def _corners(self) -> Iterator[dict[str, float]]:
        """The constants at every corner of the box of per-trajectory ranges."""
        keys = list(self.vary)
        for ends in itertools.product(*(self.vary[k] for k in keys)):
            yield {**self.constants, **dict(zip(keys, ends, strict=True))}

    def length_scale(self) -> float:
        """The distance that sets the canvas and disc sizes: the largest over the ranges
        of varied constants, so that every trajectory fits one canvas."""
        return max(self._length_scale(c) for c in self._corners())

    def frequency(self) -> float:
        """The fastest typical angular frequency over the ranges of varied constants."""
        return max(self._frequency(c) for c in self._corners())

    # --- variants -------------------------------------------------------------------
    def sample_variant(self, n: int, rng: np.random.Generator) -> dict[str, Tensor]:
        """Per-trajectory values of ``n`` trajectories: varied constants ``(n,)``, random
        colours ``(n, bodies, 3)``, canvas shifts ``(n, 2)``. Empty for the plain system."""
        values: dict[str, Tensor] = {}
        for key, (lo, hi) in self.vary.items():
            values[key] = torch.from_numpy(rng.uniform(lo, hi, size=n))
        if self.random_colours:
            hues = rng.uniform(0.0, 1.0, size=(n, self.bodies))
            sat = np.full_like(hues, RANDOM_SATURATION)
            rgb = _hsv_to_rgb(hues, sat, np.full_like(hues, RANDOM_VALUE))
            values["colours"] = torch.from_numpy(rgb).float()
        if self.constants["offset"] > 0:
            shift = self.constants["offset"]
            values["shift"] = torch.from_numpy(rng.uniform(-shift, shift, size=(n, 2)))
        return values

    def bind(self, values: Mapping[str, Tensor]) -> System:
        """A copy of this system whose trajectories carry their own ``values`` (from
        :meth:`sample_variant` or read back from a dataset); batches passed to its
        methods must have the trajectories on their leading axis."""
        bound = copy.copy(self)
        bound.values = {k: torch.as_tensor(v) for k, v in values.items()}
        return bound

    def subset(self, rows: slice | Tensor) -> System:
        """This bound system restricted to some of its trajectories."""
        return self.bind({k: v[rows] for k, v in self.values.items()}) if self.values else self

    # --- simulation -----------------------------------------------------------------
    def field(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """What the integrator follows: ``(dH/dq + γ dH/dp, dH/dp)``, so that
        ``dp/dt = −∂H/∂q − γ ∂H/∂p``. With friction γ > 0 this is not Hamiltonian."""
        dh_dq, dh_dp = self.grad(q, p)
        friction = self.constants["friction"]
        return (dh_dq + friction * dh_dp if friction else dh_dq), dh_dp

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
                self.field,
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
        q, p, _ = self.sample_with_variant(n, rng, dt, steps, max_rounds)
        return q, p

    def sample_with_variant(
        self, n: int, rng: np.random.Generator, dt: float, steps: int, max_rounds: int = 12
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Like :meth:`sample_trajectories`, also returning the accepted trajectories'
        per-trajectory values (see :meth:`sample_variant`), drawn with their initial
        states so that rejection keeps them together."""
        kept: list[tuple[Tensor, Tensor, dict[str, Tensor]]] = []
        have, drawn, accepted = 0, 0, 0
        for _ in range(max_rounds):
            need = n - have
            if need <= 0:
                break
            rate = max(accepted / drawn, 0.02) if drawn else 1.0
            m = math.ceil(need / rate * 1.1) + (8 if drawn else 0)
            values = self.sample_variant(m, rng)
            bound = self.bind(values) if values else self
            qs, ps = bound.simulate(*bound.sample_initial(m, rng), dt, steps)
            ok = bound.valid(qs, ps)
            drawn, accepted = drawn + m, accepted + int(ok.sum())
            keep = torch.nonzero(ok).flatten()[:need]
            kept.append((qs[keep], ps[keep], {k: v[keep] for k, v in values.items()}))
            have += len(keep)
        if have < n:
            raise UserError(
                f"only {accepted} of {drawn} sampled {self.name} trajectories stay on the "
                f"canvas without close encounters over {steps} steps of dt={dt}; "
                "use fewer steps or a smaller dt"
            )
        q = torch.cat([k[0] for k in kept])
        p = torch.cat([k[1] for k in kept])
        values = {key: torch.cat([k[2][key] for k in kept]) for key in kept[0][2]}
        return q, p, values

    # --- rendering ------------------------------------------------------------------
    def extent(self) -> float:
        """Half-width of the canvas in world units: the system's canvas, grown by the
        canvas offset and, for the ``"dm"`` style's larger discs, by the extra radius."""
        scale = self.length_scale()
        grow = max(0.0, self.max_radius() - self.disc * scale) if self.style == "dm" else 0.0
        return self.canvas * scale + self.constants["offset"] + grow

    def max_radius(self) -> float:
        """The largest disc radius in world units over the ranges of varied constants."""
        if self.style == "paper":
            return self.disc * self.length_scale()
        return max(math.sqrt(c[key] / math.pi) for c in self._corners() for key in self.mass_keys)

    def radii(self, lead: Tensor) -> float | Tensor:
        """Disc radii in world units for frames shaped like ``lead`` (q without its last
        axis): a float when all discs match, else ``(*lead.shape, bodies)`` (style
        ``"dm"``: √(m/π) of each body's own mass)."""
        if self.style == "paper":
            return self.disc * self.length_scale()
        masses = [self.const(key, lead) for key in self.mass_keys]
        if not any(isinstance(m, Tensor) for m in masses) and len(set(masses)) == 1:
            return math.sqrt(masses[0] / math.pi)
        per_body = torch.stack(
            [torch.as_tensor(m, dtype=torch.float64).expand(lead.shape) for m in masses], -1
        )
        return (per_body / math.pi).sqrt().expand(*lead.shape, self.bodies)

    def render_info(self) -> dict[str, Any]:
        """Canvas geometry and colours, recorded with a dataset."""
        return {
            "style": self.style,
            "extent": self.extent(),
            "radius": self.max_radius(),
            "colours": "random" if self.random_colours else [list(c) for c in self.colours],
            "background": list(self.background),
            "min_size": self.min_size,
        }

    colour: ClassVar[int] = 0
    """Palette entry of a one-body system."""

    @property
    def colours(self) -> tuple[tuple[float, float, float], ...]:
        """The body colours of this system's style (when they are not random)."""
        if self.style == "dm":
            return hue_colours(self.bodies)
        return PALETTE[: self.bodies] if self.bodies > 1 else (PALETTE[self.colour],)

    @property
    def background(self) -> tuple[float, float, float]:
        return DM_BACKGROUND if self.style == "dm" else BACKGROUND

    @property
    def min_size(self) -> int:
        """Smallest image size at which every disc is at least one pixel in radius."""
        smallest = self.disc * self.length_scale()
        if self.style == "dm":
            smallest = min(
                math.sqrt(c[key] / math.pi) for c in self._corners() for key in self.mass_keys
            )
        return math.ceil(2.0 * self.extent() / smallest - 1e-9)

    def check_size(self, size: int) -> int:
        """Validate an image size, naming the minimum for this system."""
        if isinstance(size, bool) or int(size) != size or size < self.min_size:
            raise UserError(
                f"image size {size} is too small to draw {self.name}: the minimum is "
                f"{self.min_size} (discs need a radius of at least one pixel)"
            )
        return int(size)

    def render(
        self, q: np.ndarray | Tensor, size: int, out: np.ndarray | None = None
    ) -> np.ndarray | Tensor:
        """Draw positions ``(..., dof)`` as uint8 RGB frames ``(..., size, size, 3)``.

        Each body is an anti-aliased disc painted over the background in body order.
        Only a small square patch around each disc is evaluated and scattered into the
        frame, which makes the cost proportional to the disc area rather than the image
        area. Returns a NumPy array for NumPy input and a tensor for tensor input; with
        ``out`` (a uint8 array of the result's shape) the frames are drawn into it, which
        spares the page faults of a fresh allocation per call (they cost more than the
        drawing on some virtual machines). On a bound system the leading axis of ``q``
        is the trajectory.
        """
        size = self.check_size(size)
        as_numpy = not isinstance(q, Tensor)
        q = torch.from_numpy(np.array(q, np.float64)) if as_numpy else q.to(torch.float64)
        lead = q.shape[:-1]
        frames = math.prod(lead)
        pos = self.positions(q)
        if "shift" in self.values:
            pos = pos + self.values["shift"].reshape(-1, *([1] * (pos.dim() - 2)), 2)
        pos = pos.reshape(frames, self.bodies, 2)
        radii = self.radii(q[..., 0])
        if isinstance(radii, Tensor):
            radii = radii.reshape(frames, self.bodies)
        colours = self.values.get("colours")
        if colours is not None:
            colours = colours.reshape(-1, *([1] * (len(lead) - 1)), self.bodies, 3)
            colours = colours.expand(*lead, self.bodies, 3).reshape(frames, self.bodies, 3)
        if out is None:
            result = torch.empty((frames, size, size, 3), dtype=torch.uint8)
        else:
            if out.shape != (*lead, size, size, 3) or out.dtype != np.uint8:
                raise ValueError(f"out must be uint8 {(*lead, size, size, 3)}")
            result = torch.from_numpy(out).view(frames, size, size, 3)
        chunk = max(1, RENDER_PIXELS // (size * size))
        for i in range(0, frames, chunk):
            part = slice(i, i + chunk)
            self._render_chunk(
                pos[part],
                radii if not isinstance(radii, Tensor) else radii[part],
                None if colours is None else colours[part],
                result[part],
            )
        if out is not None:
            return out
        result = result.reshape(*lead, size, size, 3)
        return result.numpy() if as_numpy else result

    def render_float(self, q: Tensor, size: int) -> Tensor:
        """Differentiable :meth:`render`: positions ``(..., dof)`` -> frames
        ``(..., size, size, 3)`` in [0, 1], in ``q``'s floating dtype.

        The same picture as :meth:`render` (canvas, radii, colours, edge model, body
        order, bound per-trajectory values) up to its uint8 rounding: ``render_float(q)
        · 255`` rounds to within one grey level of ``render(q)``. Every disc is evaluated
        over the whole frame (no patches), so gradients reach ``q`` from every pixel its
        edge touches; meant for fitting states to frames (:mod:`hgn.evaluation.oracle`),
        not for generating data.
        """
        size = self.check_size(size)
        dtype = q.dtype if q.is_floating_point() else torch.float64
        q = q.to(dtype)
        lead = q.shape[:-1]
        pos = self.positions(q)  # (..., bodies, 2)
        if "shift" in self.values:
            pos = pos + self.values["shift"].to(dtype).reshape(-1, *([1] * (pos.dim() - 2)), 2)
        extent = self.extent()
        scale = size / (2.0 * extent)
        radius = self.radii(q[..., 0])
        if isinstance(radius, Tensor):
            radius = (radius.to(dtype) * scale)[..., None, None]  # (..., bodies, 1, 1)
        else:
            radius = radius * scale
        centres = torch.arange(size, dtype=dtype) + 0.5
        cx = ((pos[..., 0] + extent) * scale)[..., None, None]  # (..., bodies, 1, 1)
        cy = ((extent - pos[..., 1]) * scale)[..., None, None]
        # a tiny floor keeps sqrt differentiable at a pixel centre on a disc centre
        dist = ((centres[:, None] - cy).square() + (centres - cx).square() + 1e-12).sqrt()
        if self.style == "dm":
            alpha = torch.sigmoid(DM_SHARPNESS / size * (radius - dist))
        else:
            alpha = (radius + 0.5 - dist).clamp(0.0, 1.0)  # (..., bodies, size, size)
        colours = self.values.get("colours")
        if colours is not None:
            colours = colours.to(dtype).reshape(-1, *([1] * (len(lead) - 1)), self.bodies, 3)
            colours = colours.expand(*lead, self.bodies, 3)
        else:
            colours = torch.tensor(self.colours, dtype=dtype).expand(*lead, self.bodies, 3)
        out = torch.tensor(self.background, dtype=dtype).expand(*lead, size, size, 3)
        for body in range(self.bodies):
            a = alpha[..., body, :, :, None]
            out = out + a * (colours[..., body, None, None, :] - out)
        return out

    def _render_chunk(
        self, pos: Tensor, radii: float | Tensor, colours: Tensor | None, out: Tensor
    ) -> None:
        """Draw ``n`` frames of disc centres ``pos (n, bodies, 2)`` into ``out``."""
        n, size = pos.shape[0], out.shape[1]
        extent = self.extent()
        scale = size / (2.0 * extent)  # pixels per world unit
        radius = radii * scale  # pixels: float or (n, bodies)
        r_max = float(radius.max()) if isinstance(radius, Tensor) else radius
        if self.style == "dm":
            sharp = DM_SHARPNESS / size  # per pixel: sigmoid(-80 d/width) with width = size
            margin = 7.0 / sharp  # sigmoid(-7) < 1e-3: below half a grey level
        else:
            sharp, margin = 0.0, 0.5
        # pixel coordinates of the disc centres; pixel i covers [i, i + 1)
        cx = ((pos[..., 0] + extent) * scale).to(torch.float32)  # (n, bodies)
        cy = ((extent - pos[..., 1]) * scale).to(torch.float32)
        patch = min(size, math.ceil(2.0 * (r_max + margin) + 1.0))
        offsets = torch.arange(patch)
        background = torch.tensor(self.background) * 255.0
        # one frame, then broadcast over the chunk: expanding the 3-byte pixel directly
        # copies byte by byte and is several times slower
        frame = (background + 0.5).to(torch.uint8).repeat(size * size)
        out.view(n, -1).copy_(frame.expand(n, -1))
        # the frames as flat bytes: patches are scattered byte-wise (a scatter of 3-byte
        # rows, or of broadcast RGB arithmetic, costs several times more)
        flat = out.view(-1)
        step = torch.arange(patch) * (size * 3)
        rel = (step[:, None, None] + (offsets * 3)[None, :, None] + torch.arange(3)).reshape(-1)
        first_byte = torch.arange(n) * (size * size * 3)
        palette = torch.tensor(self.colours, dtype=torch.float32) * 255.0
        for body in range(self.bodies):
            r = radius[:, body, None, None].float() if isinstance(radius, Tensor) else radius
            # patch origin, kept inside the frame; coverage is computed at true pixel
            # centres, so a clamped patch still holds every visible pixel of its disc
            x0 = (cx[:, body] - r_max - margin).floor().clamp(0, size - patch).long()
            y0 = (cy[:, body] - r_max - margin).floor().clamp(0, size - patch).long()
            dx2 = (x0[:, None] + offsets + 0.5 - cx[:, body, None]).square()  # (n, patch)
            dy2 = (y0[:, None] + offsets + 0.5 - cy[:, body, None]).square()
            dist = (dy2[:, :, None] + dx2[:, None, :]).sqrt()
            soft = torch.sigmoid(sharp * (r - dist)) if sharp else None
            alpha = (r + 0.5 - dist).clamp(0.0, 1.0) if soft is None else soft
            alpha = alpha.reshape(n, -1, 1)
            index = ((first_byte + (y0 * size + x0) * 3)[:, None] + rel).reshape(-1)
            colour = palette[body] if colours is None else colours[:, body, None, :] * 255.0
            if body == 0 and colours is None:  # plain background: one outer product
                painted = torch.addmm(
                    background + 0.5, alpha.view(-1, 1), (colour - background)[None]
                )
            elif body == 0:
                painted = torch.baddbmm(background + 0.5, alpha, colour - background)
            else:
                under = flat.gather(0, index).view(n, -1, 3).to(torch.float32)
                painted = torch.addcmul(under + 0.5, alpha, colour - under)
            flat.scatter_(0, index, painted.reshape(-1).to(torch.uint8))

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


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV → RGB (``colorsys`` works one colour at a time): ``(..., 3)``."""
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    table = np.stack(
        [
            np.stack(x, -1)
            for x in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
        ]
    )  # (6, ..., 3)
    return np.take_along_axis(table, (i.astype(int) % 6)[None, ..., None], 0)[0]


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
        k, m = self.const("k", q), self.const("m", q)
        return (0.5 * k * q.square() + p.square() / (2.0 * m)).sum(-1)

    def grad(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        return self.const("k", q) * q, p / self.const("m", q)

    def sample_initial(self, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        return _on_circle(n, rng, self.constants["r_min"], self.constants["r_max"])

    def positions(self, q: Tensor) -> Tensor:
        return torch.stack([q[..., 0], torch.zeros_like(q[..., 0])], -1)[..., None, :]

    def _length_scale(self, c: Mapping[str, float]) -> float:
        """Largest amplitude: H <= r² max(k/2, 1/(2m)) and H = k A² / 2."""
        return c["r_max"] * math.sqrt(max(1.0, 1.0 / (c["k"] * c["m"])))

    def _frequency(self, c: Mapping[str, float]) -> float:
        return math.sqrt(c["k"] / c["m"])


class Pendulum(System):
    """H = f m g l (1 − cos q) + p² / (2 m l²) with f = 2 (the paper's factor; the
    DeepMind suite has f = 1); the bob is drawn at (l sin q, −l cos q) around a pivot at
    the canvas centre."""

    name = "pendulum"
    defaults: ClassVar[dict[str, float]] = {
        "g": 3.0,
        "m": 0.5,
        "l": 1.0,
        "r_min": 1.3,
        "r_max": 2.3,
        "factor": 2.0,
    }
    default_noise = 0.1
    canvas = 1.35
    disc = 0.25
    colour = 0
    phase_per_substep = 0.04

    def hamiltonian(self, q: Tensor, p: Tensor) -> Tensor:
        g, m, length = (self.const(k, q) for k in ("g", "m", "l"))
        potential = self.constants["factor"] * m * g * length * (1.0 - torch.cos(q))
        return (potential + p.square() / (2.0 * m * length**2)).sum(-1)

    def grad(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        g, m, length = (self.const(k, q) for k in ("g", "m", "l"))
        factor = self.constants["factor"]
        return factor * m * g * length * torch.sin(q), p / (m * length**2)

    def sample_initial(self, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        return _on_circle(n, rng, self.constants["r_min"], self.constants["r_max"])

    def positions(self, q: Tensor) -> Tensor:
        length, angle = self.const("l", q), q[..., :1]
        return torch.stack([length * torch.sin(angle), -length * torch.cos(angle)], -1)

    def _length_scale(self, c: Mapping[str, float]) -> float:
        return c["l"]

    def _frequency(self, c: Mapping[str, float]) -> float:
        """Small-angle frequency sqrt(f g/l), raised for energetic (rotating) states."""
        return max(math.sqrt(c["factor"] * c["g"] / c["l"]), c["r_max"] / (c["m"] * c["l"] ** 2))


class DoublePendulum(System):
    """Two point masses on massless rods, angles from the downward vertical:

    H = [m₂ l₂² p₁² + (m₁+m₂) l₁² p₂² − 2 m₂ l₁ l₂ p₁ p₂ cos Δ] / [2 m₂ l₁² l₂² (m₁ + m₂ sin² Δ)]
        − (m₁+m₂) g l₁ cos q₁ − m₂ g l₂ cos q₂,   Δ = q₁ − q₂

    (the canonical momenta of the Lagrangian of the textbook double pendulum). Initial
    states: (q₁, q₂, p₁, p₂) = r u with r ~ U(r_min, r_max) and u uniform on the unit
    3-sphere, the 2-D analogue of the paper's circle. The bobs are drawn at
    (l₁ sin q₁, −l₁ cos q₁) and that plus (l₂ sin q₂, −l₂ cos q₂), about a pivot at the
    canvas centre. The motion is chaotic at higher energies.
    """

    name = "double-pendulum"
    bodies = 2
    dim = 1
    defaults: ClassVar[dict[str, float]] = {
        "g": 3.0,
        "m1": 0.5,
        "m2": 0.5,
        "l1": 1.0,
        "l2": 1.0,
        "r_min": 0.5,
        "r_max": 1.5,
    }
    default_noise = 0.05
    canvas = 1.2
    disc = 0.15
    phase_per_substep = 0.01
    mass_keys = ("m1", "m2")

    def _parts(self, q: Tensor, p: Tensor) -> dict[str, Any]:
        """The pieces that H and its gradient share (N/(scale·D) is the kinetic energy)."""
        g, m1, m2, l1, l2 = (self.const(k, q[..., 0]) for k in ("g", "m1", "m2", "l1", "l2"))
        delta = q[..., 0] - q[..., 1]
        cos, sin = torch.cos(delta), torch.sin(delta)
        denom = m1 + m2 * sin.square()
        scale = 2.0 * m2 * l1**2 * l2**2
        num = (
            m2 * l2**2 * p[..., 0].square()
            + (m1 + m2) * l1**2 * p[..., 1].square()
            - 2.0 * m2 * l1 * l2 * p[..., 0] * p[..., 1] * cos
        )
        return {
            "g": g,
            "m1": m1,
            "m2": m2,
            "l1": l1,
            "l2": l2,
            "cos": cos,
            "sin": sin,
            "denom": denom,
            "scale": scale,
            "num": num,
        }

    def hamiltonian(self, q: Tensor, p: Tensor) -> Tensor:
        v = self._parts(q, p)
        kinetic = v["num"] / (v["scale"] * v["denom"])
        g, m1, m2, l1, l2 = (v[k] for k in ("g", "m1", "m2", "l1", "l2"))
        potential = -(m1 + m2) * g * l1 * torch.cos(q[..., 0]) - m2 * g * l2 * torch.cos(q[..., 1])
        return kinetic + potential

    def grad(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        v = self._parts(q, p)
        g, m1, m2, l1, l2 = (v[k] for k in ("g", "m1", "m2", "l1", "l2"))
        cos, sin, denom, num, scale = (v[k] for k in ("cos", "sin", "denom", "num", "scale"))
        p1, p2 = p[..., 0], p[..., 1]
        dk_dp1 = (l2 * p1 - l1 * p2 * cos) / (l1**2 * l2 * denom)
        dk_dp2 = ((m1 + m2) * l1 * p2 - m2 * l2 * p1 * cos) / (m2 * l1 * l2**2 * denom)
        dnum = 2.0 * m2 * l1 * l2 * p1 * p2 * sin
        dden = 2.0 * m2 * sin * cos
        dk_ddelta = (dnum * denom - num * dden) / (scale * denom.square())
        dh_dq1 = dk_ddelta + (m1 + m2) * g * l1 * torch.sin(q[..., 0])
        dh_dq2 = -dk_ddelta + m2 * g * l2 * torch.sin(q[..., 1])
        return torch.stack([dh_dq1, dh_dq2], -1), torch.stack([dk_dp1, dk_dp2], -1)

    def sample_initial(self, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        r = rng.uniform(self.constants["r_min"], self.constants["r_max"], size=(n, 1))
        u = rng.standard_normal((n, 4))
        state = r * u / np.linalg.norm(u, axis=1, keepdims=True)
        return torch.from_numpy(state[:, :2].copy()), torch.from_numpy(state[:, 2:].copy())

    def positions(self, q: Tensor) -> Tensor:
        l1, l2 = self.const("l1", q[..., 0]), self.const("l2", q[..., 0])
        x1, y1 = l1 * torch.sin(q[..., 0]), -l1 * torch.cos(q[..., 0])
        x2, y2 = x1 + l2 * torch.sin(q[..., 1]), y1 - l2 * torch.cos(q[..., 1])
        return torch.stack([torch.stack([x1, y1], -1), torch.stack([x2, y2], -1)], -2)

    def _length_scale(self, c: Mapping[str, float]) -> float:
        return c["l1"] + c["l2"]

    def _frequency(self, c: Mapping[str, float]) -> float:
        """The faster normal mode's small-angle frequency bound, raised for energetic
        states (the largest initial momentum over the smallest moment of inertia)."""
        shortest = min(c["l1"], c["l2"])
        heavy = (c["m1"] + c["m2"]) / min(c["m1"], c["m2"])
        inertia = min(c["m1"], c["m2"]) * shortest**2
        return max(math.sqrt(c["g"] * heavy / shortest), c["r_max"] / inertia)


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
    unreliable (a close approach between frames); not applied with friction."""

    def hamiltonian(self, q: Tensor, p: Tensor) -> Tensor:
        g, m = self.const("g", q[..., 0]), self.const("m", q[..., 0])
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
        g, m = self.const("g", q), self.const("m", q)
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

    def circular_speed(self, r: np.ndarray, c: Mapping[str, Any] | None = None) -> np.ndarray:
        """Speed of each body of a regular n-gon of radius r on its circular orbit."""
        c = self.constants if c is None else c
        n = self.bodies
        ring = sum(1.0 / (4.0 * math.sin(math.pi * k / n)) for k in range(1, n))
        return np.sqrt(c["g"] * c["m"] * ring / r)

    def sample_initial(self, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        c = self.constants
        r = rng.uniform(c["r_min"], c["r_max"], size=n)
        angle = rng.uniform(0.0, 2.0 * math.pi, size=n)[:, None]
        angle = angle + 2.0 * math.pi * np.arange(self.bodies) / self.bodies
        radial = np.stack([np.cos(angle), np.sin(angle)], -1)  # (n, bodies, 2)
        sense = rng.choice([-1.0, 1.0], size=n)[:, None, None]
        tangent = sense * np.stack([-radial[..., 1], radial[..., 0]], -1)
        # the orbit speed, and the momentum, of each trajectory's own g and m (the
        # bound values drawn just before; an unbound system's constants otherwise)
        gm = {k: self.values[k].numpy()[:n] if k in self.values else c[k] for k in ("g", "m")}
        speed = self.circular_speed(r, gm)[:, None, None]
        kick = c["orbit_noise"] * speed * rng.standard_normal((n, self.bodies, 2))
        velocity = speed * tangent + kick
        velocity -= velocity.mean(1, keepdims=True)
        q = r[:, None, None] * radial
        p = np.reshape(gm["m"], (-1, 1, 1)) * velocity
        return torch.from_numpy(q.reshape(n, -1)), torch.from_numpy(p.reshape(n, -1))

    def positions(self, q: Tensor) -> Tensor:
        return q.unflatten(-1, (self.bodies, 2))

    def _length_scale(self, c: Mapping[str, float]) -> float:
        return c["r_max"]

    def _frequency(self, c: Mapping[str, float]) -> float:
        """Angular velocity of the tightest circular orbit, with headroom for eccentricity."""
        r = c["min_distance"] * c["r_min"]
        return float(self.circular_speed(np.float64(r), c)) / r

    def valid(self, qs: Tensor, ps: Tensor) -> Tensor:
        c = self.constants
        limit = (self.canvas - self.disc) * self.length_scale()
        inside = (qs.abs() <= limit).all(-1).all(-1)
        dx, dy = self._pairs(qs)
        closest = (dx.square() + dy.square()).amin(-1).amin(-1).sqrt()
        ok = inside & (closest >= c["min_distance"] * c["r_min"])
        if not c["friction"]:
            energy = self.hamiltonian(qs, ps)
            drift = ((energy - energy[:, :1]).abs() / energy[:, :1].abs()).amax(-1)
            ok &= drift <= self.max_drift
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
    cls.name: cls for cls in (MassSpring, Pendulum, DoublePendulum, TwoBody, ThreeBody)
}
"""System classes by name."""


def get_system(name: str, **overrides: Any) -> System:
    """Build a system by name; ``overrides`` replace constants (and ``noise``, ``style``,
    ``vary``, ``random_colours``)."""
    try:
        cls = SYSTEMS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), SYSTEMS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(
            f"unknown system {name!r}{hint}; choose one of: {', '.join(SYSTEMS)}"
        ) from None
    return cls(**overrides)
