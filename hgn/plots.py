"""Pictures, plots and animations in one place: frame grids, comparison strips, GIF/MP4
and PNG writing, matplotlib figures (Agg backend, PNG; the flows' and reproduce's too),
every file written atomically; and the one check of a picture or animation a command is
asked to write (:func:`check_output`), made before the work that produces it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch

from hgn.utils import UserError, atomic_path, check_output_file

ANIMATION_SUFFIXES = (".gif", ".mp4")


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Accept uint8 images or floats in [0, 1] (any leading axes, channels last)."""
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def grid(images: np.ndarray, pad: int = 1, pad_value: int = 255) -> np.ndarray:
    """Tile ``(rows, cols, H, W, 3)`` images into one ``(H', W', 3)`` picture."""
    images = to_uint8(images)
    if images.ndim != 5:
        raise ValueError(f"grid expects (rows, cols, H, W, C) images, got shape {images.shape}")
    rows, cols, h, w, c = images.shape
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), pad_value, np.uint8)
    view = out[pad:, pad:].reshape(rows, h + pad, cols, w + pad, c)[:, :h, :, :w]
    view[...] = images.transpose(0, 2, 1, 3, 4)
    return out


def upscale(images: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of ``(..., H, W, C)`` so small frames stay visible."""
    if factor <= 1:
        return images
    return images.repeat(factor, axis=-3).repeat(factor, axis=-2)


def require_video(path: str | Path, doing: str = "write") -> None:
    """Refuse, in one line, a video file when the optional package PyAV (``av``, which
    ``hgn[video]`` installs) is missing: imageio reads and writes MP4 and the other
    video formats through it. GIF and PNG need nothing extra."""
    if importlib.util.find_spec("av") is None:
        raise UserError(
            f"cannot {doing} {path}: video files need the optional package av "
            "(pip install 'hgn[video]'), or use a .gif"
        )


def check_format(path: Path, suffixes: tuple[str, ...]) -> None:
    """Refuse a file name whose format hgn cannot write: it must end in one of
    ``suffixes``, and an MP4 needs the optional video package (:func:`require_video`)."""
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise UserError(f"cannot write {path}: use a file name ending in {', '.join(suffixes)}")
    if suffix == ".mp4":
        require_video(path)


def check_output(
    path: str | Path, suffixes: tuple[str, ...], overwrite: bool = False, option: str = "--out"
) -> Path:
    """The one check of a picture or animation a command is asked to write, made before
    any work so that a typo costs no rollout: the directory exists, the name is not a
    directory, an existing file is replaced only with ``overwrite``
    (:func:`hgn.utils.check_output_file`), and the format is one hgn can write."""
    path = check_output_file(path, overwrite, option)
    check_format(path, suffixes)
    return path


def save_image(path: str | Path, image: np.ndarray) -> Path:
    """Write one ``(H, W, 3)`` image as PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, to_uint8(image), extension=".png")
    return path


def save_animation(path: str | Path, frames: np.ndarray, fps: int = 8) -> Path:
    """Write ``(T, H, W, 3)`` frames as an animated GIF (looping) or MP4, atomically.

    MP4 encoders work on 16-pixel macro-blocks, so frames are padded (edge colour) to a
    multiple of 16 rather than resampled.
    """
    path = Path(path)
    check_format(path, ANIMATION_SUFFIXES)
    suffix = path.suffix.lower()
    frames = to_uint8(frames)
    with atomic_path(path) as tmp:
        if suffix == ".gif":
            iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)
        else:
            h, w = frames.shape[1:3]
            frames = np.pad(frames, ((0, 0), (0, -h % 16), (0, -w % 16), (0, 0)), mode="edge")
            iio.imwrite(tmp, frames, extension=".mp4", plugin="pyav", fps=fps, codec="libx264")
    return path


# ----------------------------------------------------------------------------- plots


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG (atomically, trimmed to its content) and close
    it: a figure left open keeps its memory for the life of the process."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path


def plot_mse(curves: dict[str, np.ndarray], path: Path) -> None:
    """Figure 6: per-step MSE of the model and of the mean image, log scale."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, curve in curves.items():
        style = "--" if "mean image" in label else "-"
        ax.plot(np.arange(len(curve)), curve, style, label=label)
    ax.set(xlabel="rollout step", ylabel="per-pixel MSE", yscale="log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_energy(energy: np.ndarray, path: Path, count: int = 8) -> None:
    """The learned H along a few test rollouts (flat lines = conserved energy)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for row in energy[:count]:
        ax.plot(np.arange(len(row)), row, lw=1)
    ax.set(xlabel="rollout step", ylabel="learned H", title="learned energy along rollouts")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def hwc(frames: torch.Tensor) -> np.ndarray:
    """``(..., 3, H, W)`` floats → ``(..., H, W, 3)`` NumPy floats."""
    return frames.detach().float().cpu().movedim(-3, -1).numpy()


def comparison_strip(truth: torch.Tensor, pred: torch.Tensor) -> np.ndarray:
    """Rows: truth and prediction of each sequence, columns: time (uint8 HWC)."""
    steps = min(truth.shape[1], pred.shape[1])
    rows = torch.stack([truth[:, :steps], pred[:, :steps]], 1).flatten(0, 1)
    return grid(hwc(rows))
