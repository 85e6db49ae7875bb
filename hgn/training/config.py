"""A run's configuration: the ``model`` and ``train`` sections, the built-in profiles,
how they are layered and validated. A finished run is opened by :mod:`hgn.runs`.

A run's config has two sections, ``model`` (the registry name plus the model's own
config, e.g. :class:`hgn.models.HGNConfig`) and ``train`` (:class:`TrainConfig`). It is
built in layers, each validated strictly (unknown keys and wrong types are errors that
name the key): a built-in profile (``small`` or ``paper``), then an optional YAML file,
then ``--model``, then ``--set section.key=value`` overrides (a bare ``key`` works when
only one section has it). The resolved config is saved in every checkpoint and as
``RUN/config.yaml``; ``--resume`` reuses it, so a resumed run trains exactly as before.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hgn.checks import check_range, config_from_dict
from hgn.models import get_model
from hgn.models.hgnpp import SEVERAL_BODIES
from hgn.registry import Registry
from hgn.utils import UserError

SECTIONS = ("model", "train")

CLOCKS = ("wall", "cpu")
"""What a time budget can count (:attr:`TrainConfig.budget_clock`)."""


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of a run (the model's own knobs live in ``model``)."""

    steps: int = 100_000
    batch_size: int = 16
    lr: float = 1.5e-4
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 = off)."""
    seed: int = 0
    max_minutes: float | None = None
    budget_clock: str = "wall"
    """What ``max_minutes`` counts: ``"wall"`` (the wall clock) or ``"cpu"`` (this
    process's CPU time, all its threads). A CPU-time budget is the fair one for runs that
    share a CPU with other work (``hgn benchmark`` cells): each gets the same computation
    however busy the machine is. On a GPU only the wall clock measures the work."""
    checkpoint_every: int = 500
    log_every: int = 10
    image_every: int = 500
    """Write rollout images to TensorBoard every this many steps (0 = never)."""
    amp: str = "auto"
    """'auto' (bf16 autocast on CUDA, none on CPU), 'bf16' or 'off'."""
    compile: bool = False
    """Wrap the model in torch.compile (opt-in: compilation takes minutes)."""
    ema: float = 0.0
    """Decay of an exponential moving average of the weights, kept beside them and
    saved in the checkpoint (0: off). Small batches and a high learning rate leave the
    weights of the last step noisy; the average over the last ~1/(1 − ema) steps is
    what :func:`hgn.runs.open_sequence_model` (so ``hgn.load``, evaluation, sampling)
    returns."""
    lr_decay: float = 0.0
    """Share of the run, at its end, over which the learning rate falls linearly from
    ``lr`` to 0 (0: constant). The share is of whichever budget ends the run, steps or
    ``max_minutes``, so a time-budgeted run still ends on a fully decayed step."""
    prioritize: float = 0.0
    """Share of the sampling probability of training sequences given in proportion to
    each sequence's latest reconstruction error (0: every sequence equally likely; 1:
    only by error). Uniform sampling trains the common motions most; the rare ones at
    the edges of the data's distribution (a pendulum's smallest and largest swings) are
    then the ones a rollout fails on (measured: issue 10). Needs a model that reports
    per-sequence errors (``SequenceModel.sequence_errors``)."""

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "checkpoint_every", "log_every"):
            check_range(getattr(self, key), f"train.{key}", gt=0)
        for key in ("grad_clip", "image_every", "seed"):
            check_range(getattr(self, key), f"train.{key}", ge=0)
        check_range(self.lr, "train.lr", gt=0)
        check_range(self.max_minutes, "train.max_minutes", gt=0)
        if self.budget_clock not in CLOCKS:
            raise UserError(
                f"train.budget_clock must be one of {', '.join(CLOCKS)}, got {self.budget_clock!r}"
            )
        check_range(self.ema, "train.ema", ge=0, lt=1)
        check_range(self.lr_decay, "train.lr_decay", ge=0, le=1)
        check_range(self.prioritize, "train.prioritize", ge=0, le=1)
        if self.amp not in ("auto", "bf16", "off"):
            raise UserError(f"train.amp must be 'auto', 'bf16' or 'off', got {self.amp!r}")


LATENT_BASELINES = ("ode", "rgn", "lstm", "gru", "lgn")
"""The non-Hamiltonian baselines of the latent-dynamics benchmark (hgn.models.baselines):
every profile gives them HGN++'s model and train settings, and their own dynamics size."""

