"""Training any registered sequence model on a dataset directory (its config is
:mod:`hgn.training.config`): batches, the optimiser, checkpoints, DDP.

Distributed training: under ``torchrun`` (``WORLD_SIZE`` > 1) every rank builds the
same model, wraps it in DistributedDataParallel (gloo on CPU, NCCL on GPU), draws the
same global batch indices from the loop's per-step seed and keeps its own slice of them;
only rank 0 writes checkpoints, logs and the progress bar.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hgn import data as hgn_data
from hgn.checks import config_from_dict
from hgn.data import mean_frame, to_frames
from hgn.models import get_model
from hgn.training.config import (
    RunConfig,
    TrainConfig,
    dump_yaml,
    follow_data,
    resolve,
)
from hgn.training.loop import CHECKPOINT, LoopConfig, LoopResult, train_loop
from hgn.utils import UserError, atomic_path, derive_seed, load_checkpoint, resolve_device

IN_MEMORY_BYTES = 4 << 30
"""Training splits up to this size are read into RAM once; larger ones stay memory-mapped."""

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
        from hgn.plots import comparison_strip

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
