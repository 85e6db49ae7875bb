"""The one training loop behind every model hgn trains (HGN, HNN, NHF, RealNVP).

It owns what every run needs and nobody should write twice: a step budget and a
wall-clock budget, a progress bar (against whichever budget ends the run), TensorBoard
scalars, atomic checkpoints (periodic and final) that hold the full config, exact
resumption, and a NaN/Inf guard that stops the run and keeps the last good checkpoint:
a non-finite loss stops it, and a checkpoint is never written with non-finite weights.

Time budgets: a budget given for this invocation (``budget_from_now``, e.g.
``--minutes`` on the command line) counts from its start; otherwise the saved
budget applies as what is left of it, counted from when it was set (the checkpoint
records that moment as ``budget_start``, in seconds of the run).

Exact resumption works because no random state is carried from step to step: before step
``k`` the loop reseeds torch from ``(seed, k)``, so step ``k`` draws the same batch and
the same noise whether or not the run was interrupted before it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from hgn.runs import CHECKPOINT, METRICS_LOG
from hgn.utils import UserError, atomic_path, derive_seed, load_checkpoint, save_checkpoint

LEGACY_STATE_NAMES = {"optimizer": "optimiser", "averaged": "ema"}
"""Names earlier checkpoints saved an object's state under (flow runs spelled the
optimiser's differently; the weights' average was torch's ``AveragedModel``)."""


@dataclass
class LoopConfig:
    """Budgets and bookkeeping of one run."""

    steps: int
    seed: int = 0
    max_minutes: float | None = None
    clock: str = "wall"
    """What ``max_minutes`` and the recorded seconds count: ``"wall"`` or ``"cpu"``
    (the process's CPU time; :attr:`hgn.training.config.TrainConfig.budget_clock`)."""
    checkpoint_every: int = 500
    log_every: int = 10
    desc: str = "train"
    tensorboard: bool = True
    writer: bool = True
    """False on distributed ranks other than 0: they train but write no checkpoint,
    TensorBoard log or progress bar."""
    progress: bool = True
    """Show a progress bar (``--no-progress`` turns it off, e.g. in logs)."""
    budget_from_now: bool = False
    """``max_minutes`` was given for this invocation and counts from its start; False:
    it is the run's saved budget, of which only what is left applies on a resume."""


@dataclass
class LoopResult:
    """What a finished (or budget-stopped) run reports."""

    step: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_by: str = "steps"
    start: int = 0
    """The step this invocation started from (``step - start`` steps were taken)."""


def _stateful(objects: Mapping[str, Any]) -> dict[str, Any]:
    return {name: obj.state_dict() for name, obj in objects.items()}


def non_finite_entry(state: Any, name: str = "") -> str | None:
    """The name of the first floating tensor in ``state`` (nested dicts and lists) that
    holds a NaN or an infinity, or None: a checkpoint must never keep such weights."""
    if isinstance(state, torch.Tensor):
        bad = state.is_floating_point() and not bool(torch.isfinite(state).all())
        return name if bad else None
    items: Any = ()
    if isinstance(state, Mapping):
        items = state.items()
    elif isinstance(state, list | tuple):
        items = enumerate(state)
    for key, value in items:
        found = non_finite_entry(value, f"{name}.{key}" if name else str(key))
        if found is not None:
            return found
    return None


_TIME_FORMAT = "{l_bar}{bar}| {n:.0f}/{total:.0f} s budget [{elapsed}<{remaining}{postfix}]"


def _redraw_seconds() -> float:
    """How often a training bar redraws: tqdm's 0.1 s on a terminal, every 30 s into a
    file or a pipe (a benchmark cell's ``log.txt``, a cluster job's log), where every
    redraw is kept (a 10-minute cell's log held 1.2 MB of them)."""
    return 0.1 if sys.stderr.isatty() else 30.0


