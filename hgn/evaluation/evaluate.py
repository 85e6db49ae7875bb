"""Evaluation of a trained run (paper Tables 1–2, Figures 6–8) and rollout/sample pictures.

Protocol (paper Sec. 4): the model infers the state from the frames its config says the
encoder sees (all of them in the paper; a prefix of k frames in the stricter protocol),
rolls out T steps, decodes, and every frame 0…T is compared with the ground-truth frame:
per-pixel MSE per step, then averaged over the scored frames and given as mean and
standard deviation over sequences. The scored frames (:func:`first_scored_frame`) are
the predicted ones: all T+1 in the paper's protocol, only those after the prefix in the
prefix protocol (the frames the encoder saw are reconstructions, not predictions; ``hgn
reproduce`` uses the same definition). For scale, the same numbers are given for the
mean-image baseline (always predict the training set's average frame), which is what a
model that learned no dynamics converges to (the paper's HNN failure mode).

Noise floor: the data renders every frame from a freshly noised state, so even a
model that knew the true trajectory could not beat E[render(q + noise)]; its MSE is
reported next to the baseline (at the paper's noise levels it is a large part of it).

Energy (Table 2): the learned H along each rollout; its variance over the rollout,
averaged over sequences. Valid prediction time (prefix protocol only): the number of
predicted frames after the prefix before a sequence's per-frame MSE first exceeds a
threshold placed ``vpt_fraction`` of the way from the noise floor to the mean-image
baseline's MSE on that split (:func:`vpt_threshold`; default ½: a prediction stops
counting once it has lost half of what separates a perfect model from ignoring the
input). A threshold of ½ × the mean-image MSE alone lies below the noise floor on
three-body, where even a perfect model would score 0.

A run records the data it was trained on; evaluating it on data of another system,
size, time step or noise still computes the numbers, but says so on the terminal and on
the first line of metrics.md.

Imported data (``hgn data import``) has frames but no true states: the numbers that need
them (the noise floor, physical position errors, the physics of prior samples) are
skipped, the valid-prediction threshold falls back to a floor of 0, and evaluate says so
once on the terminal and once in metrics.md (:data:`NO_STATES`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hgn import data as hgn_data
from hgn import plots as viz
from hgn.checks import check_range
from hgn.data import mean_frame, to_frames
from hgn.evaluation.physics import bind_rows, fit_recorded, samples_markdown, score_samples
from hgn.models import SequenceModel
from hgn.plots import check_output, hwc, plot_energy, plot_mse
from hgn.runs import data_mismatch, open_sequence_model
from hgn.utils import (
    UserError,
    atomic_path,
    check_output_dir,
    claim_output_dir,
    numpy_rng,
    positive_int,
    resolve_device,
)

SCALE = 1e4
"""The paper reports MSE and energy variance multiplied by 1e4."""

NO_STATES = (
    "the data has no true states (imported): the metrics that need them (noise floor, "
    "physical position error, sample physics) are skipped"
)
"""What ``hgn evaluate`` says, once, about imported data."""


# ----------------------------------------------------------------------------- numbers


@torch.no_grad()
def rollout_errors(
    model: SequenceModel,
    split: hgn_data.Split,
    n: int,
    batch_size: int,
    device: torch.device,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence, per-step MSE ``(n, T+1)`` and learned energy ``(n, T+1)``."""
    steps = split.meta["steps"]
    mses, energies = [], []
    for start in tqdm(
        range(0, n, batch_size), desc=f"evaluate {split.meta['split']}", disable=not progress
    ):
        frames = to_frames(np.asarray(split.images[start : min(start + batch_size, n)]), device)
        out = model.predict(frames, steps)
        mses.append((out["images"].float() - frames).square().mean((2, 3, 4)).cpu())
        energies.append(out["energy"].float().cpu())
    return torch.cat(mses).numpy(), torch.cat(energies).numpy()


def baseline_errors(split: hgn_data.Split, mean: torch.Tensor, n: int) -> np.ndarray:
    """Per-sequence, per-step MSE ``(n, T+1)`` of always predicting ``mean`` (3, H, W)."""
    out = []
    for start in range(0, n, 256):
        frames = to_frames(np.asarray(split.images[start : min(start + 256, n)]), "cpu")
        out.append((frames - mean).square().mean((2, 3, 4)))
    return torch.cat(out).numpy()


