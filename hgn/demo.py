"""`make demo`: a small mass-spring dataset → a few minutes of HGN training → evaluation,
a rollout GIF next to the ground truth and samples from the prior.

Everything goes to ``demo-output/`` (or the directory given as the first argument); an
existing dataset or finished run there is reused, so a second ``make demo`` is quick.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from hgn import data as hgn_data
from hgn.evaluation.evaluate import evaluate, render_rollout, render_samples
from hgn.training.config import resolve
from hgn.training.loop import CHECKPOINT
from hgn.training.train import train
from hgn.utils import UserError

MINUTES = 3.0
"""Training budget: the `small` profile on two CPU cores (docs/RESULTS.md, HGN section)."""


def run(root: Path) -> None:
    """Generate, train, evaluate and render into ``root``; print where things are."""
    torch.set_num_threads(1)  # see hgn.cli.model._threads
    root.mkdir(exist_ok=True)
    data, run_dir, eval_dir = root / "mass-spring-32", root / "run", root / "eval"
    print(f"[1/4] dataset: mass-spring, 32×32, 2000 train / 200 test sequences → {data}")
    hgn_data.generate(data, "mass-spring", n_train=2000, n_test=200, size=32, seed=0)
    if (run_dir / CHECKPOINT).exists():
        print(f"[2/4] reusing the trained model in {run_dir} (delete it to retrain)")
    else:
        print(f"[2/4] training HGN (profile 'small') for {MINUTES:g} minutes → {run_dir}")
        config = resolve("small")
        train(data, run_dir, config, device="cpu", max_minutes=MINUTES)
    print(f"[3/4] evaluating on 200 train and 200 test sequences → {eval_dir}")
    metrics = evaluate(run_dir, data, eval_dir, max_sequences=200, device="cpu")
    rollout = render_rollout(run_dir, data, root / "rollout.gif", index=0, device="cpu")
    strip = render_rollout(run_dir, data, root / "rollout.png", index=0, device="cpu")
    samples = render_samples(run_dir, root / "samples.gif", n=6, device="cpu")
    print("[4/4] pictures written")
    test = metrics["splits"]["test"]
    print()
    print((eval_dir / "metrics.md").read_text())
    print(
        f"Test MSE ×1e4: {test['mse']['mean_x1e4']:.2f} (mean-image baseline "
        f"{test['baseline_mse']['mean_x1e4']:.2f}, ratio {test['ratio_to_baseline']:.2f})."
    )
    print(f"Metrics table:   {eval_dir / 'metrics.md'}")
    print(f"Per-step MSE:    {eval_dir / 'mse_per_step.png'}")
    print(f"Rollout (GIF):   {rollout}  (left: ground truth, right: HGN)")
    print(f"Rollout (strip): {strip}")
    print(f"Samples:         {samples}")
    print(f"TensorBoard:     tensorboard --logdir {run_dir / 'tensorboard'}")


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