class _Progress:
    """A progress bar against whichever budget ends the run.

    With a time budget that will run out before the step budget (a 5-minute run of a
    100,000-step config), a bar in steps would show an ETA of hours; the bar then counts
    the budget's seconds instead, with the step count in its postfix. Which budget ends
    first is re-estimated from this invocation's step rate after every step (with a 5%
    margin, so that the bar does not flip back and forth near a tie).
    """

    def __init__(
        self, loop: LoopConfig, start: int, budget: float | None, used: float, enabled: bool
    ) -> None:
        self.steps, self.start, self.budget = loop.steps, start, budget
        self.desc, self.enabled = loop.desc, enabled
        self.by_time = budget is not None
        self.bar = self._new_bar(min(used, budget) if budget is not None else start)

    def _new_bar(self, position: float) -> tqdm:
        """A bar in the current unit starting at ``position``: a fresh one, so that its
        rate is measured in that unit only (a bar reset from steps to seconds kept its
        rate statistics and once showed "-14463.12it/s")."""
        return tqdm(
            total=self.budget if self.by_time else self.steps,
            initial=position,
            desc=self.desc,
            dynamic_ncols=True,
            disable=not self.enabled,
            bar_format=_TIME_FORMAT if self.by_time else None,
            mininterval=_redraw_seconds(),
        )

    def update(self, done: int, used: float, now: float) -> None:
        """After step ``done``: ``used`` seconds of the time budget, ``now`` seconds of
        this invocation."""
        if self.bar.disable:
            return
        if self.budget is not None and done > self.start:
            left_steps = (self.steps - done) * now / (done - self.start)
            left_time = self.budget - used
            if self.by_time and left_steps < 0.95 * left_time:
                self._switch(False, done)
            elif not self.by_time and left_steps > 1.05 * left_time:
                self._switch(True, min(used, self.budget))
        position = min(used, self.budget) if self.by_time else done
        self.bar.update(position - self.bar.n)

    def _switch(self, by_time: bool, position: float) -> None:
        postfix = self.bar.postfix
        self.bar.close()
        self.by_time = by_time
        self.bar = self._new_bar(position)
        self.bar.set_postfix_str(postfix or "", refresh=False)

    def postfix(self, done: int, metrics: Mapping[str, float]) -> None:
        shown = {k: f"{v:.4g}" for k, v in metrics.items()}
        if self.by_time:
            shown = {"step": f"{done}/{self.steps}", **shown}
        self.bar.set_postfix(shown)

    def close(self) -> None:
        self.bar.close()


