"""The pictures of ``hgn evaluate --protocol extrapolate``: the rollout strip and movie
(truth above each rollout), the per-step error curves and the energy drift."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from hgn import plots as viz
from hgn.evaluation.extrapolate import ROLLOUTS
from hgn.utils import (
    atomic_path,
)


def _magnify(size: int) -> int:
    return max(1, 128 // size)


def _columns(s0: int, last: int, count: int = 16) -> np.ndarray:
    """Frames shown in the strip: an even stride through ``s0``, so that every rollout
    (2× lands on every other frame, ½× on every half frame) has a state there."""
    stride = 2 * max(1, math.ceil(last / (2 * (count - 1))))
    return np.arange(s0 - (s0 // stride) * stride, last + 1, stride)


def _state_frame(results: dict[str, Any], r: dict[str, Any]) -> float:
    """The frame rollout ``r`` starts at: its own (the backward rollout reads a window of
    its own with ``--backward-start``), else the protocol's state frame."""
    return r["frames"][0] if "frames" in r else results["state_frame"]


def _state_at(
    pictures: dict[str, Any], results: dict[str, Any], name: str, frame: float, hold: bool
) -> np.ndarray | None:
    """Rollout ``name``'s predicted frame at physical time ``frame``, if it has one
    there; with ``hold``, its latest state before ``frame`` (2× has a state only every
    other frame, and an animation should not flicker)."""
    r = results["rollouts"][name]
    if "skipped" in r:  # a rollout the model cannot do: blank
        return None
    k = (frame - _state_frame(results, r)) / r["speed"]
    if hold:
        k = math.floor(k + 1e-9)
    if k < -1e-9 or k > r["steps"] + 1e-9 or abs(k - round(k)) > 1e-9:
        return None
    return pictures[name][round(k)]


