"""``hgn flow compare``: NHF against RealNVP and NSF at equal parameters and equal
training time on one target (paper Figure 10), and the time each reaches a reference
model's final NLL. Every model trains through :func:`hgn.flows.train.train` on the clock,
so that a model's schedule spans its own minutes (compilation included)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hgn.checks import check_range
from hgn.flows.nhf import DensityModel, NHFConfig, build, check_int, load, n_parameters
from hgn.flows.targets import check_points, data_source
from hgn.flows.train import COMPARE_KIND, FlowTrainConfig, Snapshot, saved_run, train
from hgn.training.loop import LoopResult
from hgn.utils import (
    UserError,
    atomic_path,
    claim_output_dir,
    derive_seed,
    write_json,
)


def time_per_call(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Best-of-``repeats`` wall time of ``fn`` (the least disturbed by a shared machine)."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def throughput(
    model: DensityModel, x: Tensor, n_importance: int, n_samples: int = 4096, rounds: int = 3
) -> dict[str, float]:
    """Samples per second (batches of ``n_samples``) and log-densities per second (on the
    points ``x``; for NHF each costs ``n_importance`` inverse flows) of a model: per round
    the best of 3 calls, then the median over ``rounds``."""
    with torch.no_grad():
        t_sample = _median_time(lambda: model.sample(n_samples), rounds)
        t_density = _median_time(lambda: model.log_prob(x, n_importance), rounds)
    return {"samples_per_s": n_samples / t_sample, "log_prob_per_s": len(x) / t_density}


def _median_time(fn: Callable[[], Any], rounds: int) -> float:
    """Median over ``rounds`` of the best-of-3 wall time of ``fn``: a burst of load on a
    shared machine spoils a call, rarely a whole round."""
    return float(np.median([time_per_call(fn) for _ in range(rounds)]))


def matched(kind: str, transforms: int, n_params: int, dim: int, layers: int = 2) -> dict:
    """The ``kind`` (realnvp | nsf) config of ``transforms`` layers whose hidden width
    brings its parameter count closest to ``n_params`` (counts grow with the width)."""

    def count(hidden: int) -> int:
        config = {"kind": kind, "dim": dim, "transforms": transforms, "hidden": hidden}
        return n_parameters(build({**config, "layers": layers}))

    low, high = 1, 8192
    while high - low > 1:  # the last width with at most n_params parameters
        mid = (low + high) // 2
        low, high = (mid, high) if count(mid) <= n_params else (low, mid)
    hidden = min((low, high), key=lambda h: abs(count(h) - n_params))
    return {"kind": kind, "dim": dim, "transforms": transforms, "hidden": hidden, "layers": layers}


DEFAULT_MODELS = ("NHF-LF1", "NHF-LF2", "NHF-LF3", "RealNVP-2", "RealNVP-3", "NSF-3")
"""What ``hgn flow compare`` trains by default: the paper's Figure 10 (NHF with 1-3
leapfrog sub-steps, RealNVP with 2 and 3 coupling layers) and zuko's neural spline flow."""


def model_spec(name: str, nhf_config: dict[str, Any], n_params: int, dim: int) -> dict:
    """The config of a compare model by name: ``NHF`` (``nhf_config``), ``NHF-LF<k>`` (it
    with k leapfrog sub-steps), ``RealNVP-<k>`` or ``NSF-<k>`` (k layers, width matched to
    ``n_params``)."""
    kind, _, number = name.partition("-")
    if kind == "NHF" and not number:
        return nhf_config
    if kind == "NHF" and number.startswith("LF") and number[2:].isdigit():
        return {**nhf_config, "leapfrog_steps": int(number[2:])}
    if kind in ("RealNVP", "NSF") and number.isdigit() and int(number) > 0:
        return matched(kind.lower(), int(number), n_params, dim)
    raise UserError(
        f"unknown model {name!r} in --models; use NHF, NHF-LF<k>, RealNVP-<k> or NSF-<k>"
    )


