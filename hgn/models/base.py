"""What every sequence model offers (HGN, HGN++, the HNN baselines): the interface the
trainer, the evaluator and the CLI rely on, the latent :class:`State`, and
:class:`ModelSpec`, one entry of the model registry in :mod:`hgn.models`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from torch import Tensor, nn

from hgn.checks import config_from_dict
from hgn.utils import UserError


class State(NamedTuple):
    """A latent phase-space state; a rollout stacks time on axis 1."""

    q: Tensor
    p: Tensor


class SequenceModel(nn.Module):
    """What the trainer, evaluator and CLI rely on; HGN and the baselines implement it.

    * ``loss(frames) -> (loss, metrics)``: frames ``(B, T+1, 3, H, W)`` in [0, 1];
      metrics are floats and include ``"loss"`` and ``"mse"`` (per-pixel).
    * ``predict(frames, steps, dt=None) -> dict`` with ``"images"``
      ``(B, steps+1, 3, H, W)`` and ``"energy"`` ``(B, steps+1)``: infer the state from
      the frames the config says the encoder sees, roll out, decode; negative dt runs
      backwards in time.
    * ``sample(n, steps, dt=None) -> images`` ``(n, steps+1, 3, H, W)`` from the prior.

    ``forward`` is ``loss`` so that DistributedDataParallel, which only hooks
    ``forward``, synchronises gradients.
    """

    Config: ClassVar[type]
    config: Any
    context_frames: int | None = None
    """Leading frames ``encode``/``predict`` infer the state from (None: all given)."""
    state_offset: int = 0
    """Index, within the ``context_frames`` the encoder reads, of the frame whose state
    ``encode`` returns (0: the first, as in the paper's HGN; HGN++ infers the state at
    the last frame it reads). Protocols that call ``encode`` and ``rollout`` align the
    rollout's first state with frame ``state_offset``; ``predict`` does it for them."""
    reports_sequence_errors: ClassVar[bool] = False
    """Whether :meth:`loss` sets :attr:`sequence_errors`."""
    sequence_errors: Tensor | None = None
    """Set by :meth:`loss` in training where a model supports prioritised sampling
    (``train.prioritize``): the reconstruction error of each sequence of the batch,
    ``(B,)``, detached. None: the model does not report it."""

    def loss(self, frames: Tensor) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def predict(self, frames: Tensor, steps: int, dt: float | None = None) -> dict[str, Tensor]:
        raise NotImplementedError

    def sample(self, n: int, steps: int, dt: float | None = None) -> Tensor:
        raise UserError(f"{type(self).__name__} cannot sample new trajectories")

    def init_from_data(self, mean_frame: Tensor) -> None:
        """Data-dependent initialisation before the first step; ``mean_frame`` is the
        training set's average frame ``(3, H, W)``. Does nothing unless overridden."""

    def forward(self, frames: Tensor) -> tuple[Tensor, dict[str, float]]:
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
