"""What ``hgn evaluate``, ``hgn rollout`` and ``hgn sample`` do: open the run and the
data, run a protocol (:mod:`hgn.evaluation.evaluate`, :mod:`hgn.evaluation.extrapolate`),
and write its numbers (:mod:`hgn.evaluation.reports`) and pictures
(:mod:`hgn.evaluation.pictures`), each file atomically, into a directory that is new,
empty or an earlier ``hgn evaluate`` output (never a run or a user's folder).

A run records the data it was trained on; evaluating it on data of another system,
size, time step or noise still computes the numbers, but says so on the terminal and on
the first line of the report.
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

from hgn import data as hgn_data
from hgn import plots as viz
from hgn.checks import check_range
from hgn.data import mean_frame
from hgn.evaluation.evaluate import data_name, protocol_of, score_split
from hgn.evaluation.extrapolate import (
    DEFAULT_START,
    DRIFT_STEPS,
    NO_STATES_EXTRAPOLATE,
    check_align,
    check_start,
    rollout_with_truth,
    run_protocol,
)
from hgn.evaluation.metrics import NO_STATES
from hgn.evaluation.physics import score_samples
from hgn.evaluation.pictures import (
    _labelled_strip,
    _magnify,
    plot_drift,
    plot_errors,
    rollout_pictures,
)
from hgn.evaluation.reports import FILES, markdown, metrics_markdown
from hgn.models import SequenceModel
from hgn.plots import check_output, hwc, plot_energy, plot_mse
from hgn.runs import data_mismatch, fit_recorded, open_sequence_model
from hgn.utils import (
    UserError,
    atomic_path,
    check_output_dir,
    claim_output_dir,
    positive_int,
    resolve_device,
)


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
    """``hgn evaluate RUN --data D``: the paper's protocol on both splits of ``data``;
    writes ``out/metrics.{json,md}`` and plots. ``warn`` receives a one-line message at
    once when the data is not what the run was trained on. Returns the metrics."""
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
    metrics: dict[str, Any] = {
        "run": str(run),
        "data": str(data),
        "system": data_name(splits["test"].meta),
        **_training_done(saved),
        **protocol_of(model, splits["test"].meta["steps"]),
        "vpt_fraction": vpt_fraction,
        "trained_on": saved.get("trained_on"),
        "data_mismatch": mismatch,
        "skipped": None if states else NO_STATES,
        "splits": {},
    }
    curves: dict[str, np.ndarray] = {}
    energies = np.zeros((0, metrics["unroll_steps"] + 1))
    for name, split in splits.items():
        n = min(max_sequences, len(split))
        metrics["splits"][name], mse, base, energy = score_split(
            model, split, mean, n=n, batch_size=batch_size, device=dev,
            vpt_fraction=vpt_fraction, progress=progress,
        )  # fmt: skip
        curves[name], curves[f"{name} mean image"] = mse.mean(0), base.mean(0)
        if name == "test":
            energies = energy
    fit_recorded(model, saved)  # HGN++ samples its training data's aggregate posterior
    metrics["samples"] = score_samples(model, splits["test"]) if states else None
    _write_metrics(out, metrics, curves, energies)
    return metrics


def _training_done(saved: dict[str, Any]) -> dict[str, Any]:
    """The model and how long it trained, from its checkpoint: both protocols' reports
    name them, since numbers of an early checkpoint are not the run's."""
    return {
        "model": saved["config"]["model"]["name"],
        "trained_steps": int(saved["step"]),
        "trained_seconds": float(saved["seconds"]),
    }


