"""One cell of the comparison, a ``(system, model)`` pair: train it on the paper's noisy
data and on clean data with ``hgn train``'s code, evaluate both with ``hgn evaluate``'s
(Tables 1–2, sample physics), run the extrapolation protocol
(:mod:`hgn.evaluation.extrapolate`) on the clean long test set, draw its rollouts, and
record the result.

A cell lives in ``DIR/cells/SYSTEM/MODEL/``. Its ``result.json`` is written atomically
and last, so its existence means 'finished': a finished cell is never recomputed or
overwritten. An interrupted one resumes: a training run from its checkpoint, and every
finished stage (``stage-*.json``, written atomically) is read back instead of redone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hgn import plots
from hgn.experiments.reproduce.profiles import LONG_RUN, REGIMES, ROWS, Profile
from hgn.runs import open_sequence_model
from hgn.training import config as hgn_config
from hgn.training import train as hgn_train
from hgn.utils import UserError, atomic_path, read_json, resolve_device, write_json

VPT_FRACTION = 0.5
"""Valid prediction time: the number of predicted steps before a frame's MSE first
exceeds a threshold ``VPT_FRACTION`` of the way from the noise floor to that frame's
mean-image MSE (the extrapolation protocol's definition,
:func:`hgn.evaluation.metrics.score`; on the clean long test sets the floor is 0)."""

TRAINED = "trained.json"
"""Written beside a run's checkpoint when its training budget is spent: a later resume
of the cell then evaluates the model as it is instead of training it further."""


def model_config(profile: Profile, model: str, meta: Mapping[str, Any]) -> dict:
    """The config overrides of one table row on one dataset: the profile's widths plus
    what the data fixes (image size, sequence length, time step; HNN also needs ``dof``),
    then the row's own settings (:attr:`~hgn.experiments.reproduce.profiles.Row.settings`)."""
    row = ROWS.lookup(model)
    values: dict[str, Any] = {
        "image_size": meta["size"],
        "frames": meta["steps"] + 1,
        "dt": meta["dt"],
    }
    if row.baseline:
        if meta.get("dof") is None:
            raise UserError(
                f"{meta.get('path', 'the dataset')} records no degrees of freedom (imported "
                "data); the HNN rows need them (their latent has the true dimension): "
                "leave hnn* out of --models"
            )
        values.update(profile.hnn, dof=meta["dof"])
    elif row.model == "hgn++":
        values.update(profile.hgnpp)
    else:
        values.update(profile.hgn)
    values.update(row.settings.get("model", {}))
    if row.baseline and row.settings:  # the anti-collapse rows, as this profile sizes them
        values.update(profile.hnn_ac)
    return values


def train_settings(profile: Profile, model: str, long: bool = False) -> dict[str, Any]:
    """The ``train`` section of one row's runs: the profile's, HGN++'s own batch and
    learning rate where it has them, and the baselines' shorter time cap. ``long``: the
    budget of HGN++'s long-data run (:data:`~hgn.experiments.reproduce.profiles.LONG_RUN`)."""
    row = ROWS.lookup(model)
    minutes = profile.max_minutes
    if row.baseline and profile.baseline_minutes is not None:
        minutes = profile.baseline_minutes
    steps = profile.train_steps
    if long:
        minutes, steps = profile.hgnpp_minutes, profile.hgnpp_train_steps
    values = {
        "steps": steps,
        "batch_size": profile.batch_size,
        "lr": profile.lr,
        "seed": profile.seed,
        "max_minutes": minutes,
        "image_every": 0,
    }
    if row.model == "hgn++":
        values.update(profile.hgnpp_train)
    values.update(row.settings.get("train", {}))
    return values


