"""`make demo`: do learned dynamics hold? Small clean mass-spring data → a few minutes of
training with the default profile → the extrapolation protocol (docs/SCIENCE.md) on a
separate 90-step test set: forward far past the training window, backward in time, at
2× and ½ speed, against the simulator → its table and pictures.

Everything goes to ``demo-output/`` (or the directory given as the first argument), a
directory the demo claims as its own (it refuses one holding anything else). A dataset
or a finished run already there is reused, so a second ``make demo`` takes a minute.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import hgn
from hgn import data as hgn_data
from hgn.evaluation.commands import extrapolate, render_samples
from hgn.evaluation.physics import samples_markdown, score_samples
from hgn.evaluation.reports import FILES
from hgn.runs import CHECKPOINT
from hgn.training.config import DEFAULT_PROFILE, resolve
from hgn.training.train import train
from hgn.utils import UserError, claim_output_dir

MINUTES = 3.0
"""Training budget on two CPU cores: long enough for the default profile to learn the
spring's motion over its training window (docs/RESULTS.md), short enough for a demo."""

TRAIN = {"n_train": 512, "n_test": 16, "steps": 64}
"""Training data: 64-step sequences, so a model may train on windows up to 65 frames."""

LONG = {"n_train": 32, "n_test": 64, "steps": 90}
"""The protocol's test set: 90 steps, the window from frame 30, separate seed."""


def run(root: Path, minutes: float = MINUTES) -> None:
    """Generate, train, run the protocol and draw into ``root``; print where things are."""
    torch.set_num_threads(1)  # see hgn.cli.model._threads
    claim_output_dir(root, "demo", option="the demo directory")
    train_data, long_data = root / "mass-spring-64", root / "mass-spring-long"
    run_dir, eval_dir = root / "run", root / "extrapolate"
    print(
        f"[1/4] clean mass-spring data, 32×32: {TRAIN['n_train']} training sequences of "
        f"{TRAIN['steps']} steps → {train_data}; {LONG['n_test']} test sequences of "
        f"{LONG['steps']} steps → {long_data}"
    )
    common = {"system": "mass-spring", "size": 32, "noise": 0.0, "progress": False}
    hgn_data.generate(train_data, seed=0, **TRAIN, **common)
    hgn_data.generate(long_data, seed=1, **LONG, **common)
    if (run_dir / CHECKPOINT).exists():
        print(f"[2/4] reusing the trained model in {run_dir} (delete it to retrain)")
    else:
        print(f"[2/4] training the default model (profile {DEFAULT_PROFILE!r}) for {minutes:g} min")
        train(train_data, run_dir, resolve(DEFAULT_PROFILE), device="cpu", max_minutes=minutes)
    print("[3/4] extrapolation protocol: state inferred at frame 30, rolled out forward to 90,")
    print("      backward to 0, at 2× and at ½ speed, compared with the simulator")
    extrapolate(run_dir, long_data, eval_dir, start=30, device="cpu", progress=False)
    print("[4/4] samples from the prior, read back as physics")
    samples = render_samples(run_dir, root / "samples.gif", n=6, device="cpu", overwrite=True)
    model = hgn.load(str(run_dir))  # fitted to its training data, as `hgn sample` is
    physics = score_samples(model, hgn_data.load(long_data, "test"))
    print()
    print((eval_dir / FILES["md"]).read_text())
    print(samples_markdown(physics))
    print()
    print(f"Table:            {eval_dir / FILES['md']} (numbers: {FILES['json']})")
    print(
        f"Rollout strip:    {eval_dir / FILES['strip']}  (rows: truth, forward, backward, 2×, ½×)"
    )
    print(f"Rollout movie:    {eval_dir / FILES['gif']}")
    print(f"Error curves:     {eval_dir / FILES['errors']}")
    print(f"Learned energy:   {eval_dir / FILES['energy']}")
    print(f"Samples:          {samples}")
    print(f"TensorBoard:      tensorboard --logdir {run_dir / 'tensorboard'}")


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-output")
    try:
        run(root)
    except UserError as exc:
        print(f"hgn demo: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
