"""Which part of a trained latent model limits its picture of the state: the encoder or
the decoder?

For test windows read from ``--start``, the frame at the inferred state is decoded from
the encoder's state, then from positions q optimised by gradient descent with the decoder
frozen (the best that decoder can draw that frame). Both errors are printed as fractions
of the mean image's. A large gap means the encoder's inference, not the decoder's
drawing, is what a longer rollout starts from wrong (docs/RESULTS.md, "The physical
limit"). Also printed: the posterior's width against the spread of its means, which says
whether the KL term blurs the state. And by horizon h: the frame error of the rollout
from the window's state, h steps on, beside the error of the frame decoded from the
encoder's own read of the window that ends there (how fast the dynamics leave what the
encoder reads).

    .venv/bin/python benchmarks/inference_probe.py RUN DATA [--start 30] [--sequences 64]

For HGN++ and any model that decodes positions alone (``decode_positions``).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from hgn import data as hgn_data
from hgn.data.dataset import mean_frame, to_frames
from hgn.models.base import State
from hgn.runs import open_sequence_model


def probe(run: str, data: str, start: int, sequences: int, steps: int, seed: int) -> dict:
    """The two errors over the mean image's, and the posterior's width over its spread."""
    torch.manual_seed(seed)
    model, _ = open_sequence_model(run)
    if not hasattr(model, "decode_positions"):
        raise SystemExit(f"{run}: the probe needs a model that decodes positions (HGN++)")
    test = hgn_data.load(data, "test")
    k = model.context_frames
    frames = to_frames(np.asarray(test.images[:sequences, start : start + k]), "cpu")
    target = frames[:, k - 1]  # the frame of the inferred state
    floor = (target - mean_frame(hgn_data.load(data, "train"))).square().mean().item()
    with torch.no_grad():
        mean, logvar = model.posterior(frames)
        q0 = model.initial_state(mean).q
        encoder = (model.decode_positions(q0) - target).square().mean().item()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    q = q0.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([q], lr=0.02)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = (model.decode_positions(q) - target).square().mean()
        loss.backward()
        optimiser.step()
    return {
        "encoder": encoder / floor,
        "decoder_limit": loss.item() / floor,
        "posterior_std": torch.exp(0.5 * logvar).median().item(),
        "posterior_mean_spread": mean.std(0).median().item(),
    }


def by_horizon(
    run: str, data: str, start: int, sequences: int, horizons: tuple[int, ...]
) -> list[tuple[int, float, float]]:
    """Per horizon h: the rollout's frame error h steps after the state's frame, and the
    error of the encoder's read of that same frame, both over the mean image's."""
    model, _ = open_sequence_model(run)
    test = hgn_data.load(data, "test")
    k, o = model.context_frames, model.state_offset
    last = start + o + max(horizons)
    if last >= test.images.shape[1] or start + max(horizons) + k > test.images.shape[1]:
        raise SystemExit(f"{data}: its sequences are too short for horizon {max(horizons)}")
    frames = to_frames(np.asarray(test.images[:sequences, : last + 1]), "cpu")
    floor = (frames[:, start + o] - mean_frame(hgn_data.load(data, "train"))).square().mean()
    rows = []
    with torch.no_grad():
        states = model.rollout(model.encode(frames[:, start : start + k]), max(horizons))
        for h in horizons:
            target = frames[:, start + o + h]
            rolled = model.decode(State(states.q[:, h], states.p[:, h]))
            read = model.decode(model.encode(frames[:, start + h : start + h + k]))
            rows.append(
                (
                    h,
                    ((rolled - target).square().mean() / floor).item(),
                    ((read - target).square().mean() / floor).item(),
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("data", help="a generated dataset (its test split is read)")
    parser.add_argument("--start", type=int, default=30, help="first frame of the window")
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--steps", type=int, default=400, help="gradient steps on q")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    r = probe(args.run, args.data, args.start, args.sequences, args.steps, args.seed)
    print(
        f"{args.run}: the state's frame, MSE / mean image: {r['encoder']:.4f} from the "
        f"encoder, {r['decoder_limit']:.4f} from q optimised with the decoder frozen "
        f"(encoder / decoder limit {r['encoder'] / r['decoder_limit']:.1f}×); posterior "
        f"std {r['posterior_std']:.3g} (median) against its means' spread "
        f"{r['posterior_mean_spread']:.3g}"
    )
    horizons = (1, 2, 5, 10, 20, 40)
    print("horizon h: frame MSE / mean image from the rollout | from the encoder's read")
    for h, rolled, read in by_horizon(args.run, args.data, args.start, args.sequences, horizons):
        print(f"  {h:3d}: {rolled:.3f} | {read:.3f}")


if __name__ == "__main__":
    main()
