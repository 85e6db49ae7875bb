"""Pictures of a dataset: a PNG grid and a GIF of some trajectories (``hgn data show``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hgn import plots as viz
from hgn.data import store
from hgn.data.dataset import load
from hgn.data.store import PREVIEW
from hgn.utils import UserError, positive_int

MAX_SHOWN = 100
"""The most trajectories or frames per row a preview shows: a grid of 10^8 pictures
would exhaust the memory, and no screen shows more than this."""


def show(
    path: str | os.PathLike,
    split: str = "train",
    n: int = 6,
    frames: int = 10,
    out: str | os.PathLike | None = None,
    fps: int = 8,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write a PNG grid (rows = trajectories, columns = evenly spaced frames) and a GIF
    of the first ``n`` trajectories side by side. Paths: ``out`` + ``.png``/``.gif``, by
    default ``DIR/preview-<split>.png`` and ``.gif`` inside a local dataset directory.
    An existing file at ``out`` is replaced only with ``overwrite``; inside the dataset,
    a picture ``hgn data show`` wrote (its hash is on record, :func:`store.own_previews`)
    is replaced without asking, a user's file of the same name only with ``overwrite``."""
    n = positive_int(n, "--n", most=MAX_SHOWN)
    frames = positive_int(frames, "--frames", most=MAX_SHOWN)
    inside = out is None
    if inside:
        if "://" in os.fspath(path):
            raise UserError(f"{path} is not a local directory: give --out PREFIX for the pictures")
        prefix = Path(path) / PREVIEW.format(split=split)
    else:
        prefix = Path(out)
    targets = [prefix.with_name(prefix.name + suffix) for suffix in (".png", ".gif")]
    own = store.own_previews(store.locate(path)) if inside else []
    for target in targets:
        replace = overwrite or target.name in own
        viz.check_output(target, (target.suffix,), overwrite=replace)
    data = load(path, split)
    n = min(n, len(data))
    if n == 0:
        raise UserError(f"the {split} split of {path} is empty")
    images = np.array(data.images[:n])  # (n, T+1, H, W, 3)
    factor = max(1, 128 // images.shape[2])
    columns = np.unique(np.linspace(0, images.shape[1] - 1, min(frames, images.shape[1])).round())
    png = viz.save_image(targets[0], viz.grid(viz.upscale(images[:, columns.astype(int)], factor)))
    movie = np.stack(
        [viz.grid(viz.upscale(images[None, :, t], factor)) for t in range(images.shape[1])]
    )
    gif = viz.save_animation(targets[1], movie, fps=fps)
    if inside:
        store.record_previews(store.locate(path), (png, gif))
    return png, gif
