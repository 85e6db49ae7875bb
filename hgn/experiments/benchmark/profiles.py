"""What a benchmark compares and at what size: the default models and datasets, the
sizes (``smoke``, ``small``) and the settings a results directory is made with.

A dataset is named by a system (``mass-spring``: hgn's paper-style rendering, Δt 0.125,
no noise), by a preset (``dm-double-pendulum``: the preset's physics and pictures), or by
the path of an existing hgn dataset (e.g. ``hgn data import``'s), used as it is. Systems
and presets are generated at the size's resolution, sequence length and counts, always
without observation noise: the benchmark judges learned dynamics, and on clean data no
noise floor sits under the errors (docs/SCIENCE.md §2, "Noise, decided").
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hgn.data.presets import PRESETS
from hgn.experiments.reproduce.profiles import _TINY_HGN, _TINY_HGNPP, _TINY_HNN, choose
from hgn.physics.systems import SYSTEMS
from hgn.utils import UserError

MODEL_ORDER = ("hgn++", "ode", "rgn", "lstm", "gru", "hgn", "hnn")
"""The table's rows by default (those registered in this version of hgn; a name given
with ``--models`` that is not registered is refused with one line)."""

DATASET_ORDER = ("mass-spring", "pendulum", "two-body", "dm-double-pendulum", "dm-pendulum-colors")
"""The table's columns by default: three of hgn's paper-style systems (light background)
and two of DeepMind's suite (dark background, where DeepMind's VPT discriminates)."""

MAX_MINUTES = 24 * 60
"""The largest ``--minutes`` per cell accepted (a day)."""

TINY = {"HGN": _TINY_HGN, "HNN": _TINY_HNN, "HGNPP": _TINY_HGNPP}
"""Smoke-size networks by model class (reproduce's smoke widths); a class not listed
(the baselines that share HGN++'s encoder and decoder) takes HGN++'s, keys it lacks
skipped."""


@dataclass(frozen=True)
class Size:
    """How big a benchmark run is: the data, the protocols' lengths and counts."""

    name: str
    description: str
    image_size: int
    steps: int
    """Steps per generated sequence (train and test alike; training draws random windows
    of each model's own length from them)."""
    n_train: int
    n_test: int
    minutes: float
    """Default training minutes per cell (``--minutes`` overrides)."""
    start: int
    """hgn's extrapolation protocol: the frame the model's window starts at."""
    eval_sequences: int
    """Test sequences scored by every protocol (at most the split's size)."""
    horizon: int
    """DeepMind VPT: predicted frames scored after the window (at most what the test
    sequences hold after each model's window)."""
    symetric_batches: int
    """SyMetric: batches of :data:`~hgn.experiments.benchmark.metrics.SYMETRIC_TRAJECTORIES`
    test trajectories, scored apart and averaged, as the reference does."""
    symetric_steps: int
    """SyMetric: consecutive states per trajectory (the reference: 60)."""
    drift_steps: int
    """hgn's protocol: length of the rollout along which the learned H's drift is taken."""
    sample_count: int
    """Prior samples read back as physics."""
    batch_size: int = 16
    model: Mapping[str, Any] = field(default_factory=dict)
    """Model config overrides of this size, for every model whose config has the key."""
    tiny: bool = False
    """Whether the networks are the smoke widths (:data:`TINY`)."""

    def settings(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


SIZES: dict[str, Size] = {
    "smoke": Size(
        name="smoke",
        description="pipeline check for CI: 16×16, 8 + 6 sequences of 16 steps, tiny "
        "networks, seconds per cell; its numbers mean nothing",
        image_size=16,
        steps=16,
        n_train=8,
        n_test=6,
        minutes=0.05,
        start=4,
        eval_sequences=6,
        horizon=8,
        symetric_batches=1,
        symetric_steps=8,
        drift_steps=20,
        sample_count=4,
        batch_size=4,
        model={"frames": 8},
        tiny=True,
    ),
    "small": Size(
        name="small",
        description="the target comparison: 32×32 clean data, 2,000 training and 100 test "
        "sequences of 90 steps per dataset (60-step rollouts after each model's window; "
        "50 test sequences scored), "
        "each model's `hgn train --profile small` networks, 10 minutes of training per cell",
        image_size=32,
        steps=90,
        n_train=2000,
        n_test=100,
        minutes=10.0,
        start=30,
        eval_sequences=50,
        horizon=60,
        symetric_batches=10,
        symetric_steps=60,
        drift_steps=1000,
        sample_count=64,
    ),
}
"""Benchmark sizes. To fit the 35-cell table in 8 hours on two jobs, ``small`` scores
50 test sequences per protocol (HGN's rollouts, a conv Hamiltonian differentiated at
every leapfrog step, dominate evaluation: on a busy 2-core machine, 64 s for DeepMind's
VPT and 103 s for the extrapolation protocol on one batch of 5 test sequences,
measured; a batch holds up to 16) and SyMetric on 10 batches of 5 trajectories × 60 steps, half
the reference's 20 (an uninformative latent makes the order search run to its cap,
~50 s a batch on two cores). Counts and each stage's seconds are recorded with every
result."""


@dataclass(frozen=True)
class Settings:
    """What a results directory is made with: its size, minutes per cell and seed
    (``settings.json``); cells are only added under the same."""

    size: Size
    minutes: float
    seed: int
    clock: str = "wall"
    """What the minutes count (:attr:`hgn.training.config.TrainConfig.budget_clock`)."""
    tune: bool = False
    """A tuning sweep (:mod:`~hgn.experiments.benchmark.tuning`): every model's variants
    are rows of their own."""
    tuned: Mapping[str, str] = field(default_factory=dict)
    """The variant each model trains with (from ``--tuned``; none: its profile)."""

    @property
    def name(self) -> str:
        return self.size.name

    def settings(self) -> dict[str, Any]:
        return {
            "size": self.size.settings(),
            "minutes": self.minutes,
            "seed": self.seed,
            "clock": self.clock,
            "tune": self.tune,
            "tuned": dict(self.tuned),
        }


LEGACY_SETTINGS = {"clock": "wall", "tune": False, "tuned": {}}
"""What a results directory written before these settings existed was made with."""


def check_clock(value: Any, device: str) -> str:
    """``--clock`` (default: ``cpu`` on the CPU, where it keeps cells fair on a busy
    machine; ``wall`` on a GPU, whose work the process's CPU time does not count)."""
    from hgn.training.config import CLOCKS
    from hgn.utils import resolve_device

    if value is None:  # "auto" on a machine without a GPU is the CPU too
        return "cpu" if resolve_device(device).type == "cpu" else "wall"
    if value not in CLOCKS:
        raise UserError(f"--clock must be one of {', '.join(CLOCKS)}, got {value!r}")
    return str(value)


def check_minutes(value: Any) -> float:
    """``--minutes`` as a float in (0, 24·60], or one line."""
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        raise UserError(f"--minutes must be a number of minutes, got {value!r}") from None
    if not 0 < minutes <= MAX_MINUTES:  # NaN fails too
        raise UserError(f"--minutes must be > 0 and at most {MAX_MINUTES} (a day), got {value!r}")
    return minutes


def check_jobs(value: Any) -> int:
    """``--jobs`` as 1 or 2 (cells trained at once: equal wall-clock per cell needs the
    cells not to fight over more cores than a 2-core machine has)."""
    if isinstance(value, bool) or value not in (1, 2):
        raise UserError(f"--jobs must be 1 or 2, got {value!r}")
    return int(value)


def get_size(name: str) -> Size:
    if name not in SIZES:
        raise UserError(f"unknown --profile {name!r}; choose one of: {', '.join(SIZES)}")
    return SIZES[name]


def choose_models(models: str | Sequence[str] | None) -> list[str]:
    """The models to run: the given comma list (in the registry's order), or
    :data:`MODEL_ORDER`; by default the names not registered in this version are left
    out silently, given ones are refused with one line (a typo gets the closest
    registered name)."""
    from hgn.models import MODELS

    registered = list(MODELS)
    if models is None:
        return [m for m in MODEL_ORDER if m in registered]
    return choose(models, registered, "model")


def dataset_kind(name: str) -> str:
    """``"system"``, ``"preset"`` or ``"path"`` (an existing dataset), or one line."""
    if name in SYSTEMS:
        return "system"
    if name in PRESETS:
        return "preset"
    if Path(name).exists():
        return "path"
    known = [*SYSTEMS, *PRESETS]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(
        f"unknown dataset {name!r}{hint}: give a system ({', '.join(SYSTEMS)}), a preset "
        "(`hgn data presets`) or the path of an existing dataset"
    )


def choose_datasets(datasets: str | Sequence[str] | None) -> list[str]:
    """The datasets to run (comma list or sequence; default :data:`DATASET_ORDER`)."""
    if datasets is None:
        return list(DATASET_ORDER)
    items = datasets.split(",") if isinstance(datasets, str) else list(datasets)
    items = list(dict.fromkeys(item.strip() for item in items if item.strip()))
    if not items:
        raise UserError("no dataset given; give systems, presets or dataset paths")
    for item in items:
        dataset_kind(item)
    return items


def column(name: str) -> str:
    """A dataset's column name (and folder under ``cells/``): its own name, or for a
    path its folder's name."""
    return Path(name).name if dataset_kind(name) == "path" else name


def style_of(meta: Mapping[str, Any]) -> str | None:
    """How a dataset is drawn: ``"paper"`` (light background), ``"dm"`` (dark), or None
    where it does not say (imported data)."""
    for where in (meta.get("render"), meta.get("variant"), meta):
        if isinstance(where, Mapping) and where.get("style"):
            return str(where["style"])
    return None
