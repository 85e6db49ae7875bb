"""Training, evaluation and sampling of flow models (the comparison: :mod:`hgn.flows.compare`).

Everything here is a thin layer over :mod:`hgn.flows.nhf` (the models),
:mod:`hgn.flows.targets` (the data) and :func:`hgn.training.loop.train_loop` (budgets,
checkpoints, resume, NaN guard, progress): the ``hgn flow`` commands call these functions
and nothing else. Every command that writes refuses a directory or file it did not write
(:func:`hgn.utils.claim_output_dir`, :func:`hgn.utils.check_output_file`).

Why one file of more than 600 lines: a flow run's whole life is here (its config file,
training with the compiled step and its eager fallback, evaluation and sampling), each
reading the run's one saved config through the same few helpers.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor

from hgn.checks import check_range, config_from_dict
from hgn.flows.nhf import NHF, DensityModel, build, check_int, load, n_parameters
from hgn.flows.targets import DataSource, check_points, data_source
from hgn.runs import CHECKPOINT, FLOW, read
from hgn.training.config import parse_set
from hgn.training.loop import LoopConfig, LoopResult, train_loop
from hgn.utils import (
    OUTPUT_MARKER,
    UserError,
    atomic_path,
    check_output_dir,
    check_output_file,
    claim_output_dir,
    derive_seed,
    load_checkpoint,
    mark_output_dir,
    write_json,
    write_text,
)

EVAL_FILE = "eval.json"
DEFAULT_MINUTES = 9.5
"""The budget of a flow run given neither steps nor minutes (:class:`FlowTrainConfig`)."""
STEP_CAP = 10**9
COMPILE_MIN_STEPS = 2000
"""Runs of at least this many steps (or on the clock) compile by default: at ~15 % faster
steps a 15-50 s compilation is repaid within about 2,000 steps."""
"""The step budget of a run given in minutes alone: never the one that ends it."""
TRAIN_KIND = "flow train"
COMPARE_KIND = "flow compare"


@dataclass
class FlowTrainConfig:
    """Optimisation settings of one flow run (the architecture is the model's own config).

    The learning rate warms up linearly for ``warmup`` of the run, then follows a cosine
    to zero at its end. The run is ``steps`` steps when they are given (the schedule is
    then a function of the step alone: bit-exact on any machine and across resumes;
    ``max_minutes``, if also given, only stops it), else ``max_minutes`` of wall-clock
    time, and the schedule follows the clock so that it ends, fully decayed, when the
    budget does, on a fast machine or a slow one.
    """

    steps: int | None = None
    max_minutes: float | None = None
    """Neither budget given: :data:`DEFAULT_MINUTES` of training, compilation included,
    whatever that buys on the machine. The checkerboard gap is training-limited (seed 0:
    0.155 after 8,000 steps, 0.143 after 10,500, 0.122 after the 17,642 that 9.5 minutes
    bought on a 2-core machine; docs/RESULTS.md, "Checkerboard in 10 minutes"), and a fixed
    count sized for a slower shared core (the earlier default, 10,500 steps) is 60 % of
    what 9.5 minutes buy on that machine. ``--steps N`` trains exactly N steps instead
    (reproducible to the bit). ``--resume --minutes M`` continues for M minutes on
    a schedule of its own (from the peak rate: the Adam moments are restored, so
    without a warm-up)."""
    batch_size: int = 512
    lr: float = 1e-2
    warmup: float = 0.02
    n_samples: int = 4
    objective: str = "iwae"
    """NHF's: ``iwae`` (the importance-weighted bound with K = ``n_samples``) or ``elbo``
    (the ELBO averaged over ``n_samples``); on checkerboard IWAE with K = 4 took the test
    NLL after 3,000 steps from 3.787 (ELBO, K = 1) to 3.710 for 2.2 × the time a step."""
    clip: float = 10.0
    seed: int = 0
    compile: bool | None = None
    """Train through ``torch.compile`` (None: when the run repays it, :attr:`compiles`):
    it fuses the element-wise work of the leapfrog and
    its hand-written backward, which is most of an eager NHF step (43.6 against 51.3 ms at
    the defaults, one thread); the 15-50 s compilation at the first step is repaid within
    a few minutes, so a 10-minute default run gets more steps (docs/RESULTS.md, "Training
    speed").
    If compiling fails (no C++ compiler, an unsupported build) training warns once and
    goes on eager; ``--no-compile`` skips it (short runs, tests)."""

    def __post_init__(self) -> None:
        if self.steps is not None:
            check_int(self.steps, "--steps", 1, 10**9)
        check_int(self.batch_size, "--batch-size", 1, 1 << 20)
        check_int(self.n_samples, "--momentum-samples", 1, 4096)
        check_int(self.seed, "--seed", 0, 2**63 - 1)
        check_range(self.lr, "--lr", gt=0, le=1)
        check_range(self.warmup, "--warmup", ge=0, lt=1)
        check_range(self.clip, "--clip", gt=0, le=1e6)
        check_range(self.max_minutes, "--minutes", gt=0, le=1e6)
        if self.objective not in ("iwae", "elbo"):
            raise UserError(f"--objective must be iwae or elbo, got {self.objective!r}")
        if self.compile is not None and not isinstance(self.compile, bool):
            raise UserError(f"compile must be true, false or null (auto), got {self.compile!r}")

    @property
    def compiles(self) -> bool:
        """Whether this run compiles: as set, or (``compile`` None) when it is long enough
        to repay the compilation: on the clock, or :data:`COMPILE_MIN_STEPS` steps or more
        (a compilation of 15-50 s for ``--steps 2`` was all of a short run's time)."""
        if self.compile is not None:
            return self.compile
        return self.steps is None or self.steps >= COMPILE_MIN_STEPS

    def lr_at(self, step: int, fraction: float = 0.0, warm_from: float | None = None) -> float:
        """The learning rate of ``step``. In a run of ``max_minutes`` alone (no ``steps``)
        it follows ``fraction``, the share of the time budget spent: a cosine over the
        budget, times a linear warm-up over ``warmup`` of it counted from ``warm_from``,
        the share spent when the first step (and with it the compilation) ended; at that
        first step ``warm_from`` is not known yet (the smallest rate), and a resumed run,
        whose Adam moments are restored, passes ``warm_from=None`` for no warm-up."""
        if self.steps is None:
            cosine = 0.5 * self.lr * (1 + math.cos(math.pi * min(fraction, 1.0)))
            if warm_from is None or not self.warmup:
                return cosine
            return cosine * min(1.0, max((fraction - warm_from) / self.warmup, 1e-3))
        warm = max(1, round(self.warmup * self.steps))
        if step < warm:
            return self.lr * (step + 1) / warm
        return 0.5 * self.lr * (1 + math.cos(math.pi * (step - warm) / max(1, self.steps - warm)))


RUN_KEYS = ("target", "standardise", "logit")
"""A flow run config's keys beside its ``model`` and ``train`` sections."""

CONFIG_FILE = "config.yaml"
"""A flow run's config, as ``hgn flow train --config`` reads it back."""


def _merge(config: dict[str, Any], values: dict[str, Any], where: str) -> dict[str, Any]:
    """``config`` updated with ``values``, every key known (one line naming a stray)."""
    out = {**config, "model": dict(config["model"]), "train": dict(config["train"])}
    for key, value in values.items():
        if key in ("model", "train"):
            if not isinstance(value, dict):
                raise UserError(f"{where}: {key} must map keys to values, got {value!r}")
            unknown = sorted(set(value) - set(config[key]))
            if unknown:
                known = ", ".join(sorted(config[key]))
                raise UserError(f"unknown config key {key}.{unknown[0]} in {where}; valid: {known}")
            out[key].update(value)
        elif key in RUN_KEYS:
            out[key] = value
        else:
            raise UserError(
                f"unknown config key {key!r} in {where}; use model, train, {', '.join(RUN_KEYS)}"
            )
    return out


def resolve_config(
    base: dict[str, Any],
    config_file: str | Path | None = None,
    given: dict[str, Any] | None = None,
    sets: Sequence[str] = (),
) -> dict[str, Any]:
    """A flow run's config as ``hgn train`` layers its own: ``base`` (the defaults) ←
    ``config_file`` (YAML: ``model``, ``train``, ``target``, ``standardise``,
    ``logit``) ← ``given`` (what the user set on the command line) ← ``--set
    section.key=value``; every key validated, a wrong one named in one line."""
    config = base
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise UserError(f"config file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            message = f"config file {path} is not valid YAML: {exc}".splitlines()[0]
            raise UserError(message) from None
        if not isinstance(values, dict):
            raise UserError(f"config file {path} must map keys to values")
        config = _merge(config, values, str(path))
    config = _merge(config, given or {}, "the command line")
    fields = {"model": set(config["model"]), "train": set(config["train"])}
    for item in sets:
        section, key, value = parse_set(item, fields)
        config = _merge(config, {section: {key: value}}, f"--set {item}")
    check_config(config)
    return config


def check_config(config: dict[str, Any]) -> None:
    """Validate a resolved config's model and train sections (one line naming the key)."""
    build({**config["model"], "dim": 2})
    config_from_dict(FlowTrainConfig, config["train"], "train")
    if not isinstance(config["standardise"], bool):
        raise UserError(f"standardise must be true or false, got {config['standardise']!r}")
    if config["logit"] is not None:
        check_range(config["logit"], "--logit", ge=0, lt=0.5)


def dump_config(config: dict[str, Any]) -> str:
    """The config as YAML, loadable again with ``hgn flow train --config``."""
    keys = ("target", "standardise", "logit", "model", "train")
    return yaml.safe_dump({k: config[k] for k in keys}, sort_keys=False, default_flow_style=False)


def optimiser(model: torch.nn.Module, lr: float = 1e-3) -> torch.optim.Adam:
    """Adam, fused: one kernel for all ~100 parameter tensors instead of a loop of small
    ops; on one CPU core it takes 0.4 ms a step where the default takes 2.6 ms (a tenth
    of a RealNVP step; ``benchmarks/bench_flows.py``). Every flow model trains with it."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def _prepare(model: DensityModel, data: DataSource, standardise: bool) -> None:
    """Fix the model's data standardisation from training data, after the model's logit
    map if it has one. A volume-preserving flow cannot rescale, so data at the prior's
    scale is much easier: on checkerboard it took the test NLL of seeds 1-2 from
    3.71-3.81 to 3.708-3.710 nats (docs/RESULTS.md, "Checkerboard in 10 minutes")."""
    if not (standardise or model.logit):
        return
    ref = data.reference(100_000)
    if model.logit:
        check_points(ref, data.dim, f"training data of {data.name}", unit_box=True)
        ref = model.to_unbounded(ref)
    if standardise:
        scale = ref.std(0) if len(ref) > 1 else torch.ones(data.dim)
        model.set_standardisation(ref.mean(0), torch.where(scale > 0, scale, 1.0))


@dataclass
class Snapshot:
    """The model's weights after ``step`` steps and ``seconds`` of training."""

    seconds: float
    step: int
    state: dict[str, Tensor]


def saved_run(out: Path) -> dict[str, Any] | None:
    """The config of the flow run in ``out`` to resume, or None for a new run. A directory
    hgn did not write as a flow run is refused before anything is read or written; a run
    from before hgn marked its directories (a flow checkpoint, no marker) is adopted."""
    check = out / CHECKPOINT
    if check.is_file() and not (out / OUTPUT_MARKER).exists():
        saved = load_checkpoint(check).get("config", {})
        if not {"model", "target", "train", "standardise"} <= set(saved):
            raise UserError(
                f"{out} holds a checkpoint that is not a flow run; choose another --out"
            )
        mark_output_dir(out, TRAIN_KIND)
    check_output_dir(out, TRAIN_KIND)
    return load_checkpoint(check)["config"] if check.is_file() else None


class _FlowStep:
    """One training step of a flow: the learning rate of the schedule, a batch, the loss
    and its gradient (compiled where that pays), clipping, Adam, and a copy of the
    weights every ``snapshot_seconds`` of training. The metrics stay tensors: the
    training loop reads them at its log steps only."""

    def __init__(
        self,
        model: torch.nn.Module,
        adam: torch.optim.Optimizer,
        data: Any,
        cfg: FlowTrainConfig,
        compiled: _Compiled | None,
        resumed: bool,
        snapshots: list[Snapshot] | None,
        snapshot_seconds: float | None,
    ) -> None:
        self.model, self.adam, self.data, self.cfg, self.compiled = model, adam, data, cfg, compiled
        self.params = list(model.parameters())
        self.resumed, self.snapshots, self.snapshot_seconds = resumed, snapshots, snapshot_seconds
        self.clock: dict[str, float] = {}

    def _loss_and_grad(self, loss_fn: Callable[..., Tensor], batch: Tensor) -> Tensor:
        loss = loss_fn(batch, self.cfg.n_samples, self.cfg.objective == "iwae")
        self.adam.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    def _learning_rate(self, step: int) -> float:
        fraction = self.clock.get("fraction", 0.0)
        if self.resumed:  # no warm-up (lr_at)
            warm_from = None
        else:  # fresh: warm up from the end of the first (compiling) step
            warm_from = self.clock.setdefault("warm_from", fraction) if step > 0 else math.inf
        lr = self.cfg.lr_at(step, fraction, warm_from)
        for group in self.adam.param_groups:
            group["lr"] = lr
        return lr

    def _snapshot(self, step: int, start: float) -> None:
        """Copy the weights when the next snapshot is due; the copying is not training
        time (the clock's start moves past it)."""
        if self.snapshots is None or self.snapshot_seconds is None:
            return
        seconds = time.perf_counter() - start
        if seconds >= (len(self.snapshots) + 1) * self.snapshot_seconds:
            copy = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.snapshots.append(Snapshot(seconds, step + 1, copy))
            self.clock["start"] += time.perf_counter() - start - seconds

    def __call__(self, step: int) -> dict[str, float | Tensor]:
        start = self.clock.setdefault("start", time.perf_counter())
        lr = self._learning_rate(step)
        batch = self.data.sample_train(self.cfg.batch_size)
        if self.compiled is not None and self.compiled.usable:
            loss = self.compiled.run(self._loss_and_grad, batch, self.model.loss)
        else:
            loss = self._loss_and_grad(self.model.loss, batch)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip)
        if torch.isfinite(grad_norm):  # a rare non-finite gradient skips the step
            self.adam.step()
        self._snapshot(step, start)
        return {"loss": loss.detach(), "grad_norm": grad_norm.detach(), "lr": lr}


def train(
    target: str,
    out: str | Path,
    model_config: dict[str, Any],
    cfg: FlowTrainConfig,
    *,
    resume: bool = False,
    keep_steps: bool = False,
    standardise: bool = True,
    logit: float | None = None,
    desc: str = "flow",
    tensorboard: bool = True,
    progress: bool = True,
    snapshot_seconds: float | None = None,
    snapshots: list[Snapshot] | None = None,
) -> LoopResult:
    """Train a flow model (``model_config["kind"]``: nhf | realnvp | nsf) on ``target``
    into the run directory ``out``.

    On ``resume`` the run's saved model, target and settings are used; of ``cfg`` only
    the budgets apply: ``steps`` (unless ``keep_steps``, which keeps the saved ones) and
    ``max_minutes``, which, given, counts from this call (otherwise what is left of the
    saved budget applies). ``logit`` is the α of the model's logit map (None: the
    target's own, :attr:`DataSource.logit`; a resumed run keeps its own). Every
    ``snapshot_seconds`` of training (this call's clock)
    a copy of the weights is appended to ``snapshots``: ``hgn flow compare`` scores them
    afterwards, so that scoring costs no training time.
    """
    out = Path(out)
    budget_from_now = cfg.max_minutes is not None
    saved = saved_run(out) if resume else None
    if saved is not None:
        model_config, standardise = saved["model"], saved["standardise"]
        cfg = _resumed_config(out, target, saved, cfg, keep_steps)
    elif cfg.steps is None and cfg.max_minutes is None:
        cfg = replace(cfg, max_minutes=DEFAULT_MINUTES)
    data = data_source(target, cfg.seed)
    model_config = {**model_config, "dim": data.dim}
    if saved is None:
        model_config = _with_logit(model_config, data.logit if logit is None else logit)
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    model = build(model_config)
    _prepare(model, data, standardise)
    claim_output_dir(out, TRAIN_KIND)  # only now: a bad target or config writes nothing
    if saved is None:
        _write_run_config(out, target, standardise, model_config, cfg)
    adam = optimiser(model, cfg.lr)
    compiled = (
        _Compiled(model.loss, list(model.parameters()), "" if desc == "flow" else desc)
        if cfg.compiles
        else None
    )
    step_fn = _FlowStep(model, adam, data, cfg, compiled, saved is not None, snapshots,
                        snapshot_seconds)  # fmt: skip
    clock = step_fn.clock

    config = _run_record(target, model, cfg, standardise)

    def schedule(fraction: float) -> None:  # the share of the run done, by either budget
        clock["fraction"] = fraction

    loop = _loop_config(cfg, desc, tensorboard, progress, budget_from_now)
    result = train_loop(
        out, {"model": model, "optimizer": adam}, step_fn, loop, config, resume=resume,
        schedule=schedule, extra={"kind": FLOW},
    )  # fmt: skip
    if "start" in clock and snapshots is not None:  # the trained model, at its own time
        _last_snapshot(model, snapshots, clock["start"], result.step)
    return result


def _with_logit(model_config: dict[str, Any], alpha: float | None) -> dict[str, Any]:
    """A new run's model config with the logit map's α (none for 0 or None: data that
    needs no map gets none)."""
    model_config = dict(model_config)
    model_config.pop("logit", None)
    return model_config | ({"logit": alpha} if alpha else {})


def _run_record(
    target: str, model: DensityModel, cfg: FlowTrainConfig, standardise: bool
) -> dict[str, Any]:
    """What the checkpoint records of the run, enough to open it without its config file."""
    return {
        "target": target,
        "model": model.config(),
        "train": asdict(cfg),
        "standardise": standardise,
        "parameters": n_parameters(model),
    }


def _resumed_config(
    out: Path, target: str, saved: dict[str, Any], cfg: FlowTrainConfig, keep_steps: bool
) -> FlowTrainConfig:
    """A resumed run's train settings: the saved ones, but this call's budgets (its
    ``steps`` unless ``keep_steps``; its ``max_minutes`` if given). Refuses another
    target: the saved model and its standardisation were fitted to the saved one."""
    if target != saved["target"]:
        raise UserError(
            f"{out} was trained on {saved['target']!r}; --resume continues on it, "
            f"not on {target!r} (train a new run for another target)"
        )
    budgets = {"steps": saved["train"]["steps"] if keep_steps else cfg.steps}
    if cfg.max_minutes is not None:
        budgets["max_minutes"] = cfg.max_minutes
    return config_from_dict(FlowTrainConfig, {**saved["train"], **budgets}, "train")


def _write_run_config(
    out: Path,
    target: str,
    standardise: bool,
    model_config: dict[str, Any],
    cfg: FlowTrainConfig,
) -> None:
    """The new run's config as ``--config`` reads it back (the data's ``dim`` is left
    out: the target gives it; no logit map is written as None)."""
    model_keys = {k: v for k, v in model_config.items() if k not in ("dim", "logit")}
    logit = model_config.get("logit") or None
    run = {"target": target, "standardise": standardise, "logit": logit}
    run |= {"model": model_keys, "train": asdict(cfg)}
    write_text(out / CONFIG_FILE, dump_config(run))


def _loop_config(
    cfg: FlowTrainConfig, desc: str, tensorboard: bool, progress: bool, budget_from_now: bool
) -> LoopConfig:
    """The shared training loop's settings for a flow: a run with only a time budget
    gets a step cap it never reaches."""
    return LoopConfig(
        steps=STEP_CAP if cfg.steps is None else cfg.steps,
        seed=cfg.seed,
        max_minutes=cfg.max_minutes,
        log_every=25,
        desc=desc,
        tensorboard=tensorboard,
        progress=progress,
        budget_from_now=budget_from_now,
    )


def _last_snapshot(model: DensityModel, snapshots: list[Snapshot], start: float, step: int) -> None:
    """The trained model as the curve's last point, at its training time since ``start``
    (the clock with snapshot-taking left out), unless a snapshot was just taken at
    ``step``."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    last = snapshots[-1].step if snapshots else -1
    if last != step:
        snapshots.append(Snapshot(time.perf_counter() - start, step, state))


COMPILED_GRAD_TOLERANCE = 1e-3
"""The largest relative difference (over all parameters) between the first compiled
gradient and the eager one that is taken for rounding. NHF's compiled step differs from
eager by ~1e-6; zuko's NSF through inductor (torch 2.13, CPU) by ~9e-2, a miscompiled
backward: it trained to 4.31 nats on checkerboard where eager reached 3.49."""


class _Compiled:
    """``loss`` through ``torch.compile``, or eager from the moment compiling fails or
    computes a gradient eager does not.

    ``torch.compile`` compiles lazily (the forward at the first call, the backward at the
    first ``backward``), so a missing C++ compiler or an unsupported build only shows in
    the first step: that step is guarded and, if it fails, redone eager after a one-line
    warning, and every later step runs eager. The first compiled step is also redone
    eager on the same batch and random draws, and its gradient compared: a compiler can
    be wrong without failing (it was for zuko's NSF), and a run must not train on a
    wrong gradient because it asked for speed. Once a compiled step has passed, later
    steps are not guarded, so a genuine error is not hidden.
    """

    def __init__(self, loss: Callable[..., Tensor], params: list[Tensor], name: str = "") -> None:
        self.compiled = torch.compile(loss, dynamic=False)
        self.params = params
        self.name = name  # which model the warning is about (compare trains several)
        self.usable = True
        self.proven = False

    def _fall_back(self, why: str) -> None:
        self.usable = False
        print(
            f"hgn: warning: {self.name}{': ' if self.name else ''}{why}; training eager "
            "(--no-compile skips compiling)",
            file=sys.stderr,
            flush=True,
        )

    def run(
        self,
        loss_and_grad: Callable[[Callable[..., Tensor], Tensor], Tensor],
        batch: Tensor,
        eager: Callable[..., Tensor],
    ) -> Tensor:
        if self.proven:
            return loss_and_grad(self.compiled, batch)
        rng = torch.get_rng_state()
        try:
            loss_and_grad(self.compiled, batch)
        except Exception as exc:  # any compiler failure: train eager
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            self._fall_back(f"torch.compile failed ({type(exc).__name__}: {reason})")
            torch.set_rng_state(rng)
            return loss_and_grad(eager, batch)
        compiled = [p.grad for p in self.params]
        torch.set_rng_state(rng)  # the same draws (NHF samples momenta) for eager
        loss = loss_and_grad(eager, batch)  # this step trains on eager's gradient
        pairs = [
            (c, p.grad)
            for c, p in zip(compiled, self.params, strict=True)
            if c is not None and p.grad is not None
        ]
        difference = math.sqrt(sum(float((c - e).square().sum()) for c, e in pairs))
        scale = math.sqrt(sum(float(e.square().sum()) for _, e in pairs))
        relative = difference / max(scale, 1e-30)
        if not relative <= COMPILED_GRAD_TOLERANCE:  # NaN fails too
            self._fall_back(
                f"torch.compile's gradient differs from eager's by {relative:.1e} (relative; "
                f"rounding gives < {COMPILED_GRAD_TOLERANCE:g}), a compiler fault"
            )
        else:
            self.proven = True
        return loss


def run_config(run: str | Path) -> dict[str, Any]:
    """The config saved with a run (a directory) or a checkpoint file."""
    return read(run)["config"]


def run_data(run: str | Path, target: str | None) -> tuple[DensityModel, DataSource]:
    """A run's model and the data to score it on: ``target`` or, by default, the run's own.
    A checkpoint saved by :func:`hgn.flows.save` without a target needs ``target``."""
    config = run_config(run)
    model = load(run)
    target = target or config.get("target")
    if target is None:
        raise UserError(f"{run} records no target; pass --target")
    seed = int(config.get("train", {}).get("seed", 0))
    return model, data_source(target, seed)


def run_file(run: str | Path, name: str) -> Path | None:
    """Where a command may write its file ``name`` inside ``run``: a ``hgn flow train``
    directory (its own earlier file is replaced), or a directory without such a file;
    None for a checkpoint file, or a directory whose ``name`` hgn cannot tell it wrote."""
    run = Path(run)
    if not run.is_dir():
        return None
    try:
        check_output_dir(run, TRAIN_KIND)
    except UserError:  # not marked as a flow run: add a file, never replace one
        return None if (run / name).exists() else run / name
    return run / name


def _image_shape(run: str | Path) -> tuple[int, int] | None:
    """(H, W) when the run's target is image-shaped data (digits, an (N, H, W) array)."""
    target = run_config(run).get("target")
    if target is None:
        return None
    try:
        return data_source(target, 0).image_shape
    except UserError:  # a moved .npy file: draw the samples as points
        return None


@torch.no_grad()
def evaluate(
    run: str | Path,
    target: str | None = None,
    n_importance: int = 128,
    n_test: int | None = None,
    progress: bool = True,
    *,
    seed: int = 0,
    out: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Test NLL (nats, mean ± standard error, and per dimension) of a run's model, the
    importance samples drawn from ``seed`` (recorded: the same seed gives the same
    number); written to ``out`` (a new file, or an existing one with ``overwrite``) or
    by default ``RUN/eval.json`` when ``RUN`` is a flow run directory (replacing the
    run's own earlier evaluation, which the result says)."""
    n_importance = check_int(n_importance, "--n-importance", 1, 1 << 20)
    seed = check_int(seed, "--seed", 0, (1 << 63) - 1)
    path = check_output_file(out, overwrite) if out is not None else run_file(run, EVAL_FILE)
    model, data = run_data(run, target)
    x = check_points(
        data.test_set(), model.dim, f"test data of {data.name}", unit_box=bool(model.logit)
    )
    if n_test is not None:
        x = x[: check_int(n_test, "--n-test", 1, 1 << 30)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nll = -model.log_prob(x, n_importance, "evaluate" if progress else None).double()
    se = nll.std().item() / math.sqrt(len(nll)) if len(nll) > 1 else None
    result = {
        "target": data.name,
        "nll": nll.mean().item(),
        "nll_se": se,
        "nats_per_dim": nll.mean().item() / model.dim,
        "dim": model.dim,
        "n_test": len(nll),
        "n_importance": n_importance if model.kind == "nhf" else None,
        "entropy": data.entropy,
        "parameters": n_parameters(model),
        "seed": seed,
    }
    if data.entropy is not None:
        result["gap"] = result["nll"] - data.entropy
    replaced = path is not None and path.exists()
    if path is not None:
        write_json(path, result)
    result["written"] = str(path) if path is not None else None
    result["replaced"] = replaced
    return result


@torch.no_grad()
def sample(
    run: str | Path, n: int, out: str | Path, seed: int = 0, overwrite: bool = False
) -> Path:
    """Draw ``n`` samples of a run's model into ``out``: a .npy array, or a .png picture
    (a grid of images for image-shaped data, else a 2-D histogram)."""
    n = check_int(n, "--n", 1, 1 << 26)
    out = Path(out)
    if out.suffix not in (".npy", ".png"):
        raise UserError(f"cannot write samples to {out}: use a .npy or .png file name")
    check_output_file(out, overwrite)
    model = load(run)
    torch.manual_seed(derive_seed(seed, "sample"))
    x = model.sample(n).numpy()
    if out.suffix == ".npy":
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.save(fh, x)
        return out
    from hgn.flows import plots as flow_plots

    image_shape = _image_shape(run)
    if image_shape is not None:
        return flow_plots.image_grid(x, image_shape, out, title=f"samples of {Path(run).name}")
    return flow_plots.scatter(x, out, title=f"{n} samples of {Path(run).name}")


# --- time to quality: NHF against zuko's RealNVP and NSF --------------------------------------


def is_nhf(model: DensityModel) -> NHF:
    if not isinstance(model, NHF):
        raise UserError(f"this needs an NHF run (the model is {model.kind})")
    return model
