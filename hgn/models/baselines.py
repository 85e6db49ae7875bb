"""The latent-dynamics benchmark's non-Hamiltonian baselines (issue 23): HGN++ with the
dynamics swapped, everything else shared.

Botev et al. (2021, "Which priors matter?") compare HGN with a latent neural ODE, a
discrete residual network (RGN) and autoregressive recurrent models as one model whose
encoder, decoder, 5 inference frames, 60 target steps and training are the same. Here
that shared model is :class:`hgn.models.latent.LatentDynamicsModel` (HGN++'s
:class:`~hgn.models.latent.FrameEncoder`, f_ψ, decoder, loss, warm-up, curriculum, KL,
colour and consistency terms and sampler), and each baseline adds only its dynamics:

* :class:`NeuralODE` (``--model ode``): ds/dt = f(s) for the whole state s = (q, p)
  (2n numbers), f an unconstrained SiLU MLP, integrated by classical RK4 at the trained
  step. RK4 rather than the benchmark's adaptive solvers or RK2: a fixed step keeps the
  cost of a training step known and the same as at test time, the learned f absorbs the
  integrator's error at that step (as HGN++'s learned H absorbs leapfrog's), and a
  fourth-order method keeps that error small enough that the same f also serves at half
  the step and backwards (−dt), where the error is not trained away. It can run
  backwards and at other speeds, with sub-steps no longer than the trained step
  (:func:`hgn.models.base.substeps_for`), and trains forwards and backwards like HGN++
  (the benchmark found continuous, time-reversible training helps every model class).
  Running forward then back returns to the start only up to RK4's error, O(dt⁴) over a
  fixed time: it is not exactly reversible as HGN++'s leapfrog is.
* :class:`RGN` (``--model rgn``): a discrete residual step s_{t+1} = s_t + g(s_t), g a
  SiLU MLP. One step is one frame of the trained dt: it runs forward only (g has no
  inverse that training ever saw) and a step of another length is not defined, so
  :meth:`~hgn.models.base.SequenceModel.check_rollout` refuses both, and it trains
  forwards only.
* :class:`LSTM` and :class:`GRU` (``--model lstm`` / ``gru``): autoregressive recurrent
  models over the encoded frames, trained with teacher forcing and rolled out open loop.
* :class:`LGN` (``--model lgn``, the issue's stretch): a Lagrangian latent model, state
  (q, q̇) and a learned L(q, q̇), moved by the Euler–Lagrange equations with the ODE's RK4;
  continuous, so it runs backwards and at other speeds and trains both ways.

What the decoder reads: the non-physical baselines (ODE, RGN, LSTM, GRU) decode the
**whole** state (2n numbers: the decoder's first linear map reads q and p concatenated),
because nothing in their dynamics makes one half a configuration and the other its rate
of change; HGN++ decodes q alone (its prior), and so does LGN, whose q is a
configuration by construction. All models have a 2n-number latent state, so they are compared at
equal latent size.

The recurrent models' state and encoding. Each frame t ≥ k − 1 has a latent
x_t = f_ψ(z_t) (2n numbers, q and p of f_ψ concatenated), z_t the posterior of the k
frames ending at t: HGN++'s encoder applied to a sliding window, so that the encoder
and f_ψ are HGN++'s, weights and all, and x_t carries the velocity evidence of the k
frames as HGN++'s state does. The cell (``torch.nn.LSTMCell`` / ``GRUCell``) reads x_t
and its memory and predicts x̂_{t+1} = x_t + W·h_{t+1} (a residual read-out: a fresh cell
then predicts "no change", not noise); the decoder draws x̂_{t+1}. A
:class:`~hgn.models.base.State` of these models is ``q`` = the current latent (2n) and
``p`` = the memory (LSTM: h and c concatenated, 2·hidden; GRU: h). :meth:`encode` returns
the state at the last context frame: its latent x_{k−1} (the posterior of the context
window, through f_ψ) and an empty (zero) memory, which is also where every training
rollout starts, so training and testing begin alike; the memory fills from the first
step on. Training is teacher forced (as the benchmark's AR models are): the cell's input
at each step is the encoding of the true frames (the posterior mean of the window ending
at that frame, through f_ψ), not its own previous prediction; each prediction is decoded
and scored against the true next frame. At test time (:meth:`Recurrent.rollout`) it runs
open loop: each input is its own previous prediction. Both forward only and at the
trained speed; the consistency term, where on, compares the predicted latent with the
encoding of the same frames. :meth:`~hgn.models.latent.LatentDynamicsModel.sample` works
as for the others: x from f_ψ of an aggregate-posterior draw of z, an empty memory.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from hgn.models.base import State, check_dt, substeps_for
from hgn.models.latent import LatentConfig, LatentDynamicsModel
from hgn.nn import EnergyMLP
from hgn.utils import UserError

OUTPUT_SCALE = 0.1
"""The dynamics networks' last layer starts at this fraction of PyTorch's default
initialisation: a fresh f (ODE), g (RGN) or read-out (recurrent models) then moves the
state little per step, so early rollouts stay near the encoded state rather than
wandering off where the decoder has never been (HGN++'s fresh energies are nearly flat
for the same reason)."""


def _check_one_way(cfg: LatentConfig, model: str) -> None:
    """A discrete or recurrent model: one step per frame, trained forwards only."""
    if cfg.forward_backward:
        raise UserError(
            f"model.forward_backward must be false for {model}: it runs forward only, "
            "so there is no backward half to train"
        )
    if cfg.substeps != 1:
        raise UserError(
            f"model.substeps must be 1 for {model}: one discrete step is one frame, got "
            f"{cfg.substeps}"
        )


@dataclass
class ODEConfig(LatentConfig):
    """A latent neural ODE: :class:`~hgn.models.latent.LatentConfig` and the vector
    field's MLP (default: the shape of one of HGN++'s energies, 250 wide, 5 hidden layers;
    the ``small`` profile sizes it to the parameter count of HGN++'s two energies)."""

    dynamics_hidden: int = 250
    dynamics_layers: int = 5
    """Width and number of hidden SiLU layers of the dynamics MLP (f, or RGN's g),
    2n numbers in and out."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("dynamics_hidden", "dynamics_layers"):
            if getattr(self, key) <= 0:
                raise UserError(f"model.{key} must be positive, got {getattr(self, key)}")


@dataclass
class RGNConfig(ODEConfig):
    """A residual discrete step: the ODE's config, trained forwards only."""

    forward_backward: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_one_way(self, "RGN")


