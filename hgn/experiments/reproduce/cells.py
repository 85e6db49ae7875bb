"""One cell of the comparison, a ``(system, model)`` pair: train it with ``hgn train``'s
code, evaluate it with ``hgn evaluate``'s, draw its rollouts, and record the result.

A cell lives in ``DIR/cells/SYSTEM/MODEL/``. Its ``result.json`` is written atomically
and last, so its existence means 'finished': a finished cell is never recomputed or
overwritten, and an interrupted one resumes from its training checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hgn import plots
from hgn.experiments.reproduce.profiles import HNN_MODELS, Profile
from hgn.training import config as hgn_config
from hgn.training import train as hgn_train
from hgn.utils import UserError, atomic_path, resolve_device, write_json

VPT_FRACTION = 0.5
"""Valid prediction time: the number of predicted steps before the per-frame MSE first
exceeds a threshold ``VPT_FRACTION`` of the way from the noise floor to the MSE of
always predicting the mean training frame (``hgn evaluate``'s definition,
:func:`hgn.evaluation.evaluate.vpt_threshold`): before the prediction has lost half of
what separates a perfect model from the 'average image' a collapsed model (the paper's
failure mode of HNN) produces. A fixed absolute threshold would mean different things
for the four systems, whose discs cover different fractions of the frame, and one
without the floor can lie below what a perfect model scores on noisy data."""

TRAINED = "trained.json"
"""Written beside a run's checkpoint when its training budget is spent: a later resume
of the cell then evaluates the model as it is instead of training it further."""


def model_config(profile: Profile, model: str, meta: Mapping[str, Any], prefix: bool) -> dict:
    """The config overrides of one model on one dataset: the profile's widths plus what
    the data fixes (image size, sequence length, time step; HNN also needs ``dof``)."""
    values: dict[str, Any] = {
        "image_size": meta["size"],
        "frames": meta["steps"] + 1,
        "dt": meta["dt"],
    }
    if model in HNN_MODELS:
        values.update(profile.hnn, dof=meta["dof"])
    else:
        values.update(profile.hgn)
        if prefix:
            values["context_frames"] = profile.context
    return values


def _trained(
    run: Path,
    model: str,
    values: Mapping[str, Any],
    data_path: Path,
    profile: Profile,
    device: str,
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Train (or resume) one run with the shared trainer, then load it for evaluation."""
    from hgn.training.loop import CHECKPOINT

    marker = run / TRAINED
    if not marker.exists():
        resume = (run / CHECKPOINT).exists()
        config = None
        if not resume:
            config = hgn_config.RunConfig.from_dict(
                {
                    "model": {"name": model, **values},
                    "train": {
                        "steps": profile.train_steps,
                        "batch_size": profile.batch_size,
                        "lr": profile.lr,
                        "seed": profile.seed,
                        "max_minutes": profile.max_minutes,
                        "image_every": 0,
                    },
                }
            )
        result = hgn_train.train(
            data_path, run, config, resume=resume, device=device, progress=progress
        )
        write_json(
            marker,
            {"steps": result.step, "seconds": result.seconds, "stopped_by": result.stopped_by},
        )
    net, _ = hgn_config.load_model(run, resolve_device(device))
    return net, json.loads(marker.read_text())


def _paper_metrics(run: Path, data_path: Path, out: Path, profile: Profile, device: str) -> dict:
    """Tables 1–2 and Figure 6 numbers of both splits, from ``hgn evaluate`` itself
    (its full output stays in ``out`` for inspection)."""
    from hgn.evaluation import evaluate as hgn_eval

    metrics = hgn_eval.evaluate(
        run,
        data_path,
        out,
        max_sequences=profile.eval_sequences,
        batch_size=profile.batch_size,
        device=device,
        progress=False,
    )
    return {
        split: {
            "sequences": s["n"],
            "mse": s["mse"]["mean"],
            "mse_std": s["mse"]["std"],
            "mse_per_step": s["mse"]["per_step_mean"],
            "energy_var": s["energy"]["var_mean"],
            "energy_var_std": s["energy"]["var_std"],
            "energy_relative_std": s["energy"]["relative_std"],
            "mean_image_mse": s["baseline_mse"]["mean"],
        }
        for split, s in metrics["splits"].items()
    }


