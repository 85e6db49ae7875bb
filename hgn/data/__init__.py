"""Pixel datasets: generated from the physical systems, or imported from your own image
sequences; stored as compressed zarr v3 stores and read lazily.

Modules, in the order data flows through them:

- :mod:`hgn.data.store`: the on-disk format (zarr v3, chunked by groups of
  trajectories, Blosc-compressed), where it lives (local or fsspec URL), completion
  markers, lazily read arrays;
- :mod:`hgn.data.generation`: simulating and rendering a system into a store, sharded;
- :mod:`hgn.data.presets`: named settings (the paper's datasets, the DeepMind suite's);
- :mod:`hgn.data.sources`: importing ``.npy``/``.npz`` arrays, folders of frames, videos;
- :mod:`hgn.data.dataset`: :func:`load`, :class:`Split`, :class:`SequenceDataset` and
  the tensor helpers training and evaluation share;
- :mod:`hgn.data.preview`: pictures of a dataset;
- :mod:`hgn.data.legacy`: reading datasets of the first (``.npy``) layout.
"""

from hgn.data.dataset import (
    SequenceDataset,
    Split,
    info,
    load,
    mean_frame,
    system_of,
    to_frames,
)
from hgn.data.generation import BLOCK, SIZES, generate, parse_shard
from hgn.data.presets import PRESETS, preset
from hgn.data.preview import show
from hgn.data.sources import import_sequences
from hgn.data.store import SPLITS, STATES, ChunkedArray

__all__ = [
    "BLOCK",
    "PRESETS",
    "SIZES",
    "SPLITS",
    "STATES",
    "ChunkedArray",
    "SequenceDataset",
    "Split",
    "generate",
    "import_sequences",
    "info",
    "load",
    "mean_frame",
    "parse_shard",
    "preset",
    "show",
    "system_of",
    "to_frames",
]