def noise_floor(split: hgn_data.Split, n: int, draws: int = 32, seed: int = 0) -> float:
    """The per-pixel MSE of the best possible prediction of the (noisy) frames.

    The data renders q + ε with fresh noise ε in every frame, which no model can
    predict; the optimal prediction under squared error given the true clean states is
    E_ε[render(q + ε)], estimated here from ``draws`` noisy renders (the estimate is
    biased up by about 1/draws of itself). Any model's MSE is at least this number.

    The frames are redrawn by the dataset's own simulator (:func:`hgn.data.system_of`:
    picture style, random colours, varied constants and canvas shifts bound per
    sequence), since any other renderer would put its own differences into the floor.
    Imported data has no states to redraw: a one-line :class:`UserError`.
    """
    meta = split.meta
    if split.q is None:
        raise UserError(f"{split.path}: {NO_STATES}")
    system = bind_rows(hgn_data.system_of(meta), split, slice(0, n))
    q = torch.from_numpy(np.array(split.q[:n])).double()
    rng = numpy_rng(seed, "noise-floor", meta["system"])
    expected = torch.zeros((*q.shape[:2], meta["size"], meta["size"], 3))
    with torch.no_grad():
        for _ in range(draws):
            noisy = q + meta["noise"] * torch.from_numpy(rng.standard_normal(q.shape))
            expected += system.render(noisy, meta["size"]).float() / 255.0
    frames = torch.from_numpy(np.array(split.images[:n])).float() / 255.0
    return float((expected / draws - frames).square().mean())


def error_stats(mse: np.ndarray, first: int = 0) -> dict[str, Any]:
    """Per-step curve (every frame given) and the average over the frames ``first``…T,
    mean ± std over sequences; ``first`` is :func:`first_scored_frame`."""
    per_seq = mse[:, first:].mean(1)
    return {
        "per_step_mean": mse.mean(0).tolist(),
        "per_step_std": mse.std(0).tolist(),
        "mean": float(per_seq.mean()),
        "std": float(per_seq.std()),
        "mean_x1e4": float(per_seq.mean() * SCALE),
        "std_x1e4": float(per_seq.std() * SCALE),
    }


def energy_stats(energy: np.ndarray) -> dict[str, float]:
    """H's level and its variance along each rollout (Table 2), over sequences."""
    var = energy.var(1)
    level = np.abs(energy.mean(1))
    return {
        "mean": float(energy.mean()),
        "var_mean": float(var.mean()),
        "var_std": float(var.std()),
        "var_mean_x1e4": float(var.mean() * SCALE),
        "relative_std": float((np.sqrt(var) / np.maximum(level, 1e-12)).mean()),
    }


def first_scored_frame(context: int, steps: int) -> int:
    """The first frame the averaged errors count: ``context`` in the prefix protocol
    (the encoder saw frames 0…context-1; only the rest are predictions), 0 in the paper's
    protocol (the encoder sees all T+1 frames and the paper scores all of them)."""
    return context if context <= steps else 0


def vpt_threshold(baseline_mse: float, floor: float | None, fraction: float = 0.5) -> float:
    """The valid-prediction threshold: ``floor + fraction × (baseline_mse − floor)``.

    ``baseline_mse`` is the mean-image MSE over the scored frames and ``floor`` the
    noise floor (:func:`noise_floor`), None where it is not known (then 0: the old
    ``fraction × baseline``). Without the floor, the threshold on noisy data can lie
    below what a perfect model achieves.
    """
    floor = 0.0 if floor is None else floor
    return floor + fraction * (baseline_mse - floor)


def valid_prediction_time(
    mse: np.ndarray, context: int, threshold: float | np.ndarray
) -> np.ndarray:
    """Predicted frames after the first ``context`` before the MSE first exceeds
    ``threshold`` (all of them if it never does), per sequence. ``threshold`` is one
    number or one per predicted frame (broadcast against ``mse[:, context:]``)."""
    predicted = mse[:, context:]
    bad = predicted > threshold
    return np.where(bad.any(1), bad.argmax(1), predicted.shape[1]).astype(np.int64)