def _mean_nll(model: DensityModel, x: Tensor, n_importance: int) -> tuple[float, float]:
    """Mean test NLL and its standard error."""
    torch.manual_seed(derive_seed("compare", "nll"))
    with torch.no_grad():
        nll = -model.log_prob(x, n_importance).double()
    return nll.mean().item(), nll.std().item() / math.sqrt(len(nll))


def compare(
    target: str,
    out: str | Path,
    minutes: float,
    nhf_config: dict[str, Any],
    cfg: FlowTrainConfig,
    models: tuple[str, ...] = DEFAULT_MODELS,
    n_importance: int = 128,
    n_test: int = 2000,
    curve_points: int = 8,
    reference: str = "RealNVP-3",
    progress: bool = True,
    logit: float | None = None,
) -> dict[str, Any]:
    """Train each of ``models`` for ``minutes`` of wall-clock time on ``target`` and
    compare them at equal time and at matched parameter counts.

    Every model trains on the clock (:meth:`FlowTrainConfig.lr_at`): its cosine schedule
    follows the share of ``minutes`` spent, so each ends fully decayed on time, whatever
    its speed, and a compiled model pays for its compilation. Test NLL is measured at
    ``curve_points`` moments of training (weights copied as it runs, scored afterwards on
    the same ``n_test`` points) and at the end: the time-to-NLL view. The common level is
    ``reference``'s final NLL (the worst final NLL when it is not among the models); the
    table gives the time each model first reached it. Writes ``compare.json``,
    ``compare.md`` and ``figure10.png`` in ``out``.
    """
    check_range(minutes, "--minutes", gt=0, le=1e4)
    check_int(curve_points, "--curve-points", 1, 1000)
    n_importance = check_int(n_importance, "--n-importance", 1, 1 << 20)
    if not models or len(set(models)) != len(models):
        raise UserError(f"--models needs distinct model names, got {','.join(models)}")
    data = data_source(target, cfg.seed)
    specs = _model_specs(models, nhf_config, data.dim)
    out = claim_output_dir(out, COMPARE_KIND)
    x = check_points(data.test_set(), data.dim, f"test data of {target}")[:n_test]
    rows = []
    for name, spec in specs.items():
        row_file = out / name / "compare-row.json"
        if row_file.is_file():  # finished by an earlier, interrupted compare
            rows.append(json.loads(row_file.read_text()))
            continue
        snapshots: list[Snapshot] = []
        result = _train_on_the_clock(
            target, out / name, name, spec, cfg, minutes, curve_points, snapshots,
            progress=progress, logit=logit,
        )  # fmt: skip
        rows.append(_scored_row(out / name, name, result, snapshots, x, n_importance))
        write_json(row_file, rows[-1])
    table = {
        "target": target,
        "dim": data.dim,
        "entropy": data.entropy,
        "minutes_per_model": minutes,
        "n_importance": n_importance,
        "n_test": len(x),
        "rows": rows,
        **time_to_level(rows, reference),
    }
    _write_compare(out, table)
    return table


def _model_specs(
    models: tuple[str, ...], nhf_config: dict[str, Any], dim: int
) -> dict[str, dict[str, Any]]:
    """The config of each model in ``--models``, sized against NHF's parameter count;
    each is built once here, so that a bad configuration fails before any training."""
    nhf_config = {"kind": "nhf", **asdict(NHFConfig(dim)), **nhf_config, "dim": dim}
    n_nhf = n_parameters(build(nhf_config))
    specs = {name: model_spec(name, nhf_config, n_nhf, dim) for name in models}
    for spec in specs.values():
        build(spec)
    return specs


