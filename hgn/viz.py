"""Pictures and animations: frame grids, GIF/MP4 writing, all written atomically."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from hgn.utils import UserError, atomic_path

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


def _check_parent(path: Path) -> None:
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: directory {path.parent} does not exist")


def save_image(path: str | Path, image: np.ndarray) -> Path:
    """Write one ``(H, W, 3)`` image as PNG, atomically."""
    path = Path(path)
    _check_parent(path)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, to_uint8(image), extension=".png")
    return path


def save_animation(path: str | Path, frames: np.ndarray, fps: int = 8) -> Path:
    """Write ``(T, H, W, 3)`` frames as an animated GIF (looping) or MP4, atomically.

    MP4 encoders work on 16-pixel macro-blocks, so frames are padded (edge colour) to a
    multiple of 16 rather than resampled.
    """
    path = Path(path)
    _check_parent(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise UserError(f"cannot write animation {path}: use a .gif or .mp4 file name")
    frames = to_uint8(frames)
    with atomic_path(path) as tmp:
        if suffix == ".gif":
            iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)
        else:
            h, w = frames.shape[1:3]
            frames = np.pad(frames, ((0, 0), (0, -h % 16), (0, -w % 16), (0, 0)), mode="edge")
            iio.imwrite(tmp, frames, extension=".mp4", fps=fps, codec="libx264")
    return path
