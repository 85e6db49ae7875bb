"""The shared training loop: budgets, exact resume, NaN guard, atomic checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hgn.training.loop import CHECKPOINT, LoopConfig, train_loop
from hgn.utils import UserError, load_checkpoint, save_checkpoint


def _problem() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.05)


def _step_fn(model: torch.nn.Module, opt: torch.optim.Optimizer, poison_at: int = -1):
    target = torch.tensor([[1.0], [-2.0], [0.5]])

    def step(i: int) -> dict[str, float]:
        x = torch.randn(32, 3)  # drawn from the loop's per-step seed
        loss = (model(x) - x @ target).square().mean()
        if i == poison_at:
            loss = loss * float("nan")
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    return step


def _run(run_dir: Path, steps: int, resume: bool = False, **kw) -> tuple[torch.nn.Module, object]:
    model, opt = _problem()
    result = train_loop(
        run_dir,
        {"model": model, "optimizer": opt},
        _step_fn(model, opt, **kw),
        LoopConfig(steps=steps, seed=3, checkpoint_every=4, log_every=2, tensorboard=False),
        {"lr": 0.05},
        resume=resume,
    )
    return model, result


def test_loss_goes_down_and_final_checkpoint_has_config(tmp_path: Path) -> None:
    _, result = _run(tmp_path / "run", 40)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.05 * losses[0]
    saved = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert saved["step"] == 40 and saved["config"] == {"lr": 0.05}


def test_resume_is_exact(tmp_path: Path) -> None:
    whole, _ = _run(tmp_path / "a", 12)
    _run(tmp_path / "b", 6)  # "killed" after 6 steps
    resumed, result = _run(tmp_path / "b", 12, resume=True)
    assert result.step == 12
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_existing_run_needs_resume_flag(tmp_path: Path) -> None:
    _run(tmp_path / "run", 2)
    with pytest.raises(UserError, match="--resume"):
        _run(tmp_path / "run", 4)


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="loss became nan at step 9"):
        _run(tmp_path / "run", 20, poison_at=9)
    saved = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert saved["step"] == 8
    assert all(torch.isfinite(v).all() for v in saved["state"]["model"].values())


def test_corrupt_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    _run(tmp_path / "run", 4)
    path = tmp_path / "run" / CHECKPOINT
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="corrupt or truncated"):
        _run(tmp_path / "run", 8, resume=True)


def test_time_budget_counts_the_time_before_a_resume(tmp_path: Path) -> None:
    _run(tmp_path / "run", 4)
    path = tmp_path / "run" / CHECKPOINT
    saved = load_checkpoint(path)
    save_checkpoint(path, {**saved, "seconds": 3600.0})  # an hour spent before the kill
    model, opt = _problem()
    result = train_loop(
        tmp_path / "run",
        {"model": model, "optimizer": opt},
        _step_fn(model, opt),
        LoopConfig(steps=100, seed=3, max_minutes=30, tensorboard=False),
        {"lr": 0.05},
        resume=True,
    )
    assert result.stopped_by == "time" and result.step == 5  # one step, then over budget
    assert result.seconds >= 3600 and load_checkpoint(path)["seconds"] >= 3600
