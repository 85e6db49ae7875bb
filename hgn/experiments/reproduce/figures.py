"""The paper's figures from finished cells: Figure 6 (per-step MSE on noisy and clean
data), Figure 7 (forward, backward, 2× and ½× speed rollouts), Figure 8 (samples from
the prior), and the extrapolation protocol's error curves. PNG files under
``DIR/figures``, written atomically; each cell's own extrapolation strip (truth, forward,
backward, 2×, ½× against the simulator) is written by the protocol into the cell."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hgn import plots
from hgn.evaluation.metrics import SCALE
from hgn.experiments.reproduce.profiles import HNN_MODELS, MODEL_LABELS, MODEL_ORDER, REGIMES
from hgn.experiments.reproduce.tables import ROLLOUT_NAMES, Cells, extrapolation_label

COLOURS = {
    "hnn": "#7f7f7f",
    "hnn-conv": "#bcbd22",
    "hnn-ac": "#8c564b",
    "hnn-conv-ac": "#e377c2",
    "hgn": "#1f77b4",
    "hgn-euler": "#d62728",
    "hgn-no-fpsi": "#9467bd",
    "hgn-determ": "#2ca02c",
    "hgn++": "#ff7f0e",
}
"""One colour per model, the same in every figure."""


def figure_per_step(cells: Cells, systems: Sequence[str], path: Path) -> None:
    """Figure 6: per-step pixel MSE of the test unroll on the paper's noisy data (top,
    with its noise floor dotted) and on clean data (bottom).

    A log scale shows HGN and HNN, an order of magnitude apart, on one plot.
    """
    plt = plots.pyplot()
    fig, axes = plt.subplots(2, len(systems), figsize=(3.6 * len(systems), 5.6), squeeze=False)
    for col, system in enumerate(systems):
        for row, regime in enumerate(REGIMES):
            ax = axes[row][col]
            floor = None
            for model in MODEL_ORDER:
                record = cells.get(system, {}).get(model)
                if record is None:
                    continue
                test = record["paper"][regime]["test"]
                curve = np.asarray(test["mse_per_step"]) * SCALE
                ax.plot(curve, label=MODEL_LABELS[model], color=COLOURS[model], lw=1.4)
                floor = (test["noise_floor_mse"] or 0.0) * SCALE
            if regime == "noisy" and floor:  # clean data: a round-off 'floor' only
                ax.axhline(floor, color="k", ls=":", lw=1, label="noise floor")
            ax.set_yscale("log")
            ax.set_title(f"{system} ({regime} test)", fontsize=10)
            ax.set_xlabel("step")
            if col == 0:
                ax.set_ylabel("pixel MSE ×1e4")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    plots.save_figure(fig, path)


def _strip(frames: np.ndarray, count: int) -> np.ndarray:
    """``count`` evenly spaced frames of ``(T+1, H, W, 3)``, as one row for plots.grid."""
    idx = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    return frames[idx]


def figure_rollouts(
    rollouts: Mapping[str, Mapping[str, np.ndarray]], system: str, path: Path, frames: int = 10
) -> None:
    """Figure 7: a train and a test sequence, HGN's forward, backward, 2× and ½× speed
    rollouts (from the first HGN variant available), and HNN's forward rollout."""
    plt = plots.pyplot()
    hgn = next((m for m in MODEL_ORDER if m not in HNN_MODELS and m in rollouts), None)
    hnn = next((m for m in HNN_MODELS if m in rollouts), None)
    rows: list[tuple[str, np.ndarray]] = []
    for split in ("train", "test"):
        any_model = rollouts[hgn or hnn]
        rows.append((f"{split}: data", any_model[f"{split}_truth"]))
        if hgn is not None:
            label = MODEL_LABELS[hgn]
            for kind, name in (
                ("forward", "forward"),
                ("backward", "backward (−dt)"),
                ("fast", "2× speed"),
                ("slow", "½× speed"),
            ):
                rows.append((f"{split}: {label} {name}", rollouts[hgn][f"{split}_{kind}"]))
        if hnn is not None:
            rows.append(
                (f"{split}: {MODEL_LABELS[hnn]} forward", rollouts[hnn][f"{split}_forward"])
            )
    fig, axes = plt.subplots(len(rows), 1, figsize=(frames * 0.9, len(rows) * 1.0), squeeze=False)
    for ax, (label, sequence) in zip(axes[:, 0], rows, strict=True):
        ax.imshow(plots.grid(_strip(sequence, frames)[None]), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(
        f"{system}: rollouts (every {max(1, (len(rows[0][1]) - 1) // (frames - 1))} steps)"
    )
    fig.tight_layout()
    plots.save_figure(fig, path)


def figure_samples(
    samples: Mapping[str, tuple[str, np.ndarray]], path: Path, frames: int = 10
) -> None:
    """Figure 8: trajectories sampled from the prior, z ~ N(0, I), per system."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(
        len(samples), 1, figsize=(frames * 0.9, 1.6 * len(samples)), squeeze=False
    )
    for ax, (system, (model, sequences)) in zip(axes[:, 0], samples.items(), strict=True):
        ax.imshow(
            plots.grid(np.stack([_strip(s, frames) for s in sequences])), interpolation="nearest"
        )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(
            f"{system}\n({MODEL_LABELS[model]})", rotation=0, ha="right", va="center", fontsize=8
        )
    fig.suptitle("samples from the prior")
    fig.tight_layout()
    plots.save_figure(fig, path)


def _curve(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def figure_extrapolation(cells: Cells, systems: Sequence[str], path: Path) -> None:
    """Extrapolation curves: each model's per-frame MSE as a fraction of the mean
    image's, along each rollout of the protocol (rows: forward, backward, 2×, ½×)
    against physical time in frames, from the state the model inferred; the dotted line
    at ½ is the valid-prediction threshold on clean data."""
    plt = plots.pyplot()
    rows = list(ROLLOUT_NAMES)
    fig, axes = plt.subplots(
        len(rows), len(systems), figsize=(3.6 * len(systems), 2.4 * len(rows)), squeeze=False
    )
    for col, system in enumerate(systems):
        for row, name in enumerate(rows):
            ax = axes[row][col]
            for model in MODEL_ORDER:
                record = cells.get(system, {}).get(model)
                if record is None:
                    continue
                ex = record["extrapolation"]
                r = ex["rollouts"][name]
                when = ex["state_frame"] + r["speed"] * np.arange(r["steps"] + 1)
                ratio = _curve(r["per_step_mse"]) / np.maximum(
                    _curve(r["per_step_mean_image_mse"]), 1e-30
                )
                label = extrapolation_label(record, model)
                ax.plot(when, ratio, color=COLOURS[model], lw=1.2, label=label)
            ax.axhline(0.5, color="k", ls=":", lw=1)
            ax.axhline(1.0, color="0.5", ls="--", lw=0.8)
            ax.set_yscale("log")
            ax.set_title(f"{system}: {ROLLOUT_NAMES[name]}", fontsize=9)
            if row == len(rows) - 1:
                ax.set_xlabel("frame (physical time)")
            if col == 0:
                ax.set_ylabel("MSE / mean-image MSE")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    plots.save_figure(fig, path)


def draw_figures(out: Path, cells: Cells, systems: Sequence[str]) -> dict[str, Any]:
    """Draw every figure the finished ``cells`` allow into ``out/figures``.

    Returns their paths relative to ``out`` (what report.html links to): ``fig6``,
    ``fig7`` (per system), ``fig8`` where a model has a prior, ``extrapolation``, and
    ``strips`` (per system, the HGN and HGN++ cells' extrapolation strips).
    """
    figures: dict[str, Any] = {}
    if not cells:
        return figures
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    shown = [s for s in systems if s in cells]
    figure_per_step(cells, shown, fig_dir / "fig6_per_step_mse.png")
    figures["fig6"] = "figures/fig6_per_step_mse.png"
    figures["fig7"] = {}
    figures["strips"] = {}
    samples: dict[str, tuple[str, np.ndarray]] = {}
    for system in shown:
        rollouts = {
            model: dict(np.load(out / record["files"]["rollouts"]))
            for model, record in cells[system].items()
        }
        name = f"fig7_{system}.png"
        figure_rollouts(rollouts, system, fig_dir / name)
        figures["fig7"][system] = f"figures/{name}"
        figures["strips"][system] = {
            model: cells[system][model]["files"]["extrapolation_strip"]
            for model in MODEL_ORDER
            if model in cells[system] and model not in HNN_MODELS
        }
        sampler = next((m for m in MODEL_ORDER if m in rollouts and "samples" in rollouts[m]), None)
        if sampler is not None:
            samples[system] = (sampler, rollouts[sampler]["samples"])
    if samples:
        figure_samples(samples, fig_dir / "fig8_samples.png")
        figures["fig8"] = "figures/fig8_samples.png"
    figure_extrapolation(cells, shown, fig_dir / "extrapolation.png")
    figures["extrapolation"] = "figures/extrapolation.png"
    return figures
