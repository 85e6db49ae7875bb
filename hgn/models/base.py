"""What every sequence model offers (HGN, HGN++, the HNN baselines): the interface the
trainer, the evaluator and the CLI rely on, the latent :class:`State`, and
:class:`ModelSpec`, one entry of the model registry in :mod:`hgn.models`."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from hgn.checks import config_from_dict
from hgn.utils import UserError


class State(NamedTuple):
    """A latent phase-space state; a rollout stacks time on axis 1."""

    q: Tensor
    p: Tensor


class SequenceModel(nn.Module, ABC):
    """The one interface of every sequence model: the trainer, the evaluator, the
    benchmark and the CLI rely on this and nothing else, so a new model is one file.

    What a model *is* is declared, not probed: :attr:`context_frames` (frames the
    encoder reads), :attr:`state_offset` (which of them the encoded state describes),
    :attr:`can_run_backwards` and :attr:`can_change_speed` (what its rollouts may be
    asked), :attr:`prior` (the physics its dynamics are built on) and :meth:`hamiltonian`
    (None for a model without one). The pieces every
    protocol composes:

    * ``encode(frames) -> State``: the state at frame ``state_offset`` of ``frames``
      ``(B, T, 3, H, W)`` in [0, 1], from the first ``context_frames`` of them;
    * ``rollout(state, steps, dt=None) -> State``: ``steps`` steps of ``dt`` (the trained
      one by default), the time axis at 1 (``steps + 1`` states, the first the given one);
    * ``decode(state) -> images``: states with any leading axes → ``(..., 3, H, W)``;
    * ``loss(frames) -> (loss, metrics)``: metrics are detached 0-d tensors (a float
      per metric would sync with the device every step), including ``"mse"``;
    * ``sample(n, steps, dt=None) -> images`` ``(n, steps + 1, 3, H, W)`` from the
      model's prior (a model without one refuses with a :class:`UserError`).

    :meth:`predict` composes them: images and energies at the times of frames 0, dt,
    2dt, … of the given sequence. ``forward`` is ``loss`` so that
    DistributedDataParallel, which only hooks ``forward``, synchronises gradients.
    """

    Config: ClassVar[type]
    config: Any
    can_run_backwards: ClassVar[bool]
    """Whether ``rollout`` accepts a negative ``dt`` (continuous, time-reversible
    dynamics: HGN, HGN++, HNN, the neural ODE; not the discrete or recurrent models)."""
    can_change_speed: ClassVar[bool]
    """Whether ``rollout`` accepts a ``dt`` other than the trained one."""
    prior: ClassVar[str]
    """The physics the dynamics are built on: ``"hamiltonian"`` (HGN, HGN++, HNN),
    ``"lagrangian"`` (LGN) or ``"none"`` (the neural ODE, RGN, LSTM, GRU). The
    benchmark's verdict sets the first against the last."""
    sampler_buffers: ClassVar[tuple[str, ...]] = ()
    """The buffers :meth:`fit_aggregate_posterior` fills: a run keeps them beside its
    training state (:func:`hgn.runs.store_sampler`)."""
    reports_sequence_errors: ClassVar[bool] = False
    """Whether :meth:`loss` sets :attr:`sequence_errors`."""
    sequence_errors: Tensor | None = None
    """Set by :meth:`loss` in training where a model supports prioritised sampling
    (``train.prioritize``): the reconstruction error of each sequence of the batch,
    ``(B,)``, detached. None: the model does not report it."""

    @property
    @abstractmethod
    def context_frames(self) -> int:
        """Leading frames ``encode`` reads."""

    @property
    def state_offset(self) -> int:
        """Index, within the ``context_frames`` the encoder reads, of the frame whose
        state ``encode`` returns (0: the first, as in the paper's HGN; HGN++ infers the
        state at the last frame it reads). Protocols that call ``encode`` and
        ``rollout`` align the rollout's first state with this frame."""
        return 0

    @property
    def image_size(self) -> int:
        """Side of the square frames the model reads and draws."""
        return int(self.config.image_size)

    @property
    def trained_dt(self) -> float:
        """The time between frames the model was trained at."""
        return float(self.config.dt)

    @property
    def sampling_from(self) -> str:
        """Where :meth:`sample` draws its first states, in words (for reports)."""
        return "the model's prior"

    def exactly_reversible(self) -> bool | None:
        """Whether a rollout forward then back returns to its start up to rounding, as
        the model's integrator guarantees (docs/SCIENCE.md §5a); None: not declared
        (the protocol measures the round trip instead)."""
        return None

    @abstractmethod
    def encode(self, frames: Tensor, sample: bool = False) -> State:
        """The state at frame ``state_offset``: posterior mean, or a sample."""

    @abstractmethod
    def rollout(self, state: State, steps: int, dt: float | None = None) -> State:
        """``steps`` steps of ``dt`` from ``state`` (batch ``(B, ...)``), time on axis 1."""

    @abstractmethod
    def decode(self, state: State) -> Tensor:
        """Images of states with any leading axes."""

    @abstractmethod
    def loss(self, frames: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss of a batch of windows, and its detached metrics."""

    def hamiltonian(self, state: State) -> Tensor | None:
        """The learned energy of states with any leading axes (None: no Hamiltonian)."""
        return None

    def sample(self, n: int, steps: int, dt: float | None = None) -> Tensor:
        raise UserError(f"{type(self).__name__} cannot sample new trajectories: it has no prior")

    def fit_aggregate_posterior(self, batches: Iterable[Tensor]) -> int:
        """Fit where :meth:`sample` draws first states to the encoder's states of
        training sequences; returns how many it was fitted to (0: nothing to fit)."""
        return 0

    @property
    def sampler_fitted(self) -> bool:
        """Whether :meth:`sample` draws from a fitted distribution already."""
        return False

    def init_from_data(self, mean_frame: Tensor) -> None:
        """Data-dependent initialisation before the first step; ``mean_frame`` is the
        training set's average frame ``(3, H, W)``. Does nothing unless overridden."""

    def check_rollout(self, dt: float) -> float:
        """``dt`` as a float, or one line saying why this model cannot roll out at it."""
        dt = check_dt(dt)
        name = type(self).__name__
        if dt < 0 and not self.can_run_backwards:
            raise UserError(f"{name} cannot run backwards in time: its dynamics are one-way")
        if abs(dt) != abs(self.trained_dt) and not self.can_change_speed:
            raise UserError(
                f"{name} cannot roll out at another speed: its step is the trained "
                f"dt {self.trained_dt:g}, got {dt:g}"
            )
        return dt

    def predict(self, frames: Tensor, steps: int, dt: float | None = None) -> dict[str, Tensor]:
        """Images ``(B, steps + 1, 3, H, W)`` at the times of frames ``0, dt, 2dt, …`` of
        ``frames``, and the learned energy ``(B, steps + 1)`` (NaN without one): the
        state inferred at frame ``state_offset`` is first taken back to frame 0 with the
        trained −dt. A model that cannot run backwards starts its rollout at frame
        ``state_offset``, and the frames before it are the given ones (observed, not
        predicted: every protocol scores only frames after the context)."""
        dt = self.trained_dt if dt is None else self.check_rollout(dt)
        state, offset = self.encode(frames), self.state_offset
        if offset and self.can_run_backwards:
            back = self.rollout(state, offset, -self.trained_dt)
            state, offset = State(back.q[:, -1], back.p[:, -1]), 0
        states = self.rollout(state, max(steps - offset, 0), dt)
        images = self.decode(states)
        if offset:
            images = torch.cat([frames[:, :offset].to(images.dtype), images], 1)[:, : steps + 1]
        energy = self.hamiltonian(states)
        if energy is None:
            energy = images.new_full(images.shape[:2], math.nan)
        elif offset:
            energy = torch.cat([energy[:, :1].expand(-1, offset), energy], 1)[:, : steps + 1]
        return {"images": images, "energy": energy, "q": states.q, "p": states.p}

    def forward(self, frames: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.loss(frames)


def check_dt(dt: float) -> float:
    """``dt`` as a float, or a :class:`UserError` for zero, NaN or infinity."""
    dt = float(dt)
    if dt == 0 or not math.isfinite(dt):
        raise UserError(f"the time step must be a finite non-zero number, got {dt}")
    return dt


def substeps_for(dt: float, trained_dt: float) -> int:
    """Integration sub-steps per output step ``dt``: ceil(|dt| / |trained dt|).

    A learned H is fitted at the trained step and absorbs the integrator's error there
    (the modified Hamiltonian of leapfrog at that step), so a rollout at 2× speed
    integrates two trained-size steps per output state rather than one step twice as
    long; slower rollouts take one shorter step. (The small tolerance keeps a ratio of
    2.0000000001 from rounding up to 3.)
    """
    ratio = abs(check_dt(dt)) / abs(trained_dt)
    return max(1, math.ceil(ratio - 1e-9))


LEGACY_KEYS: dict[str, str] = {"input_frames": "context_frames"}
"""Model config keys renamed since older checkpoints and YAML files were written
(old → new). :meth:`ModelSpec.config` maps them, the one place every config passes."""


def upgrade_keys(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with :data:`LEGACY_KEYS` renamed (a clash of old and new is an error)."""
    out = dict(values)
    for old, new in LEGACY_KEYS.items():
        if old in out:
            if new in out and out[new] != out[old]:
                raise UserError(f"model.{old} is the old name of model.{new}; give only one")
            out[new] = out.pop(old)
    return out


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its class and a preset over the class's config defaults."""

    cls: type[SequenceModel]
    preset: Mapping[str, Any] = field(default_factory=dict)
    help: str = ""

    def config(self, values: Mapping[str, Any] | None = None, where: str = "model") -> Any:
        """The validated config: class defaults, then the preset, then ``values``
        (old key names from :data:`LEGACY_KEYS` accepted)."""
        merged = {**self.preset, **upgrade_keys(values or {})}
        return config_from_dict(self.cls.Config, merged, where)

    def __call__(self, config: Any) -> SequenceModel:
        if isinstance(config, Mapping):
            config = self.config(config)
        return self.cls(config)
