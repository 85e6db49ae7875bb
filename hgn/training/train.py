"""Training any registered sequence model on a dataset directory (its config is
:mod:`hgn.training.config`): batches, the optimiser, checkpoints, DDP.

Distributed training: under ``torchrun`` (``WORLD_SIZE`` > 1) every rank builds the
same model, wraps it in DistributedDataParallel (gloo on CPU, NCCL on GPU), draws the
same global batch indices from the loop's per-step seed and keeps its own slice of them;
only rank 0 writes checkpoints, logs and the progress bar. The few collectives of our own
(the loss, the stop-on-time verdict) use tensors on the training device, which NCCL
requires; gloo on CPU runs exactly the same code.

Output: ``--out`` is claimed as a ``train`` directory (:func:`hgn.utils.claim_output_dir`):
a fresh run goes into a new or empty directory, never into a user's folder; a run written
before hgn marked its directories (a checkpoint but no marker) is recognised on
``--resume`` and marked then. Every checkpoint records what the run was trained on
(:func:`hgn.runs.trained_on`), so that ``hgn evaluate`` can tell another system's data.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import math
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

from hgn import data as hgn_data
from hgn.checks import check_range, config_from_dict
from hgn.data import mean_frame, to_frames
from hgn.data.prefetch import ChunkBatches
from hgn.data.store import ChunkedArray
from hgn.models import get_model
from hgn.runs import CHECKPOINT, SEQUENCE, data_mismatch, store_sampler, trained_on
from hgn.training.config import (
    RunConfig,
    TrainConfig,
    dump_yaml,
    follow_data,
    resolve,
)
from hgn.training.loop import LoopConfig, LoopResult, train_loop
from hgn.utils import (
    OUTPUT_MARKER,
    UserError,
    atomic_path,
    check_memory,
    check_output_dir,
    claim_output_dir,
    derive_seed,
    load_checkpoint,
    mark_output_dir,
    resolve_device,
)

MAX_LR = 1e3
"""The largest learning rate accepted: Adam keeps it in float32 and 3.4e37 overflowed
there (a traceback); any rate near this bound already diverges in a step."""

IN_MEMORY_BYTES = 4 << 30
"""Training splits up to this size are read into RAM once; larger ones stay memory-mapped."""

WINDOW_CHUNKS = 8
"""Chunks whose rows a split larger than memory mixes at a time
(:class:`hgn.data.prefetch.ChunkShuffle`): at 64×64, 128 sequences, 8 batches of 16
per window; about two windows of decoded chunks are held (~100 MB)."""

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

    With ``prioritize`` > 0 (``train.prioritize``) that share of the draws follows each
    sequence's latest error (:meth:`record`, part of the saved state), the rest stays
    uniform; the draw still comes from the reseeded global RNG, so it stays exact on
    resume and the same on every rank.

    A split too large for memory (over :data:`IN_MEMORY_BYTES`) is read by
    :class:`hgn.data.prefetch.ChunkBatches`: the chunk-aware order of an epoch's rows, a
    few chunks at a time, and windows that start where ``(seed, step)`` says (still
    exact on resume, without the global RNG), each batch built by background threads
    before its step asks for it. Uniformly random rows there decoded a whole chunk each
    on the training thread. Prioritised draws need any row at any step and keep the
    random reads, as does a call without a step.
    """

    def __init__(
        self,
        split: hgn_data.Split,
        frames: int,
        batch_size: int,
        device: torch.device,
        prioritize: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.frames, self.batch_size, self.device = frames, batch_size, device
        self.rank, self.world = _rank(), _world()
        images = split.images
        self.length = images.shape[1]
        self.in_memory = int(np.prod(images.shape)) <= IN_MEMORY_BYTES
        self.images = torch.from_numpy(np.array(images)) if self.in_memory else images
        self.prioritize = prioritize
        # each sequence's latest error; unseen ones start at 1, above any per-pixel error
        # of images in [0, 1], so the error-driven share visits every sequence early on
        self.errors = torch.ones(len(images), dtype=torch.float64)
        self.rows = torch.zeros(0, dtype=torch.long)
        self.chunked: ChunkBatches | None = None
        if not self.in_memory and not prioritize and isinstance(images, ChunkedArray):
            self.chunked = ChunkBatches(
                images, frames, batch_size, device, seed=derive_seed(seed, "batches"),
                rank=self.rank, world=self.world, window=WINDOW_CHUNKS,
            )  # fmt: skip

    def _draw(self) -> Tensor:
        """The global batch's rows, from the reseeded global RNG."""
        total = self.batch_size * self.world
        if self.prioritize:
            n, share = len(self.images), self.prioritize
            weights = (1 - share) / n + share * self.errors / self.errors.sum()
            return torch.multinomial(weights, total, replacement=True)
        return torch.randint(len(self.images), (total,))

    def __call__(self, step: int | None = None) -> torch.Tensor:
        """The batch of ``step`` (the chunk-aware order needs it; without it, or for
        a split in memory, the rows are random draws)."""
        if self.chunked is not None and step is not None:
            return self.chunked(step)
        frames = self.frames
        total = self.batch_size * self.world
        rows = self.rows = self._draw()
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

    def close(self) -> None:
        """Stop the background reads (if any)."""
        if self.chunked is not None:
            self.chunked.close()

    def record(self, errors: Tensor) -> None:
        """Store this rank's per-sequence errors ``(batch_size,)`` of the last batch (all
        ranks': the global batch's rows are the same everywhere). A sequence drawn twice
        keeps the mean of its errors, so the result does not depend on their order."""
        errors = errors.detach().float().reshape(-1)
        if torch.distributed.is_initialized():
            gathered = [torch.empty_like(errors) for _ in range(self.world)]
            torch.distributed.all_gather(gathered, errors)
            errors = torch.cat(gathered)
        values = errors.cpu().double().nan_to_num(1.0).clamp(1e-12, 1.0)
        sums = torch.zeros_like(self.errors).index_add_(0, self.rows, values)
        counts = torch.zeros_like(self.errors).index_add_(0, self.rows, torch.ones_like(values))
        seen = counts > 0
        self.errors[seen] = sums[seen] / counts[seen]

    def state_dict(self) -> dict[str, Tensor]:
        return {"errors": self.errors.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        errors = state["errors"]
        if errors.shape != self.errors.shape:
            raise UserError(
                f"the saved sampling state covers {len(errors)} sequences, the data "
                f"{len(self.errors)}: --resume continues a run on the data it was trained on"
            )
        self.errors = errors.to(torch.float64).clone()


def _check_out(out: Path, resume: bool) -> None:
    """Refuse an unusable ``--out`` before anything is written (see the module doc)."""
    ckpt = out / CHECKPOINT
    if resume:
        if not ckpt.exists():
            raise UserError(f"nothing to resume: {out} holds no {CHECKPOINT}")
        if not (out / OUTPUT_MARKER).exists():
            _check_unmarked_run(out)
            return  # a run written before hgn marked its directories: train's own
    elif ckpt.exists():
        raise UserError(f"{out} already holds a run; pass --resume or choose another --out")
    check_output_dir(out, "train")


def _check_unmarked_run(out: Path) -> None:
    """Accept an unmarked folder holding a checkpoint as a run from before markers only
    if its ``config.yaml`` (which resuming rewrites) is the one hgn wrote for that
    checkpoint, or is absent: a copied checkpoint next to a user's own ``config.yaml``
    once had that file replaced."""
    config = out / "config.yaml"
    if not config.exists():
        return
    saved = load_checkpoint(out / CHECKPOINT)
    try:
        ours = yaml.safe_load(dump_yaml(RunConfig.from_dict(saved["config"])))
        same = yaml.safe_load(config.read_text(encoding="utf-8")) == ours
    except (UserError, OSError, ValueError, yaml.YAMLError):
        same = False
    if not same:
        raise UserError(
            f"--out {out} has no hgn marker and its config.yaml is not the one hgn wrote "
            f"for its {CHECKPOINT}; resume in a new folder holding only the checkpoint "
            "(hgn never replaces files it did not write)"
        )


def _claim_out(out: Path, resume: bool) -> None:
    """Mark ``out`` as train's (checked by :func:`_check_out`): a pre-marker run on resume."""
    if resume and not (out / OUTPUT_MARKER).exists():
        mark_output_dir(out, "train")
    claim_output_dir(out, "train")


# ----------------------------------------------------------------------------- distributed


def _world() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def launch_env() -> tuple[int, int, int]:
    """``(RANK, WORLD_SIZE, LOCAL_RANK)`` from the environment, checked before anything
    is written: a stray ``RANK=1`` once rewrote config.yaml before the refusal, and
    ``RANK=abc`` or ``WORLD_SIZE=2`` without a launcher ended in tracebacks or waits."""
    values = {}
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        text = os.environ.get(name, str(default))
        try:
            values[name] = int(text)
        except ValueError:
            values[name] = -1
        if values[name] < (1 if name == "WORLD_SIZE" else 0):
            raise UserError(
                f"environment variable {name}={text!r} is not a valid count; unset it "
                "(torchrun sets it for distributed training)"
            )
    rank, world, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if rank >= world:
        raise UserError(
            f"environment variable RANK={rank} with WORLD_SIZE={world}: a rank must be "
            "below the world size; unset RANK (torchrun sets it)"
        )
    if world > 1 and not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
        raise UserError(
            f"WORLD_SIZE={world} but no MASTER_ADDR/MASTER_PORT: launch with torchrun "
            "--nproc-per-node N, or unset WORLD_SIZE"
        )
    return rank, world, local


def _setup_distributed(device: str) -> torch.device:
    """Join the process group when launched by ``torchrun``; pick this rank's device."""
    _rank_env, world, local = launch_env()
    if world > 1 and not torch.distributed.is_initialized():
        resolved = resolve_device(device)
        if resolved.type == "cuda":
            resolved = torch.device("cuda", local)
            torch.cuda.set_device(resolved)
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        # DDP imports this module lazily; its functions take ``group=group.WORLD`` as a
        # default, so imported after the group exists they would hold it for good and
        # ``_leave_distributed`` could not destroy it. Imported first, the default is None.
        importlib.import_module("torch.distributed.nn.functional")
        torch.distributed.init_process_group(backend)
        return resolved
    return resolve_device(device)


def _leave_distributed() -> None:
    """Destroy the process group, its worker threads joined, while Python is alive.

    gloo joins its worker threads only in the group's destructor, and
    ``destroy_process_group`` merely drops the registry's references: a group that
    anything still holds (a DDP wrapper, a default argument) lives on until interpreter
    shutdown. A worker that then releases the last reference to a tensor Python gave up
    needs the GIL during finalization, and the rank aborts with "terminate called
    without an active exception" after a run that succeeded (CI saw it once). So the
    caller drops its DDP wrapper first, the collector clears any cycle, and the group
    dies here.
    """
    gc.collect()
    torch.distributed.destroy_process_group()


def _all_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over the ranks, computed where ``values`` live (NCCL
    accepts only CUDA tensors; pass them on the training device)."""
    if torch.distributed.is_initialized():
        values = values.clone()
        torch.distributed.all_reduce(values)
        values /= _world()
    return values


def _agree_on(device: torch.device) -> Callable[[bool], bool]:
    """The loop's ``agree``: stop when any rank is out of time, by one all-reduce of a
    flag on ``device``, the training device (a CPU tensor fails under NCCL)."""

    def agree(stop: bool) -> bool:
        flag = torch.tensor([float(stop)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    return agree


# ----------------------------------------------------------------------------- running


def _check_model_memory(config: RunConfig, frames: int, size: int) -> None:
    """Refuse a model or a batch that cannot fit in memory, before anything is taken:
    the weights, gradients and Adam moments (and average) counted on PyTorch's ``meta``
    device, and a batch's frames with a generous factor for the activations. ``--set
    model.fpsi_hidden=1000000000000`` or a batch of 10^12 used to end in an allocator
    traceback."""
    tc = config.train
    try:
        with torch.device("meta"):
            probe = get_model(config.name)(config.model)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:  # sizes torch refuses
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise UserError(f"a {config.name} of these sizes cannot be built ({first})") from None
    count = sum(p.numel() for p in probe.parameters())
    copies = 4 + (1 if tc.ema else 0)  # weights, gradients, two Adam moments, the average
    check_memory(
        count * 4 * copies, f"a {config.name} of {count:,} parameters", "make the model smaller"
    )
    batch = tc.batch_size * frames * 3 * size * size * 4 * BATCH_COPIES
    check_memory(batch, f"a batch of {tc.batch_size} sequences", "lower train.batch_size")


BATCH_COPIES = 16
"""Copies of a batch's frames that training keeps alive at once (inputs, activations of
the encoder and decoder, gradients), a deliberately high guess: the check is only
meant to stop absurd batches before the allocator does, not to size good ones."""


def _autocast(amp: str, device: torch.device) -> AbstractContextManager:
    if amp == "bf16" and device.type != "cuda":
        raise UserError("train.amp=bf16 needs a CUDA device; use train.amp=off on CPU")
    if device.type == "cuda" and amp in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def ema_with_warmup(
    decay: float,
) -> Callable[[list[Tensor], list[Tensor], Tensor, Tensor | None], None]:
    """An average's update ``(averaged, current, n, keep)`` whose decay after ``n``
    updates is ``min(decay, (1 + n) / (10 + n))``: a short run's average covers about its
    last tenth instead of ~1/(1 − decay) steps of a model that was still far from trained
    (a 3-minute demo takes ~1,500 steps), and a long run's is the plain moving average.
    The first update (``n`` = 0) copies. ``n`` and ``keep`` (False: leave the average as
    it is, for a skipped step) are tensors read on the device, so the update waits for
    nothing on the host."""

    @torch.no_grad()
    def update(
        averaged: list[Tensor], current: list[Tensor], n: Tensor, keep: Tensor | None = None
    ) -> None:
        count = n.to(averaged[0].dtype)
        weight = 1 - ((1 + count) / (10 + count)).clamp(max=decay)
        weight = torch.where(count == 0, 1.0, weight)
        if keep is not None:
            weight = weight * keep
        step = torch._foreach_sub(current, averaged)
        torch._foreach_mul_(step, weight)
        torch._foreach_add_(averaged, step)

    return update


class Average:
    """The moving average of a model's weights (:func:`ema_with_warmup`), saved as a
    plain state dict of the model's parameter names (``{"weights", "n_averaged"}``), so
    that opening a run (:mod:`hgn.runs`) needs nothing of torch's ``AveragedModel``."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        # its counter where the weights are: the update reads it there, not on the host
        self.average = AveragedModel(model).to(next(model.parameters()).device)
        self.move = ema_with_warmup(decay)

    def update(self, model: torch.nn.Module, keep: Tensor | None = None) -> None:
        """Move the average towards ``model``'s weights, unless ``keep`` is False (a
        skipped step, decided on the device)."""
        averaged = [p.detach() for p in self.average.module.parameters()]
        current = [p.detach() for p in model.parameters()]
        counter = self.average.n_averaged
        self.move(averaged, current, counter, keep)
        counter += 1 if keep is None else keep.to(counter.dtype)

    def state_dict(self) -> dict[str, Any]:
        weights = {k: v.detach() for k, v in self.average.module.named_parameters()}
        return {"weights": weights, "n_averaged": self.average.n_averaged}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "weights" not in state:  # written by AveragedModel itself (earlier versions)
            self.average.load_state_dict(state)
            return
        with torch.no_grad():
            for name, value in self.average.module.named_parameters():
                value.copy_(state["weights"][name])
        self.average.n_averaged.copy_(state["n_averaged"])


class SkippingAdam(torch.optim.Adam):
    """Adam, fused, that skips a step the device has judged bad without asking the host.

    :meth:`step_unless` hands the fused kernel a ``found_inf`` flag, the mechanism
    ``torch.amp.GradScaler`` uses: where it is set the weights, moments and step count
    stay as they were. Checking the gradient's norm in Python instead waited for the
    whole step to finish on the device, every step. The saved state is Adam's; a
    resumed run of an earlier version (unfused Adam, its step counts on the host) is
    made fused on loading."""

    def __init__(self, params: Any, lr: float) -> None:
        super().__init__(params, lr=lr, fused=True)

    def step_unless(self, skip: Tensor) -> None:
        """One step, or none on the device where ``skip`` is True."""
        self.found_inf = skip.to(torch.float32).reshape(())
        try:
            self.step()
        finally:
            del self.found_inf

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["fused"], group["foreach"] = True, None
            for param in group["params"]:
                saved = self.state.get(param, {})
                if "step" in saved:
                    saved["step"] = saved["step"].to(param.device, torch.float32)


def decay_factor(fraction: float, decay: float) -> float:
    """The learning rate's factor at ``fraction`` of the run: 1 until the last ``decay``
    of it, then falling linearly to 0 at its end (a warm-down; with a time budget the
    end is known in advance, and a model that has been averaged while the steps shrink
    ends where its noise has settled rather than wherever the last step landed)."""
    if decay <= 0 or fraction <= 1 - decay:
        return 1.0
    return max(0.0, (1.0 - fraction) / decay)


class TrainStep:
    """One optimisation step (the loop's ``step_fn``), without a host sync on its path.

    The loss is averaged over the ranks and returned as a tensor (the loop reads it at
    log steps). A step whose gradient is not finite (the same on every rank: DDP
    averaged it) is skipped on the device (:class:`SkippingAdam`, the average too) and
    counted in ``skipped_steps``; once a loss was not finite every later step is
    skipped, so the weights stay the last good ones until the loop stops the run.
    """

    def __init__(
        self,
        model: Any,
        forward: Any,
        optimizer: SkippingAdam,
        batches: Batches,
        tc: TrainConfig,
        dev: torch.device,
        average: Average | None,
    ) -> None:
        self.model, self.forward, self.optimizer = model, forward, optimizer
        self.batches, self.tc, self.dev, self.average = batches, tc, dev, average
        self.poisoned = torch.zeros((), dtype=torch.bool, device=dev)
        self.skips = torch.zeros((), device=dev)  # in this invocation
        self.clock = time.perf_counter()

    def __call__(self, step: int) -> dict[str, float | Tensor]:
        tc = self.tc
        self.model.train()
        x = self.batches(step)
        with _autocast(tc.amp, self.dev):
            loss, metrics = self.forward(x)
        shared = _all_mean(loss.detach().float().reshape(1))[0]
        metrics["loss"] = shared
        self.poisoned = self.poisoned | ~torch.isfinite(shared)
        if tc.prioritize:
            assert self.model.sequence_errors is not None
            self.batches.record(self.model.sequence_errors)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # the norm is always measured (an infinite bound clips nothing: its factor is 1)
        clip = tc.grad_clip if tc.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        skip = self.poisoned | ~torch.isfinite(norm)
        self.optimizer.step_unless(skip)
        if self.average is not None:
            self.average.update(self.model, keep=~skip)
        self.skips += skip
        metrics |= {"grad_norm": norm, "skipped_steps": self.skips.clone()}
        now = time.perf_counter()
        metrics["seq_per_s"] = tc.batch_size * _world() / max(now - self.clock, 1e-9)
        self.clock = now
        return metrics


def _resolve_run(
    out: Path,
    config: RunConfig | None,
    resume: bool,
    device: str,
    budgets: dict[str, float | int | None],
) -> tuple[RunConfig, dict[str, Any] | None]:
    """The run's config (saved on ``resume``, with the step and time ``budgets`` given
    now) and what a resumed run was trained on; ``out`` and ``device`` checked first."""
    ckpt = out / CHECKPOINT
    if resume and config is not None:
        raise UserError("--resume continues a run with its saved config; drop the overrides")
    env_rank, _world_env, _local = launch_env()
    resolve_device(device)  # a bad --device is refused before anything is written
    if env_rank == 0:  # only rank 0 writes (others may see its claim)
        _check_out(out, resume)
    elif resume and not ckpt.exists():
        raise UserError(f"nothing to resume: {out} holds no {CHECKPOINT}")
    record = None
    if resume:
        saved = load_checkpoint(ckpt)
        config = RunConfig.from_dict(saved["config"])
        record = saved.get("trained_on")
    else:
        config = config or resolve()
    given = {k: v for k, v in budgets.items() if v is not None}
    if given:
        merged = {**dataclasses.asdict(config.train), **given}
        config = dataclasses.replace(config, train=config_from_dict(TrainConfig, merged, "train"))
    return config, record


def _build(
    config: RunConfig, split: hgn_data.Split, dev: torch.device, resume: bool
) -> tuple[TrainStep, dict[str, Any]]:
    """The model, its optimiser, average and batches, wired into a :class:`TrainStep`,
    and the objects a checkpoint saves."""
    tc = config.train
    frames = getattr(config.model, "frames", split.meta["steps"] + 1)
    _check_model_memory(config, frames, split.meta["size"])
    torch.manual_seed(derive_seed(tc.seed, "init"))  # the initial weights follow the seed
    model = get_model(config.name)(config.model).to(dev)
    if not resume:
        model.init_from_data(mean_frame(split).to(dev))
    optimizer = SkippingAdam(model.parameters(), lr=tc.lr)
    objects: dict[str, Any] = {"model": model, "optimizer": optimizer}
    average = None
    if tc.ema:  # parameters only: buffers (counters, fitted statistics) stay the model's
        average = objects["averaged"] = Average(model, tc.ema)
    forward: Any = model
    if torch.distributed.is_initialized():
        forward = torch.nn.parallel.DistributedDataParallel(model)
    if tc.compile:
        forward = torch.compile(forward)
    batches = Batches(split, frames, tc.batch_size, dev, tc.prioritize, tc.seed)
    if tc.prioritize:
        if not model.reports_sequence_errors:
            raise UserError(
                f"train.prioritize needs a model that reports per-sequence errors; "
                f"{config.name} does not (hgn++ does): drop it or use --model hgn++"
            )
        objects["sampler"] = batches  # its errors are saved: a resumed run draws the same
    return TrainStep(model, forward, optimizer, batches, tc, dev, average), objects


def _image_logger(model: Any, data: str | os.PathLike, dev: torch.device) -> Callable:
    """The loop's ``on_log``: four test sequences' rollouts as a TensorBoard image."""
    preview = to_frames(np.asarray(hgn_data.load(data, "test").images[:4]), dev)

    def log_images(step: int, tb: Any) -> None:
        from hgn.plots import comparison_strip

        model.eval()
        with torch.no_grad():
            pred = model.predict(preview, preview.shape[1] - 1)["images"]
        tb.add_image("rollout", comparison_strip(preview, pred), step, dataformats="HWC")

    return log_images


def _lr_schedule(optimizer: torch.optim.Optimizer, tc: TrainConfig, dev: torch.device) -> Callable:
    """The loop's ``schedule``: the warm-down of :func:`decay_factor`, one rate on every rank."""

    def schedule(fraction: float) -> None:
        if torch.distributed.is_initialized():
            fraction = float(_all_mean(torch.tensor([fraction], device=dev))[0])
        for group in optimizer.param_groups:
            group["lr"] = tc.lr * decay_factor(fraction, tc.lr_decay)

    return schedule


def _loop_config(
    config: RunConfig, writer: bool, progress: bool, budget_from_now: bool
) -> LoopConfig:
    """The loop's budgets and bookkeeping from the train section."""
    tc = config.train
    return LoopConfig(
        steps=tc.steps,
        seed=tc.seed,
        max_minutes=tc.max_minutes,
        clock=tc.budget_clock,
        checkpoint_every=tc.checkpoint_every,
        log_every=tc.log_every,
        desc=f"train {config.name}",
        writer=writer,
        progress=progress,
        budget_from_now=budget_from_now,
    )


def train(
    data: str | os.PathLike,
    out: str | os.PathLike,
    config: RunConfig | None = None,
    *,
    resume: bool = False,
    device: str = "auto",
    steps: int | None = None,
    max_minutes: float | None = None,
    progress: bool = True,
) -> LoopResult:
    """Train ``config`` on the dataset at ``data`` into the run directory ``out``.

    ``resume`` continues the run saved in ``out`` with its own config (``config`` must
    be None); ``steps`` overrides the step budget either way. ``max_minutes`` is a
    wall-clock budget for this call, counted from its start; without it, a resumed run
    gets what is left of its saved budget. Every check on the inputs happens before
    anything is written.
    """
    out = Path(out)
    budgets = {"steps": steps, "max_minutes": max_minutes}
    config, record = _resolve_run(out, config, resume, device, budgets)
    split = hgn_data.load(data, "train")
    if not resume:
        config = follow_data(config, split.meta)
    check_data(split, config.model)
    mismatch = data_mismatch(record, split.meta, same_data=True)
    if mismatch:
        raise UserError(f"--resume continues a run on the data it was trained on; {mismatch}")
    dev = _setup_distributed(device)
    tc = config.train
    check_range(tc.lr, "train.lr", gt=0, le=MAX_LR)  # Adam's float32 state overflows past it
    _autocast(tc.amp, dev)  # refuse a bad amp setting before writing anything
    step, objects = _build(config, split, dev, resume)
    writer = _rank() == 0
    if writer:
        _claim_out(out, resume)
        with atomic_path(out / "config.yaml") as tmp:
            tmp.write_text(dump_yaml(config))
    loop = _loop_config(config, writer, progress, budget_from_now=max_minutes is not None)
    distributed = torch.distributed.is_initialized()
    try:
        result = train_loop(
            out,
            objects,
            step,
            loop,
            config.to_dict(),
            resume=resume,
            on_log=_image_logger(step.model, data, dev),
            log_images_every=tc.image_every,
            agree=_agree_on(dev) if distributed else None,
            extra={"kind": SEQUENCE, "trained_on": trained_on(split, data)},
            schedule=_lr_schedule(step.optimizer, tc, dev) if tc.lr_decay else None,
        )
        if writer:  # the sampler travels with the run: no path to the data is needed
            store_sampler(out, split)
        return result
    finally:
        step.batches.close()
        if distributed:
            step.forward = None  # the DDP wrapper holds the group
            _leave_distributed()
