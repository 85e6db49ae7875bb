"""`make demo`: do learned dynamics hold? Small clean mass-spring data → a few minutes of
training with the default profile → the extrapolation protocol (docs/SCIENCE.md) on a
separate 280-step test set: 250 steps forward from a window near the start, 250 and
more backward from a window at the end, at 2× and ½ speed, against the simulator and
against an ideal observer (the true physics from the same frames) → its table and
pictures.

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

LONG = {"n_train": 32, "n_test": 64, "steps": 280}
"""The protocol's test set, separate seed: the forward window from frame :data:`START`
leaves 250 steps after it; the backward rollout reads the last window."""

START = 30


def run(
    root: Path,
    minutes: float = MINUTES,
    train_data_size: dict[str, int] | None = None,
    long_data_size: dict[str, int] | None = None,
) -> None:
    """Generate, train, run the protocol and draw into ``root``; print where things are.
    The sizes default to :data:`TRAIN` and :data:`LONG` (smaller ones: the test)."""
    train_size, long_size = train_data_size or TRAIN, long_data_size or LONG
    torch.set_num_threads(1)  # see hgn.cli.model._threads
    claim_output_dir(root, "demo", option="the demo directory")
    train_data = root / f"mass-spring-{train_size['steps']}"
    long_data = root / f"mass-spring-long-{long_size['steps']}"
    run_dir, eval_dir = root / "run", root / "extrapolate"
    print(
        f"[1/4] clean mass-spring data, 32×32: {train_size['n_train']} training sequences "
        f"of {train_size['steps']} steps → {train_data}; {long_size['n_test']} test "
        f"sequences of {long_size['steps']} steps → {long_data}"
    )
    common = {"system": "mass-spring", "size": 32, "noise": 0.0, "progress": False}
    hgn_data.generate(train_data, seed=0, **train_size, **common)
    hgn_data.generate(long_data, seed=1, **long_size, **common)
    if (run_dir / CHECKPOINT).exists():
        print(f"[2/4] reusing the trained model in {run_dir} (delete it to retrain)")
    else:
        print(f"[2/4] training the default model (profile {DEFAULT_PROFILE!r}) for {minutes:g} min")
        train(train_data, run_dir, resolve(DEFAULT_PROFILE), device="cpu", max_minutes=minutes)
    last = long_size["steps"]
    print(f"[3/4] extrapolation protocol: state inferred at frame {START}, rolled out forward")
    print(f"      to {last}, backward from the last window to 0, at 2× and at ½ speed, against")
    print("      the simulator and an ideal observer reading the same frames (the oracle)")
    extrapolate(
        run_dir, long_data, eval_dir, start=START, backward_start="end", oracle=True,
        device="cpu", progress=False,
    )  # fmt: skip
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
