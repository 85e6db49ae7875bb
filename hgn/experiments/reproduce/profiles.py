"""What a reproduction compares and at what size: the paper's rows and columns, and the
profiles (smoke, small, paper) that size a run.

``small`` and ``paper`` take their networks, optimiser and budgets from ``hgn train``'s
profiles of the same names, so that one definition of 'small' serves both commands.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hgn.training import config as hgn_config
from hgn.utils import UserError

MODEL_ORDER = ("hnn", "hnn-conv", "hgn", "hgn-euler", "hgn-no-fpsi", "hgn-determ")
"""Rows of the paper's tables, in the paper's order."""

MODEL_LABELS = {
    "hnn": "HNN",
    "hnn-conv": "HNN Conv",
    "hgn": "HGN",
    "hgn-euler": "HGN Euler",
    "hgn-no-fpsi": "HGN no f_ψ",
    "hgn-determ": "HGN deterministic",
}
SYSTEM_ORDER = ("mass-spring", "pendulum", "two-body", "three-body")
"""Columns of the paper's tables, in the paper's order."""

HNN_MODELS = ("hnn", "hnn-conv")
"""The baselines: they read a frame pair, so the prefix protocol needs no retraining."""


@dataclass(frozen=True)
class Profile:
    """Everything that sizes a reproduction run. Recorded in ``DIR/profile.json``."""

    name: str
    description: str
    size: int
    """Image height and width."""
    steps: int
    """Steps per trajectory (T); the paper's unroll is 30."""
    n_train: int
    n_test: int
    train_steps: int
    """Optimisation steps per model (each model, each system)."""
    batch_size: int
    lr: float
    max_minutes: float | None
    """Wall-clock cap per training run (None: none); the steps done are recorded."""
    eval_sequences: int
    """Sequences of each split evaluated for Tables 1–2 (at most the split's size)."""
    context: int
    """Prefix protocol: frames the encoder sees."""
    horizon: int
    """Prefix protocol: further frames predicted."""
    prefix_models: tuple[str, ...]
    """Models evaluated on the prefix protocol (HGN variants listed here are retrained)."""
    hgn: Mapping[str, Any] = field(default_factory=dict)
    """Config overrides shared by the HGN variants (network widths)."""
    hnn: Mapping[str, Any] = field(default_factory=dict)
    """Config overrides shared by HNN and HNN Conv."""
    dt: float = 0.125
    seed: int = 0

    def settings(self) -> dict[str, Any]:
        """The profile as plain JSON values, as recorded in ``DIR/profile.json``."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def identity(self) -> dict[str, Any]:
        """What must match to add cells to an existing results directory: every
        setting that changes a number (not the description)."""
        return {k: v for k, v in self.settings().items() if k != "description"}


_TINY_HGN = {
    "latent_channels": 4,
    "encoder_filters": [8, 8, 8],
    "fpsi_filters": [8],
    "hamiltonian_filters": [8, 8, 8, 8],
    "decoder_filters": [8],
}
_TINY_HNN = {
    "hidden": 32,
    "hamiltonian_hidden": 32,
    "latent_channels": 4,
    "encoder_filters": [8, 8, 8],
    "decoder_filters": [8],
}

_SMALL_NETS = {
    key: value
    for key, value in hgn_config.PROFILES["small"]["model"].items()
    if key not in ("name", "image_size", "frames")
}
"""The network widths of ``hgn train --profile small`` (one definition of 'small')."""

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="pipeline check only: tiny data and networks, a few steps; "
        "its numbers mean nothing",
        size=16,
        steps=8,
        n_train=8,
        n_test=4,
        train_steps=2,
        batch_size=4,
        lr=1e-3,
        max_minutes=None,
        eval_sequences=4,
        context=3,
        horizon=8,
        prefix_models=MODEL_ORDER,
        hgn=_TINY_HGN,
        hnn=_TINY_HNN,
    ),
    "small": Profile(
        name="small",
        description="a CPU-sized comparison (2 cores, 1–2 hours with --jobs 2): 32×32 images, the "
        "paper's 30-step sequences, 1,000 training sequences per system, the narrower "
        "networks and 5-minute training budget of `hgn train --profile small`",
        size=32,
        steps=30,
        n_train=1000,
        n_test=200,
        train_steps=3000,
        batch_size=hgn_config.PROFILES["small"]["train"]["batch_size"],
        lr=hgn_config.PROFILES["small"]["train"]["lr"],
        max_minutes=hgn_config.PROFILES["small"]["train"]["max_minutes"],
        eval_sequences=200,
        context=5,
        horizon=60,
        prefix_models=("hnn", "hnn-conv", "hgn"),
        hgn=_SMALL_NETS,
        hnn={
            "frames": 8,
            "encoder_filters": _SMALL_NETS["encoder_filters"],
            "decoder_filters": _SMALL_NETS["decoder_filters"],
        },
    ),
    "paper": Profile(
        name="paper",
        description="the published scale, for GPUs: 64×64 images, 50,000 + 10,000 "
        "sequences per system, the paper's networks and optimiser (Adam 1.5e-4, batch 16), "
        "the training length of `hgn train --profile paper`",
        size=64,
        steps=30,
        n_train=50_000,
        n_test=10_000,
        train_steps=hgn_config.PROFILES["paper"]["train"]["steps"],
        batch_size=16,
        lr=1.5e-4,
        max_minutes=None,
        eval_sequences=10_000,
        context=5,
        horizon=60,
        prefix_models=("hnn", "hnn-conv", "hgn"),
    ),
}
"""Reproduction profiles. ``small`` takes its networks, batch size, learning rate and
time budget, and ``paper`` its training length (which the paper does not state), from
``hgn train``'s profiles of the same names, so one definition serves both commands."""


def choose(values: str | Sequence[str] | None, allowed: Sequence[str], what: str) -> list[str]:
    """Validate a comma-separated list (or a sequence) against ``allowed``.

    Returns the unique choices in ``allowed``'s order (the tables' order). A typo gets
    one clear line naming the closest valid value.
    """
    if values is None:
        return list(allowed)
    items = values.split(",") if isinstance(values, str) else list(values)
    items = [item.strip() for item in items if item.strip()]
    if not items:
        raise UserError(f"no {what} given; choose from: {', '.join(allowed)}")
    for item in items:
        if item not in allowed:
            close = difflib.get_close_matches(item, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"unknown {what} {item!r}{hint}; choose from: {', '.join(allowed)}")
    return [a for a in allowed if a in items]


def get_profile(name: str) -> Profile:
    """Look up a profile by name, with the valid names in the error."""
    return PROFILES[choose([name], list(PROFILES), "profile")[0]]