# HGN++'s model keys in the small profile but its energies' size, which its baselines share
# (everything but the dynamics: hgn.models.latent.LatentConfig's keys); the measurements
# in the comments are HGN++'s
SMALL_LATENT: dict[str, Any] = {
    "image_size": 32,
    "frames": 65,
    "context_frames": 5,
    "state_dim": 16,
    # a wider encoder and f_ψ and lr 1e-3 (below): with them the pendulum
    # meets its targets in 20 CPU minutes (0.18 forward, from 0.42) and
    # mass-spring still does (0.07, from 0.025): docs/RESULTS.md, "How the defaults
    # were chosen"
    "encoder_filters": [32, 64, 64, 64],
    "fpsi_hidden": 128,
    "latent_channels": 16,
    "decoder_filters": [16, 16, 8, 8],
    "decode_frames": 8,
    "kl_weight": 0.01,
    "warmup": 4000,
    "min_horizon": 0,
    "grow_below": 0.3,
    # on data with two or more bodies (hgnpp.SEVERAL_BODIES): without
    # them two-body's state never says which body is which and both are
    # drawn brown; on one body they hurt (docs/RESULTS.md, "How the defaults were chosen")
    "encoder_colour_gain": None,
    "colour_weight": None,
    # the rollout is held to the encoder's states of the same frames: on
    # mass-spring 90-step samples 3.1x -> 1.07x the data's energy spread
    # and 268 of 270 steps valid on a 300-step set (202 without)
    "consistency_weight": 1e-3,
}
# HGN++'s train keys in the small profile, its baselines' too: evaluation uses the
# weights' moving average: pendulum 0.21 -> 0.13 forward in the same 20-minute run; the
# learning rate warms down over the second half of the run: pendulum 0.100 -> 0.035
# forward, mass-spring 0.008 -> 0.002 in 20 minutes; and 80 % of each batch is drawn by
# each sequence's latest error: the pendulum's smallest and largest swings, rare in the
# data, are where rollouts failed (forward valid time 58.2-58.7 -> 59.1-59.3 of 60, four
# seeds), mass-spring and two-body still meet their targets (docs/RESULTS.md, "How the
# defaults were chosen")
SMALL_LATENT_TRAIN: dict[str, Any] = {
    "batch_size": 16,
    "lr": 1e-3,
    "ema": 0.999,
    "lr_decay": 0.5,
    "prioritize": 0.8,
}


