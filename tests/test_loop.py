"""The shared training loop: budgets, exact resume, NaN guard, atomic checkpoints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from hgn.runs import CHECKPOINT
from hgn.training.loop import LoopConfig, _Progress, train_loop
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


def _run(
    run_dir: Path, steps: int, resume: bool = False, warm_down: bool = False, **kw
) -> tuple[torch.nn.Module, object]:
    model, opt = _problem()

    def schedule(fraction: float) -> None:  # lr 0.05 → 0 over the run
        opt.param_groups[0]["lr"] = 0.05 * (1 - fraction)
        seen.append(fraction)

    seen: list[float] = []
    result = train_loop(
        run_dir,
        {"model": model, "optimizer": opt},
        _step_fn(model, opt, **kw),
        LoopConfig(steps=steps, seed=3, checkpoint_every=4, log_every=2, tensorboard=False),
        {"lr": 0.05},
        resume=resume,
        schedule=schedule if warm_down else None,
    )
    result.fractions = seen  # type: ignore[attr-defined]
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


def test_schedule_sees_the_run_share_and_resumes_exactly(tmp_path: Path) -> None:
    """A schedule is called with the share of the run done before each step (by the
    step budget here), and a run interrupted mid-schedule and resumed ends with the
    same weights as an uninterrupted one."""
    whole, result = _run(tmp_path / "a", 12, warm_down=True)
    assert result.fractions == [i / 12 for i in range(12)]
    with pytest.raises(UserError):  # "killed" at step 6: the last checkpoint is step 4
        _run(tmp_path / "b", 12, warm_down=True, poison_at=6)
    resumed, result = _run(tmp_path / "b", 12, resume=True, warm_down=True)
    assert result.fractions == [i / 12 for i in range(4, 12)]
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
    # the saved budget is spent: no step is taken (it used to take one, then stop)
    assert result.stopped_by == "time" and result.step == 4
    assert result.seconds >= 3600 and load_checkpoint(path)["seconds"] >= 3600


def _resume_with_budget(run_dir: Path, steps: int, minutes: float, from_now: bool):
    model, opt = _problem()
    loop = LoopConfig(steps=steps, seed=3, max_minutes=minutes, tensorboard=False)
    loop.budget_from_now = from_now
    return train_loop(
        run_dir, {"model": model, "optimizer": opt}, _step_fn(model, opt), loop, {}, resume=True
    )


def test_a_budget_given_now_counts_from_this_invocation(tmp_path: Path) -> None:
    """`--resume --minutes 30` after an hour of training trains (the budget used to
    cover the whole run, so such a resume stopped after one step)."""
    _run(tmp_path / "run", 4)
    path = tmp_path / "run" / CHECKPOINT
    save_checkpoint(path, {**load_checkpoint(path), "seconds": 3600.0})
    result = _resume_with_budget(tmp_path / "run", 8, 30, from_now=True)
    assert result.stopped_by == "steps" and result.step == 8 and result.start == 4
    saved = load_checkpoint(path)
    assert saved["budget_start"] == 3600.0  # the new budget began an hour into the run
    # a later resume without a budget of its own gets what is left of that one
    result = _resume_with_budget(tmp_path / "run", 12, 30, from_now=False)
    assert result.stopped_by == "steps" and result.step == 12
    save_checkpoint(path, {**load_checkpoint(path), "seconds": 3600.0 + 31 * 60})
    result = _resume_with_budget(tmp_path / "run", 16, 30, from_now=False)
    assert result.stopped_by == "time" and result.step == 12


def test_checkpoints_never_hold_non_finite_weights(tmp_path: Path) -> None:
    """A weight that turns NaN without a NaN loss (e.g. an optimiser step on a NaN
    gradient) must not reach the checkpoint that the error message calls the last
    good one."""
    model, opt = _problem()
    step = _step_fn(model, opt)

    def poisoning(i: int) -> dict[str, float]:
        metrics = step(i)  # the loss of this step is still finite
        if i == 7:  # right before the checkpoint at step 8
            with torch.no_grad():
                model.weight[0, 0] = float("nan")
        return metrics

    loop = LoopConfig(steps=12, seed=3, checkpoint_every=4, tensorboard=False)
    with pytest.raises(UserError, match=r"model\.weight became non-finite by step 8; not saved"):
        train_loop(tmp_path / "run", {"model": model, "optimizer": opt}, poisoning, loop, {})
    saved = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert saved["step"] == 4
    assert all(torch.isfinite(v).all() for v in saved["state"]["model"].values())


@pytest.mark.parametrize(("steps", "by_time", "total"), [(100_000, True, 300), (20, False, 20)])
def test_progress_bar_counts_the_budget_that_ends_the_run(
    steps: int, by_time: bool, total: int
) -> None:
    """At 10 steps/s, 100,000 steps outlast a 5-minute budget: the bar counts its seconds
    (an ETA of hours would be wrong); 20 steps end first: the bar counts steps."""
    progress = _Progress(LoopConfig(steps=steps), 0, 300.0, 0.0, enabled=True)
    progress.update(10, 1.0, 1.0)
    assert progress.by_time is by_time and progress.bar.total == total
    assert progress.bar.n == (1.0 if by_time else 10)
    progress.close()


def test_progress_rate_is_never_negative_after_switching_units(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bar that switches from seconds to steps starts afresh in the new unit: the rate
    it shows is measured in that unit only (a reset bar once printed "-14463.12it/s":
    its new start counted against a count of zero)."""
    progress = _Progress(LoopConfig(steps=20_000), 0, 10.0, 0.0, enabled=True)
    assert progress.by_time
    progress.update(14_000, 5.0, 5.0)  # 2,800 steps/s: the steps end first, so count steps
    assert not progress.by_time and progress.bar.n == 14_000
    progress.update(14_001, 5.1, 5.1)
    progress.close()
    printed = capsys.readouterr().err
    assert "it/s" in printed and not re.search(r"-[0-9.]+it/s", printed), printed


def test_a_bar_into_a_file_redraws_every_30_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    """Into a file or a pipe (here: captured; a benchmark cell's log.txt) every redraw is
    kept, so the bar redraws every 30 s there, not tqdm's every 0.1 s."""
    progress = _Progress(LoopConfig(steps=100), 0, None, 0.0, enabled=True)
    assert progress.bar.mininterval == 30.0
    progress.close()


@pytest.mark.parametrize(("clock", "steps"), [("wall", range(2, 10)), ("cpu", [10])])
def test_a_cpu_clock_budget_does_not_count_time_the_cpu_spent_elsewhere(
    tmp_path: Path, clock: str, steps
) -> None:
    """Steps that wait (here: sleep, as a run does while other processes hold the cores)
    spend a wall-clock budget but not a CPU-time one: the benchmark's cells stay equal
    on a busy machine."""
    import time

    model, opt = _problem()
    inner = _step_fn(model, opt)

    def waiting(i: int) -> dict[str, float]:
        time.sleep(0.05)
        return inner(i)

    loop = LoopConfig(steps=10, seed=3, max_minutes=0.005, clock=clock, tensorboard=False)
    result = train_loop(tmp_path / clock, {"model": model, "optimizer": opt}, waiting, loop, {})
    assert result.step in steps
    assert result.stopped_by == ("time" if clock == "wall" else "steps")
