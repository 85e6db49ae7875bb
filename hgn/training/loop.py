"""The one training loop behind every model hgn trains (HGN, HNN, NHF, RealNVP).

It owns what every run needs and nobody should write twice: a step budget and a
wall-clock budget, a progress bar, TensorBoard scalars, atomic checkpoints (periodic and
final) that hold the full config, exact resumption, and a NaN/Inf guard that stops the run
and keeps the last good checkpoint.

Exact resumption works because no random state is carried from step to step: before step
``k`` the loop reseeds torch from ``(seed, k)``, so step ``k`` draws the same batch and
the same noise whether or not the run was interrupted before it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hgn.utils import UserError, derive_seed, load_checkpoint, save_checkpoint

CHECKPOINT = "checkpoint.pt"


@dataclass
class LoopConfig:
    """Budgets and bookkeeping of one run."""

    steps: int
    seed: int = 0
    max_minutes: float | None = None
    checkpoint_every: int = 500
    log_every: int = 10
    desc: str = "train"
    tensorboard: bool = True
    writer: bool = True
    """False on distributed ranks other than 0: they train but write no checkpoint,
    TensorBoard log or progress bar."""


@dataclass
class LoopResult:
    """What a finished (or budget-stopped) run reports."""

    step: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_by: str = "steps"


def _stateful(objects: Mapping[str, Any]) -> dict[str, Any]:
    return {name: obj.state_dict() for name, obj in objects.items()}


def train_loop(
    run_dir: str | Path,
    objects: Mapping[str, Any],
    step_fn: Callable[[int], Mapping[str, float]],
    loop: LoopConfig,
    config: Mapping[str, Any],
    *,
    resume: bool = False,
    on_log: Callable[[int, Any], None] | None = None,
    log_images_every: int = 0,
    agree: Callable[[bool], bool] | None = None,
) -> LoopResult:
    """Run ``step_fn(step)`` for ``step = start … loop.steps - 1`` and checkpoint.

    ``objects`` maps names to things with ``state_dict``/``load_state_dict`` (models,
    optimisers, GECO multipliers); they are saved together with ``config`` in
    ``run_dir/checkpoint.pt``. ``step_fn`` performs one optimisation step and returns
    scalars to log; a non-finite ``loss`` stops the run with a :class:`UserError`
    after restoring nothing (the last checkpoint on disk is the last good state).
    ``on_log(step, writer)`` may add images to TensorBoard every ``log_images_every``
    steps. ``agree(stop)`` turns this process's wall-clock verdict into one shared by
    all distributed ranks (e.g. an all-reduce), so that they stop at the same step.
    """
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT
    start, before = 0, 0.0  # steps and seconds already spent by earlier processes
    if ckpt_path.exists():
        if not resume:
            raise UserError(
                f"{run_dir} already holds a run; pass --resume to continue it "
                "or choose another --out"
            )
        saved = load_checkpoint(ckpt_path)
        for name, obj in objects.items():
            obj.load_state_dict(saved["state"][name])
        start, before = int(saved["step"]), float(saved.get("seconds", 0.0))
    run_dir.mkdir(parents=True, exist_ok=True)

    writer = None
    if loop.tensorboard and loop.writer:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start)

    def checkpoint(step: int, elapsed: float) -> None:
        if not loop.writer:
            return
        save_checkpoint(
            ckpt_path,
            {
                "step": step,
                "seconds": elapsed,
                "config": dict(config),
                "state": _stateful(objects),
            },
        )

    result = LoopResult(step=start, seconds=0.0)
    t0 = time.perf_counter()
    bar = tqdm(
        total=loop.steps,
        initial=start,
        desc=loop.desc,
        dynamic_ncols=True,
        disable=not loop.writer,
    )
    try:
        for step in range(start, loop.steps):
            torch.manual_seed(derive_seed(loop.seed, "step", step))
            metrics = dict(step_fn(step))
            loss = metrics.get("loss", 0.0)
            if not math.isfinite(loss):
                raise UserError(
                    f"loss became {loss} at step {step}; stopped. The last good checkpoint is "
                    f"{ckpt_path if ckpt_path.exists() else '(none yet)'}: lower the learning "
                    "rate or tighten gradient clipping, then --resume"
                )
            now = time.perf_counter() - t0
            elapsed = before + now  # the budget covers the whole run, across resumes
            done = step + 1
            bar.update(1)
            if done % loop.log_every == 0 or done == loop.steps:
                metrics["steps_per_s"] = (done - start) / max(now, 1e-9)
                bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()})
                result.history.append({"step": done, **metrics})
                if writer is not None:
                    for key, value in metrics.items():
                        writer.add_scalar(key, value, done)
            if writer is not None and on_log and log_images_every and done % log_images_every == 0:
                on_log(done, writer)
            result.step = done
            if done % loop.checkpoint_every == 0 and done != loop.steps:
                checkpoint(done, elapsed)
            out_of_time = loop.max_minutes is not None and elapsed > 60.0 * loop.max_minutes
            if agree is not None:
                out_of_time = agree(out_of_time)
            if out_of_time:
                result.stopped_by = "time"
                break
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    result.seconds = before + time.perf_counter() - t0
    checkpoint(result.step, result.seconds)
    return result
