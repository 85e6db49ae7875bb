"""Training any registered sequence model on a dataset directory: configs, data, DDP.

A run's config has two sections, ``model`` (the registry name plus the model's own
config, e.g. :class:`hgn.models.HGNConfig`) and ``train`` (:class:`TrainConfig`). It is
built in layers, each validated strictly (unknown keys and wrong types are errors that
name the key): a built-in profile (``small`` or ``paper``), then an optional YAML file,
then ``--model``, then ``--set section.key=value`` overrides (a bare ``key`` works when
only one section has it). The resolved config is saved in every checkpoint and as
``RUN/config.yaml``; ``--resume`` reuses it, so a resumed run trains exactly as before.

Distributed training: under ``torchrun`` (``WORLD_SIZE`` > 1) every rank builds the
same model, wraps it in DistributedDataParallel (gloo on CPU, NCCL on GPU), draws the
same global batch indices from the loop's per-step seed and keeps its own slice of them;
only rank 0 writes checkpoints, logs and the progress bar.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from hgn import data as hgn_data
from hgn.loop import CHECKPOINT, LoopConfig, LoopResult, train_loop
from hgn.models import SequenceModel, config_from_dict, get_model
from hgn.utils import UserError, atomic_path, derive_seed, load_checkpoint, resolve_device

SECTIONS = ("model", "train")
IN_MEMORY_BYTES = 4 << 30
"""Training splits up to this size are read into RAM once; larger ones stay memory-mapped."""


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
    checkpoint_every: int = 500
    log_every: int = 10
    image_every: int = 500
    """Write rollout images to TensorBoard every this many steps (0 = never)."""
    amp: str = "auto"
    """'auto' (bf16 autocast on CUDA, none on CPU), 'bf16' or 'off'."""
    compile: bool = False
    """Wrap the model in torch.compile (opt-in: compilation takes minutes)."""

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, key) <= 0:
                raise UserError(f"train.{key} must be positive, got {getattr(self, key)}")
        for key in ("grad_clip", "image_every", "seed"):
            if getattr(self, key) < 0:
                raise UserError(f"train.{key} must be ≥ 0, got {getattr(self, key)}")
        if not self.lr > 0:
            raise UserError(f"train.lr must be positive, got {self.lr}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise UserError(f"train.max_minutes must be positive, got {self.max_minutes}")
        if self.amp not in ("auto", "bf16", "off"):
            raise UserError(f"train.amp must be 'auto', 'bf16' or 'off', got {self.amp!r}")


# Profiles are written for HGN; model keys a chosen model's config lacks are skipped.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        # The published architecture and hyper-parameters (HGNConfig's defaults).
        "model": {"name": "hgn", "image_size": 64, "frames": 31, "dt": 0.125},
        "train": {"batch_size": 16, "lr": 1.5e-4, "steps": 500_000},
    },
    "small": {
        # Fits two CPU cores in minutes (docs/RESULTS.md, HGN section): the paper's 16×4×4 phase
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
            "kl_weight": 0.01,
            "warmup": 1200,
        },
        "train": {"batch_size": 8, "lr": 1e-3, "steps": 100_000, "max_minutes": 5.0},
    },
}
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
    if profile not in PROFILES:
        raise UserError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    layers = copy.deepcopy(PROFILES[profile])
    user: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    if config_file is not None:
        for section, values in _read_yaml(config_file).items():
            user[section].update(values)
    if model is not None:
        user["model"]["name"] = model
    name = user["model"].get("name", layers["model"]["name"])
    spec = get_model(name if isinstance(name, str) else "")
    fields = {
        "model": {f.name for f in dataclasses.fields(spec.cls.Config)} | {"name"},
        "train": {f.name for f in dataclasses.fields(TrainConfig)},
    }
    for item in sets:
        section, key, value = parse_set(item, fields)
        user[section][key] = value
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


def dump_yaml(config: RunConfig) -> str:
    """The config as YAML, loadable again with ``--config``."""
    return yaml.dump(config.to_dict(), Dumper=_Dumper, sort_keys=False)


# ----------------------------------------------------------------------------- data


def check_data(split: hgn_data.Split, model_config: Any) -> None:
    """Refuse data the model cannot read, before anything is written."""
    size, frames = split.meta["size"], split.meta["steps"] + 1
    want = getattr(model_config, "image_size", size)
    if size != want:
        raise UserError(
            f"{split.path} holds {size}×{size} images but the config expects {want}×{want}; "
            f"use --set model.image_size={size} or regenerate the data with --size {want}"
        )
    need = getattr(model_config, "frames", frames)
    if frames < need:
        raise UserError(
            f"{split.path} has {frames} frames per sequence but the config trains on "
            f"{need}; use --set model.frames={frames} or longer sequences"
        )


class Batches:
    """Random training windows of ``frames`` frames, drawn from the global torch RNG.

    The loop reseeds torch before every step, so a step's batch depends only on
    (seed, step): resumed and uninterrupted runs see the same data. Every DDP rank
    draws the same global batch and keeps its own slice of it. Windows start anywhere
    in a sequence; the dynamics do not depend on the starting time.
    """

    def __init__(
        self, split: hgn_data.Split, frames: int, batch_size: int, device: torch.device
    ) -> None:
        self.frames, self.batch_size, self.device = frames, batch_size, device
        self.rank, self.world = _rank(), _world()
        images = split.images
        self.length = images.shape[1]
        self.in_memory = int(np.prod(images.shape)) <= IN_MEMORY_BYTES
        self.images = torch.from_numpy(np.array(images)) if self.in_memory else images

    def __call__(self) -> torch.Tensor:
        frames = self.frames
        total = self.batch_size * self.world
        rows = torch.randint(len(self.images), (total,))
        starts = torch.randint(self.length - frames + 1, (total,))
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        rows, starts = rows[mine], starts[mine]
        times = starts[:, None] + torch.arange(frames)
        if self.in_memory:
            window = self.images[rows[:, None], times]
        else:  # read each sequence once, in file order, then cut the windows
            unique, inverse = np.unique(rows.numpy(), return_inverse=True)
            seqs = torch.from_numpy(np.asarray(self.images[unique]))
            window = seqs[torch.from_numpy(inverse)[:, None], times]
        return to_frames(window, self.device)


def to_frames(images: torch.Tensor | np.ndarray, device: torch.device | str) -> torch.Tensor:
    """uint8 ``(..., T, H, W, 3)`` → float ``(..., T, 3, H, W)`` in [0, 1] on ``device``
    (converted after the copy, which moves a quarter of the bytes)."""
    images = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else images
    return images.to(device, non_blocking=True).movedim(-1, -3).float().div_(255.0)


def mean_frame(split: hgn_data.Split, limit: int = 1000) -> torch.Tensor:
    """The average frame ``(3, H, W)`` of (the first ``limit`` sequences of) a split."""
    images = np.asarray(split.images[: min(limit, len(split))], dtype=np.float64)
    return torch.from_numpy(images.mean((0, 1)) / 255.0).float().permute(2, 0, 1)


# ----------------------------------------------------------------------------- distributed


def _world() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _setup_distributed(device: str) -> torch.device:
    """Join the process group when launched by ``torchrun``; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        resolved = resolve_device(device)
        if resolved.type == "cuda":
            resolved = torch.device("cuda", local)
            torch.cuda.set_device(resolved)
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
        return resolved
    return resolve_device(device)