def rollout_pictures(
    pictures: dict[str, Any], results: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """The strip ``(5, columns, H, W, 3)`` and the animation frames ``(T+1, H', W', 3)``
    of the shown test sequence; white where a rollout does not reach."""
    truth = pictures["truth"].astype(np.float32) / 255.0  # (T+1, H, W, 3)
    blank = np.ones_like(truth[0])
    last = truth.shape[0] - 1
    factor = max(1, 96 // truth.shape[1])

    def row_at(frame: int, hold: bool) -> np.ndarray:
        cells = [truth[frame]]
        for r in ROLLOUTS:
            img = _state_at(pictures, results, r.name, frame, hold)
            cells.append(blank if img is None else img)
        return np.stack(cells)

    columns = _columns(results["state_frame"], last)
    strip = np.stack([row_at(int(c), hold=False) for c in columns], 1)
    movie = np.stack(
        [viz.grid(viz.upscale(row_at(t, hold=True)[None], factor)) for t in range(last + 1)]
    )
    names = ["truth", *(r.name for r in ROLLOUTS)]
    header = _header(names, truth.shape[1] * factor, movie.shape[2])
    movie = np.concatenate([np.broadcast_to(header, (len(movie), *header.shape)), movie], 1)
    return viz.upscale(strip, factor), movie


def _header(names: list[str], cell: int, width: int, height: int = 16) -> np.ndarray:
    """A white bar ``(height, width, 3)`` uint8 naming the columns of a
    :func:`hgn.plots.grid` row of ``cell``-pixel cells (drawn once, by matplotlib)."""
    plt = viz.pyplot()
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    for i, name in enumerate(names):
        centre = 1 + i * (cell + 1) + cell / 2
        fig.text(centre / width, 0.45, name, ha="center", va="center", fontsize=7)
    fig.canvas.draw()
    bar = np.asarray(fig.canvas.buffer_rgba())[:height, :width, :3].copy()
    plt.close(fig)
    return bar


def _labelled_strip(strip: np.ndarray, results: dict[str, Any], path: Path) -> None:
    """The strip with row names and frame numbers (matplotlib), PNG, atomically."""
    plt = viz.pyplot()
    image = viz.grid(strip)
    rows, cols = strip.shape[:2]
    cell_h, cell_w = strip.shape[2] + 1, strip.shape[3] + 1
    size = (1.0 + image.shape[1] / 100, 0.6 + image.shape[0] / 100)
    fig, ax = plt.subplots(figsize=size, dpi=100)
    ax.imshow(image)
    names = ["truth", *(r.label for r in ROLLOUTS)]
    ax.set_yticks([1 + cell_h * (i + 0.5) for i in range(rows)], names, fontsize=8)
    columns = _columns(results["state_frame"], results["frames"] - 1)
    ticks = [1 + cell_w * (j + 0.5) for j in range(cols)]
    ax.set_xticks(ticks, [str(c) for c in columns], fontsize=7)
    where = f"window from frame {results['start']}, rollouts from frame {results['state_frame']}"
    if results.get("rolled_back_steps"):
        where += f" (state inferred at {results['state_frame'] + results['rolled_back_steps']})"
    ax.set_xlabel(f"frame ({where})", fontsize=8)
    title = f"{results['system']}: truth and rollouts of test sequence {results['shown']}"
    ax.set_title(title, fontsize=9)
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.tick_params(length=0)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_errors(results: dict[str, Any], path: Path) -> None:
    """Per-frame MSE (and RMS position error) of every rollout against physical time."""
    plt = viz.pyplot()
    has_pos = any("per_step_position_rms" in r for r in results["rollouts"].values())
    fig, axes = plt.subplots(1, 2 if has_pos else 1, figsize=(11 if has_pos else 6, 4), dpi=110)
    axes = np.atleast_1d(axes)
    starts = {results["state_frame"]}
    for i, (name, r) in enumerate(results["rollouts"].items()):
        if "skipped" in r:
            continue
        starts.add(_state_frame(results, r))
        when = _state_frame(results, r) + r["speed"] * np.arange(r["steps"] + 1)
        colour = f"C{i}"
        curve = np.array([np.nan if v is None else v for v in r["per_step_mse"]])
        axes[0].plot(when, curve, "-", color=colour, label=r["label"], lw=1.4)
        if name in ("forward", "backward"):
            base = np.array([np.nan if v is None else v for v in r["per_step_mean_image_mse"]])
            thr = np.array([np.nan if v is None else v for v in r["per_step_threshold"]])
            first = i == 0
            axes[0].plot(when, base, "--", color="0.4", lw=1, label="mean image" if first else None)
            axes[0].plot(
                when, thr, ":", color="0.4", lw=1, label="VPT threshold" if first else None
            )
        if has_pos and "per_step_position_rms" in r:
            pos = np.array([np.nan if v is None else v for v in r["per_step_position_rms"]])
            axes[1].plot(when, pos, "-", color=colour, label=r["label"], lw=1.4)
    axes[0].set(xlabel="frame (physical time)", ylabel="per-pixel MSE", yscale="log")
    axes[0].set_title("image error along each rollout", fontsize=9)
    if has_pos:
        axes[1].set(xlabel="frame (physical time)", ylabel="RMS position error (world units)")
        axes[1].set_title("body positions read back from the frames", fontsize=9)
    for ax in axes:
        for s0 in sorted(starts):
            ax.axvline(s0, color="k", lw=0.8, alpha=0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_drift(energy: np.ndarray, results: dict[str, Any], path: Path, count: int = 8) -> None:
    """The learned H along the long forward rollouts, relative to its start."""
    plt = viz.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    level = np.maximum(np.abs(energy[:, :1]), 1e-12)
    for row in ((energy - energy[:, :1]) / level)[:count]:
        ax.plot(np.arange(len(row)), row, lw=1)
    ax.set(
        xlabel="rollout step",
        ylabel="(H − H₀) / |H₀|",
        title=f"learned H over {results['energy_drift']['steps']} steps",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