def _trained(
    run: Path,
    model: str,
    values: Mapping[str, Any],
    data_path: Path,
    profile: Profile,
    device: str,
    progress: bool = True,
    long: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Train (or resume) one run with the shared trainer, then load it for evaluation."""
    from hgn.runs import CHECKPOINT

    marker = run / TRAINED
    if not marker.exists():
        resume = (run / CHECKPOINT).exists()
        config = None
        if not resume:
            config = hgn_config.RunConfig.from_dict(
                {
                    "model": {"name": ROWS.lookup(model).model, **values},
                    "train": train_settings(profile, model, long),
                }
            )
        result = hgn_train.train(
            data_path, run, config, resume=resume, device=device, progress=progress
        )
        write_json(
            marker,
            {"steps": result.step, "seconds": result.seconds, "stopped_by": result.stopped_by},
        )
    net, _ = open_sequence_model(run, resolve_device(device))
    return net, json.loads(marker.read_text())


def _stage(cell: Path, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A stage's numbers: read back from ``stage-NAME.json`` if an earlier, interrupted
    run of the cell finished it, else computed and saved there (atomically)."""
    path = cell / f"stage-{name}.json"
    if path.is_file():
        return read_json(path)
    value = compute()
    write_json(path, value)
    return value


def _paper_metrics(run: Path, data_path: Path, out: Path, profile: Profile, device: str) -> dict:
    """Tables 1–2, Figure 6 and sample-physics numbers of both splits, from ``hgn
    evaluate`` itself (its full output stays in ``out`` for inspection)."""
    from hgn.evaluation import commands as hgn_eval

    metrics = hgn_eval.evaluate(
        run,
        data_path,
        out,
        max_sequences=profile.eval_sequences,
        batch_size=profile.batch_size,
        device=device,
        progress=False,
    )
    splits = {
        split: {
            "sequences": s["n"],
            "mse": s["mse"]["mean"],
            "mse_std": s["mse"]["std"],
            "mse_per_step": s["mse"]["per_step_mean"],
            "energy_var": s["energy"]["var_mean"],
            "energy_var_std": s["energy"]["var_std"],
            "energy_relative_std": s["energy"]["relative_std"],
            "mean_image_mse": s["baseline_mse"]["mean"],
            # None on imported data (no states, so no floor): no excess either
            "noise_floor_mse": s["noise_floor_mse"],
            "excess": None
            if s["noise_floor_mse"] is None
            else s["mse"]["mean"] - s["noise_floor_mse"],
            "first_scored_frame": metrics["first_scored_frame"],
        }
        for split, s in metrics["splits"].items()
    }
    return {**splits, "samples": _finite_or_none(metrics["samples"])}


def _finite_or_none(value: Any) -> Any:
    """``value`` with NaN/Inf replaced by None: a sample-physics number that could not be
    measured (no body found in any frame) is missing, not a failed cell."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _extrapolation(
    net: Any, paths: Mapping[str, Path], out: Path, profile: Profile, device: torch.device
) -> dict[str, Any]:
    """The extrapolation protocol (:func:`hgn.evaluation.extrapolate.run_protocol`) of
    ``net`` (the clean-data model; HGN++'s long-data one) on the clean long test set,
    against the clean training set's mean image; its table and pictures
    (forward/backward/2×/½× strip, error curves, learned-H drift) are written into
    ``out`` by the protocol's own writer."""
    from hgn import data
    from hgn.data import mean_frame
    from hgn.evaluation import extrapolate
    from hgn.evaluation.commands import write as write_extrapolate

    long = data.load(paths["long"], "test")
    mean = mean_frame(data.load(paths["clean"], "train")).to(device)
    results, pictures = extrapolate.run_protocol(
        net,
        long,
        mean,
        start=profile.start,
        max_sequences=profile.extrapolation_sequences,
        batch_size=profile.batch_size,
        vpt_fraction=VPT_FRACTION,
        drift_steps=profile.drift_steps,
        progress=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    files = write_extrapolate(results, pictures, out)
    results["files"] = {key: path.name for key, path in files.items()}
    return _finite_or_none(results)


def _uint8(images: torch.Tensor) -> np.ndarray:
    """``(..., 3, H, W)`` floats in [0, 1] -> ``(..., H, W, 3)`` uint8 for pictures."""
    return plots.to_uint8(plots.hwc(images))


@torch.no_grad()
def _rollout_pictures(
    nets: Mapping[str, Any], paths: Mapping[str, Path], profile: Profile, device: torch.device
) -> dict[str, np.ndarray]:
    """Arrays for Figures 7–8 and the animation: one train and up to four test sequences
    of the paper's (noisy) data, rolled out by the noisy-data model forward, backward, at
    double and at half speed; prior samples of the clean-data model (whose sample
    physics samples.md reports; HGN++'s long-data model), if it has a prior."""
    from hgn import data
    from hgn.data import to_frames

    net = nets["noisy"]
    dt = net.config.dt
    arrays: dict[str, np.ndarray] = {}
    for name in ("train", "test"):
        split = data.load(paths["noisy"], name)
        steps = split.meta["steps"]
        frames = to_frames(np.asarray(split.images[:4]), device)
        arrays[f"{name}_truth"] = _uint8(frames[0])
        for kind, step in (("forward", dt), ("backward", -dt), ("fast", 2 * dt), ("slow", dt / 2)):
            arrays[f"{name}_{kind}"] = _uint8(net.predict(frames[:1], steps, step)["images"][0])
        if name == "test":
            pred = net.predict(frames, steps)["images"]
            arrays["animation"] = np.stack([_uint8(frames), _uint8(pred)], axis=1)
    # HNN and the deterministic HGN have no prior; the profile's seed, global RNG untouched
    with contextlib.suppress(UserError), torch.random.fork_rng():
        torch.manual_seed(profile.seed)
        sampler = nets.get(LONG_RUN, nets["clean"])
        arrays["samples"] = _uint8(sampler.sample(3, profile.steps))
    return arrays


def run_cell(
    out: Path,
    profile: Profile,
    system: str,
    model: str,
    paths: Mapping[str, Path],
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Train, evaluate and draw one ``(system, model)`` cell; write its result last.

    ``paths``: the system's ``noisy`` and ``clean`` datasets and its clean ``long`` test
    set; for HGN++ also ``hgnpp``, the clean long training set of its own run
    (:data:`~hgn.experiments.reproduce.profiles.LONG_RUN`: its paper-protocol numbers on
    the clean test set, its extrapolation and its samples). Training resumes from the
    cell's checkpoints and finished stages are read back
    if an earlier run was interrupted. The result file is written atomically at the very
    end, so its existence means 'done'.
    """
    from hgn import data

    cell = out / "cells" / system / model
    cell.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    nets: dict[str, Any] = {}
    record = _new_record(system, model, profile)
    for name, train_data, test_data, long in _cell_runs(model, paths):
        values = model_config(profile, model, {**data.info(train_data), "path": train_data})
        run = cell / f"run-{name}"
        nets[name], record["train"][name] = _trained(
            run, model, values, train_data, profile, device, progress, long=long
        )
        record["config"][name] = dataclasses.asdict(nets[name].config)
        metrics = _stage(
            cell,
            f"paper-{name}",
            lambda run=run, name=name, test_data=test_data: _paper_metrics(
                run, test_data, cell / f"evaluate-{name}", profile, device
            ),
        )
        record["samples"][name] = metrics.pop("samples")
        record["paper"][name] = metrics
    record["extrapolation_run"] = LONG_RUN if LONG_RUN in nets else "clean"
    record["extrapolation"] = _stage(
        cell,
        "extrapolation",
        lambda: _extrapolation(
            nets[record["extrapolation_run"]], paths, cell / "extrapolate", profile, dev
        ),
    )
    _save_rollouts(cell, _rollout_pictures(nets, paths, profile, dev), profile.size)
    record["files"] = _cell_files(system, model, record["extrapolation"]["files"])
    _require_finite(record, f"{system} × {model}")
    write_json(cell / "result.json", record)
    return record


def _new_record(system: str, model: str, profile: Profile) -> dict[str, Any]:
    """What a cell's result says it is, with a section per stage for the stages to fill
    (``config``, ``train``, ``paper`` and ``samples`` by run name)."""
    return {
        "system": system,
        "model": model,
        "registered_model": ROWS.lookup(model).model,
        "profile": profile.name,
        "config": {},
        "train": {},
        "paper": {},
        "samples": {},
    }


def _cell_runs(model: str, paths: Mapping[str, Path]) -> list[tuple[str, Path, Path, bool]]:
    """The cell's training runs: ``(name, its training data, the test data of its
    paper-protocol numbers, whether it has its own long budget)``, one per regime, and
    HGN++'s long run, whose paper numbers are on the clean 30-step test set."""
    runs = [(regime, paths[regime], paths[regime], False) for regime in REGIMES]
    if ROWS.lookup(model).long_run:
        if "hgnpp" not in paths:
            raise UserError(f"{model} needs its clean long training set (paths['hgnpp'])")
        runs.append((LONG_RUN, paths["hgnpp"], paths["clean"], True))
    return runs


def _save_rollouts(cell: Path, arrays: dict[str, np.ndarray], size: int) -> None:
    """The test animation as a GIF (truth beside prediction, enlarged to about 64 pixels
    so it can be seen) and every other picture array into ``rollouts.npz``."""
    animation = arrays.pop("animation")  # (n, 2, T+1, H, W, 3): truth | prediction
    frames = np.stack([plots.grid(animation[:, :, t]) for t in range(animation.shape[2])])
    plots.save_animation(cell / "test.gif", plots.upscale(frames, max(1, 64 // size)), fps=8)
    with atomic_path(cell / "rollouts.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def _cell_files(system: str, model: str, extrapolation: Mapping[str, str]) -> dict[str, str]:
    """The cell's files relative to the reproduction's folder, as the report links them."""
    return {
        "rollouts": f"cells/{system}/{model}/rollouts.npz",
        "animation": f"cells/{system}/{model}/test.gif",
        **{
            f"extrapolation_{key}": f"cells/{system}/{model}/extrapolate/{name}"
            for key, name in extrapolation.items()
        },
    }


def _require_finite(value: Any, where: str) -> None:
    """Refuse to record NaN/Inf metrics as a finished cell (JSON could not hold them)."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            _require_finite(item, where)
    elif isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"cell {where} produced a non-finite metric; it was not recorded")


def finished_cells(out: Path) -> dict[str, dict[str, Any]]:
    """All finished cells under ``out``, as ``{system: {model: result}}``."""
    cells: dict[str, dict[str, Any]] = {}
    for path in sorted((out / "cells").glob("*/*/result.json")):
        record = read_json(path, "delete it to run that cell again")
        if not (
            isinstance(record, dict)
            and isinstance(record.get("system"), str)
            and isinstance(record.get("model"), str)
        ):
            raise UserError(f"{path} is not a cell's result; delete it to run that cell again")
        cells.setdefault(record["system"], {})[record["model"]] = record
    return cells