def context_frames(model: SequenceModel, total: int) -> int:
    """How many leading frames the model infers its state from."""
    return min(model.context_frames, total)


def evaluate(
    run: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    max_sequences: int = 1000,
    batch_size: int = 32,
    device: str = "auto",
    vpt_fraction: float = 0.5,
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``run`` on both splits of ``data``; write ``out/metrics.{json,md}`` and
    plots, each file atomically, into ``out``: a new or empty directory, or one an
    earlier ``hgn evaluate`` wrote (never a run or a user's folder). ``warn`` receives
    a one-line message at once when the data is not what the run was trained on.
    Returns the metrics."""
    max_sequences = positive_int(max_sequences, "--max-sequences")
    batch_size = positive_int(batch_size, "--batch-size")
    check_range(vpt_fraction, "--vpt-fraction", gt=0, le=1)
    out = Path(out)
    dev = resolve_device(device)
    model, saved, splits, mismatch = open_run(run, data, out, dev, warn)
    states = splits["test"].has_states
    if not states and warn is not None:
        warn(NO_STATES)
    mean = mean_frame(splits["train"])
    steps = splits["test"].meta["steps"]
    context = context_frames(model, steps + 1)
    first = first_scored_frame(context, steps)
    metrics: dict[str, Any] = {
        "run": str(run),
        "data": str(data),
        "system": data_name(splits["test"].meta),
        "model": saved["config"]["model"]["name"],
        "trained_steps": int(saved["step"]),
        "trained_seconds": float(saved["seconds"]),
        "protocol": "paper (encoder sees every frame)" if context > steps else "prefix",
        "context_frames": context,
        "first_scored_frame": first,
        "unroll_steps": steps,
        "vpt_fraction": vpt_fraction,
        "trained_on": saved.get("trained_on"),
        "data_mismatch": mismatch,
        "skipped": None if states else NO_STATES,
        "splits": {},
    }
    curves: dict[str, np.ndarray] = {}
    energies = np.zeros((0, steps + 1))
    for name, split in splits.items():
        n = min(max_sequences, len(split))
        mse, energy = rollout_errors(model, split, n, batch_size, dev, progress)
        base = baseline_errors(split, mean, n)
        floor = noise_floor(split, min(n, 200)) if states else None
        base_mean = float(base[:, first:].mean())
        result: dict[str, Any] = {
            "n": n,
            "mse": error_stats(mse, first),
            "baseline_mse": error_stats(base, first),
            "ratio_to_baseline": float(mse[:, first:].mean()) / base_mean,
            "noise_floor_mse": floor,
            "noise_floor_ratio": None if floor is None else floor / base_mean,
            "energy": energy_stats(energy),
            "vpt": None,
        }
        if context <= steps:
            threshold = vpt_threshold(base_mean, floor, vpt_fraction)
            vpt = valid_prediction_time(mse, context, threshold)
            result["vpt"] = {
                "threshold": threshold,
                "steps_mean": float(vpt.mean()),
                "steps_std": float(vpt.std()),
                "of": steps + 1 - context,
            }
        metrics["splits"][name] = result
        curves[name], curves[f"{name} mean image"] = mse.mean(0), base.mean(0)
        if name == "test":
            energies = energy
    fit_recorded(model, saved)  # HGN++ samples its training data's aggregate posterior
    metrics["samples"] = score_samples(model, splits["test"]) if states else None
    claim_output_dir(out, "evaluate")
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    with atomic_path(out / "metrics.md") as tmp:
        tmp.write_text(metrics_markdown(metrics))
    with atomic_path(out / "mse_per_step.png") as tmp:
        plot_mse(curves, tmp)
    with atomic_path(out / "energy.png") as tmp:
        plot_energy(energies, tmp)
    return metrics


def data_name(meta: dict[str, Any]) -> str:
    """What the data is, for reports: its system, or where it was imported from."""
    return str(meta.get("system") or meta.get("source") or "unknown data")


def open_run(
    run: str | os.PathLike,
    data: str | os.PathLike,
    out: Path,
    device: torch.device,
    warn: Callable[[str], None] | None = None,
) -> tuple[SequenceModel, dict[str, Any], dict[str, hgn_data.Split], str | None]:
    """The start both protocols of ``hgn evaluate`` share, so that they refuse and warn
    alike: ``out`` is checked before any work (a new or empty directory, or an earlier
    ``hgn evaluate`` output), the run is loaded onto ``device`` and both splits of
    ``data`` are opened (lazily); images of another size are refused; ``warn`` hears at
    once when the data is not what the run was trained on. Returns the model, its
    checkpoint, the splits and the mismatch sentence (None when the data matches)."""
    if not out.parent.is_dir():
        raise UserError(f"cannot write {out}: directory {out.parent} does not exist")
    check_output_dir(out, "evaluate")
    model, saved = open_sequence_model(run, device)
    splits = {name: hgn_data.load(data, name) for name in hgn_data.SPLITS}
    check_compatible(model, splits["test"])
    mismatch = data_mismatch(saved.get("trained_on"), splits["test"].meta)
    if mismatch and warn is not None:
        warn(mismatch)
    return model, saved, splits, mismatch


def check_compatible(model: SequenceModel, split: hgn_data.Split) -> None:
    """Refuse (one line) a split whose images are not the size the model was built for:
    the networks would fail deep inside with a shape error."""
    size, want = split.meta["size"], model.image_size
    if size != want:
        raise UserError(
            f"{split.path} holds {size}×{size} images but the model was trained on {want}×{want}"
        )


def _pm(stats: dict[str, Any]) -> str:
    return f"{stats['mean_x1e4']:.2f} ± {stats['std_x1e4']:.2f}"


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """A human-readable summary of :func:`evaluate`'s metrics."""
    first, steps = metrics.get("first_scored_frame", 0), metrics["unroll_steps"]
    mismatch = metrics.get("data_mismatch")
    lines = [f"**Warning: {mismatch}.**", ""] if mismatch else []
    if metrics.get("skipped"):
        lines += [f"**Note: {metrics['skipped']}.**", ""]
    lines += [
        f"# Evaluation of `{metrics['run']}`",
        "",
        f"Model `{metrics['model']}` after {metrics['trained_steps']} steps "
        f"({metrics['trained_seconds'] / 60:.1f} min) on {metrics['system']} "
        f"(`{metrics['data']}`). Protocol: {metrics['protocol']}; the state is inferred "
        f"from {metrics['context_frames']} frame(s) and rolled out "
        f"{metrics['unroll_steps']} steps.",
        "",
        f"Per-pixel MSE averaged over the predicted frames {first}…{steps} of each rollout, "
        "×1e4, mean ± std over sequences; ratio = model MSE / mean-image MSE; noise "
        "floor = MSE of the best possible prediction given the true clean states (the "
        "data's per-frame observation noise is unpredictable), as a ratio to the "
        "mean-image MSE (n/a without true states); energy variance = variance of the "
        "learned H along a rollout, ×1e4, averaged over sequences.",
        "",
        "| split | sequences | MSE ×1e4 | mean-image MSE ×1e4 | ratio | noise floor ratio "
        "| H variance ×1e4 | H std / abs(mean H) | valid prediction time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in metrics["splits"].items():
        vpt = "n/a (paper protocol)"
        if s["vpt"] is not None:
            v = s["vpt"]
            vpt = f"{v['steps_mean']:.1f} ± {v['steps_std']:.1f} of {v['of']} steps"
        e = s["energy"]
        floor = s["noise_floor_ratio"]
        floor_text = "n/a" if floor is None else f"{floor:.3f}"
        lines.append(
            f"| {name} | {s['n']} | {_pm(s['mse'])} | {_pm(s['baseline_mse'])} "
            f"| {s['ratio_to_baseline']:.3f} | {floor_text} "
            f"| {e['var_mean_x1e4']:.3g} "
            f"| {e['relative_std']:.2e} | {vpt} |"
        )
    lines += ["", "Per-step MSE ×1e4 (mean over sequences):", ""]
    names = list(metrics["splits"])
    lines.append(
        "| step | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"{n} mean image" for n in names)
        + " |"
    )
    lines.append("|---" * (1 + 2 * len(names)) + "|")
    for t in sorted({*range(0, steps + 1, 5), steps}):
        model_cols = [metrics["splits"][n]["mse"]["per_step_mean"][t] * SCALE for n in names]
        base_cols = [
            metrics["splits"][n]["baseline_mse"]["per_step_mean"][t] * SCALE for n in names
        ]
        lines.append(f"| {t} | " + " | ".join(f"{v:.2f}" for v in [*model_cols, *base_cols]) + " |")
    if any(s["vpt"] for s in metrics["splits"].values()):
        lines += [
            "",
            "Valid prediction time: predicted frames after the prefix before the per-frame "
            f"MSE first exceeds noise floor + {metrics['vpt_fraction']} × (the split's "
            "mean-image MSE − noise floor), both over the predicted frames"
            + (" (floor 0 without true states)." if metrics.get("skipped") else "."),
        ]
    if metrics.get("samples"):
        lines += ["", samples_markdown(metrics["samples"])]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- pictures


def _magnify(size: int) -> int:
    return max(1, 128 // size)


def render_rollout(
    run: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    index: int = 0,
    steps: int = 30,
    speed: float = 1.0,
    backward: bool = False,
    split: str = "test",
    fps: int = 8,
    device: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Roll sequence ``index`` out ``steps`` steps at ``speed`` × dt (negated when
    ``backward``) next to the simulator's frame at the same time (paper Fig. 7; between
    and before the stored frames re-simulated with the dataset's system). Writes a
    GIF/MP4 (truth | prediction) or a PNG strip; an existing ``out`` is replaced only
    with ``overwrite``."""
    out = Path(out)
    check_output(out, (".gif", ".mp4", ".png"), overwrite)
    steps = positive_int(steps, "--steps")
    if not (math.isfinite(speed) and speed > 0):
        raise UserError(f"--speed must be a positive number, got {speed}")
    dev = resolve_device(device)
    model, _ = open_sequence_model(run, dev)
    seqs = hgn_data.load(data, split)
    check_compatible(model, seqs)
    if not 0 <= index < len(seqs):
        raise UserError(f"--index {index} is out of range: the {split} split has {len(seqs)}")
    from hgn.evaluation.extrapolate import rollout_with_truth  # it imports this module

    signed = -speed if backward else speed  # model.rollout sub-steps at the trained dt
    pred, gt = rollout_with_truth(model, seqs, index, steps, signed, dev)
    pair = hwc(torch.stack([gt, pred], 1))  # (steps+1, 2, H, W, 3)
    pair = viz.upscale(pair, _magnify(pair.shape[-2]))
    if out.suffix.lower() == ".png":
        return viz.save_image(out, viz.grid(pair.transpose(1, 0, 2, 3, 4)))
    frames = np.stack([viz.grid(p[None]) for p in pair])
    return viz.save_animation(out, frames, fps=fps)


def render_samples(
    run: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n: int = 8,
    steps: int = 30,
    seed: int = 0,
    fps: int = 8,
    device: str = "auto",
    overwrite: bool = False,
) -> Path:
    """New trajectories from the prior (paper Fig. 8): a GIF/MP4 of ``n`` side by side,
    or a PNG with one row per sample. ``seed`` fixes the draws; an existing ``out`` is
    replaced only with ``overwrite``."""
    out = Path(out)
    check_output(out, (".gif", ".mp4", ".png"), overwrite)
    n, steps = positive_int(n, "--n"), positive_int(steps, "--steps")
    dev = resolve_device(device)
    model, saved = open_sequence_model(run, dev)
    fit_recorded(model, saved)  # as hgn evaluate scores them
    torch.manual_seed(seed)
    with torch.no_grad():
        images = hwc(model.sample(n, steps))  # (n, steps+1, H, W, 3)
    images = viz.upscale(images, _magnify(images.shape[-2]))
    if out.suffix.lower() == ".png":
        return viz.save_image(out, viz.grid(images))
    frames = np.stack([viz.grid(images[:, t][None]) for t in range(images.shape[1])])
    return viz.save_animation(out, frames, fps=fps)