class MetricsLog:
    """The logged metrics as JSON lines in the run (:data:`hgn.runs.METRICS_LOG`).

    A resumed run first drops the lines past the step it resumes from (written after
    its last checkpoint by the interrupted process), so its log reads as an
    uninterrupted run's would; a line cut short by a kill is dropped too.
    """

    def __init__(self, path: Path, start: int) -> None:
        kept = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and int(entry.get("step", start + 1)) <= start:
                    kept.append(line + "\n")
        with atomic_path(path) as tmp:
            tmp.write_text("".join(kept))
        self.file = path.open("a")

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def tensorboard_writer(path: Path, start: int) -> Any:
    """A TensorBoard writer into ``path``, or None with a one-line note when the optional
    ``tensorboard`` package (a heavy install: ``hgn[tensorboard]``) is missing: logs are
    a convenience (the progress bar shows the same losses), not part of the result."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        tqdm.write(
            "hgn: note: no TensorBoard logs: the optional package tensorboard is not "
            "installed (pip install 'hgn[tensorboard]')",
            file=sys.stderr,
        )
        return None
    return SummaryWriter(str(path), purge_step=start)


class LossGuard:
    """Stops a run whose loss turned non-finite, without a host sync per step.

    A loss that is a Python number is checked at once. A tensor's verdict stays on its
    device: the first non-finite step and its value are kept there and read only by
    :meth:`check`, which the loop calls at log steps, before every checkpoint and at the
    end, so the run stops with the step that went wrong, and before any checkpoint
    would hold what came after it (a host sync per step stalls a GPU's queue; the
    trainer skips every optimiser step after a non-finite loss on the device itself,
    so the weights stay the last good ones until then).
    """

    def __init__(self) -> None:
        self.bad: tuple[int, float] | None = None
        # the first non-finite loss on the device: its step (−1: none yet) and value
        self.step: Tensor | None = None
        self.value: Tensor | None = None

    def see(self, step: int, loss: float | Tensor) -> None:
        """Record ``loss`` of ``step``; a non-finite number raises at once."""
        if not isinstance(loss, Tensor):
            if not math.isfinite(loss):
                self.bad = (step, float(loss))
                self.check()
            return
        loss = loss.detach().reshape(()).float()
        if self.step is None or self.value is None:
            self.step = torch.full((), -1.0, device=loss.device)
            self.value = torch.zeros((), device=loss.device)
        fresh = (self.step < 0) & ~torch.isfinite(loss)  # Python scalars: no copy to the device
        self.step = torch.where(fresh, float(step), self.step)
        self.value = torch.where(fresh, loss, self.value)

    def check(self) -> None:
        """Raise :class:`_StopRun` if a loss seen so far was not finite."""
        if self.bad is None and self.step is not None and self.value is not None:
            step = int(self.step)  # the host syncs, at log steps and checkpoints only
            if step >= 0:
                self.bad = (step, float(self.value))
        if self.bad is not None:
            step, value = self.bad
            raise _StopRun(f"loss became {value} at step {step}; stopped")


class _StopRun(Exception):
    """The loss guard's verdict, turned into the run's :class:`UserError` by the loop
    (which knows the last good checkpoint)."""


def _restore(run_dir: Path, objects: Mapping[str, Any], resume: bool) -> tuple[int, float, float]:
    """Load a saved run into ``objects``: (steps done, seconds spent, the seconds at which
    the current time budget began); zeros for a fresh run."""
    ckpt_path = run_dir / CHECKPOINT
    if not ckpt_path.exists():
        return 0, 0.0, 0.0
    if not resume:
        raise UserError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    saved = load_checkpoint(ckpt_path)
    states = saved["state"]
    for name, obj in objects.items():
        obj.load_state_dict(states[name if name in states else LEGACY_STATE_NAMES[name]])
    return (
        int(saved["step"]),
        float(saved.get("seconds", 0.0)),
        float(saved.get("budget_start", 0.0)),
    )


def _last_good(ckpt_path: Path) -> str:
    return str(ckpt_path) if ckpt_path.exists() else "(none yet)"


@dataclass
class _Saver:
    """Writes the run's checkpoint, never with a non-finite tensor in it (the run then
    stops with a :class:`UserError` and the last good checkpoint stays on disk)."""

    path: Path
    objects: Mapping[str, Any]
    config: Mapping[str, Any]
    extra: Mapping[str, Any]
    budget_start: float
    writer: bool

    def __call__(self, step: int, elapsed: float) -> None:
        if not self.writer:
            return
        state = _stateful(self.objects)
        bad = non_finite_entry(state)
        if bad is not None:
            raise UserError(
                f"{bad} became non-finite by step {step}; not saved. The last good "
                f"checkpoint is {_last_good(self.path)}: lower the learning rate or tighten "
                "gradient clipping, then --resume"
            )
        entries = {"step": step, "seconds": elapsed, "budget_start": self.budget_start}
        entries |= {"config": dict(self.config), "state": state}
        save_checkpoint(self.path, {**self.extra, **entries})


@dataclass
class _Clock:
    """The run's time budget: seconds of ``loop.clock`` spent before this invocation
    (``before``), when the current budget began (``budget_start``, in the run's
    seconds), and this invocation's start on the clock (``t0``)."""

    read: Callable[[], float]
    before: float
    budget_start: float
    budget: float | None
    t0: float

    @classmethod
    def start(cls, loop: LoopConfig, before: float, budget_start: float) -> _Clock:
        read = time.process_time if loop.clock == "cpu" else time.perf_counter
        budget = None if loop.max_minutes is None else 60.0 * loop.max_minutes
        if loop.budget_from_now:
            budget_start = before
        return cls(read, before, budget_start, budget, read())

    def restart(self) -> None:
        """Count this invocation from now: the writers' setup is not training time."""
        self.t0 = self.read()

    def now(self) -> float:
        """Seconds of this invocation."""
        return self.read() - self.t0

    def used(self, now: float) -> float:
        """Seconds of the current budget spent, ``now`` seconds into this invocation."""
        return self.before + now - self.budget_start

    def spent(self, used: float) -> bool:
        """Whether ``used`` seconds exhaust the time budget (never without one)."""
        return self.budget is not None and used > self.budget

    def fraction(self, step: int, steps: int, used: float) -> float:
        """The share of the run done before ``step``, with ``used`` seconds of the budget
        spent, by whichever budget ends it first."""
        by_time = used / self.budget if self.budget else 0.0
        return min(1.0, max(step / steps, by_time))


