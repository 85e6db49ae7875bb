"""HGN++: the improved HGN of the latent-dynamics benchmark (docs/SCIENCE.md §3a).

Botev et al. (2021, "Which priors matter?") and Higgins et al. (2021, "SyMetric") kept
HGN's idea and changed what made it fail to extrapolate in time. What they changed, and
what this module does:

* a flat phase space ``q, p ∈ Rⁿ`` (n = 16) instead of 16×4×4 maps: the dynamics of a few
  bodies need few numbers, and an MLP energy on a vector is cheap to differentiate;
* a separable ``H = K(p) + V(q)`` with smooth (Softplus) MLP energies, integrated by the
  first-same-as-last leapfrog (:func:`hgn.physics.integrators.leapfrog_separable`, as one
  graph node with a hand-written reverse pass: :func:`hgn.nn.energy_leapfrog`), which
  is symplectic and exactly reversible, so running backwards (dt → −dt) is the same map
  inverted, not a different approximation;
* an encoder that reads k = 5 frames stacked on the channel axis and infers the state at
  the **last** frame it reads (``state_offset = k − 1``): every frame before it is
  evidence about the velocity at that instant;
* long training targets: a window of ``frames`` frames (65 by default: 5 read, 60
  predicted; clamped to what the data holds) and **forward–backward** training: for half
  of each batch the state is inferred from the window's first k frames and rolled out
  with +dt over the frames after them, for the other half from its last k frames and
  rolled out with −dt over the frames before them. A model trained only forwards never
  learns that its backward map must match the data (measured: issue 10);
* a Gaussian likelihood with fixed scale (the summed squared error, per pixel) plus a
  β-weighted KL, both divided by pixels × time steps.

Two economies make it trainable on a CPU: decoding dominates the cost of a step (the
rollout is a few small MLP gradients per step), so each training step decodes only a
random subset of ``decode_frames`` of the rolled-out states per sequence, an unbiased
estimate of the full reconstruction error that still back-propagates through the whole
rollout; and the rollout horizon grows over a ``warmup`` from a few steps to all of
them, so early training, when H is still random, does not pay for long rollouts.

The decoder is HGN's (:class:`hgn.models.hgn.Decoder`, progressive-GAN up-sampling
blocks) behind a linear map from ``q`` to its small input map.

Everything but the dynamics (encoder, f_ψ, decoder, the loss with its targets, decoded
subset, warm-up, curriculum, KL, colour and consistency terms, the sampler) is
:class:`hgn.models.latent.LatentDynamicsModel`'s, shared with the benchmark's
non-Hamiltonian baselines (:mod:`hgn.models.baselines`); this module adds the energies,
the separable leapfrog, the Hamiltonian and that HGN++ decodes q alone.

New trajectories (:meth:`HGNPP.sample`) start from the *aggregate posterior* of training
sequences once it has been fitted (:meth:`HGNPP.fit_aggregate_posterior`), not from the
N(0, I) prior of the KL term: with a weak KL weight the encoder's states of real
sequences occupy a shifted, stretched and flattened region of z-space (measured on the
mass-spring run pp20b: per-dimension means up to 2.6 in size, standard deviations 0.18
to 3.5, 4 of 32 directions holding 95 % of the variance), so most N(0, I) draws start
where no data sequence does: too little energy, now and then a faint disc (issue 10).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hgn.models.base import State, check_dt, substeps_for
from hgn.models.latent import (
    FrameEncoder,
    ImageDecoder,
    InitialState,
    LatentConfig,
    LatentDynamicsModel,
)
from hgn.nn import EnergyMLP, energy_leapfrog
from hgn.utils import UserError

__all__ = [
    "HGNPP",
    "SEVERAL_BODIES",
    "FrameEncoder",
    "HGNPPConfig",
    "ImageDecoder",
    "InitialState",
]

SEVERAL_BODIES = {"encoder_colour_gain": 5.0, "colour_weight": 4.0}
"""What ``encoder_colour_gain`` and ``colour_weight`` left at None become on data that
shows two or more bodies (its metadata's ``bodies``; 0 on one body or where the data
does not say). Needed there: without both, two-body's state never tells its bodies
apart. Harmful on one: the pendulum's 20-minute run fell from 0.13 to 0.46 of the mean
image forward with them (docs/RESULTS.md, "How the defaults were chosen")."""


@dataclass
class HGNPPConfig(LatentConfig):
    """Everything that defines an HGN++: :class:`~hgn.models.latent.LatentConfig` (what
    every latent-dynamics model shares) and the energies. Defaults follow DeepMind's
    published configuration where it is known (flat 16 + 16 phase space, 250-unit
    5-layer energies (Softplus here, swish there), 5 context frames, 60 target steps);
    the ``small`` profile (``hgn.training.config``) shrinks the networks for a CPU."""

    energy_hidden: int = 250
    energy_layers: int = 5
    """K and V are Softplus MLPs (NHF's :class:`hgn.nn.EnergyMLP`, whose input
    gradient is written in closed form: half the cost of ``torch.func`` per leapfrog
    step, and a rollout is 2·steps of them) of this width and depth."""
    kinetic_quadratic: bool = True
    """K(p) = ½|p|² + MLP(p): the physical kinetic energy in suitable coordinates plus a
    correction, so q moves along p from the first step (a fresh MLP is nearly flat)."""
    potential_quadratic: bool = False
    """V(q) = ½|q|² + MLP(q): rollouts then oscillate from the first step."""
    gradient_horizon: int = 0
    """In training, the error of a state more than this many steps from the state's
    frame trains the energies and the decoder but passes no gradient back into the
    state the rollout started from, hence none into the encoder (0: all do). It tests
    whether, on a chaotic system, the far states' error (mostly the growth of a small
    error in the start) harms through the encoder: on three-body it does not (28 of
    60 steps: no better than the defaults; docs/RESULTS.md, "Three-body against the
    limit")."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("energy_hidden", "energy_layers"):
            if getattr(self, key) <= 0:
                raise UserError(f"model.{key} must be positive, got {getattr(self, key)}")
        if self.gradient_horizon < 0:
            raise UserError(f"model.gradient_horizon must be ≥ 0, got {self.gradient_horizon}")


class HGNPP(LatentDynamicsModel):
    """HGN++: k frames → z → f_ψ → (q, p) at the last frame read → separable leapfrog
    both ways in time → decode q; trained forwards and backwards as a temporal VAE."""

    Config = HGNPPConfig
    config: HGNPPConfig
    label = "HGN++"
    can_run_backwards = True
    can_change_speed = True
    prior = "hamiltonian"

    def build_dynamics(self, config: HGNPPConfig) -> None:  # type: ignore[override]
        """The kinetic and potential energies, K(p) and V(q)."""
        n, hidden, layers = config.state_dim, config.energy_hidden, config.energy_layers
        self.kinetic = EnergyMLP(n, hidden, layers, quadratic=config.kinetic_quadratic)
        self.potential = EnergyMLP(n, hidden, layers, quadratic=config.potential_quadratic)

    def hamiltonian(self, state: State) -> Tensor:
        """K(p) + V(q) of states with any leading axes ``(..., n)`` → ``(...)``."""
        return self.kinetic(state.p) + self.potential(state.q)

    def _integrate(
        self, q: Tensor, p: Tensor, dt: float | Tensor, steps: int, substeps: int = 1
    ) -> State:
        """Leapfrog ``steps`` steps of ``dt`` (a float, or a per-sample ``(B, 1)`` tensor),
        in float32 even under autocast (bf16 would swamp the small increments)."""
        with torch.autocast(q.device.type, enabled=False):
            dtype = torch.promote_types(q.dtype, torch.float32)
            qs, ps = energy_leapfrog(
                self.kinetic, self.potential, q.to(dtype), p.to(dtype), dt, steps, substeps
            )
        return State(qs.transpose(0, 1), ps.transpose(0, 1))

    def rollout(self, state: State, steps: int, dt: float | None = None) -> State:
        """One state per ``dt`` for ``steps`` steps, ``(B, steps+1, n)`` each; dt defaults
        to the trained one, < 0 runs backwards, and no integration step is longer than
        the trained integration step, ``dt / substeps`` (:func:`hgn.models.base.substeps_for`)."""
        cfg = self.config
        dt = cfg.dt if dt is None else check_dt(dt)
        return self._integrate(state.q, state.p, dt, steps, substeps_for(dt, cfg.dt / cfg.substeps))

    def train_rollout(self, s0: State, dt: Tensor, steps: int, frames: Tensor) -> State:
        """Leapfrog at the trained integration step, ``dt / substeps``; past
        ``gradient_horizon`` steps it goes on from a detached copy of the state there."""
        cut, substeps = self.config.gradient_horizon, self.config.substeps
        if not 0 < cut < steps:
            return self._integrate(s0.q, s0.p, dt, steps, substeps)
        near = self._integrate(s0.q, s0.p, dt, cut, substeps)
        far = self._integrate(
            near.q[:, -1].detach(), near.p[:, -1].detach(), dt, steps - cut, substeps
        )
        return State(torch.cat([near.q, far.q[:, 1:]], 1), torch.cat([near.p, far.p[:, 1:]], 1))

    @property
    def decoder_width(self) -> int:
        """The decoder reads q alone (n numbers)."""
        return self.config.state_dim

    def decode(self, state: State) -> Tensor:
        """Images of states with any leading axes ``(..., n)`` → ``(..., 3, S, S)``: the
        decoder reads the positions q alone, so p must carry the motion."""
        return self.decode_positions(state.q)

    def decode_positions(self, q: Tensor) -> Tensor:
        """Images of positions ``(..., n)`` (the training loss decodes a subset of them)."""
        images = self.decoder(q.reshape(-1, q.shape[-1]))
        return images.reshape(*q.shape[:-1], *images.shape[1:])
