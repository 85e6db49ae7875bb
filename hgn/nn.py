"""Network pieces shared by the models (HNN, HGN++) and the flows (NHF): one MLP builder,
so that every fully connected network in hgn is laid out, and named in checkpoints, alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import nn


def mlp(
    sizes: Sequence[int], activation: type[nn.Module] = nn.SiLU, out_bias: bool = True
) -> nn.Sequential:
    """Linear layers of widths ``sizes`` (input first, output last) with ``activation``
    between them and none after the last, so the output is unbounded.

    The layout, ``Linear, act, Linear, …, Linear``, fixes the checkpoint keys (``0``,
    ``2``, …): changing it would make saved models unloadable. ``out_bias=False`` drops
    the last layer's bias, for an energy whose constant offset changes no dynamics.
    """
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs an input and an output size, got {list(sizes)}")
    layers: list[nn.Module] = []
    last = len(sizes) - 2
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b, bias=out_bias or i < last))
        if i < last:
            layers.append(activation())
    return nn.Sequential(*layers)