def _prefix_metrics(
    net: Any, split: Any, mean: torch.Tensor, profile: Profile, device: Any
) -> dict:
    """Prefix protocol with ``hgn evaluate``'s metric functions: the model sees the first
    ``context`` frames (HNN: its first pair), predicts the rest of the long test
    sequences; per-step error over the ``horizon`` predicted frames, and the valid
    prediction time between the noise floor and the mean training frame's error over
    those frames (see :data:`VPT_FRACTION`)."""
    from hgn.evaluation.evaluate import (
        baseline_errors,
        error_stats,
        noise_floor,
        rollout_errors,
        valid_prediction_time,
        vpt_threshold,
    )

    n, c = len(split), profile.context
    mse, _ = rollout_errors(net, split, n, profile.batch_size, device, progress=False)
    base = baseline_errors(split, mean.cpu(), n)
    floor = noise_floor(split, min(n, 200))
    threshold = vpt_threshold(float(base[:, c:].mean()), floor, VPT_FRACTION)
    vpt = valid_prediction_time(mse, c, threshold)
    stats = error_stats(mse[:, c:])
    return {
        "context": c,
        "horizon": profile.horizon,
        "sequences": n,
        "mse": stats["mean"],
        "mse_std": stats["std"],
        "mse_per_step": stats["per_step_mean"],
        "vpt": float(vpt.mean()),
        "vpt_std": float(vpt.std()),
        "threshold": threshold,
        "mean_frame_mse": float(base[:, c:].mean()),
        "noise_floor_mse": floor,
    }


def _uint8(images: torch.Tensor) -> np.ndarray:
    """``(..., 3, H, W)`` floats in [0, 1] -> ``(..., H, W, 3)`` uint8 for pictures."""
    return plots.to_uint8(plots.hwc(images))


@torch.no_grad()
def _rollout_pictures(
    net: Any, data_path: Path, profile: Profile, device: torch.device
) -> dict[str, np.ndarray]:
    """Arrays for Figures 7–8 and the animation: one train and up to four test sequences,
    rolled out forward, backward, at double and at half speed; prior samples if any."""
    from hgn import data
    from hgn.data import to_frames

    dt = net.config.dt
    arrays: dict[str, np.ndarray] = {}
    for name in ("train", "test"):
        split = data.load(data_path, name)
        steps = split.meta["steps"]
        frames = to_frames(np.asarray(split.images[:4]), device)
        arrays[f"{name}_truth"] = _uint8(frames[0])
        for kind, step in (("forward", dt), ("backward", -dt), ("fast", 2 * dt), ("slow", dt / 2)):
            arrays[f"{name}_{kind}"] = _uint8(net.predict(frames[:1], steps, step)["images"][0])
        if name == "test":
            pred = net.predict(frames, steps)["images"]
            arrays["animation"] = np.stack([_uint8(frames), _uint8(pred)], axis=1)
    with contextlib.suppress(UserError):  # HNN and the deterministic HGN have no prior
        arrays["samples"] = _uint8(net.sample(3, profile.steps))
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

    Training resumes from the cell's checkpoint if an earlier run was interrupted. The
    result file is written atomically at the very end, so its existence means 'done'.
    """
    from hgn import data
    from hgn.data import mean_frame

    cell = out / "cells" / system / model
    cell.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    meta = data.info(paths["main"])
    values = model_config(profile, model, meta, prefix=False)
    net, trained = _trained(cell / "run", model, values, paths["main"], profile, device, progress)
    record: dict[str, Any] = {
        "system": system,
        "model": model,
        "profile": profile.name,
        "config": dataclasses.asdict(net.config),
        "train": {"paper": trained},
        "paper": _paper_metrics(cell / "run", paths["main"], cell / "evaluate", profile, device),
        "prefix": None,
    }
    arrays = _rollout_pictures(net, paths["main"], profile, dev)
    animation = arrays.pop("animation")  # (n, 2, T+1, H, W, 3): truth | prediction
    frames = np.stack([plots.grid(animation[:, :, t]) for t in range(animation.shape[2])])
    plots.save_animation(
        cell / "test.gif", plots.upscale(frames, max(1, 64 // profile.size)), fps=8
    )
    with atomic_path(cell / "rollouts.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    record["files"] = {
        "rollouts": f"cells/{system}/{model}/rollouts.npz",
        "animation": f"cells/{system}/{model}/test.gif",
    }
    if model in profile.prefix_models:
        if model in HNN_MODELS:  # reads only the first frame pair: no retraining needed
            prefix_net = net
        else:
            values = model_config(profile, model, meta, prefix=True)
            prefix_net, record["train"]["prefix"] = _trained(
                cell / "run-prefix", model, values, paths["main"], profile, device, progress
            )
        mean = mean_frame(data.load(paths["main"], "train"))
        long = data.load(paths["long"], "test")
        record["prefix"] = _prefix_metrics(prefix_net, long, mean, profile, dev)
    _require_finite(record, f"{system} × {model}")
    write_json(cell / "result.json", record)
    return record


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
        record = json.loads(path.read_text())
        cells.setdefault(record["system"], {})[record["model"]] = record
    return cells
