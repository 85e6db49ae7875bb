"""Training, evaluation, sampling, figures and the RealNVP comparison for flow models.

Everything here is a thin layer over :mod:`hgn.flows` (the models), :mod:`hgn.flows.targets`
(the data) and :func:`hgn.training.loop.train_loop` (budgets, checkpoints, resume, NaN guard):
the ``hgn flow`` commands call these functions and nothing else.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from hgn.flows.nhf import (
    NHF,
    DensityModel,
    NHFConfig,
    RealNVPConfig,
    build,
    load,
    log_prob_chunks,
    n_parameters,
)
from hgn.flows.targets import DataSource, check_points, data_source
from hgn.training.loop import CHECKPOINT, LoopConfig, LoopResult, train_loop
from hgn.utils import UserError, atomic_path, derive_seed, load_checkpoint, positive_int

EVAL_FILE = "eval.json"


@dataclass
class TrainConfig:
    """Optimisation settings of one run (the architecture is the model's own config).

    The learning rate warms up linearly for ``warmup`` of the run, then follows a cosine
    to zero at ``steps``: a function of the step alone, so resumed runs match.
    """

    steps: int = 9000
    batch_size: int = 512
    lr: float = 1e-2
    warmup: float = 0.02
    n_samples: int = 1
    clip: float = 10.0
    seed: int = 0
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        positive_int(self.steps, "--steps")
        positive_int(self.batch_size, "--batch-size")
        positive_int(self.n_samples, "--n-samples")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"--lr must be a positive number, got {self.lr}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise UserError(f"--max-minutes must be positive, got {self.max_minutes}")

    def lr_at(self, step: int) -> float:
        warm = max(1, round(self.warmup * self.steps))
        if step < warm:
            return self.lr * (step + 1) / warm
        return 0.5 * self.lr * (1 + math.cos(math.pi * (step - warm) / max(1, self.steps - warm)))


def _prepare(model: DensityModel, data: DataSource, standardise: bool) -> None:
    """Fix the model's data standardisation from training data. A volume-preserving flow
    cannot rescale, so data at the prior's scale is much easier: on checkerboard it took
    the test NLL of seeds 1-2 from 3.71-3.81 to 3.708-3.710 nats (docs/RESULTS.md, NHF)."""
    if standardise:
        ref = data.reference(100_000)
        scale = ref.std(0) if len(ref) > 1 else torch.ones(data.dim)
        model.set_standardisation(ref.mean(0), torch.where(scale > 0, scale, 1.0))


def train(
    target: str,
    out: str | Path,
    model_config: dict[str, Any],
    cfg: TrainConfig,
    *,
    resume: bool = False,
    standardise: bool = True,
    desc: str = "flow",
    tensorboard: bool = True,
) -> LoopResult:
    """Train a flow model (``model_config["kind"]``: nhf | realnvp) on ``target`` into ``out``.

    On ``resume`` the run's saved model, target and seed are used; only the budgets
    (``steps``, ``max_minutes``) may change.
    """
    out = Path(out)
    if resume and (out / CHECKPOINT).exists():
        saved = load_checkpoint(out / CHECKPOINT)["config"]
        target, model_config = saved["target"], saved["model"]
        cfg = TrainConfig(**{**saved["train"], "steps": cfg.steps, "max_minutes": cfg.max_minutes})
        standardise = saved["standardise"]
    data = data_source(target, cfg.seed)
    model_config = {**model_config, "dim": data.dim}
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    model = build(model_config)
    _prepare(model, data, standardise)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    params = list(model.parameters())

    def step_fn(step: int) -> dict[str, float]:
        lr = cfg.lr_at(step)
        for group in optimiser.param_groups:
            group["lr"] = lr
        loss = model.loss(data.sample_train(cfg.batch_size), cfg.n_samples)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        if torch.isfinite(grad_norm):  # a rare non-finite gradient skips the step
            optimiser.step()
        return {"loss": loss.item(), "grad_norm": grad_norm.item(), "lr": lr}

    config = {
        "target": target,
        "model": model.config(),
        "train": asdict(cfg),
        "standardise": standardise,
        "parameters": n_parameters(model),
    }
    loop = LoopConfig(
        steps=cfg.steps,
        seed=cfg.seed,
        max_minutes=cfg.max_minutes,
        log_every=25,
        desc=desc,
        tensorboard=tensorboard,
    )
    return train_loop(
        out, {"model": model, "optimiser": optimiser}, step_fn, loop, config, resume=resume
    )


def run_config(run: str | Path) -> dict[str, Any]:
    run = Path(run)
    return load_checkpoint(run / CHECKPOINT if run.is_dir() else run)["config"]


@torch.no_grad()
def log_prob(model: DensityModel, x: Tensor, n_importance: int, desc: str = "log_prob") -> Tensor:
    """Batched log-densities with a progress bar (the IWAE bound for NHF, exact for RealNVP)."""
    chunks = log_prob_chunks(x, n_importance)
    bar = tqdm(chunks, desc=desc, leave=False, disable=len(chunks) < 4, dynamic_ncols=True)
    return torch.cat([model.log_prob(c, n_importance) for c in bar])


def evaluate(
    run: str | Path,
    target: str | None = None,
    n_importance: int = 128,
    n_test: int | None = None,
) -> dict[str, Any]:
    """Test NLL (nats, mean ± standard error) of a run's model; writes ``RUN/eval.json``."""
    n_importance = positive_int(n_importance, "--n-importance")
    config = run_config(run)
    model = load(run)
    target = target or config["target"]
    data = data_source(target, config["train"]["seed"])
    x = check_points(data.test_set(), model.dim, f"test data of {target}")
    if n_test is not None:
        x = x[: positive_int(n_test, "--n-test")]
    lp = log_prob(model, x, n_importance, desc="evaluate")
    nll = -lp.double()
    result = {
        "target": target,
        "nll": nll.mean().item(),
        "nll_se": (nll.std().item() / math.sqrt(len(nll))) if len(nll) > 1 else float("nan"),
        "n_test": len(nll),
        "n_importance": n_importance if model.kind == "nhf" else None,
        "entropy": data.entropy,
        "parameters": n_parameters(model),
    }
    if data.entropy is not None:
        result["gap"] = result["nll"] - data.entropy
    run = Path(run)
    if run.is_dir():
        with atomic_path(run / EVAL_FILE) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
    return result


@torch.no_grad()
def sample(run: str | Path, n: int, out: str | Path, seed: int = 0) -> Path:
    """Draw ``n`` samples of a run's model into ``out`` (.npy array or .png scatter plot)."""
    n = positive_int(n, "--n")
    out = Path(out)
    if out.suffix not in (".npy", ".png"):
        raise UserError(f"cannot write samples to {out}: use a .npy or .png file name")
    model = load(run)
    torch.manual_seed(derive_seed(seed, "sample"))
    x = model.sample(n).numpy()
    if out.suffix == ".npy":
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.save(fh, x)
        return out
    from hgn.flows import plots as flow_plots

    return flow_plots.scatter(x, out, title=f"{n} samples of {Path(run).name}")


# --- the RealNVP comparison (paper Fig. 10) ---------------------------------------------------


def _time_per_call(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Best-of-``repeats`` wall time of ``fn`` (the least disturbed by a shared machine)."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def throughput(
    model: DensityModel, x: Tensor, n_importance: int, n_samples: int = 4096
) -> dict[str, float]:
    """Samples per second (batches of ``n_samples``) and log-densities per second (on the
    points ``x``; for NHF each costs ``n_importance`` inverse flows) of a trained model."""
    with torch.no_grad():
        t_sample = _time_per_call(lambda: model.sample(n_samples))
        t_density = _time_per_call(lambda: model.log_prob(x, n_importance))
    return {"samples_per_s": n_samples / t_sample, "log_prob_per_s": len(x) / t_density}


def seconds_per_step(model: DensityModel, data: DataSource, cfg: TrainConfig, n: int = 5) -> float:
    """Mean wall time of one training step (after a warm-up step), on a throwaway optimiser."""
    opt = torch.optim.Adam(model.parameters())

    def one() -> None:
        loss = model.loss(data.sample_train(cfg.batch_size), cfg.n_samples)
        opt.zero_grad()
        loss.backward()
        opt.step()

    one()
    return sum(_time_per_call(one, 1) for _ in range(n)) / n


def _steps_for(model_config: dict, target: str, cfg: TrainConfig, minutes: float) -> int:
    """How many training steps fit in ``minutes``, from timing a few steps: every model
    then runs its full learning-rate schedule within the same wall-clock budget."""
    data = data_source(target, cfg.seed)
    per_step = seconds_per_step(build({**model_config, "dim": data.dim}), data, cfg)
    return max(1, int(60.0 * minutes / per_step))


def matched_realnvp(transforms: int, n_params: int, dim: int, layers: int = 2) -> dict[str, Any]:
    """The RealNVP config whose hidden width brings its parameter count closest to ``n_params``."""
    best: tuple[int, dict[str, Any]] | None = None
    for hidden in range(2, 1025):
        config = asdict(RealNVPConfig(dim, transforms, hidden, layers))
        count = n_parameters(build({"kind": "realnvp", **config}))
        if best is None or abs(count - n_params) < abs(best[0] - n_params):
            best = (count, config)
        if count > n_params:
            break
    assert best is not None
    return {"kind": "realnvp", **best[1]}


def compare(
    target: str,
    out: str | Path,
    minutes: float,
    nhf_config: dict[str, Any],
    cfg: TrainConfig,
    leapfrog: tuple[int, ...] = (1, 2, 3),
    realnvp_layers: tuple[int, ...] = (2, 3),
    n_importance: int = 128,
    n_test: int = 2000,
) -> dict[str, Any]:
    """Train NHF (1, 2, 3 leapfrog sub-steps per flow step) and RealNVP (2, 3 coupling layers,
    widths matched to NHF's parameter count) for ``minutes`` each; write the table
    (``compare.json``, ``compare.md``) and Figure 10 (``figure10.png``) in ``out``."""
    if not minutes > 0:
        raise UserError(f"--minutes must be positive, got {minutes}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = data_source(target, cfg.seed)
    nhf_config = {"kind": "nhf", **asdict(NHFConfig(data.dim)), **nhf_config, "dim": data.dim}
    n_nhf = n_parameters(build(nhf_config))
    models = {f"NHF-LF{k}": {**nhf_config, "leapfrog_steps": k} for k in leapfrog}
    models |= {f"RealNVP-{k}": matched_realnvp(k, n_nhf, data.dim) for k in realnvp_layers}
    x = data.test_set()[:n_test]
    rows = []
    for name, model_config in models.items():
        steps = _steps_for(model_config, target, cfg, minutes)
        run_cfg = TrainConfig(**{**asdict(cfg), "steps": steps, "max_minutes": 1.2 * minutes})
        result = train(target, out / name, model_config, run_cfg, desc=name, resume=True)
        model = load(out / name)
        nll = -log_prob(model, x, n_importance, desc=f"{name} NLL").double()
        rows.append(
            {
                "model": name,
                "parameters": n_parameters(model),
                "nll": nll.mean().item(),
                "nll_se": nll.std().item() / math.sqrt(len(nll)),
                "train_s": result.seconds,
                "steps": result.step,
                **throughput(model, x[:256], n_importance),
                "history": [(h["step"], h["loss"], h["steps_per_s"]) for h in result.history],
            }
        )
    table = {
        "target": target,
        "entropy": data.entropy,
        "minutes_per_model": minutes,
        "n_importance": n_importance,
        "n_test": len(x),
        "rows": rows,
    }
    with atomic_path(out / "compare.json") as tmp:
        tmp.write_text(json.dumps(table, indent=2))
    with atomic_path(out / "compare.md") as tmp:
        tmp.write_text(compare_markdown(table))
    from hgn.flows import plots as flow_plots

    flow_plots.figure10(table, out / "figure10.png")
    return table


def compare_markdown(table: dict[str, Any]) -> str:
    """The comparison table as Markdown (what goes into docs/RESULTS.md)."""
    entropy = table["entropy"]
    lines = [
        f"Target `{table['target']}`"
        + (f" (entropy {entropy:.3f} nats)" if entropy is not None else "")
        + f"; {table['minutes_per_model']:g} min per model; NLL on {table['n_test']} test "
        f"points (NHF: IWAE bound, K = {table['n_importance']}).",
        "",
        "| model | parameters | test NLL (nats) | train s | steps | samples/s | log_prob/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table["rows"]:
        lines.append(
            f"| {r['model']} | {r['parameters']} | {r['nll']:.3f} ± {r['nll_se']:.3f} "
            f"| {r['train_s']:.0f} | {r['steps']} | {r['samples_per_s']:.3g} "
            f"| {r['log_prob_per_s']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def is_nhf(model: DensityModel) -> NHF:
    if not isinstance(model, NHF):
        raise UserError("this needs an NHF run (the model is RealNVP)")
    return model