# A profile's "model" keys are written for HGN (HNN takes the ones its config has; keys
# a chosen model's config lacks are skipped) and its "train" keys for every model. A
# model listed under "own" replaces the "model" keys with its own and updates "train";
# "default" names the model used when none is given (else the "model" section's name).
# Every profile's H is separable, K(p) + V(q): the paper assumes it, and only then is the
# leapfrog symplectic and exactly reversible (hgn.physics.integrators, measured).
_PROFILES: dict[str, dict[str, Any]] = {
    "paper": {
        # The published architecture and hyper-parameters (HGNConfig's defaults).
        "model": {"name": "hgn", "image_size": 64, "frames": 31, "dt": 0.125, "separable": True},
        "train": {"batch_size": 16, "lr": 1.5e-4, "steps": 500_000},
        # HGN++ as published (HGNPPConfig's defaults; 32×32 images, 60 target steps)
        # and its baselines with it (their configs' defaults)
        "own": {
            name: {"model": {}, "train": {"batch_size": 128}}
            for name in ("hgn++", *LATENT_BASELINES)
        },
    },
    "small": {
        # Fits two CPU cores in minutes (docs/RESULTS.md, "Training speed"): the paper's 16×4×4
        # space and all 31 frames per sequence, but narrow networks whose most expensive
        # layers (the decoder's full-resolution convs) are the thinnest, a 3-layer
        # Hamiltonian net, batch 8 and a 7× larger learning rate for more, cheaper
        # steps, a warm-up (short rollouts, no KL first) so the encoder and decoder
        # learn positions before the dynamics, a weak KL (a sharp likelihood), and a
        # quadratic part in H so rollouts oscillate from the start.
        "model": {
            "name": "hgn",
            "image_size": 32,
            "frames": 31,
            "encoder_filters": [16, 32, 32, 32],
            "fpsi_filters": [32, 32],
            "hamiltonian_filters": [32, 32],
            "hamiltonian_kernels": [3, 2, 2],
            "hamiltonian_strides": [1, 2, 2],
            "decoder_filters": [16, 16, 8, 8],
            "quadratic": True,
            "separable": True,
            "kl_weight": 0.01,
            "warmup": 1200,
        },
        "train": {"batch_size": 8, "lr": 1e-3, "steps": 100_000, "max_minutes": 5.0},
        # The model `hgn train` uses when none is named: HGN++, whose rollouts hold far past
        # the training window, backward and at other speeds (docs/RESULTS.md, "Learned
        # dynamics and extrapolation (HGN++)"); the conv HGN above stays `--model hgn` for
        # the paper's tables.
        "default": "hgn++",
        "own": {
            "hgn++": {
                "model": {**SMALL_LATENT, "energy_hidden": 64, "energy_layers": 2},
                "train": SMALL_LATENT_TRAIN,
            },
            # the benchmark's baselines: HGN++'s encoder, decoder, latent, context, targets,
            # warm-up and training; a dynamics network of about the parameter count of
            # HGN++'s two energies (10,624): ODE/RGN MLP 32-75-75-32 10,607, LSTM cell 35
            # + read-out 10,812, GRU 41: 10,569
            "ode": {
                "model": {**SMALL_LATENT, "dynamics_hidden": 75, "dynamics_layers": 2},
                "train": SMALL_LATENT_TRAIN,
            },
            "rgn": {
                "model": {**SMALL_LATENT, "dynamics_hidden": 75, "dynamics_layers": 2},
                "train": SMALL_LATENT_TRAIN,
            },
            "lstm": {
                "model": {**SMALL_LATENT, "recurrent_hidden": 35},
                "train": SMALL_LATENT_TRAIN,
            },
            "gru": {
                "model": {**SMALL_LATENT, "recurrent_hidden": 41},
                "train": SMALL_LATENT_TRAIN,
            },
            # the Lagrangian's MLP 32-87-87-1 (no output bias): 10,614
            "lgn": {
                "model": {**SMALL_LATENT, "dynamics_hidden": 87, "dynamics_layers": 2},
                "train": SMALL_LATENT_TRAIN,
            },
        },
    },
}
PROFILES: Registry[dict[str, Any]] = Registry("profile", _PROFILES)
"""The built-in profiles by name (``hgn train --profile``), in the order ``--help`` lists
them; :func:`resolve` copies one before layering on it, so the entries are never changed."""
DEFAULT_PROFILE = "small"