def _all_mean(values: torch.Tensor) -> torch.Tensor:
    if torch.distributed.is_initialized():
        values = values.clone()
        torch.distributed.all_reduce(values)
        values /= _world()
    return values


def _agree(stop: bool) -> bool:
    """Stop when any rank is out of time (one all-reduce of a flag)."""
    flag = torch.tensor([float(stop)])
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


# ----------------------------------------------------------------------------- running


def load_model(
    run: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[SequenceModel, dict[str, Any]]:
    """The trained model of a run directory (weights-only load) and its checkpoint."""
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"run directory {run} does not exist")
    saved = load_checkpoint(run / CHECKPOINT, map_location=device)
    try:
        config = RunConfig.from_dict(saved["config"])
        model = get_model(config.name)(config.model)
        model.load_state_dict(saved["state"]["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise UserError(
            f"checkpoint {run / CHECKPOINT} does not hold a model this version can read "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
        ) from None
    return model.to(device).eval(), saved


def _autocast(amp: str, device: torch.device) -> AbstractContextManager:
    if amp == "bf16" and device.type != "cuda":
        raise UserError("train.amp=bf16 needs a CUDA device; use train.amp=off on CPU")
    if device.type == "cuda" and amp in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def train(
    data: str | os.PathLike,
    out: str | os.PathLike,
    config: RunConfig | None = None,
    *,
    resume: bool = False,
    device: str = "auto",
    steps: int | None = None,
    max_minutes: float | None = None,
) -> LoopResult:
    """Train ``config`` on the dataset at ``data`` into the run directory ``out``.

    ``resume`` continues the run saved in ``out`` with its own config (``config`` must
    be None); ``steps`` and ``max_minutes`` override the budgets either way. Every
    check on the inputs happens before anything is written.
    """
    out = Path(out)
    ckpt = out / CHECKPOINT
    if resume:
        if config is not None:
            raise UserError("--resume continues a run with its saved config; drop the overrides")
        if not ckpt.exists():
            raise UserError(f"nothing to resume: {out} holds no {CHECKPOINT}")
        config = RunConfig.from_dict(load_checkpoint(ckpt)["config"])
    else:
        if ckpt.exists():
            raise UserError(f"{out} already holds a run; pass --resume or choose another --out")
        config = config or resolve()
    overrides = {"steps": steps, "max_minutes": max_minutes}
    budgets = {k: v for k, v in overrides.items() if v is not None}
    if budgets:
        merged = {**dataclasses.asdict(config.train), **budgets}
        config = dataclasses.replace(config, train=config_from_dict(TrainConfig, merged, "train"))

    split = hgn_data.load(data, "train")
    if not resume:
        config = follow_data(config, split.meta)
    check_data(split, config.model)
    dev = _setup_distributed(device)
    tc = config.train
    _autocast(tc.amp, dev)  # refuse a bad amp setting before writing anything

    torch.manual_seed(derive_seed(tc.seed, "init"))  # the initial weights follow the seed
    model = get_model(config.name)(config.model).to(dev)
    if not resume:
        model.init_from_data(mean_frame(split).to(dev))
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
    forward: Any = model
    if torch.distributed.is_initialized():
        forward = torch.nn.parallel.DistributedDataParallel(model)
    if tc.compile:
        forward = torch.compile(forward)
    frames = getattr(config.model, "frames", split.meta["steps"] + 1)
    batches = Batches(split, frames, tc.batch_size, dev)
    writer = _rank() == 0
    if writer:
        out.mkdir(exist_ok=True)
        with atomic_path(out / "config.yaml") as tmp:
            tmp.write_text(dump_yaml(config))

    clock = {"last": time.perf_counter()}

    def step_fn(step: int) -> dict[str, float]:
        model.train()
        x = batches()
        with _autocast(tc.amp, dev):
            loss, metrics = forward(x)
        shared = _all_mean(torch.tensor([loss.item()]))
        metrics["loss"] = float(shared[0])
        if not math.isfinite(metrics["loss"]):
            return metrics  # the loop stops the run; the weights stay the last good ones
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            metrics["grad_norm"] = float(norm)
        optimizer.step()
        now = time.perf_counter()
        metrics["seq_per_s"] = tc.batch_size * _world() / max(now - clock["last"], 1e-9)
        clock["last"] = now
        return metrics

    preview = to_frames(np.asarray(hgn_data.load(data, "test").images[:4]), dev)

    def log_images(step: int, tb: Any) -> None:
        from hgn.evaluate import comparison_strip

        model.eval()
        with torch.no_grad():
            pred = model.predict(preview, preview.shape[1] - 1)["images"]
        tb.add_image("rollout", comparison_strip(preview, pred), step, dataformats="HWC")

    loop = LoopConfig(
        steps=tc.steps,
        seed=tc.seed,
        max_minutes=tc.max_minutes,
        checkpoint_every=tc.checkpoint_every,
        log_every=tc.log_every,
        desc=f"train {config.name}",
        writer=writer,
    )
    try:
        return train_loop(
            out,
            {"model": model, "optimizer": optimizer},
            step_fn,
            loop,
            config.to_dict(),
            resume=resume,
            on_log=log_images,
            log_images_every=tc.image_every,
            agree=_agree if torch.distributed.is_initialized() else None,
        )
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


DATA_KEYS = ("dof", "dt")
"""Model keys taken from the dataset's metadata unless set explicitly: the true number
of degrees of freedom (HNN needs it) and the time between frames (the latent step)."""


def follow_data(config: RunConfig, meta: Mapping[str, Any]) -> RunConfig:
    """``config`` with :data:`DATA_KEYS` the model has, and the user did not set, taken
    from the data."""
    fields = {f.name for f in dataclasses.fields(config.model)}
    found = {k: meta[k] for k in DATA_KEYS if k in fields and k not in config.explicit}
    if not found:
        return config
    values = {**dataclasses.asdict(config.model), **found}
    return dataclasses.replace(config, model=get_model(config.name).config(values))