@dataclass
class _Logs:
    """Where logged metrics go: the result's history, the JSON lines, TensorBoard, the bar."""

    result: LoopResult
    bar: _Progress
    log: MetricsLog | None
    tensorboard: Any

    @classmethod
    def open(cls, run_dir: Path, loop: LoopConfig, result: LoopResult, clock: _Clock) -> _Logs:
        """The outputs of a run resuming at ``result.start`` (only the writer's)."""
        start = result.start
        tensorboard = None
        if loop.tensorboard and loop.writer:
            tensorboard = tensorboard_writer(run_dir / "tensorboard", start)
        used = clock.before - clock.budget_start
        bar = _Progress(loop, start, clock.budget, used, loop.writer and loop.progress)
        log = MetricsLog(run_dir / METRICS_LOG, start) if loop.writer else None
        return cls(result, bar, log, tensorboard)

    def write(self, done: int, metrics: Mapping[str, float | Tensor], rate: float) -> None:
        # the one host sync of the metrics: they stay tensors between log steps
        values = {key: float(value) for key, value in metrics.items()}
        values["steps_per_s"] = rate
        self.bar.postfix(done, values)
        self.result.history.append({"step": done, **values})
        if self.log is not None:
            self.log.write(done, values)
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, done)

    def close(self) -> None:
        self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.log is not None:
            self.log.close()


def train_loop(
    run_dir: str | Path,
    objects: Mapping[str, Any],
    step_fn: Callable[[int], Mapping[str, float | torch.Tensor]],
    loop: LoopConfig,
    config: Mapping[str, Any],
    *,
    resume: bool = False,
    on_log: Callable[[int, Any], None] | None = None,
    log_images_every: int = 0,
    agree: Callable[[bool], bool] | None = None,
    extra: Mapping[str, Any] | None = None,
    schedule: Callable[[float], None] | None = None,
) -> LoopResult:
    """Run ``step_fn(step)`` for ``step = start … loop.steps - 1`` and checkpoint.

    ``objects`` maps names to things with ``state_dict``/``load_state_dict`` (models,
    optimisers, GECO multipliers); they are saved together with ``config`` in
    ``run_dir/checkpoint.pt``. ``step_fn`` performs one optimisation step and returns
    scalars to log, floats or 0-d tensors (read only at log steps); a non-finite
    ``loss`` stops the run with a :class:`UserError` after restoring nothing (the last
    checkpoint on disk is the last good state; :class:`LossGuard` says when it is seen).
    ``on_log(step, writer)`` may add images to TensorBoard every ``log_images_every``
    steps. ``agree(stop)`` turns this process's wall-clock verdict into one shared by
    all distributed ranks (e.g. an all-reduce), so that they stop at the same step.
    ``extra`` adds plain entries to every checkpoint (e.g. what the run was trained on).
    ``schedule(fraction)`` is called before every step with the share of the run done,
    by whichever budget ends it first (steps or wall-clock time), so that a learning-rate
    schedule ends when the run does, also under a time budget and across resumes.
    A checkpoint whose state holds a non-finite tensor is never written: the run stops
    with a :class:`UserError` and the last good checkpoint stays on disk.
    """
    run_dir = Path(run_dir)
    start, before, budget_start = _restore(run_dir, objects, resume)
    clock = _Clock.start(loop, before, budget_start)
    run_dir.mkdir(parents=True, exist_ok=True)
    save = _Saver(
        run_dir / CHECKPOINT, objects, config, extra or {}, clock.budget_start, loop.writer
    )
    result = LoopResult(step=start, seconds=0.0, start=start)
    logs = _Logs.open(run_dir, loop, result, clock)
    guard = LossGuard()
    clock.restart()
    try:
        for step in range(start, loop.steps):
            # checked before every step, so a resume whose budget is spent takes none
            used = clock.used(clock.now())
            out_of_time = clock.spent(used)
            if agree is not None:
                out_of_time = agree(out_of_time)
            if out_of_time:
                result.stopped_by = "time"
                break
            if schedule is not None:
                schedule(clock.fraction(step, loop.steps, used))
            torch.manual_seed(derive_seed(loop.seed, "step", step))
            metrics = dict(step_fn(step))
            guard.see(step, metrics.get("loss", 0.0))
            now = clock.now()
            done = result.step = step + 1
            logs.bar.update(done, clock.used(now), now)
            if done % loop.log_every == 0 or done == loop.steps:
                guard.check()
                logs.write(done, metrics, (done - start) / max(now, 1e-9))
            images = on_log is not None and log_images_every and done % log_images_every == 0
            if logs.tensorboard is not None and images:
                on_log(done, logs.tensorboard)
            if done % loop.checkpoint_every == 0 and done != loop.steps:
                guard.check()
                save(done, before + now)
        guard.check()
    except _StopRun as stop:
        raise UserError(
            f"{stop}. The last good checkpoint is {_last_good(save.path)}: lower the "
            "learning rate or tighten gradient clipping, then --resume"
        ) from None
    finally:
        logs.close()
    result.seconds = before + clock.now()
    save(result.step, result.seconds)
    return result
