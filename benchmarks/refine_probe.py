"""Does a better read of the window make a longer rollout? Test-time refinement of the
inferred state, then hgn's extrapolation protocol.

The encoder's state is refined by Adam on the window's own frames, with the model
frozen: the state is rolled back over the frames before it (and forward over any after
it), decoded, and its squared error against the window minimised over (q, p). Then the
protocol runs from the refined state exactly as ``hgn evaluate --protocol extrapolate``
does (this script swaps the protocol's state inference for the experiment; nothing in
hgn changes). ``benchmarks/inference_probe.py`` found the three-body encoder reading
the state's frame 4.5× worse than the decoder can draw it; this asks whether closing
that gap at test time helps the rollout (docs/RESULTS.md, "Three-body against the
limit").

    .venv/bin/python benchmarks/refine_probe.py RUN DATA OUT [--steps 0 100 300]
        [--lr 0.01] [--start 30] [--sequences 32]

Needs a model that can run backwards (HGN++, the ODE); prints, per number of refinement
steps, the window's MSE before and after and each rollout's ratio and valid time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hgn.evaluation import extrapolate as protocol
from hgn.evaluation.commands import extrapolate
from hgn.models.base import SequenceModel, State


def window_error(model: SequenceModel, state: State, window: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the window's frames decoded from ``state`` (the state of
    frame ``state_offset``), rolled back over the frames before it and forward over the
    ones after it."""
    k, o, dt = model.context_frames, model.state_offset, model.trained_dt
    back = model.rollout(state, o, -dt)  # frames o, o-1, …, 0
    pred = model.decode(State(back.q.flip(1), back.p.flip(1)))
    error = (pred - window[:, : o + 1]).square().sum((1, 2, 3, 4))
    if k - 1 > o:
        ahead = model.rollout(state, k - 1 - o, dt)
        pred = model.decode(State(ahead.q[:, 1:], ahead.p[:, 1:]))
        error = error + (pred - window[:, o + 1 :]).square().sum((1, 2, 3, 4))
    return error.sum() / window[0].numel()


def refine(model: SequenceModel, window: torch.Tensor, steps: int, lr: float, log: list) -> State:
    """The encoder's state, then ``steps`` Adam steps on the window's error."""
    state = model.encode(window)
    q, p = (t.detach().clone().requires_grad_(True) for t in state)
    optimiser = torch.optim.Adam([q, p], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            optimiser.zero_grad()
            loss = window_error(model, State(q, p), window)
            loss.backward()
            optimiser.step()
        after = window_error(model, State(q, p), window).item()
    log.append((window_error(model, state, window).item() / len(window), after / len(window)))
    return State(q.detach(), p.detach())


def run(args: argparse.Namespace, steps: int) -> None:
    log: list[tuple[float, float]] = []

    def infer(self: object, model: SequenceModel, window: torch.Tensor, back: int = 0) -> None:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.model = model  # type: ignore[attr-defined]
        state = refine(model, window, steps, args.lr, log)
        if back:
            states = model.rollout(state, back, -model.trained_dt)
            state = State(states.q[:, -1], states.p[:, -1])
        self.state = state  # type: ignore[attr-defined]

    protocol._Rollouts.__init__ = infer  # type: ignore[method-assign]
    torch.manual_seed(0)
    out = Path(args.out) / f"refine-{steps}"
    r = extrapolate(
        args.run, args.data, out, start=args.start, max_sequences=args.sequences, progress=False
    )
    before = sum(b for b, _ in log) / len(log)
    after = sum(a for _, a in log) / len(log)
    parts = [
        f"{name} {v['ratio']:.3f}, valid {v['vpt_mean']:.1f}/{v['steps']}"
        for name, v in r["rollouts"].items()
        if "ratio" in v
    ]
    print(f"{steps} steps: window MSE {before:.2e} → {after:.2e}; " + "; ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("data", help="a generated long test set")
    parser.add_argument("out", help="a new folder for the protocol's outputs")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 100, 300])
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--start", type=int, default=30)
    parser.add_argument("--sequences", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for steps in args.steps:
        run(args, steps)


if __name__ == "__main__":
    main()