@dataclass
class RecurrentConfig(LatentConfig):
    """An autoregressive recurrent model: :class:`~hgn.models.latent.LatentConfig`, the
    cell's width, trained forwards only."""

    forward_backward: bool = False
    recurrent_hidden: int = 256
    """Units of the LSTM or GRU cell (its input and read-out are the 2n-number latent)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.recurrent_hidden <= 0:
            raise UserError(f"model.recurrent_hidden must be positive, got {self.recurrent_hidden}")
        _check_one_way(self, "the recurrent models")


class MLPField(nn.Module):
    """An unconstrained SiLU MLP from the state to a vector of its size (ODE's f, RGN's g)."""

    def __init__(self, dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        sizes = [dim] + [hidden] * layers
        body: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            body += [nn.Linear(a, b), nn.SiLU()]
        self.body = nn.Sequential(*body)
        self.out = nn.Linear(hidden, dim)
        _shrink(self.out)

    def forward(self, s: Tensor) -> Tensor:
        return self.out(self.body(s))


def _shrink(layer: nn.Linear) -> None:
    """Scale a fresh last layer by :data:`OUTPUT_SCALE`."""
    with torch.no_grad():
        layer.weight.mul_(OUTPUT_SCALE)
        if layer.bias is not None:
            layer.bias.mul_(OUTPUT_SCALE)


class OneWay:
    """Refusals of a model whose step is one frame forwards (RGN, the recurrent models):
    :meth:`check_rollout` says, in one line naming the model, that backwards and other
    speeds are not defined for it."""

    step_kind: ClassVar[str] = "discrete"
    trained_dt: float

    def check_rollout(self, dt: float) -> float:
        dt = check_dt(dt)
        name = type(self).__name__
        if dt < 0:
            raise UserError(
                f"{name} cannot run backwards in time: its {self.step_kind} step goes one way, "
                "one frame forwards"
            )
        if dt != abs(self.trained_dt):
            raise UserError(
                f"{name} cannot roll out at another speed: its {self.step_kind} step is defined "
                f"only at the trained dt {self.trained_dt:g}, got {dt:g}"
            )
        return dt


def _stack(states: list[Tensor]) -> State:
    """Whole states ``(B, 2n)`` per step → a :class:`State` with time on axis 1."""
    q, p = torch.stack(states, dim=1).chunk(2, dim=-1)
    return State(q, p)


# ----------------------------------------------------------------------------- ODE


class NeuralODE(LatentDynamicsModel):
    """A latent neural ODE ds/dt = f(s) on the whole state s = (q, p), RK4 at the trained
    step; decodes the whole state. Can run backwards and at other speeds."""

    Config = ODEConfig
    config: ODEConfig
    label = "ODE"
    can_run_backwards = True
    can_change_speed = True
    prior = "none"

    def build_dynamics(self, config: ODEConfig) -> None:  # type: ignore[override]
        """f: the vector field."""
        self.field = MLPField(2 * config.state_dim, config.dynamics_hidden, config.dynamics_layers)

    def velocity(self, s: Tensor) -> Tensor:
        """ds/dt at whole states ``(B, 2n)``."""
        return self.field(s)

    def _integrate(self, state: State, dt: float | Tensor, steps: int, substeps: int) -> State:
        """RK4, ``substeps`` steps of ``dt / substeps`` per output step (``dt`` a float or
        a per-sample ``(B, 1)`` tensor), in float32 even under autocast."""
        with torch.autocast(state.q.device.type, enabled=False):
            dtype = torch.promote_types(state.q.dtype, torch.float32)
            s = torch.cat([state.q, state.p], dim=-1).to(dtype)
            h = dt / substeps
            f = self.velocity
            out = [s]
            for _ in range(steps):
                for _ in range(substeps):
                    k1 = f(s)
                    k2 = f(s + 0.5 * h * k1)
                    k3 = f(s + 0.5 * h * k2)
                    k4 = f(s + h * k3)
                    s = s + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
                out.append(s)
        return _stack(out)

    def rollout(self, state: State, steps: int, dt: float | None = None) -> State:
        """One state per ``dt`` for ``steps`` steps, ``(B, steps+1, n)`` each; dt defaults
        to the trained one, < 0 runs backwards; no RK4 step is longer than the trained
        one (:func:`hgn.models.base.substeps_for`)."""
        cfg = self.config
        dt = cfg.dt if dt is None else check_dt(dt)
        return self._integrate(state, dt, steps, substeps_for(dt, cfg.dt / cfg.substeps))

    def train_rollout(self, s0: State, dt: Tensor, steps: int, frames: Tensor) -> State:
        """RK4 at the trained step, ``dt / substeps``, both signs in one batch."""
        return self._integrate(s0, dt, steps, self.config.substeps)


# ----------------------------------------------------------------------------- LGN


@dataclass
class LGNConfig(ODEConfig):
    """A Lagrangian latent model: the ODE's config, whose MLP (``dynamics_hidden``,
    ``dynamics_layers``, Softplus) is the learned part of L."""


class LGN(NeuralODE):
    """``--model lgn`` (the stretch of issue 23): a Lagrangian latent model. The state is
    (q, q̇), n numbers each (a :class:`State`'s ``p`` holds q̇), L(q, q̇) = ½|q̇|² +
    MLP(q, q̇) is learned, and the Euler–Lagrange equations

        M q̈ = ∂L/∂q − (∂²L/∂q̇∂q) q̇,    M = ∂²L/∂q̇²

    give q̈ (autograd's Hessians, one linear solve per state): ds/dt = (q̇, q̈), integrated
    by the ODE's RK4 at the trained step. The ½|q̇|² term and a small fresh MLP
    (:data:`OUTPUT_SCALE`) keep M near the identity, so the solve is well posed from the
    start (a general L has no invertible M). Continuous and time-reversible in form, so
    it runs backwards and at other speeds and trains forwards and backwards, as HGN++;
    like HGN++ and unlike the other baselines it decodes the configuration q alone (a
    physics prior, as HGN++'s). :meth:`hamiltonian` is its energy, E = q̇·∂L/∂q̇ − L,
    which the true dynamics conserve."""

    Config = LGNConfig
    config: LGNConfig
    label = "LGN"
    prior = "lagrangian"

    def build_dynamics(self, config: LGNConfig) -> None:  # type: ignore[override]
        """The learned part of L, a scalar Softplus MLP of (q, q̇)."""
        self.lagrangian_net = EnergyMLP(
            2 * config.state_dim, config.dynamics_hidden, config.dynamics_layers
        )
        _shrink(self.lagrangian_net.out)

    def lagrangian(self, q: Tensor, v: Tensor) -> Tensor:
        """L(q, q̇) of states with any leading axes ``(..., n)`` → ``(...)``."""
        return 0.5 * (v * v).sum(-1) + self.lagrangian_net(torch.cat([q, v], dim=-1))

    def _one(self, q: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """q̈ and E at one state ``(n,)`` (vmapped over a batch by the callers)."""
        dq, dv = torch.func.grad(self.lagrangian, argnums=(0, 1))(q, v)
        pull = torch.func.grad(self.lagrangian, argnums=1)
        mixed, mass = torch.func.jacrev(pull, argnums=(0, 1))(q, v)  # ∂(∂L/∂q̇)/∂(q, q̇)
        accel = torch.linalg.solve(mass, dq - mixed @ v)
        return accel, (v * dv).sum() - self.lagrangian(q, v)

    def velocity(self, s: Tensor) -> Tensor:
        """(q̇, q̈) at whole states ``(B, 2n)``."""
        q, v = s.chunk(2, dim=-1)
        accel, _ = torch.func.vmap(self._one)(q, v)
        return torch.cat([v, accel], dim=-1)

    def hamiltonian(self, state: State) -> Tensor:
        """The energy E = q̇·∂L/∂q̇ − L of states with any leading axes → ``(...)``."""
        q, v = state.q.reshape(-1, state.q.shape[-1]), state.p.reshape(-1, state.p.shape[-1])
        _, energy = torch.func.vmap(self._one)(q, v)
        return energy.reshape(state.q.shape[:-1])

    @property
    def decoder_width(self) -> int:
        """The decoder reads the configuration q alone (n numbers)."""
        return self.config.state_dim

    def decoder_input(self, state: State) -> Tensor:
        return state.q


# ----------------------------------------------------------------------------- RGN


class RGN(OneWay, LatentDynamicsModel):
    """A discrete residual step s_{t+1} = s_t + g(s_t) on the whole state, one step per
    frame; decodes the whole state. Forward only, at the trained dt only."""

    Config = RGNConfig
    config: RGNConfig
    step_kind = "discrete residual"
    can_run_backwards = False
    can_change_speed = False
    prior = "none"

    def build_dynamics(self, config: RGNConfig) -> None:  # type: ignore[override]
        """g: the residual step."""
        self.step = MLPField(2 * config.state_dim, config.dynamics_hidden, config.dynamics_layers)

    def _unroll(self, state: State, steps: int) -> State:
        """``steps`` residual steps, in float32 even under autocast (as HGN++'s and the
        ODE's integrators: bf16 would swamp the small increments)."""
        with torch.autocast(state.q.device.type, enabled=False):
            dtype = torch.promote_types(state.q.dtype, torch.float32)
            s = torch.cat([state.q, state.p], dim=-1).to(dtype)
            out = [s]
            for _ in range(steps):
                s = s + self.step(s)
                out.append(s)
        return _stack(out)

    def rollout(self, state: State, steps: int, dt: float | None = None) -> State:
        """``steps`` residual steps; ``dt``, if given, must be the trained one (a
        one-line :class:`UserError` otherwise: backwards and other speeds are not
        defined for a discrete step)."""
        if dt is not None:
            self.check_rollout(dt)
        return self._unroll(state, steps)

    def train_rollout(self, s0: State, dt: Tensor, steps: int, frames: Tensor) -> State:
        """Forward residual steps (the config keeps ``forward_backward`` off)."""
        return self._unroll(s0, steps)


# ----------------------------------------------------------------------------- recurrent


class Recurrent(OneWay, LatentDynamicsModel):
    """An autoregressive recurrent model over encoded frames (see the module docs):
    state ``q`` = the current latent (2n), ``p`` = the cell's memory; teacher forced in
    training, open loop at test time; forward only, at the trained dt only."""

    Config = RecurrentConfig
    config: RecurrentConfig
    step_kind = "recurrent"
    can_run_backwards = False
    can_change_speed = False
    prior = "none"

    def build_dynamics(self, config: RecurrentConfig) -> None:  # type: ignore[override]
        """The cell and its read-out (the predicted change of the latent)."""
        dim, hidden = 2 * config.state_dim, config.recurrent_hidden
        self.cell = self.make_cell(dim, hidden)
        self.readout = nn.Linear(hidden, dim)
        _shrink(self.readout)

    def make_cell(self, inputs: int, hidden: int) -> nn.Module:
        raise NotImplementedError

    @property
    def memory_size(self) -> int:
        """Numbers of the memory, the state's ``p``."""
        raise NotImplementedError

    def cell_step(self, x: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """The cell's output h and its new memory, from input ``x`` ``(B, 2n)``."""
        raise NotImplementedError

    def step(self, x: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """The predicted next latent, x + W·h, and the new memory."""
        h, memory = self.cell_step(x, memory)
        return x + self.readout(h), memory

    def initial_state(self, z: Tensor) -> State:
        """The latent f_ψ(z) (q and p of f_ψ concatenated) and an empty memory."""
        x = self.latent(z)
        return State(x, x.new_zeros(*x.shape[:-1], self.memory_size))

    def latent(self, z: Tensor) -> Tensor:
        """f_ψ(z) as one 2n-number latent."""
        s = self.fpsi(z)
        return torch.cat([s.q, s.p], dim=-1)

    def decoder_input(self, state: State) -> Tensor:
        """The latent, ``q``; the memory is not drawn."""
        return state.q

    def comparable(self, state: State) -> Tensor:
        """The latent: what the encoder's state of the same frames is comparable with."""
        return state.q

    def _unroll(self, state: State, inputs: Tensor | None, steps: int) -> State:
        """``steps`` cell steps from ``state``; input j is ``inputs[:, j]`` (teacher
        forcing) where given, else the previous prediction (open loop); in float32 even
        under autocast, as the other models' dynamics."""
        with torch.autocast(state.q.device.type, enabled=False):
            dtype = torch.promote_types(state.q.dtype, torch.float32)
            x, memory = state.q.to(dtype), state.p.to(dtype)
            xs, memories = [x], [memory]
            for j in range(steps):
                x, memory = self.step(x if inputs is None else inputs[:, j].to(dtype), memory)
                xs.append(x)
                memories.append(memory)
        return State(torch.stack(xs, dim=1), torch.stack(memories, dim=1))

    def rollout(self, state: State, steps: int, dt: float | None = None) -> State:
        """Open loop: each step's input is the previous prediction. ``dt``, if given, must
        be the trained one (a one-line :class:`UserError` otherwise)."""
        if dt is not None:
            self.check_rollout(dt)
        return self._unroll(state, None, steps)

    def teacher_inputs(self, frames: Tensor, steps: int) -> Tensor:
        """The encodings of the true frames the cell reads in training: for the windows
        of k frames ending at frames k, …, k + steps − 2 (the first input, at frame k − 1,
        is the rollout's own first state), the posterior mean through f_ψ,
        ``(B, steps − 1, 2n)``."""
        k, batch = self.context_frames, frames.shape[0]
        if steps <= 1:
            return frames.new_zeros(batch, 0, 2 * self.config.state_dim)
        index = torch.arange(1, steps, device=frames.device)[:, None] + torch.arange(
            k, device=frames.device
        )
        windows = frames[:, index].flatten(0, 1)  # (B·(steps−1), k, 3, H, W)
        mean, _ = self.posterior(windows)
        return self.latent(mean).unflatten(0, (batch, steps - 1))

    def train_rollout(self, s0: State, dt: Tensor, steps: int, frames: Tensor) -> State:
        """Teacher forcing: input 0 is ``s0``'s latent (frame k − 1), input j ≥ 1 the
        encoding of the true frames ending at frame k − 1 + j (:meth:`teacher_inputs`)."""
        inputs = torch.cat([s0.q[:, None], self.teacher_inputs(frames, steps)], dim=1)
        return self._unroll(s0, inputs, steps)


class LSTM(Recurrent):
    """``--model lstm``: an LSTM cell; the memory is h and c concatenated."""

    def make_cell(self, inputs: int, hidden: int) -> nn.Module:
        return nn.LSTMCell(inputs, hidden)

    @property
    def memory_size(self) -> int:
        return 2 * self.config.recurrent_hidden

    def cell_step(self, x: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        h, c = self.cell(x, memory.chunk(2, dim=-1))
        return h, torch.cat([h, c], dim=-1)


class GRU(Recurrent):
    """``--model gru``: a GRU cell; the memory is h."""

    def make_cell(self, inputs: int, hidden: int) -> nn.Module:
        return nn.GRUCell(inputs, hidden)

    @property
    def memory_size(self) -> int:
        return self.config.recurrent_hidden

    def cell_step(self, x: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        h = self.cell(x, memory)
        return h, h