def _write_metrics(
    out: Path, metrics: dict[str, Any], curves: dict[str, np.ndarray], energies: np.ndarray
) -> None:
    """Claim ``out`` and write the paper protocol's files, only once every number is
    computed (a failed evaluation leaves no half-written report), each atomically."""
    claim_output_dir(out, "evaluate")
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    with atomic_path(out / "metrics.md") as tmp:
        tmp.write_text(metrics_markdown(metrics))
    with atomic_path(out / "mse_per_step.png") as tmp:
        plot_mse(curves, tmp)
    with atomic_path(out / "energy.png") as tmp:
        plot_energy(energies, tmp)


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
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Roll sequence ``index`` out ``steps`` steps at ``speed`` × dt (negated when
    ``backward``) next to the simulator's frame at the same time (paper Fig. 7; between
    and before the stored frames re-simulated with the dataset's system). Writes a
    GIF/MP4 (truth | prediction) or a PNG strip; an existing ``out`` is replaced only
    with ``overwrite``; ``warn`` hears when the data is not what the run was trained on."""
    out = Path(out)
    check_output(out, (".gif", ".mp4", ".png"), overwrite)
    steps = positive_int(steps, "--steps")
    if not (math.isfinite(speed) and speed > 0):
        raise UserError(f"--speed must be a positive number, got {speed}")
    dev = resolve_device(device)
    model, saved = open_sequence_model(run, dev)
    seqs = hgn_data.load(data, split)
    check_compatible(model, seqs)
    mismatch = data_mismatch(saved.get("trained_on"), seqs.meta)
    if mismatch and warn is not None:  # as hgn evaluate says it
        warn(mismatch)
    if not 0 <= index < len(seqs):
        raise UserError(f"--index {index} is out of range: the {split} split has {len(seqs)}")
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
    say: Callable[[str], None] | None = None,
) -> Path:
    """New trajectories from the prior (paper Fig. 8): a GIF/MP4 of ``n`` side by side,
    or a PNG with one row per sample. ``seed`` fixes the draws; an existing ``out`` is
    replaced only with ``overwrite``; ``say`` hears where the first states come from."""
    out = Path(out)
    check_output(out, (".gif", ".mp4", ".png"), overwrite)
    n, steps = positive_int(n, "--n"), positive_int(steps, "--steps")
    dev = resolve_device(device)
    model, saved = open_sequence_model(run, dev)
    fit_recorded(model, saved)  # a run from before samplers travelled with it
    if say is not None:
        say(f"sampling from {model.sampling_from}")
    torch.manual_seed(seed)
    with torch.no_grad():
        images = hwc(model.sample(n, steps))  # (n, steps+1, H, W, 3)
    images = viz.upscale(images, _magnify(images.shape[-2]))
    if out.suffix.lower() == ".png":
        return viz.save_image(out, viz.grid(images))
    frames = np.stack([viz.grid(images[:, t][None]) for t in range(images.shape[1])])
    return viz.save_animation(out, frames, fps=fps)


def extrapolate(
    run: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    start: int = DEFAULT_START,
    max_sequences: int = 1000,
    batch_size: int = 32,
    device: str = "auto",
    vpt_fraction: float = 0.5,
    drift_steps: int = DRIFT_STEPS,
    align: str = "start",
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
    oracle: bool = False,
    backward_start: int | str | None = None,
) -> dict[str, Any]:
    """``hgn evaluate RUN --data LONGTEST --protocol extrapolate`` (``oracle``: with the
    oracle's row, :mod:`hgn.evaluation.oracle`; ``backward_start``: the backward
    rollout's own window, a frame or ``"end"``): run the protocol on
    the test split and write ``extrapolate.{json,md}`` and pictures into ``out`` (each
    file atomically; ``out`` must be new, empty or an earlier ``hgn evaluate`` output).
    ``warn`` hears at once when the data is not what the run was trained on (the length
    may differ: that is the point)."""
    start = check_start(start)
    check_range(vpt_fraction, "--vpt-fraction", gt=0, le=1)
    drift_steps = positive_int(drift_steps, "drift steps")
    check_align(align)  # before the run is opened
    out = Path(out)
    dev = resolve_device(device)
    model, saved, splits, mismatch = open_run(run, data, out, dev, warn)
    split, train = splits["test"], splits["train"]
    source = train if len(train) else split
    mean = mean_frame(source).to(dev)
    results, pictures = run_protocol(
        model,
        split,
        mean,
        start=start,
        max_sequences=max_sequences,
        batch_size=batch_size,
        vpt_fraction=vpt_fraction,
        drift_steps=drift_steps,
        align=align,
        progress=progress,
        oracle=oracle,
        backward_start=backward_start,
    )
    if not split.has_states and warn is not None:  # once the protocol is known to fit
        warn(NO_STATES_EXTRAPOLATE)
    results = {
        "run": str(run),
        "data": str(data),
        **_training_done(saved),
        "mean_image": f"average frame of the {source.meta['split']} split of {data} "
        f"({min(len(source), 1000)} sequences)",
        "data_mismatch": mismatch,
        **results,
    }
    write(results, pictures, claim_output_dir(out, "evaluate"))
    return results


def write(results: dict[str, Any], pictures: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write the JSON, the Markdown table and the pictures into ``out``, atomically."""
    paths = {key: out / name for key, name in FILES.items()}
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(markdown(results))
    strip, movie = rollout_pictures(pictures, results)
    _labelled_strip(strip, results, paths["strip"])
    viz.save_animation(paths["gif"], movie, fps=8)
    plot_errors(results, paths["errors"])
    plot_drift(pictures["energy"], results, paths["energy"])
    return paths
