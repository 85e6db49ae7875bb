"""One cell of the benchmark, a ``(dataset, model)`` pair: train the model for the
cell's minutes with ``hgn train``'s code and the model's ``small`` profile, then score
it with every protocol and record the result.

A cell lives in ``DIR/cells/DATASET/MODEL/``. As in ``hgn reproduce`` (whose pieces
this reuses), ``result.json`` is written atomically and last, so its existence means
'finished' and a finished cell is never recomputed; an interrupted one resumes from
its checkpoint and its finished stages (``stage-*.json``).

What a model cannot do is recorded, never invented: a protocol that asks a model for a
rollout it cannot make (backwards, another speed) gets ``{"cannot": reason}`` (or the
protocol's own ``{"skipped": reason}``) in that place; a metric the data cannot support
(SyMetric without true states, sample physics without a simulator) gets
``{"n/a": reason}``; a model the data cannot train (HNN without the true degrees of
freedom) gets a finished cell that says so in every place.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hgn import data as hgn_data
from hgn.data import mean_frame
from hgn.evaluation import extrapolate, physics
from hgn.experiments.benchmark import metrics, tuning
from hgn.experiments.benchmark.profiles import TINY, Settings, style_of
from hgn.experiments.reproduce.cells import (
    TRAINED,
    _finite_or_none,
    _require_finite,
    _stage,
)
from hgn.models import get_model
from hgn.runs import CHECKPOINT, fit_recorded, open_sequence_model
from hgn.training import config as hgn_config
from hgn.training import train as hgn_train
from hgn.utils import UserError, atomic_path, resolve_device, write_json

PROFILE = "small"
"""Every model trains with its own ``hgn train --profile small`` settings (networks,
batch, learning rate, schedule), with the cell's minutes as its budget."""

STEPS = 10_000_000
"""The step budget: out of reach, so the wall clock (``train.max_minutes``) ends every run."""


def data_refusal(model: str, meta: Mapping[str, Any]) -> str | None:
    """Why the data cannot train ``model`` (None: it can): HNN's latent has the true
    number of degrees of freedom, which imported data does not record."""
    fields = {f.name for f in dataclasses.fields(get_model(model).cls.Config)}
    if "dof" in fields and meta.get("dof") is None:
        return (
            f"{model} needs the true number of degrees of freedom, which this dataset does "
            "not record (imported data)"
        )
    return None


def run_config(settings: Settings, model: str, meta: Mapping[str, Any]) -> hgn_config.RunConfig:
    """The run config of ``model`` on data ``meta``: the model's ``small`` profile (at
    the smoke size, its config's defaults with the tiny networks of :data:`TINY`), the
    data's image size, the size's overrides (smoke: short windows), the cell's minutes
    and the seed."""
    model, variant = tuning.variant_of(model, settings.tuned)
    spec = get_model(model)
    base = hgn_config.resolve(PROFILE, model=model)
    values = dataclasses.asdict(spec.config({}) if settings.size.tiny else base.model)
    fields = set(values)
    over: dict[str, Any] = {"image_size": meta["size"]}
    if settings.size.tiny:
        over.update(TINY.get(spec.cls.__name__, TINY["HGNPP"]))
    over.update(settings.size.model)
    values.update({k: v for k, v in over.items() if k in fields})
    train = {
        **dataclasses.asdict(base.train),
        "steps": STEPS,
        "max_minutes": settings.minutes,
        "seed": settings.seed,
        "image_every": 0,
        "budget_clock": settings.clock,
    }
    if settings.size.tiny:
        train["batch_size"] = settings.size.batch_size
    tuning.apply_variant(model, variant, values, train)
    return hgn_config.RunConfig.from_dict({"model": {"name": model, **values}, "train": train})


def _train(run: Path, config: Any, data_path: Path, device: str, progress: bool) -> dict:
    """Train (or resume) the cell's run; its budget spent, ``trained.json`` records it."""
    marker = run / TRAINED
    if not marker.exists():
        resume = (run / CHECKPOINT).exists()
        result = hgn_train.train(
            data_path,
            run,
            None if resume else config,
            resume=resume,
            device=device,
            progress=progress,
        )
        write_json(
            marker,
            {"steps": result.step, "seconds": result.seconds, "stopped_by": result.stopped_by},
        )
    return json.loads(marker.read_text())


def _extrapolation(net: Any, test: Any, mean: torch.Tensor, settings: Settings) -> dict:
    """hgn's extrapolation protocol, summarised: a rollout the model cannot make is
    ``{"skipped": reason}`` (the protocol records it so), the whole ``{"cannot": reason}``
    where the protocol refuses the data outright (too short, say)."""
    size = settings.size
    try:
        results, _ = extrapolate.run_protocol(
            net,
            test,
            mean,
            start=size.start,
            max_sequences=size.eval_sequences,
            batch_size=size.batch_size,
            drift_steps=size.drift_steps,
            progress=False,
        )
    except UserError as exc:
        return {"cannot": str(exc)}
    for r in results["rollouts"].values():
        for key in [k for k in r if k.startswith("per_step")]:
            r.pop(key)
    return _finite_or_none(results)


