"""What every sequence model offers (HGN, HGN++, the HNN baselines): the interface the
trainer, the evaluator and the CLI rely on, the latent :class:`State`, and
:class:`ModelSpec`, one entry of the model registry in :mod:`hgn.models`."""

from __future__ import annotations

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
    """Leading frames ``predict`` infers the state from (None: all it is given)."""

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


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its class and a preset over the class's config defaults."""

    cls: type[SequenceModel]
    preset: Mapping[str, Any] = field(default_factory=dict)
    help: str = ""

    def config(self, values: Mapping[str, Any] | None = None, where: str = "model") -> Any:
        """The validated config: class defaults, then the preset, then ``values``."""
        return config_from_dict(self.cls.Config, {**self.preset, **(values or {})}, where)

    def __call__(self, config: Any) -> SequenceModel:
        if isinstance(config, Mapping):
            config = self.config(config)
        return self.cls(config)