@dataclass
class RunConfig:
    """A validated run config: model name, the model's config, and the train section."""

    name: str
    model: Any
    train: TrainConfig
    explicit: frozenset[str] = frozenset()
    """Model keys the user set (file, --model, --set); the others may follow the data."""

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (it goes into a weights-only checkpoint and a YAML file)."""
        return {
            "model": {"name": self.name, **dataclasses.asdict(self.model)},
            "train": dataclasses.asdict(self.train),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        """Validate a config dict (from a checkpoint or assembled by :func:`resolve`)."""
        unknown = sorted(set(values) - set(SECTIONS))
        if unknown:
            raise UserError(f"unknown config section {unknown[0]!r}; use: {', '.join(SECTIONS)}")
        model = dict(values.get("model") or {})
        name = model.pop("name", "hgn")
        if not isinstance(name, str):
            raise UserError(f"config key model.name must be a model name, got {name!r}")
        spec = get_model(name)
        train = config_from_dict(TrainConfig, values.get("train") or {}, "train")
        return cls(name=name, model=spec.config(model), train=train)


def _read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if values is None:
        return {}
    if not isinstance(values, dict) or not all(
        isinstance(values.get(s, {}), dict) for s in values if s in SECTIONS
    ):
        raise UserError(f"config file {path} must map 'model' and 'train' to key: value maps")
    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        raise UserError(f"unknown config section {unknown[0]!r} in {path}; use: model, train")
    return values


def parse_set(item: str, fields: Mapping[str, set[str]]) -> tuple[str, str, Any]:
    """``section.key=value`` (or a bare ``key`` that only one section has) → parts.

    Values are YAML (``[16, 32]``, ``true``, ``null``), with plain ``1e-3`` read as a
    number (YAML 1.1 would read it as a string).
    """
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set {item!r} does not parse; use --set key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise UserError(f"--set {item!r}: the value {text!r} does not parse as YAML") from None
    if isinstance(value, str):
        with suppress(ValueError):
            value = float(value)
    section, dot, name = key.partition(".")
    if dot:
        if section not in fields:
            raise UserError(f"--set {item!r}: unknown section {section!r}; use model or train")
        return section, name, value
    owners = [s for s in SECTIONS if key in fields[s]]
    if len(owners) != 1:
        hint = "no section has it" if not owners else "it is ambiguous"
        raise UserError(f"--set {item!r}: unknown config key {key!r} ({hint}); use model.KEY")
    return owners[0], key, value


def resolve(
    profile: str = DEFAULT_PROFILE,
    config_file: str | os.PathLike | None = None,
    model: str | None = None,
    sets: Sequence[str] = (),
) -> RunConfig:
    """Profile → YAML file → ``--model`` → ``--set`` overrides, validated."""
    layers = copy.deepcopy(PROFILES.lookup(profile))
    user: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    if config_file is not None:
        for section, values in _read_yaml(config_file).items():
            user[section].update(values)
    if model is not None:
        user["model"]["name"] = model
    name = user["model"].get("name", layers.get("default", layers["model"]["name"]))
    spec = get_model(name if isinstance(name, str) else "")
    own = layers.get("own", {}).get(name)
    if own is not None:  # the model's own section of the profile
        layers["model"] = {"name": name, **own["model"]}
        layers["train"] = {**layers["train"], **own["train"]}
    fields = {
        "model": {f.name for f in dataclasses.fields(spec.cls.Config)} | {"name"},
        "train": {f.name for f in dataclasses.fields(TrainConfig)},
    }
    for item in sets:
        section, key, value = parse_set(item, fields)
        user[section][key] = value
    for key in [k for k, v in user["model"].items() if v == AUTO]:
        if key not in FOLLOWS_DATA:
            raise UserError(
                f"model.{key} cannot be {AUTO}: only {', '.join(FOLLOWS_DATA)} follow the data"
            )
        del user["model"][key]  # the profile's value, derived again from the data
    merged = {
        "model": {k: v for k, v in layers["model"].items() if k in fields["model"]},
        "train": layers["train"],
    }
    for section in SECTIONS:
        merged[section].update(user[section])
    config = RunConfig.from_dict(merged)
    return dataclasses.replace(config, explicit=frozenset(user["model"]))


class _Dumper(yaml.SafeDumper):
    """Block-style mappings with one-line lists: ``encoder_filters: [16, 32]``."""


_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, True)
)


def dump_yaml(config: RunConfig, auto: bool = False) -> str:
    """The config as YAML, loadable again with ``--config``. With ``auto`` (what
    ``--print-config`` shows, before any data is seen), the keys that follow the data
    and that the user did not set are written as ``auto``, so that the file trains on
    other data as the defaults would."""
    values = config.to_dict()
    if auto:
        for key in FOLLOWS_DATA:
            if key in values["model"] and key not in config.explicit:
                values["model"][key] = AUTO
    return yaml.dump(values, Dumper=_Dumper, sort_keys=False)


DATA_KEYS = ("dof", "dt")
"""Model keys taken from the dataset's metadata unless set explicitly: the true number
of degrees of freedom (HNN needs it) and the time between frames (the latent step)."""

AUTO = "auto"
"""The value of a model key that follows the data (:data:`FOLLOWS_DATA`): what
``--print-config`` writes for the keys the user did not set, and what a config file or
``--set key=auto`` may give to have the key derived again from the data it trains on."""

FOLLOWS_DATA = (*DATA_KEYS, "image_size", "latent_size", "frames")
"""Model keys :func:`follow_data` derives from the data unless the user set them: the
:data:`DATA_KEYS`, the image size (with the latent map's size scaled alike, so the
networks keep their depth) and the training window (the profile's, clamped to the
data's sequences)."""


def _follow_size(config: RunConfig, fields: set[str], size: int) -> dict[str, int]:
    """``image_size`` (and ``latent_size``, scaled by the same factor so that the
    encoder and decoder keep their depth) for data of ``size``×``size`` pictures, where
    the user set neither: a dataset made with ``hgn data generate``'s default size then
    trains with the default model, whatever size the profile was written for."""
    model = config.model
    if "image_size" not in fields or "image_size" in config.explicit or model.image_size == size:
        return {}
    found = {"image_size": size}
    if "latent_size" in fields and "latent_size" not in config.explicit:
        scaled = model.latent_size * size / model.image_size
        if scaled == int(scaled) and scaled >= 1:
            found["latent_size"] = int(scaled)
    return found


def follow_data(config: RunConfig, meta: Mapping[str, Any]) -> RunConfig:
    """``config`` with :data:`DATA_KEYS` the model has, and the user did not set, taken
    from the data (a set one that contradicts the data is refused); the image size
    (:func:`_follow_size`); a training window (``frames``) the user did not set shortened to
    the data's sequences (HGN++ asks for 65 frames, "as many as the data allows"); and
    HGN++'s colour-identity settings left at None set by the number of bodies the data
    shows (:data:`hgn.models.hgnpp.SEVERAL_BODIES`)."""
    fields = {f.name for f in dataclasses.fields(config.model)}
    for key in DATA_KEYS:
        if key in fields and key in config.explicit and getattr(config.model, key) != meta[key]:
            raise UserError(
                f"model.{key} is {getattr(config.model, key)!r} but the data's {key} is "
                f"{meta[key]!r}: drop it (or set it to {AUTO}) to follow the data"
            )
    found = {k: meta[k] for k in DATA_KEYS if k in fields and k not in config.explicit}
    if meta.get("size"):
        found.update(_follow_size(config, fields, int(meta["size"])))
    several = int(meta.get("bodies") or 0) >= 2
    for key, value in SEVERAL_BODIES.items():  # None: the profile leaves it to the data
        if key in fields and getattr(config.model, key) is None:
            found[key] = value if several else 0.0
    longest = int(meta["steps"]) + 1
    if "frames" in fields and "frames" not in config.explicit and config.model.frames > longest:
        found["frames"] = longest
    if not found:
        return config
    values = {**dataclasses.asdict(config.model), **found}
    return dataclasses.replace(config, model=get_model(config.name).config(values))