def _samples(net: Any, saved: dict, test: Any, settings: Settings) -> dict:
    """Sample physics; ``{"n/a": …}`` where the data cannot be read back as physics,
    ``{"cannot": …}`` where the model has no prior."""
    if physics.readable(test) is None:
        return {"n/a": "the data has no simulator or fixed picture geometry to read back"}
    fit_recorded(net, saved)
    result = physics.score_samples(net, test, n=settings.size.sample_count, seed=settings.seed)
    if "skipped" in result:
        return {"cannot": result["skipped"]}
    return _finite_or_none(
        {
            "energy_spread_ratio": result["energy_spread_ratio"],
            "energy_matched_ratio": result["energy_matched_ratio"],
            "energy_outside_data_fraction": result["energy_outside_data_fraction"],
            "right_bodies": result["samples"].get("right_body_count_fraction"),
            "sampled_from": result.get("sampled_from"),
            "sequences": result["samples"].get("sequences"),
        }
    )


def _timed(compute: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """``compute`` with the seconds it took added to its result (``"seconds"``), so that
    a results.json shows where a cell's evaluation time went."""

    def timed() -> dict[str, Any]:
        start = time.perf_counter()
        result = compute()
        return {**result, "seconds": round(time.perf_counter() - start, 1)}

    return timed


def _new_record(settings: Settings, column: str, row: str) -> dict[str, Any]:
    """What a cell's result says before anything is trained: which cell, at which
    settings, and what its model declares it can do."""
    name, variant = tuning.variant_of(row, settings.tuned)
    cls = get_model(name).cls
    return {
        "dataset": column,
        "model": row,
        "size": settings.name,
        "minutes": settings.minutes,
        "seed": settings.seed,
        "variant": variant,
        "can_run_backwards": bool(cls.can_run_backwards),
        "can_change_speed": bool(cls.can_change_speed),
    }


def _scores(
    cell: Path,
    net: Any,
    saved: dict,
    data_path: Path,
    meta: Mapping[str, Any],
    settings: Settings,
    dev: torch.device,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every protocol's stage on the trained model (each resumable, with its seconds),
    and the arrays of the rollout strip."""
    test, size = hgn_data.load(data_path, "test"), settings.size
    strip: dict[str, np.ndarray] = {}

    def vpt() -> dict[str, Any]:
        result, arrays = metrics.dm_vpt_of(
            net, test, size.horizon, size.eval_sequences, size.batch_size, dev
        )
        strip.update(arrays)
        return result

    scores: dict[str, Any] = {"dm_vpt": _stage(cell, "dm-vpt", _timed(vpt))}
    scores["dm_vpt"].update(discriminates=style_of(meta) == "dm", style=style_of(meta))
    if not strip and "n/a" not in scores["dm_vpt"]:  # read back from a finished stage
        _, strip = metrics.dm_vpt_of(net, test, size.horizon, 1, 1, dev)
    symetric = functools.partial(
        metrics.symetric_of, net, test, size.symetric_batches, size.symetric_steps, dev,
        settings.seed,
    )  # fmt: skip
    scores["symetric"] = _stage(cell, "symetric", _timed(symetric))
    mean = mean_frame(hgn_data.load(data_path, "train")).to(dev)
    scores["extrapolation"] = _stage(
        cell, "extrapolation", _timed(lambda: _extrapolation(net, test, mean, settings))
    )
    scores["samples"] = _stage(
        cell, "samples", _timed(lambda: _samples(net, saved, test, settings))
    )
    return scores, strip


def run_cell(
    out: Path,
    settings: Settings,
    column: str,
    model: str,
    paths: Mapping[str, Path],
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Train and score one ``(dataset, model)`` cell; write its result last. ``model`` is
    a row: a registered model, or in a tuning sweep a model and its variant.

    ``paths["data"]``: the dataset (train and test splits). The signature is
    ``hgn reproduce``'s, so that its job pool runs benchmark cells too.
    """
    cell = out / "cells" / column / model
    cell.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    data_path = Path(paths["data"])
    meta = hgn_data.info(data_path)
    record = _new_record(settings, column, model)
    reason = data_refusal(tuning.split_row(model)[0], meta)
    if reason is not None:  # the data cannot train this model: say so everywhere
        record.update(
            cannot=reason,
            **{k: {"cannot": reason} for k in ("dm_vpt", "symetric", "extrapolation", "samples")},
        )
        write_json(cell / "result.json", record)
        return record
    run = cell / "run"
    record["train"] = _train(run, run_config(settings, model, meta), data_path, device, progress)
    net, saved = open_sequence_model(run, dev)
    record["config"] = dataclasses.asdict(net.config)
    record["context_frames"], record["state_offset"] = net.context_frames, net.state_offset
    scores, strip = _scores(cell, net, saved, data_path, meta, settings, dev)
    record.update(scores)
    if strip:
        with atomic_path(cell / "strip.npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **strip)
        record["files"] = {"strip": f"cells/{column}/{model}/strip.npz"}
    _require_finite(record, f"{column} × {model}")
    write_json(cell / "result.json", record)
    return record


def finished_cells(out: Path) -> dict[str, dict[str, Any]]:
    """All finished cells under ``out``, as ``{dataset: {model: result}}``."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((out / "cells").glob("*/*/result.json")):
        record = json.loads(path.read_text())
        found.setdefault(record["dataset"], {})[record["model"]] = record
    return found