def _train_on_the_clock(
    target: str,
    run: Path,
    name: str,
    spec: dict[str, Any],
    cfg: FlowTrainConfig,
    minutes: float,
    curve_points: int,
    snapshots: list[Snapshot],
    *,
    progress: bool,
    logit: float | None,
) -> LoopResult:
    """Train one model on the clock: its schedule spans ``minutes`` of its own training,
    compilation included; a model an interrupted compare left half-trained gets what is
    left of its saved budget (max_minutes None), not a new one. ``snapshots`` receives
    ``curve_points`` copies of the weights taken as it trains."""
    fresh = saved_run(run) is None
    run_cfg = replace(cfg, steps=None, max_minutes=minutes if fresh else None)
    return train(
        target, run, spec, run_cfg, desc=name, resume=True, logit=logit,
        progress=progress, snapshot_seconds=60.0 * minutes / curve_points,
        snapshots=snapshots,
    )  # fmt: skip


def _scored_row(
    run: Path,
    name: str,
    result: LoopResult,
    snapshots: list[Snapshot],
    x: Tensor,
    n_importance: int,
) -> dict[str, Any]:
    """One model's row: its final test NLL, the NLL of each snapshot taken while it
    trained (the time-to-NLL curve; scored afterwards, so scoring costs no training
    time), its size and its speed."""
    model = load(run)
    nll, nll_se = _mean_nll(model, x, n_importance)
    curve = []
    for snap in snapshots:
        model.load_state_dict(snap.state)
        curve.append([snap.seconds, snap.step, _mean_nll(model, x, n_importance)[0]])
    model = load(run)
    return {
        "model": name,
        "config": model.config(),
        "parameters": n_parameters(model),
        "nll": nll,
        "nll_se": nll_se,
        "train_s": result.seconds,
        "steps": result.step,
        "curve": curve,
        **throughput(model, x[:256], n_importance),
        "history": [(h["step"], h["loss"], h["steps_per_s"]) for h in result.history],
    }


def _write_compare(out: Path, table: dict[str, Any]) -> None:
    """``compare.json``, ``compare.md`` and Figure 10, each file written atomically."""
    write_json(out / "compare.json", table)
    with atomic_path(out / "compare.md") as tmp:
        tmp.write_text(compare_markdown(table))
    from hgn.flows import plots as flow_plots

    flow_plots.figure10(table, out / "figure10.png")


def time_to_level(rows: list[dict[str, Any]], reference: str) -> dict[str, Any]:
    """The common NLL level (``reference``'s final NLL, else the worst final NLL) and,
    per row (set in place), the first measured time and step at which it reached it."""
    finals = {r["model"]: r["nll"] for r in rows}
    name = reference if reference in finals else max(finals, key=finals.__getitem__)
    level = finals[name]
    first = None
    for r in rows:
        hit = next((point for point in r["curve"] if point[2] <= level), None)
        r["time_to_level"] = hit[0] if hit else None
        r["steps_to_level"] = hit[1] if hit else None
        if hit and (first is None or hit[0] < first[1]):
            first = (r["model"], hit[0])
    return {"level": level, "level_of": name, "first": first[0] if first else None}


def compare_markdown(table: dict[str, Any]) -> str:
    """The comparison table as Markdown (what goes into docs/RESULTS.md)."""
    entropy, dim = table["entropy"], table.get("dim", 2)
    lines = [
        f"Target `{table['target']}` (d = {dim}"
        + (f", entropy {entropy:.3f} nats" if entropy is not None else "")
        + f"); {table['minutes_per_model']:g} min per model; NLL on {table['n_test']} test "
        f"points (NHF: IWAE bound, K = {table['n_importance']}). Common level: "
        f"{table['level']:.3f} nats ({table['level_of']}'s final NLL); first to reach it: "
        f"**{table['first']}**.",
        "",
        "| model | parameters | test NLL (nats) | nats/dim | steps | train s "
        "| s to level | samples/s | log_prob/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table["rows"]:
        reached = "never" if r["time_to_level"] is None else f"{r['time_to_level']:.0f}"
        lines.append(
            f"| {r['model']} | {r['parameters']} | {r['nll']:.3f} ± {r['nll_se']:.3f} "
            f"| {r['nll'] / dim:.3f} | {r['steps']} | {r['train_s']:.0f} | {reached} "
            f"| {r['samples_per_s']:.3g} | {r['log_prob_per_s']:.3g} |"
        )
    return "\n".join(lines) + "\n"
