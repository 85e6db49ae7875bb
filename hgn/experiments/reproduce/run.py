"""One command for the paper's comparison: datasets → every model on every system →
Tables 1–2, Figures 6–8, the prefix protocol, and a static ``report.html``.

The unit of work is a *cell*, one ``(system, model)`` pair. A cell trains its model with
the shared trainer (``hgn train``'s code), evaluates it with the shared evaluator
(``hgn evaluate``'s code), renders its rollouts and animations, and finally writes
``cells/SYSTEM/MODEL/result.json`` atomically. A cell whose result exists is finished and
is never recomputed or overwritten, so rerunning the command resumes where it stopped; a
cell interrupted mid-training resumes from its last checkpoint. The tables, figures and
the report are rebuilt from all finished cells at the end of every run (cheap), so a
partial run still yields a readable, honestly labelled report.

Two protocols are evaluated:

* **paper** (Tables 1–2, Fig. 6–8): the encoder sees the whole sequence (HGN) or its
  first frame pair (HNN); error of the ``T``-step unroll, on train and test sequences.
* **prefix** (beyond the paper): infer from the first ``context`` frames and predict
  ``horizon`` further frames of longer test trajectories; per-step error curves and the
  valid prediction time. An encoder that sees all frames can score well on the paper's
  protocol by describing the sequence rather than learning its dynamics; here it cannot.
  HGN variants are retrained with ``input_frames = context`` for it; HNN reads only a
  frame pair anyway, so its paper-protocol model is evaluated as is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import difflib
import html
import json
import math
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hgn import __version__
from hgn import plots as viz
from hgn.training import config as hgn_config
from hgn.training import train as hgn_train
from hgn.utils import UserError, atomic_path, positive_int, resolve_device

MODEL_ORDER = ("hnn", "hnn-conv", "hgn", "hgn-euler", "hgn-no-fpsi", "hgn-determ")
"""Rows of the paper's tables, in the paper's order."""

MODEL_LABELS = {
    "hnn": "HNN",
    "hnn-conv": "HNN Conv",
    "hgn": "HGN",
    "hgn-euler": "HGN Euler",
    "hgn-no-fpsi": "HGN no f_ψ",
    "hgn-determ": "HGN deterministic",
}
SYSTEM_ORDER = ("mass-spring", "pendulum", "two-body", "three-body")
"""Columns of the paper's tables, in the paper's order."""

HNN_MODELS = ("hnn", "hnn-conv")
SCALE = 1e4
"""Tables 1 and 2 report values multiplied by 1e4, as the paper does."""

PUBLISHED_MSE: dict[str, dict[str, tuple[float, float]]] = {
    "hgn": {
        "mass-spring": (3.84, 6.23),
        "pendulum": (4.90, 11.72),
        "two-body": (6.36, 16.47),
        "three-body": (7.88, 9.80),
    },
    "hgn-euler": {
        "mass-spring": (3.67, 6.20),
        "pendulum": (5.43, 10.93),
        "two-body": (6.62, 15.06),
        "three-body": (7.51, 9.40),
    },
    "hgn-determ": {
        "mass-spring": (0.23, 3.07),
        "pendulum": (0.79, 10.68),
        "two-body": (2.34, 14.47),
        "three-body": (4.10, 5.17),
    },
}
"""Table 1 of the paper (×1e4, train / test), as far as our copy of it has the numbers
(SPEC.md §5): the HNN, HNN Conv and no-f_ψ rows and Table 2 were lost with the tables'
layout; the paper says HNN was an order of magnitude worse on all four systems."""

VPT_FRACTION = 0.5
"""Valid prediction time: the number of predicted steps before the per-frame MSE first
exceeds ``VPT_FRACTION`` × the MSE of always predicting the mean training frame, i.e.
before the prediction is no longer clearly better than the 'average image' a collapsed
model (the paper's failure mode of HNN) produces; ``hgn evaluate``'s default. A fixed
absolute threshold would mean different things for the four systems, whose discs cover
different fractions of the frame."""


# ----------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class Profile:
    """Everything that sizes a reproduction run. Recorded in ``DIR/profile.json``."""

    name: str
    description: str
    size: int
    """Image height and width."""
    steps: int
    """Steps per trajectory (T); the paper's unroll is 30."""
    n_train: int
    n_test: int
    train_steps: int
    """Optimisation steps per model (each model, each system)."""
    batch_size: int
    lr: float
    max_minutes: float | None
    """Wall-clock cap per training run (None: none); the steps done are recorded."""
    eval_sequences: int
    """Sequences of each split evaluated for Tables 1–2 (at most the split's size)."""
    context: int
    """Prefix protocol: frames the encoder sees."""
    horizon: int
    """Prefix protocol: further frames predicted."""
    prefix_models: tuple[str, ...]
    """Models evaluated on the prefix protocol (HGN variants listed here are retrained)."""
    hgn: Mapping[str, Any] = field(default_factory=dict)
    """Config overrides shared by the HGN variants (network widths)."""
    hnn: Mapping[str, Any] = field(default_factory=dict)
    """Config overrides shared by HNN and HNN Conv."""
    dt: float = 0.125
    seed: int = 0

    def settings(self) -> dict[str, Any]:
        """The profile as plain JSON values, as recorded in ``DIR/profile.json``."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def identity(self) -> dict[str, Any]:
        """What must match to add cells to an existing results directory: every
        setting that changes a number (not the description)."""
        return {k: v for k, v in self.settings().items() if k != "description"}


_TINY_HGN = {
    "latent_channels": 4,
    "encoder_filters": [8, 8, 8],
    "fpsi_filters": [8],
    "hamiltonian_filters": [8, 8, 8, 8],
    "decoder_filters": [8],
}
_TINY_HNN = {
    "hidden": 32,
    "hamiltonian_hidden": 32,
    "latent_channels": 4,
    "encoder_filters": [8, 8, 8],
    "decoder_filters": [8],
}

_SMALL_NETS = {
    key: value
    for key, value in hgn_config.PROFILES["small"]["model"].items()
    if key not in ("name", "image_size", "frames")
}
"""The network widths of ``hgn train --profile small`` (one definition of 'small')."""

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="pipeline check only: tiny data and networks, a few steps; "
        "its numbers mean nothing",
        size=16,
        steps=8,
        n_train=8,
        n_test=4,
        train_steps=2,
        batch_size=4,
        lr=1e-3,
        max_minutes=None,
        eval_sequences=4,
        context=3,
        horizon=8,
        prefix_models=MODEL_ORDER,
        hgn=_TINY_HGN,
        hnn=_TINY_HNN,
    ),
    "small": Profile(
        name="small",
        description="a CPU-sized comparison (2 cores, 1–2 hours with --jobs 2): 32×32 images, the "
        "paper's 30-step sequences, 1,000 training sequences per system, the narrower "
        "networks and 5-minute training budget of `hgn train --profile small`",
        size=32,
        steps=30,
        n_train=1000,
        n_test=200,
        train_steps=3000,
        batch_size=hgn_config.PROFILES["small"]["train"]["batch_size"],
        lr=hgn_config.PROFILES["small"]["train"]["lr"],
        max_minutes=hgn_config.PROFILES["small"]["train"]["max_minutes"],
        eval_sequences=200,
        context=5,
        horizon=60,
        prefix_models=("hnn", "hnn-conv", "hgn"),
        hgn=_SMALL_NETS,
        hnn={
            "frames": 8,
            "encoder_filters": _SMALL_NETS["encoder_filters"],
            "decoder_filters": _SMALL_NETS["decoder_filters"],
        },
    ),
    "paper": Profile(
        name="paper",
        description="the published scale, for GPUs: 64×64 images, 50,000 + 10,000 "
        "sequences per system, the paper's networks and optimiser (Adam 1.5e-4, batch 16), "
        "the training length of `hgn train --profile paper`",
        size=64,
        steps=30,
        n_train=50_000,
        n_test=10_000,
        train_steps=hgn_config.PROFILES["paper"]["train"]["steps"],
        batch_size=16,
        lr=1.5e-4,
        max_minutes=None,
        eval_sequences=10_000,
        context=5,
        horizon=60,
        prefix_models=("hnn", "hnn-conv", "hgn"),
    ),
}
"""Reproduction profiles. ``small`` takes its networks, batch size, learning rate and
time budget, and ``paper`` its training length (which the paper does not state), from
``hgn train``'s profiles of the same names, so one definition serves both commands."""


def choose(values: str | Sequence[str] | None, allowed: Sequence[str], what: str) -> list[str]:
    """Validate a comma-separated list (or a sequence) against ``allowed``.

    Returns the unique choices in ``allowed``'s order (the tables' order). A typo gets
    one clear line naming the closest valid value.
    """
    if values is None:
        return list(allowed)
    items = values.split(",") if isinstance(values, str) else list(values)
    items = [item.strip() for item in items if item.strip()]
    if not items:
        raise UserError(f"no {what} given; choose from: {', '.join(allowed)}")
    for item in items:
        if item not in allowed:
            close = difflib.get_close_matches(item, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"unknown {what} {item!r}{hint}; choose from: {', '.join(allowed)}")
    return [a for a in allowed if a in items]


def get_profile(name: str) -> Profile:
    """Look up a profile by name, with the valid names in the error."""
    return PROFILES[choose([name], list(PROFILES), "profile")[0]]


# ----------------------------------------------------------------------------- tables


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if value != 0 and (abs(value) >= 1000 or abs(value) < 0.01):
        return f"{value:.2e}"
    return f"{value:.2f}"


def _cell_text(stats: Mapping[str, Any] | None, key: str, published: float | None) -> str:
    """``ours ± sd [paper]`` for one table cell, scaled by 1e4."""
    ours = (
        "—"
        if stats is None
        else f"{_fmt(stats[key] * SCALE)} ± {_fmt(stats[key + '_std'] * SCALE)}"
    )
    return ours if published is None else f"{ours} [{published:.2f}]"


def table_rows(
    cells: Mapping[str, Mapping[str, Any]], key: str, systems: Sequence[str]
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of Table 1 (``key='mse'``) or Table 2 (``key='energy_var'``)."""
    header = ["model"] + [f"{s} {split}" for s in systems for split in ("train", "test")]
    rows = []
    for model in MODEL_ORDER:
        row = [MODEL_LABELS[model]]
        for system in systems:
            record = cells.get(system, {}).get(model)
            published = PUBLISHED_MSE.get(model, {}).get(system) if key == "mse" else None
            for i, split in enumerate(("train", "test")):
                stats = None if record is None else record["paper"][split]
                row.append(_cell_text(stats, key, None if published is None else published[i]))
        rows.append(row)
    if key == "mse":  # what a model that ignores its input scores (HNN's collapse)
        row = ["Mean image (reference)"]
        for system in systems:
            record = next(iter(cells.get(system, {}).values()), None)
            for split in ("train", "test"):
                mean = None if record is None else record["paper"][split]["mean_image_mse"]
                row.append("—" if mean is None else _fmt(mean * SCALE))
        rows.append(row)
    return header, rows


def training_rows(
    cells: Mapping[str, Mapping[str, Any]], systems: Sequence[str]
) -> tuple[list[str], list[list[str]]]:
    """Optimisation steps each run actually made, and what stopped it (the step budget
    or the wall-clock cap): models are compared at equal time, not equal steps."""
    header = ["model"] + [f"{s} {run}" for s in systems for run in ("paper", "prefix")]
    rows = []
    for model in MODEL_ORDER:
        row = [MODEL_LABELS[model]]
        for system in systems:
            trained = (cells.get(system, {}).get(model) or {}).get("train", {})
            for run in ("paper", "prefix"):
                info = trained.get(run)
                row.append("—" if info is None else f"{info['steps']} ({info['stopped_by']})")
        rows.append(row)
    return header, rows


def prefix_rows(
    cells: Mapping[str, Mapping[str, Any]], systems: Sequence[str]
) -> tuple[list[str], list[list[str]]]:
    """Valid prediction time (steps) and mean MSE (×1e4) over the predicted horizon."""
    header = ["model"] + [f"{s} {what}" for s in systems for what in ("VPT", "MSE")]
    rows = []
    for model in MODEL_ORDER:
        row, filled = [MODEL_LABELS[model]], False
        for system in systems:
            prefix = (cells.get(system, {}).get(model) or {}).get("prefix")
            if prefix is None:
                row += ["—", "—"]
                continue
            filled = True
            row.append(f"{prefix['vpt']:.1f} ± {prefix['vpt_std']:.1f}")
            row.append(f"{_fmt(prefix['mse'] * SCALE)} ± {_fmt(prefix['mse_std'] * SCALE)}")
        if filled:
            rows.append(row)
    return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The same table as :func:`markdown_table`, in HTML (cell texts escaped)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def checks(cells: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's acceptance figures per system, where both cells exist.

    ``hgn_vs_hnn``: HNN's test MSE divided by HGN's (target ≥ 5).
    ``leapfrog_vs_euler``: HGN's and HGN Euler's test energy variance (target: leapfrog
    lower), with the scale-free std(H)/|mean H| beside it, since a learned H's scale is
    arbitrary and a nearly constant H has a small variance for any integrator.
    """
    out: dict[str, dict[str, Any]] = {"hgn_vs_hnn": {}, "leapfrog_vs_euler": {}}
    for system, row in cells.items():
        if "hgn" in row and "hnn" in row:
            ratio = row["hnn"]["paper"]["test"]["mse"] / max(
                row["hgn"]["paper"]["test"]["mse"], 1e-12
            )
            out["hgn_vs_hnn"][system] = {"ratio": ratio, "passed": ratio >= 5.0}
        if "hgn" in row and "hgn-euler" in row:
            lf, eu = row["hgn"]["paper"]["test"], row["hgn-euler"]["paper"]["test"]
            out["leapfrog_vs_euler"][system] = {
                "leapfrog": lf["energy_var"],
                "euler": eu["energy_var"],
                "leapfrog_relative_std": lf.get("energy_relative_std"),
                "euler_relative_std": eu.get("energy_relative_std"),
                "passed": lf["energy_var"] < eu["energy_var"],
            }
    return out


# ----------------------------------------------------------------------------- figures

_COLOURS = {
    "hnn": "#7f7f7f",
    "hnn-conv": "#bcbd22",
    "hgn": "#1f77b4",
    "hgn-euler": "#d62728",
    "hgn-no-fpsi": "#9467bd",
    "hgn-determ": "#2ca02c",
}


def _save_figure(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def figure_per_step(
    cells: Mapping[str, Mapping[str, Any]], systems: Sequence[str], path: Path
) -> None:
    """Figure 6: per-step pixel MSE of the unroll, train (top) and test (bottom) rows.

    A log scale shows HGN and HNN, an order of magnitude apart, on one plot.
    """
    plt = viz.pyplot()
    fig, axes = plt.subplots(2, len(systems), figsize=(3.6 * len(systems), 5.6), squeeze=False)
    for col, system in enumerate(systems):
        for row, split in enumerate(("train", "test")):
            ax = axes[row][col]
            for model in MODEL_ORDER:
                record = cells.get(system, {}).get(model)
                if record is None:
                    continue
                curve = np.asarray(record["paper"][split]["mse_per_step"]) * SCALE
                ax.plot(curve, label=MODEL_LABELS[model], color=_COLOURS[model], lw=1.4)
            ax.set_yscale("log")
            ax.set_title(f"{system} ({split})", fontsize=10)
            ax.set_xlabel("step")
            if col == 0:
                ax.set_ylabel("pixel MSE ×1e4")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _save_figure(fig, path)
    plt.close(fig)


def _strip(frames: np.ndarray, count: int) -> np.ndarray:
    """``count`` evenly spaced frames of ``(T+1, H, W, 3)``, as one row for viz.grid."""
    idx = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    return frames[idx]


def figure_rollouts(
    rollouts: Mapping[str, Mapping[str, np.ndarray]], system: str, path: Path, frames: int = 10
) -> None:
    """Figure 7: a train and a test sequence, HGN's forward, backward, 2× and ½× speed
    rollouts (from the first HGN variant available), and HNN's forward rollout."""
    plt = viz.pyplot()
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
        ax.imshow(viz.grid(_strip(sequence, frames)[None]), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(
        f"{system}: rollouts (every {max(1, (len(rows[0][1]) - 1) // (frames - 1))} steps)"
    )
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def figure_samples(
    samples: Mapping[str, tuple[str, np.ndarray]], path: Path, frames: int = 10
) -> None:
    """Figure 8: trajectories sampled from the prior, z ~ N(0, I), per system."""
    plt = viz.pyplot()
    fig, axes = plt.subplots(
        len(samples), 1, figsize=(frames * 0.9, 1.6 * len(samples)), squeeze=False
    )
    for ax, (system, (model, sequences)) in zip(axes[:, 0], samples.items(), strict=True):
        ax.imshow(
            viz.grid(np.stack([_strip(s, frames) for s in sequences])), interpolation="nearest"
        )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(
            f"{system}\n({MODEL_LABELS[model]})", rotation=0, ha="right", va="center", fontsize=8
        )
    fig.suptitle("samples from the prior")
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def figure_prefix(
    cells: Mapping[str, Mapping[str, Any]], systems: Sequence[str], path: Path
) -> None:
    """Prefix protocol: per-step MSE of the predicted frames, with each model's VPT."""
    plt = viz.pyplot()
    fig, axes = plt.subplots(1, len(systems), figsize=(3.6 * len(systems), 3.2), squeeze=False)
    for ax, system in zip(axes[0], systems, strict=True):
        threshold = None
        for model in MODEL_ORDER:
            prefix = (cells.get(system, {}).get(model) or {}).get("prefix")
            if prefix is None:
                continue
            curve = np.asarray(prefix["mse_per_step"]) * SCALE
            steps = np.arange(1, len(curve) + 1)
            ax.plot(
                steps,
                curve,
                color=_COLOURS[model],
                lw=1.4,
                label=f"{MODEL_LABELS[model]} (VPT {prefix['vpt']:.1f})",
            )
            threshold = prefix["threshold"] * SCALE
        if threshold is not None:
            ax.axhline(threshold, color="k", ls=":", lw=1, label="VPT threshold")
        ax.set_yscale("log")
        ax.set_title(system, fontsize=10)
        ax.set_xlabel("predicted step")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("pixel MSE ×1e4")
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


# ----------------------------------------------------------------------------- report

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1500px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}
th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:right}
th:first-child,td:first-child{text-align:left}
thead{background:#f0f0f0}
img{max-width:100%;image-rendering:pixelated}
.gifs{display:flex;flex-wrap:wrap;gap:1em}
.gifs figure{margin:0}
.gifs figcaption{font-size:0.8em;text-align:center}
.note{color:#555;font-size:0.9em}
.warn{color:#a00}
"""

_IMAGE_CHECK = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var el = document.getElementById("image-check");
  el.setAttribute("data-images", String(imgs.length));
  el.setAttribute("data-broken", String(broken.length));
  el.textContent = broken.length === 0
    ? "All " + imgs.length + " images loaded."
    : broken.length + " of " + imgs.length + " images failed to load: " +
      broken.map(function (i) { return i.getAttribute("src"); }).join(", ");
});
"""


def _relative(check: Mapping[str, Any]) -> str:
    lf, eu = check.get("leapfrog_relative_std"), check.get("euler_relative_std")
    if lf is None or eu is None:
        return ""
    return f"; std(H)/|mean H|: leapfrog {lf:.2e}, Euler {eu:.2e}"


def _img(src: str, alt: str) -> str:
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}" loading="eager">'


def write_report(out: Path, summary: Mapping[str, Any], figures: Mapping[str, Any]) -> Path:
    """``out/report.html``: tables, figures and animations, relative links only.

    It needs no server and no network. A small inline script counts images that failed
    to load and writes the count into ``#image-check`` (also read by the tests).
    """
    cells = summary["cells"]
    systems = summary["systems"]
    profile = summary["profile"]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>hgn reproduction: {html.escape(profile['name'])} profile</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>HGN vs HNN: reproduction of Tables 1–2 and Figures 6–8</h1>",
        f"<p><b>Profile</b> {html.escape(profile['name'])}: {html.escape(profile['description'])}."
        f" Command: <code>{html.escape(summary['command'])}</code>."
        f" Generated {html.escape(summary['generated'])} by hgn {html.escape(summary['version'])}"
        f" on {html.escape(summary['machine'])}.</p>",
        '<p id="image-check" class="note">Images: not checked (JavaScript disabled).</p>',
    ]
    done, wanted = summary["finished_cells"], summary["requested_cells"]
    if done < wanted:
        parts.append(
            f'<p class="warn">Partial results: {done} of {wanted} requested cells are finished; '
            "rerun the same command to complete them. Empty cells show —.</p>"
        )
    legend = (
        '<p class="note">Ours: mean ± standard deviation over sequences, ×1e4. '
        "[x] = the paper's published value (64×64 images, 50,000 training sequences); only "
        "the rows in our copy of the paper are shown.</p>"
    )
    t1 = table_rows(cells, "mse", systems)
    t2 = table_rows(cells, "energy_var", systems)
    parts += [
        "<h2>Table 1: average pixel MSE over the unroll</h2>",
        legend,
        html_table(*t1),
        "<h2>Table 2: variance of the learned Hamiltonian along a rollout</h2>",
        '<p class="note">Per sequence, the variance over time of the learned H, then mean ± '
        "standard deviation over sequences, ×1e4. The scale of a learned H is arbitrary; "
        "the paper's values for this table are not in our copy.</p>",
        html_table(*t2),
        "<h2>Training actually done</h2>",
        '<p class="note">Optimisation steps per run and what ended it: the step budget '
        "(steps) or the per-run wall-clock cap (time). 'prefix' is the retraining for the "
        "prefix protocol (HNN needs none).</p>",
        html_table(*training_rows(cells, systems)),
        "<h2>Acceptance checks</h2>",
        "<ul>",
    ]
    for system, check in summary["checks"]["hgn_vs_hnn"].items():
        parts.append(
            f"<li>{html.escape(system)}: HNN test MSE / HGN test MSE = {check['ratio']:.1f} "
            f"({'≥' if check['passed'] else '<'} 5)</li>"
        )
    for system, check in summary["checks"]["leapfrog_vs_euler"].items():
        parts.append(
            f"<li>{html.escape(system)}: energy variance leapfrog {_fmt(check['leapfrog'] * SCALE)}"
            f" vs Euler {_fmt(check['euler'] * SCALE)} ×1e4 "
            f"({'leapfrog lower' if check['passed'] else 'leapfrog NOT lower'})"
            + _relative(check)
            + "</li>"
        )
    parts.append("</ul>")
    if "fig6" in figures:
        parts += [
            "<h2>Figure 6: per-step MSE of the unroll</h2>",
            _img(figures["fig6"], "Figure 6"),
        ]
    if figures.get("fig7"):
        parts.append("<h2>Figure 7: forward, backward, 2× and ½× speed rollouts</h2>")
        parts += [_img(src, f"Figure 7, {system}") for system, src in figures["fig7"].items()]
    if "fig8" in figures:
        parts += ["<h2>Figure 8: samples from the prior</h2>", _img(figures["fig8"], "Figure 8")]
    pre = prefix_rows(cells, systems)
    if pre[1]:
        parts += [
            "<h2>Beyond the paper: the prefix protocol</h2>",
            f'<p class="note">Infer the state from the first {profile["context"]} frames, '
            f"predict {profile['horizon']} further frames of longer test trajectories. VPT "
            f"(valid prediction time): predicted steps before the frame MSE first exceeds "
            f"{VPT_FRACTION:g} × the MSE of the mean test frame (mean ± sd over sequences); "
            "MSE: mean over the predicted frames, ×1e4.</p>",
            html_table(*pre),
        ]
        if "prefix" in figures:
            parts.append(_img(figures["prefix"], "prefix protocol error curves"))
    parts.append("<h2>Rollout animations (test sequences: data | prediction)</h2>")
    for system in systems:
        gifs = [
            (model, cells[system][model]["files"]["animation"])
            for model in MODEL_ORDER
            if model in cells.get(system, {})
        ]
        if not gifs:
            continue
        parts.append(f"<h3>{html.escape(system)}</h3><div class='gifs'>")
        for model, src in gifs:
            parts.append(
                f"<figure>{_img(src, f'{system} {model}')}"
                f"<figcaption>{html.escape(MODEL_LABELS[model])}</figcaption></figure>"
            )
        parts.append("</div>")
    parts += [f"<script>{_IMAGE_CHECK}</script>", "</body></html>"]
    path = out / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- outputs


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_json(path: Path, payload: Any) -> None:
    _write_text(path, json.dumps(payload, indent=1, allow_nan=False) + "\n")


def finished_cells(out: Path) -> dict[str, dict[str, Any]]:
    """All finished cells under ``out``, as ``{system: {model: result}}``."""
    cells: dict[str, dict[str, Any]] = {}
    for path in sorted((out / "cells").glob("*/*/result.json")):
        record = json.loads(path.read_text())
        cells.setdefault(record["system"], {})[record["model"]] = record
    return cells


def build_outputs(
    out: Path, profile: Profile, requested: Sequence[tuple[str, str]], command: str
) -> dict[str, Any]:
    """(Re)write results.json, the tables, the figures and report.html from all
    finished cells in ``out``. Cheap: it reads small files and draws a few plots."""
    cells = finished_cells(out)
    systems = [s for s in SYSTEM_ORDER if s in cells or any(r[0] == s for r in requested)]
    summary = {
        "profile": profile.settings(),
        "command": command,
        "generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "machine": f"{platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s) per process",
        "systems": systems,
        "requested_cells": len(requested),
        "finished_cells": sum(1 for s, m in requested if m in cells.get(s, {})),
        "published_mse": PUBLISHED_MSE,
        "checks": checks(cells),
        "cells": cells,
    }
    _write_json(out / "results.json", summary)
    scale_note = (
        f"Profile `{profile.name}`; made by `{command}`. Ours: mean ± sd over sequences, ×1e4; "
        "[x] = published (paper, 64×64, 50,000 training sequences), shown where our copy "
        "of the paper has it. — = cell not run yet.\n\n"
    )
    _write_text(
        out / "table1.md",
        "# Table 1: average pixel MSE over the unroll (train / test)\n\n"
        + scale_note
        + markdown_table(*table_rows(cells, "mse", systems)),
    )
    _write_text(
        out / "table2.md",
        "# Table 2: variance of the learned Hamiltonian along a rollout\n\n"
        + scale_note
        + markdown_table(*table_rows(cells, "energy_var", systems)),
    )
    header, rows = prefix_rows(cells, systems)
    if rows:
        _write_text(
            out / "prefix.md",
            f"# Prefix protocol: infer from {profile.context} frames, predict "
            f"{profile.horizon}\n\nVPT in predicted steps (threshold: {VPT_FRACTION:g} × the "
            "MSE of the mean test frame); MSE over the predicted frames ×1e4; mean ± sd "
            "over sequences.\n\n" + markdown_table(header, rows),
        )
    figures: dict[str, Any] = {}
    if cells:
        fig_dir = out / "figures"
        fig_dir.mkdir(exist_ok=True)
        shown = [s for s in systems if s in cells]
        figure_per_step(cells, shown, fig_dir / "fig6_per_step_mse.png")
        figures["fig6"] = "figures/fig6_per_step_mse.png"
        figures["fig7"] = {}
        samples: dict[str, tuple[str, np.ndarray]] = {}
        for system in shown:
            rollouts = {
                model: dict(np.load(out / record["files"]["rollouts"]))
                for model, record in cells[system].items()
            }
            name = f"fig7_{system}.png"
            figure_rollouts(rollouts, system, fig_dir / name)
            figures["fig7"][system] = f"figures/{name}"
            sampler = next(
                (m for m in MODEL_ORDER if m in rollouts and "samples" in rollouts[m]), None
            )
            if sampler is not None:
                samples[system] = (sampler, rollouts[sampler]["samples"])
        if samples:
            figure_samples(samples, fig_dir / "fig8_samples.png")
            figures["fig8"] = "figures/fig8_samples.png"
        if rows:
            figure_prefix(cells, shown, fig_dir / "prefix_mse.png")
            figures["prefix"] = "figures/prefix_mse.png"
    write_report(out, summary, figures)
    return summary


# ----------------------------------------------------------------------------- the run

PROFILE_FILE = "profile.json"


def _claim(out: Path, profile: Profile) -> None:
    """Make ``out`` a results directory of ``profile``, or refuse it with one line.

    A directory that already holds results of another profile (or of the same name with
    different settings, e.g. after an upgrade) is refused: mixing them would put numbers
    from different budgets in one table.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    marker = out / PROFILE_FILE
    if marker.exists():
        try:
            saved = json.loads(marker.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{marker} is corrupt; use another --out") from None
        if {k: v for k, v in saved.items() if k != "description"} != profile.identity():
            what = (
                f"profile {saved.get('name')!r}"
                if saved.get("name") != profile.name
                else f"profile {profile.name!r} with different settings"
            )
            raise UserError(
                f"{out} holds results of {what}; use another --out "
                f"(finished cells are never overwritten)"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty and holds no hgn reproduction; use another --out")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(marker, profile.settings())


def datasets(
    profile: Profile, systems: Sequence[str], root: Path, progress: bool = True
) -> dict[str, dict[str, Path]]:
    """Generate (or reuse, when identical) each system's paper-protocol dataset and its
    longer test set for the prefix protocol, under ``root/SYSTEM`` and ``root/SYSTEM-long``.
    """
    from hgn import data

    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    common = {"dt": profile.dt, "size": profile.size, "seed": profile.seed, "progress": progress}
    for system in systems:
        main = data.generate(
            root / system,
            system=system,
            n_train=profile.n_train,
            n_test=profile.n_test,
            steps=profile.steps,
            **common,
        )
        # only the test split of the long set is used; one training row keeps the format
        long = data.generate(
            root / f"{system}-long",
            system=system,
            n_train=1,
            n_test=min(profile.n_test, profile.eval_sequences),
            steps=profile.context + profile.horizon - 1,
            **common,
        )
        paths[system] = {"main": main, "long": long}
    return paths


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
            values["input_frames"] = profile.context
    return values


def reproduce(
    out: str | Path,
    profile: str = "smoke",
    systems: str | Sequence[str] | None = None,
    models: str | Sequence[str] | None = None,
    data_root: str | Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    jobs: int = 1,
    command: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the comparison and write every output; returns the summary.

    ``systems`` / ``models``: comma-separated names or sequences (default: all).
    ``data_root``: where datasets live (default ``out/data``); identical datasets there
    are reused, so several output directories of one profile can share them.
    ``threads``: torch's CPU threads, 1 by default on CPU: the models are many small
    convolutions, which on a few (shared) cores run several times faster on one thread
    than on two (measured; see docs/RESULTS.md).
    ``jobs``: cells run at once, each in its own process with ``threads`` threads and its
    output in ``cells/SYSTEM/MODEL/log.txt`` (``jobs=2`` uses both cores of a 2-core
    machine for nearly twice the throughput of one single-threaded process).
    """
    chosen = get_profile(profile)
    systems = choose(systems, SYSTEM_ORDER, "system")
    models = choose(models, MODEL_ORDER, "model")
    jobs = positive_int(jobs, "--jobs")
    threads = positive_int(threads, "--threads") if threads is not None else None
    if threads is None and resolve_device(device).type == "cpu":
        threads = 1
    out = Path(out)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(out, chosen, systems, models, data_root, device, jobs, command, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    out: Path,
    chosen: Profile,
    systems: list[str],
    models: list[str],
    data_root: str | Path | None,
    device: str,
    jobs: int,
    command: str | None,
    progress: bool,
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    _claim(out, chosen)
    command = command or f"hgn reproduce --profile {chosen.name} --out {out}"
    paths = datasets(chosen, systems, Path(data_root) if data_root else out / "data", progress)
    requested = [(s, m) for s in systems for m in models]
    done = finished_cells(out)
    todo = [(s, m) for s, m in requested if m not in done.get(s, {})]
    say = tqdm.write if progress else (lambda _msg: None)
    say(
        f"hgn reproduce: profile {chosen.name}, {len(requested)} cells, "
        f"{len(requested) - len(todo)} already finished, {len(todo)} to run"
    )
    with tqdm(total=len(todo), desc="cells", unit="cell", disable=not progress) as bar:
        if jobs == 1:
            for i, (system, model) in enumerate(todo):
                _announce(say, bar, [(system, model)], todo[i + 1 :])
                run_cell(out, chosen, system, model, paths[system], device)
                bar.update(1)
        else:
            _run_parallel(out, chosen, todo, paths, device, jobs, say, bar)
    summary = build_outputs(out, chosen, requested, command)
    say(f"wrote {out / 'report.html'} ({summary['finished_cells']}/{len(requested)} cells)")
    return summary


def _announce(say: Any, bar: Any, running: Sequence[tuple[str, str]], queued: Sequence) -> None:
    """The progress display: which cells run now and which remain."""
    now = ", ".join(f"{s} × {m}" for s, m in running)
    later = [f"{s}×{m}" for s, m in queued]
    left = ", ".join(later[:6]) + (" …" if len(later) > 6 else "")
    bar.set_description(f"running {now}")
    say(
        f"[{bar.n + 1}/{bar.total}] running {now}; {len(later)} queued{': ' if later else ''}{left}"
    )


def _cell_process(
    out: Path,
    profile: Profile,
    system: str,
    model: str,
    paths: Mapping[str, Path],
    device: str,
    threads: int,
) -> None:
    """Entry point of a cell's own process: its console output goes to the cell's
    ``log.txt``; a user error ends it with status 2 and the message as the last line."""
    torch.set_num_threads(threads)
    cell = out / "cells" / system / model
    cell.mkdir(parents=True, exist_ok=True)
    with open(cell / "log.txt", "a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            run_cell(out, profile, system, model, paths, device)
        except UserError as exc:
            print(f"hgn: error: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def _run_parallel(
    out: Path,
    profile: Profile,
    todo: Sequence[tuple[str, str]],
    paths: Mapping[str, Mapping[str, Path]],
    device: str,
    jobs: int,
    say: Any,
    bar: Any,
) -> None:
    """Run cells ``jobs`` at a time, each in a fresh (spawned) process with this
    process's thread count. A failed cell stops new ones from starting; the running ones
    finish and are recorded, then the failure is reported. On an interruption the
    running cells are terminated (their checkpoints are atomic, so they resume)."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    threads = torch.get_num_threads()
    queue = list(todo)
    running: dict[Any, tuple[Any, str, str]] = {}
    failed: tuple[str, str] | None = None
    try:
        while running or (queue and failed is None):
            while queue and failed is None and len(running) < jobs:
                system, model = queue.pop(0)
                args = (out, profile, system, model, paths[system], device, threads)
                process = context.Process(target=_cell_process, args=args, daemon=True)
                process.start()
                running[process.sentinel] = (process, system, model)
                _announce(say, bar, [(s, m) for _, s, m in running.values()], queue)
            for sentinel in wait(list(running)):
                process, system, model = running.pop(sentinel)
                process.join()
                if process.exitcode == 0:
                    bar.update(1)
                else:
                    failed = failed or (system, model)
                    say(f"cell {system} × {model} failed (exit status {process.exitcode})")
    finally:
        for process, _, _ in running.values():
            process.terminate()
        for process, _, _ in running.values():
            process.join()
    if failed is not None:
        log = out / "cells" / failed[0] / failed[1] / "log.txt"
        raise UserError(f"cell {failed[0]} × {failed[1]} failed: {_last_line(log)} (see {log})")


# ----------------------------------------------------------------------------- a cell

TRAINED = "trained.json"
"""Written beside a run's checkpoint when its training budget is spent: a later resume
of the cell then evaluates the model as it is instead of training it further."""


def _trained(
    run: Path, model: str, values: Mapping[str, Any], data_path: Path, profile: Profile, device: str
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
        result = hgn_train.train(data_path, run, config, resume=resume, device=device)
        _write_json(
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
    prediction time against the mean training frame (see :data:`VPT_FRACTION`)."""
    from hgn.evaluation.evaluate import (
        baseline_errors,
        error_stats,
        rollout_errors,
        valid_prediction_time,
    )

    n, c = len(split), profile.context
    mse, _ = rollout_errors(net, split, n, profile.batch_size, device, progress=False)
    base = baseline_errors(split, mean.cpu(), n)
    threshold = VPT_FRACTION * float(base.mean())
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
    }


def _uint8(images: torch.Tensor) -> np.ndarray:
    """``(..., 3, H, W)`` floats in [0, 1] -> ``(..., H, W, 3)`` uint8 for pictures."""
    return viz.to_uint8(images.movedim(-3, -1).float().cpu().numpy())


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
    net, trained = _trained(cell / "run", model, values, paths["main"], profile, device)
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
    frames = np.stack([viz.grid(animation[:, :, t]) for t in range(animation.shape[2])])
    viz.save_animation(cell / "test.gif", viz.upscale(frames, max(1, 64 // profile.size)), fps=8)
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
                cell / "run-prefix", model, values, paths["main"], profile, device
            )
        mean = mean_frame(data.load(paths["main"], "train"))
        long = data.load(paths["long"], "test")
        record["prefix"] = _prefix_metrics(prefix_net, long, mean, profile, dev)
    _require_finite(record, f"{system} × {model}")
    _write_json(cell / "result.json", record)
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
