"""How far a trained model's rollout wanders from the states its encoder gives the same
frames, and how its frame error grows past the trained window (docs/RESULTS.md, "How the
defaults were chosen": the measurement behind HGN++'s ``consistency_weight``).

For each test sequence the state is inferred from frames ``0…k−1`` (the state of frame
``k−1``) and rolled out to the last frame; at every frame ``t ≥ k−1`` the rolled-out state
is compared with the encoder's state of frames ``t−k+1…t``. The distance is over the
spread of the encoder's states (the square root of the summed per-number variances over
all sequences and frames), so 1 means "as far apart as two unrelated states". Beside it,
the rollout's frame error (from frame 0, like ``predict``) as a fraction of the mean
test frame's, per frame.

    .venv/bin/python benchmarks/latent_drift.py RUN DATA [--sequences 64] [--every 10]

A model with a small frame error and a large distance draws the right frames from states
the encoder would never give them: nothing held those directions inside the trained
window, and past it the frames go wrong.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import hgn
from hgn import data as hgn_data
from hgn.models.base import State


@torch.no_grad()
def measure(run: str, data: str, sequences: int = 64) -> dict[str, np.ndarray]:
    """Per frame from ``k − 1``: median normalised distance rollout ↔ encoder, and the
    frame error ratio of the rollout from frame 0 (all frames)."""
    model = hgn.load(run)
    model.eval()
    split = hgn_data.load(data, "test")
    x = torch.from_numpy(np.asarray(split.images[:sequences])).permute(0, 1, 4, 2, 3).float() / 255
    k, last = model.context_frames, x.shape[1] - 1
    rolled = model.rollout(model.encode(x), last - (k - 1))
    encoded = [model.encode(x[:, t - k + 1 : t + 1]) for t in range(k - 1, last + 1)]
    enc = State(torch.stack([e.q for e in encoded], 1), torch.stack([e.p for e in encoded], 1))
    both = torch.cat([enc.q, enc.p], -1)
    scale = both.reshape(-1, both.shape[-1]).var(0).sum().sqrt()
    distance = (torch.cat([rolled.q, rolled.p], -1) - both).norm(dim=-1) / scale
    images = model.predict(x, last)["images"]
    error = (images - x).square().mean((0, 2, 3, 4))
    mean_frame = x.mean((0, 1), keepdim=True)
    baseline = (x - mean_frame).square().mean((0, 2, 3, 4))
    return {
        "distance": distance.median(0).values.numpy(),
        "frame_ratio": (error / baseline).numpy(),
        "first": np.array(k - 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("data", help="a dataset whose test sequences are long (e.g. 90 steps)")
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--every", type=int, default=10, help="print every this many frames")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = measure(args.run, args.data, args.sequences)
    first = int(result["first"])
    print(f"{args.run} on {args.data}, {args.sequences} test sequences")
    print("| frame | rollout ↔ encoder distance (median) | frame error / mean frame's |")
    print("|---|---|---|")
    for t in range(first, first + len(result["distance"]), args.every):
        print(f"| {t} | {result['distance'][t - first]:.3f} | {result['frame_ratio'][t]:.4f} |")


if __name__ == "__main__":
    main()
