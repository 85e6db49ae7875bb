"""The truth a rollout is scored against: the simulator's frames of a test split at any
multiple of its frame step. Stored frames are used wherever they exist; times between
them (½× speed) and before the first one are simulated afresh from the stored clean
state with the dataset's own system and rendered the way the data was (with the data's
observation noise, drawn from a seed derived from the dataset's). A check that
rendering a stored state reproduces its stored frame guards this; without it (or
without a known system) only the steps that land on stored frames are compared.
"""

from __future__ import annotations

import numpy as np
import torch

from hgn import data as hgn_data
from hgn.evaluation import physics
from hgn.physics.systems import System
from hgn.utils import (
    numpy_rng,
)


class Truth:
    """The simulator's frames (and clean states) of a test split at any multiple of its
    frame step, for a batch of sequences."""

    def __init__(self, split: hgn_data.Split) -> None:
        self.split, self.meta = split, split.meta
        self.render_error: int | None = None
        self.simulation_error: float | None = None
        self.system: System | None = physics.simulator(split)
        if self.system is not None:
            self._check(split)

    def _check(self, split: hgn_data.Split) -> None:
        """Render a few stored (noisy) states and re-simulate a few clean ones: both must
        reproduce what is stored, or in-between times are not trusted."""
        k, t = min(len(split), 4), min(3, self.meta["steps"] + 1)
        system = self.bound(slice(0, k))
        noisy = getattr(split, "q_noisy", None)
        if noisy is not None:
            drawn = system.render(np.array(noisy[:k, :t]), self.meta["size"])
            stored = np.array(split.images[:k, :t])
            self.render_error = int(np.abs(drawn.astype(np.int16) - stored).max())
        q0 = torch.from_numpy(np.array(split.q[:k, 0]))
        p0 = torch.from_numpy(np.array(split.p[:k, 0]))
        qs, _ = system.simulate(q0, p0, self.meta["dt"], t - 1)
        self.simulation_error = float(np.abs(qs.numpy() - np.array(split.q[:k, :t])).max())

    def bound(self, rows: slice) -> System:
        """The simulator with the per-trajectory values (varied constants, colours,
        canvas shifts) of sequences ``rows`` bound, if the data has any."""
        assert self.system is not None
        return physics.bind_rows(self.system, self.split, rows)

    @property
    def resimulates(self) -> bool:
        """Whether times between stored frames can be simulated (else they are skipped)."""
        return (
            self.system is not None
            and self.render_error is not None
            and self.render_error <= 1
            and self.simulation_error is not None
            and self.simulation_error < 1e-3
        )

    def frames(
        self,
        images: np.ndarray,
        q: np.ndarray | None,
        p: np.ndarray | None,
        s0: int,
        speed: float,
        steps: int,
        key: int | str,
        rows: slice,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Frames ``(n, steps+1, H, W, 3)`` uint8, clean states ``(n, steps+1, dof)`` (None
        without states) and which steps are available ``(steps+1,)``, for a batch whose
        whole sequences are ``images (n, T+1, H, W, 3)`` and states ``q, p (n, T+1, dof)``.
        States at ``s0 + k·speed`` frames (``k = 0…steps``); ``key`` (e.g. the rollout
        and the batch's first row) seeds the observation noise of simulated frames;
        ``rows`` (the batch's rows of the split) picks their per-trajectory values."""
        last = images.shape[1] - 1
        when = s0 + speed * np.arange(steps + 1)
        index = np.clip(np.round(when).astype(np.int64), 0, last)
        stored = (np.abs(when - index) < 1e-9) & (when >= 0) & (when <= last)
        out = images[:, index].copy()
        states = None if q is None else q[:, index].astype(np.float64)
        available = stored.copy()
        if not stored.all() and self.resimulates:
            assert states is not None and q is not None and p is not None
            system = self.bound(rows)
            qs, _ = system.simulate(
                torch.from_numpy(q[:, s0]),
                torch.from_numpy(p[:, s0]),
                self.meta["dt"] * speed,
                steps,
            )
            missing = ~stored
            clean = qs.numpy()[:, missing]
            rng = numpy_rng(self.meta["seed"], "extrapolate-truth", key)
            noisy = clean + self.meta["noise"] * rng.standard_normal(clean.shape)
            out[:, missing] = system.render(noisy, self.meta["size"])
            states[:, missing] = clean
            available[:] = True
        if states is not None:
            states[:, ~available] = np.nan
        return out, states, available
