"""Figures for flow models: Figure 9 (what an NHF learned), Figure 10 (NHF against
RealNVP and NSF: final NLL, NLL against wall-clock time, training loss), sample grids for
image-shaped data and 2-D marginals for other data of d > 2.

matplotlib with the Agg backend (no display needed); every figure is written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from hgn.flows.nhf import NHF, DensityModel
from hgn.plots import pyplot, save_figure
from hgn.utils import UserError, derive_seed

plt = pyplot()


def scatter(x: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Samples as a 2-D histogram (first two coordinates) or, for d = 1, a histogram."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if x.shape[1] == 1:
        ax.hist(x[:, 0], bins=100, density=True, color="tab:blue")
    else:
        lim = np.quantile(np.abs(x[:, :2]), 0.995) * 1.1
        ax.hist2d(x[:, 0], x[:, 1], bins=120, range=[[-lim, lim], [-lim, lim]], cmap="magma")
        ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def image_grid(
    x: np.ndarray,
    shape: tuple[int, int],
    path: str | Path,
    title: str = "",
    reference: np.ndarray | None = None,
    columns: int = 10,
) -> Path:
    """Flattened grey images ``x`` (N, H·W) as a grid of up to 10 × ``columns`` pictures
    (values clipped to the reference's range), beside the same number of ``reference``
    images (training data) when given, on one grey scale."""
    rows = max(1, min(10, len(x) // columns))
    panels = [("samples", x[: rows * columns])]
    if reference is not None:
        panels.insert(0, ("data", reference[: rows * columns]))
    scale = reference if reference is not None else x
    low, high = float(np.quantile(scale, 0.001)), float(np.quantile(scale, 0.999))
    height, width = shape
    aspect = (rows * (height + 1) - 1) / (columns * (width + 1) - 1)
    size = (4.2 * len(panels), 4.2 * aspect + 0.6)  # no blank band above a short grid
    fig, axes = plt.subplots(1, len(panels), figsize=size, squeeze=False)
    for ax, (label, images) in zip(axes[0], panels, strict=True):
        canvas = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1), np.nan)
        for i, image in enumerate(images):
            r, c = divmod(i, columns)
            top, left = r * (height + 1), c * (width + 1)
            canvas[top : top + height, left : left + width] = image.reshape(shape)
        ax.imshow(np.clip(canvas, low, high), cmap="gray_r", vmin=low, vmax=high)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def marginals(
    x: np.ndarray, reference: np.ndarray, path: str | Path, title: str = "", pairs: int = 4
) -> Path:
    """For d > 2: 2-D histograms of coordinate pairs (0, 1), (2, 3), … of model samples
    (bottom row) under those of the data (top row), on common axes."""
    pairs = max(1, min(pairs, x.shape[1] // 2))
    fig, axes = plt.subplots(2, pairs, figsize=(3.2 * pairs, 6.4), squeeze=False)
    for j in range(pairs):
        cols = [2 * j, 2 * j + 1]
        lo = np.quantile(reference[:, cols], 0.002, axis=0)
        hi = np.quantile(reference[:, cols], 0.998, axis=0)
        span = [[lo[0], hi[0]], [lo[1], hi[1]]]
        for row, (label, data) in enumerate((("data", reference), ("model", x))):
            ax = axes[row][j]
            ax.hist2d(data[:, cols[0]], data[:, cols[1]], bins=80, range=span, cmap="magma")
            ax.set_title(f"{label}: x{cols[0]} vs x{cols[1]}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


@torch.no_grad()
def plot_run(
    model: DensityModel,
    reference: Tensor,
    image_shape: tuple[int, int] | None,
    path: str | Path,
    title: str,
    seed: int = 0,
    **figure9_args: Any,
) -> Path:
    """What ``hgn flow plot`` draws: Figure 9 for a 2-D NHF, a sample grid for
    image-shaped data, the data's and the model's 2-D marginals otherwise."""
    if image_shape is not None or model.dim != 2:
        torch.manual_seed(derive_seed(seed, "plot"))
        x = model.sample(10_000 if image_shape is None else 100).numpy()
        if image_shape is not None:
            return image_grid(x, image_shape, path, title, reference=reference.numpy())
        return marginals(x, reference.numpy(), path, title)
    if not isinstance(model, NHF):
        torch.manual_seed(derive_seed(seed, "plot"))
        return scatter(model.sample(100_000).numpy(), path, title)
    return figure9(model, reference, path, seed=seed, **figure9_args)


def _grid(lim: float, n: int) -> tuple[Tensor, Tensor]:
    axis = torch.linspace(-lim, lim, n)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    return axis, torch.stack([gx, gy], -1).reshape(-1, 2)


@torch.no_grad()
def figure9(
    model: NHF,
    reference: Tensor,
    path: str | Path,
    step: int = -1,
    n_importance: int = 32,
    resolution: int = 120,
    n_paths: int = 300,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """The paper's Figure 9 for a 2-D NHF, left to right: target density (histogram of
    ``reference`` samples), learned density (exp of the IWAE bound on a grid), K(p) and
    V(q) of flow step ``step``, one leapfrog step of that flow step started at rest
    (p = 0: the kick follows -∇V, so arrows point into V's basins), and paths of prior
    samples through the whole flow (every flow step), ending on the learned density."""
    if model.dim != 2:
        raise UserError(f"flow plot draws 2-D densities; this model is {model.dim}-D")
    if not -len(model.steps) <= step < len(model.steps):
        raise UserError(f"--step must be in [0, {len(model.steps) - 1}] (or negative from the end)")
    ref = reference.numpy()
    lim = float(np.quantile(np.abs(ref), 0.999)) * 1.15
    fields = _figure9_fields(model, step, lim, resolution, n_importance, progress)
    torch.manual_seed(derive_seed(seed, "figure9"))
    s0 = model.prior.sample((n_paths,))
    qs, _ = model.path(*s0.split(2, -1))
    qs = (model.loc + model.scale * qs).numpy()

    fig, axes = plt.subplots(1, 6, figsize=(24, 4.2))
    top = _draw_densities(axes[0], axes[1], ref, fields, n_importance)
    _draw_energies(fig, axes[2], axes[3], axes[4], fields, step % len(model.steps))
    _draw_paths(axes[5], fields, qs, top, len(model.steps))
    for ax in (axes[0], axes[1], axes[3], axes[4], axes[5]):
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    for ax in axes:
        ax.set_aspect("equal")
    return save_figure(fig, path)


P_LIM = 3.0
"""Half the width of Figure 9's kinetic-energy panel: momenta of a standard normal prior."""


@dataclass
class _Fields:
    """What Figure 9's panels show, on grids of ``res`` × ``res`` points over ±``lim``."""

    lim: float
    res: int
    axis: np.ndarray
    density: np.ndarray
    kinetic: np.ndarray
    potential: np.ndarray
    arrows_at: np.ndarray
    arrows: np.ndarray


def _figure9_fields(
    model: NHF, step: int, lim: float, res: int, n_importance: int, progress: bool
) -> _Fields:
    """The learned density (the IWAE bound), K and V of flow step ``step`` and where one
    leapfrog sub-step from rest moves the points of a coarse grid."""
    flow_step = model.steps[step]
    axis, x = _grid(lim, res)
    z = (x - model.loc) / model.scale
    density = model.log_prob(x, n_importance, "density" if progress else None).exp().numpy()
    _, p_grid = _grid(P_LIM, res)
    kinetic = flow_step.kinetic(p_grid).numpy()
    potential = flow_step.potential(z).numpy()
    _, xc = _grid(lim * 0.95, 21)
    zc = (xc - model.loc) / model.scale
    q1, _ = flow_step(zc, torch.zeros_like(zc), substeps=1)  # one sub-step
    move = ((q1 - zc) * model.scale).numpy()
    return _Fields(
        lim, res, axis.numpy(), density, kinetic, potential, arrows_at=xc.numpy(), arrows=move
    )


def _draw_densities(
    target: Axes, learned: Axes, ref: np.ndarray, f: _Fields, n_importance: int
) -> float:
    """The target's histogram and the learned density; returns the density's colour-scale
    top, which the paths panel shares."""
    lim, res = f.lim, f.res
    target.hist2d(ref[:, 0], ref[:, 1], bins=res, range=[[-lim, lim]] * 2, cmap="magma")
    target.set_title("target density")
    # the IWAE estimate of a density is heavy-tailed upwards (a rare large importance
    # weight): a few grid points would otherwise set the colour scale and hide the rest
    top = float(np.quantile(f.density, 0.995))
    learned.imshow(
        f.density.reshape(res, res), extent=(-lim, lim, -lim, lim), origin="lower",
        cmap="magma", vmax=top,
    )  # fmt: skip
    learned.set_title(f"learned density (IWAE, K={n_importance})")
    return top


def _draw_energies(
    fig: Figure, kinetic: Axes, potential: Axes, leapfrog: Axes, f: _Fields, step: int
) -> None:
    """K(p) and V(q) of flow step ``step``, and one leapfrog step from rest over V."""
    res, extent = f.res, (-f.lim, f.lim, -f.lim, f.lim)
    k_img = kinetic.imshow(
        f.kinetic.reshape(res, res), extent=(-P_LIM, P_LIM, -P_LIM, P_LIM), origin="lower",
        cmap="viridis",
    )  # fmt: skip
    kinetic.set_title(f"kinetic energy K(p), step {step}")
    kinetic.set_xlabel("p₁")
    kinetic.set_ylabel("p₂")
    fig.colorbar(k_img, ax=kinetic, fraction=0.046)
    v_img = potential.imshow(
        f.potential.reshape(res, res), extent=extent, origin="lower", cmap="viridis"
    )
    potential.set_title(f"potential energy V(q), step {step}")
    fig.colorbar(v_img, ax=potential, fraction=0.046)
    leapfrog.contourf(
        f.axis, f.axis, f.potential.reshape(res, res), levels=20, cmap="viridis", alpha=0.6
    )
    at, move = f.arrows_at, f.arrows
    leapfrog.quiver(at[:, 0], at[:, 1], move[:, 0], move[:, 1], angles="xy", color="k", width=0.004)
    leapfrog.set_title("one leapfrog step from rest")


def _draw_paths(ax: Axes, f: _Fields, qs: np.ndarray, top: float, n_steps: int) -> None:
    """Paths of prior samples through the whole flow, over the learned density."""
    ax.imshow(
        f.density.reshape(f.res, f.res),
        extent=(-f.lim, f.lim, -f.lim, f.lim),
        origin="lower",
        cmap="Greys",
        alpha=0.5,
        vmax=top,
    )
    for i in range(qs.shape[1]):
        ax.plot(qs[:, i, 0], qs[:, i, 1], lw=0.4, alpha=0.5, color="tab:blue")
    ax.scatter(qs[0, :, 0], qs[0, :, 1], s=3, color="tab:green", label="q₀ ~ prior")
    ax.scatter(qs[-1, :, 0], qs[-1, :, 1], s=3, color="tab:red", label="q_T")
    ax.legend(loc="upper right", fontsize=7, markerscale=3)
    ax.set_title(f"integrated flow ({n_steps} steps)")


def figure10(table: dict[str, Any], path: str | Path) -> Path:
    """The paper's Figure 10 and the time-to-NLL view, left to right: each model's final
    test NLL (standard error, the target's entropy); its test NLL against wall-clock
    training time, with the common level the table times; its training objective."""
    rows = table["rows"]
    fig, (ax_bar, ax_time, ax_loss) = plt.subplots(1, 3, figsize=(16, 4.2))
    names = [r["model"] for r in rows]
    colours = plt.cm.tab10(np.arange(len(rows)) % 10)
    finals = [r["nll"] for r in rows]
    ax_bar.bar(names, finals, yerr=[r["nll_se"] for r in rows], color=colours, capsize=3)
    low, high = min(finals), max(finals)
    if table["entropy"] is not None:
        ax_bar.axhline(table["entropy"], ls="--", color="k", label="target entropy")
        ax_bar.legend(fontsize=8)
        low = min(low, table["entropy"])
    pad = 0.15 * (high - low) + 0.05
    ax_bar.set_ylim(low - 2 * pad, high + pad)
    ax_bar.set_ylabel("test NLL (nats)")
    ax_bar.set_title(f"{table['target']}: final test NLL")
    ax_bar.tick_params(axis="x", labelrotation=20)
    for r, c in zip(rows, colours, strict=True):
        curve = np.array(r.get("curve") or [], dtype=float).reshape(-1, 3)
        ax_time.plot(curve[:, 0], curve[:, 2], "o-", ms=3, color=c, label=r["model"])
    ax_time.axhline(table["level"], ls=":", color="k", label=f"level ({table['level_of']})")
    if table["entropy"] is not None:
        ax_time.axhline(table["entropy"], ls="--", color="k", lw=0.8)
    ax_time.set_ylim(low - 2 * pad, high + 6 * pad)
    ax_time.set_xlabel("training time (s)")
    ax_time.set_ylabel("test NLL (nats)")
    ax_time.set_title(f"time to NLL (first to the level: {table['first']})")
    ax_time.legend(fontsize=7)
    for r, c in zip(rows, colours, strict=True):
        hist = np.array(r["history"], dtype=float)
        if len(hist):
            seconds = hist[:, 0] / hist[:, 2]
            width = min(10, len(hist))  # trailing mean: "same" would pull both ends to 0
            smooth = np.convolve(hist[:, 1], np.ones(width) / width, "valid")
            ax_loss.plot(seconds[width - 1 :], smooth, color=c, label=r["model"])
    ax_loss.set_ylim(low - 2 * pad, high + 6 * pad)
    ax_loss.set_xlabel("training time (s)")
    ax_loss.set_ylabel("training loss (NHF: -bound on log p, others: NLL)")
    ax_loss.set_title("training")
    ax_loss.legend(fontsize=7)
    return save_figure(fig, path)
