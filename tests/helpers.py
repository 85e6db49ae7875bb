"""What many test modules share: the tiny configs, random frames, tiny datasets and runs,
and the tiny config of any registered model (:func:`tiny_model_config`).

Test modules import it as ``from helpers import ...``: pytest puts ``tests/`` on
``sys.path`` (the folder has no ``__init__.py``; the default "prepend" import mode).
Session-wide settings (one thread per process) are in ``conftest.py``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hgn import data as hgn_data
from hgn.cli import main
from hgn.flows import nhf
from hgn.models import MODELS, SequenceModel
from hgn.training.config import follow_data, resolve

SIZE = 16
"""Side of every tiny frame."""

TINY_HGN: dict[str, Any] = {
    "image_size": SIZE,
    "frames": 7,
    "latent_channels": 4,
    "encoder_filters": [8, 8, 8],
    "fpsi_filters": [8],
    "hamiltonian_filters": [8, 8],
    "hamiltonian_kernels": [3, 2, 2],
    "hamiltonian_strides": [1, 2, 2],
    "decoder_filters": [8],
}
"""The tiny conv HGN (``--model hgn``): 16×16 frames, three encoder layers down to the
4×4 latent map, a two-layer H (the kernels and strides are the ``small`` profile's)."""

TINY_HGNPP: dict[str, Any] = {
    "image_size": SIZE,
    "frames": 9,
    "context_frames": 3,
    "state_dim": 4,
    "encoder_filters": [4, 4, 4],
    "fpsi_hidden": 8,
    "energy_hidden": 8,
    "energy_layers": 2,
    "latent_channels": 4,
    "decoder_filters": [4],
}
"""The tiny HGN++: a 4-dimensional phase space inferred from 3 frames."""

TINY_FLOW: list[str] = [
    "--flow-steps", "2", "--hidden", "8", "--posterior-hidden", "8", "--batch-size", "32",
    "--no-progress", "--no-compile",
]  # fmt: skip
"""``hgn flow train`` arguments of a tiny model, eager: compiling (the default of flow
train) costs 15-50 s a run."""


def frames(batch: int = 2, length: int = 5, size: int = SIZE) -> Tensor:
    """Random frames ``(batch, length, 3, size, size)`` in [0, 1] (the global generator)."""
    return torch.rand(batch, length, 3, size, size)


def tiny_model(name: str, config: Mapping[str, Any], **overrides: Any) -> SequenceModel:
    """The registered model ``name`` built from ``config`` and ``overrides``, seeded 0."""
    torch.manual_seed(0)
    return MODELS[name]({**config, **overrides})


def model_sets(config: Mapping[str, Any]) -> list[str]:
    """``model.KEY=VALUE`` items (YAML values) of ``config``, for ``--set``."""
    return [f"model.{key}={json.dumps(value)}" for key, value in config.items()]


def set_args(items: Iterable[str]) -> list[str]:
    """``["--set", item, "--set", item, …]``."""
    return [arg for item in items for arg in ("--set", item)]


def tiny_dataset(
    out: str | Path,
    system: str = "mass-spring",
    n_train: int = 8,
    n_test: int = 4,
    steps: int = 6,
    **settings: Any,
) -> Path:
    """A tiny dataset of 16×16 frames (``hgn.data.generate``, no progress bar)."""
    hgn_data.generate(
        out, system, n_train=n_train, n_test=n_test, steps=steps, size=SIZE, progress=False,
        **settings,
    )  # fmt: skip
    return Path(out)


def train_tiny(data: str | Path, out: str | Path, steps: int, *args: str) -> Path:
    """``hgn train`` of ``steps`` steps on ``data`` into ``out`` (must succeed)."""
    argv = ["train", "--data", str(data), "--out", str(out), "--steps", str(steps), *args]
    assert main(argv) == 0
    return Path(out)


def short_drift(monkeypatch: Any, steps: int = 20) -> None:
    """Cut the extrapolation protocol's learned-energy drift rollout to ``steps`` (the
    smoke profile's 20) for the rest of a test: ``hgn evaluate --protocol extrapolate``
    rolls out 1,000 steps by default, most of its time on a tiny model. For a test whose
    assertions do not read the drift; ``monkeypatch`` is pytest's fixture."""
    from hgn.evaluation import commands

    real = commands.run_protocol

    def protocol(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **{**kwargs, "drift_steps": steps})

    monkeypatch.setattr(commands, "run_protocol", protocol)


# --- the tiny config of any registered model -----------------------------------------------

TINY_CAPS: dict[str, int] = {
    "frames": 6,
    "context_frames": 2,
    "decode_frames": 3,
    "latent_channels": 4,
    "state_dim": 4,
}
"""Sizes capped at these values where a model's config has the key."""

WIDTH = 8
"""Cap of every width: each entry of a ``*_filters`` list, every ``*hidden*`` integer."""

CURRICULUM_OFF: dict[str, Any] = {"warmup": 0, "ae_warmup": 0, "grow_below": 0.0}
"""Schedules switched off where a config has them, so that the first step trains the
whole objective (every term, the full horizon): otherwise HGN++'s energies get no
gradient at step 0 (its horizon starts at ``min_horizon`` 0 and grows later)."""

MAX_TINY_PARAMETERS = 100_000
"""A tiny model has fewer parameters than this; one with more was not shrunk."""

TINY_META: dict[str, Any] = {"steps": 8, "dof": 1, "dt": 0.125, "bodies": 1}
"""The metadata of a dataset the tiny configs follow (``hgn.training.config.follow_data``)."""


def _shrink(key: str, value: Any) -> Any:
    if key == "image_size":
        return SIZE
    if key in CURRICULUM_OFF:
        return CURRICULUM_OFF[key]
    if key in TINY_CAPS and isinstance(value, int) and not isinstance(value, bool):
        return min(value, TINY_CAPS[key])
    if key.endswith("_filters") and isinstance(value, list):
        return [min(v, WIDTH) for v in value]
    if "hidden" in key and isinstance(value, int) and not isinstance(value, bool):
        return min(value, WIDTH)
    if key.endswith(("_dim", "_channels")) and isinstance(value, int):
        return min(value, TINY_CAPS["state_dim"])
    return value


def tiny_model_config(name: str) -> dict[str, Any]:
    """A tiny config of the registered model ``name``, found from its keys alone.

    It starts from the config ``hgn train --model NAME`` resolves with the ``small``
    profile (the model's own section of it where it has one, the preset of its registry
    entry), follows a tiny dataset's metadata (:data:`TINY_META`), then overrides only
    keys the model's config has: ``image_size`` 16, the sizes of :data:`TINY_CAPS`, every
    ``*_filters`` entry and ``*hidden*`` width at most :data:`WIDTH`, every other ``*_dim``
    and ``*_channels`` at most 4, and the curricula of :data:`CURRICULUM_OFF`. A model
    whose sizes hide under other keys is not shrunk, and :func:`tiny_sequence_model`
    then fails, naming it and its largest weights (teach this function its keys).
    """
    config = follow_data(resolve("small", model=name), TINY_META)
    return {key: _shrink(key, value) for key, value in dataclasses.asdict(config.model).items()}


def tiny_sequence_model(name: str) -> SequenceModel:
    """The registered model ``name`` at :func:`tiny_model_config`, seeded 0, in training
    mode; an AssertionError where the config did not shrink it."""
    torch.manual_seed(0)
    model = MODELS[name](tiny_model_config(name))
    count = sum(p.numel() for p in model.parameters())
    largest = sorted(((p.numel(), k) for k, p in model.named_parameters()), reverse=True)[:3]
    assert model.image_size == SIZE and count < MAX_TINY_PARAMETERS, (
        f"tiny_model_config({name!r}) did not shrink {type(model).__name__}: image size "
        f"{model.image_size}, {count} parameters (largest: {largest}); teach "
        "tests/helpers.py the keys of its config"
    )
    return model.train()


TINY_FLOW_CAPS: dict[str, int] = {
    "flow_steps": 2, "transforms": 2, "hidden": WIDTH, "posterior_hidden": WIDTH, "bins": 4,
}  # fmt: skip
"""Sizes of a tiny flow, set where the flow's config has the key."""


def tiny_flow_config(kind: str, dim: int = 2) -> dict[str, Any]:
    """A tiny :func:`hgn.flows.nhf.build` config of the flow ``kind``: its defaults with
    the keys of :data:`TINY_FLOW_CAPS` that its config has capped."""
    defaults = nhf.build({"kind": kind, "dim": dim}).config()
    return {
        key: min(value, TINY_FLOW_CAPS[key]) if key in TINY_FLOW_CAPS else value
        for key, value in defaults.items()
    }
