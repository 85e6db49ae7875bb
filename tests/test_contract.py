"""One contract for every registered model: each sequence model of ``hgn.models.MODELS``
and each flow of ``hgn.flows.nhf.FLOWS`` is put through the same checks, parametrized
over the registries when the tests are collected, so a model added to a registry is
tested here without a line changed (its tiny config comes from
:func:`helpers.tiny_model_config`, which fails loudly where it cannot shrink it).

Sequence models: the shapes of ``encode``, ``rollout``, ``decode``, ``hamiltonian``,
``predict``, ``loss`` and ``sample`` (images, or a one-line UserError without a prior);
detached 0-d metrics; one ``loss().backward()`` reaches every parameter with a finite
gradient (the exceptions are listed in :data:`NO_GRADIENT`, each with its reason, and
checked to be exact); a checkpoint written as the trainer writes it opens
(``hgn.runs.open_sequence_model``) to the same outputs; a rollout forward then back
returns to its start (:func:`test_forward_then_back_returns_to_the_start` states the
tolerance), and a model that cannot run backwards refuses in one line.

Flows: ``log_prob`` shape and finiteness, ``sample`` shape, every parameter's gradient,
``save`` then ``load`` gives the same ``log_prob`` under a fixed seed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import SIZE, frames, tiny_flow_config, tiny_model_config, tiny_sequence_model
from torch import Tensor, nn

from hgn.flows import nhf
from hgn.models import MODELS, ModelSpec, SequenceModel, State
from hgn.runs import CHECKPOINT, SEQUENCE, open_sequence_model
from hgn.training.config import RunConfig, TrainConfig
from hgn.utils import UserError, save_checkpoint

SEQUENCE_MODELS = list(MODELS)
FLOWS = list(nhf.FLOWS.keys())
BATCH = 2

NO_GRADIENT: dict[str, dict[str, str]] = {
    "HNN": {
        "h_net.net.4.bias": "the additive constant of H: only ∇H enters the dynamics and "
        "the loss, so no loss can move it (it shifts the reported energy only)",
    },
}
"""Parameters (by model class) that no training loss reaches, and why. The gradient test
checks each is exactly the set without a gradient, and that the loss does not change
when they do."""


def _window(model: SequenceModel, batch: int = BATCH) -> Tensor:
    torch.manual_seed(1)
    return frames(batch, int(model.config.frames))


def _single_line(error: pytest.ExceptionInfo[UserError]) -> str:
    message = str(error.value)
    assert message and "\n" not in message, message
    return message


def test_every_registered_model_has_a_tiny_config() -> None:
    """The parametrization below is the registries themselves (nothing skipped)."""
    assert SEQUENCE_MODELS and FLOWS
    for name in SEQUENCE_MODELS:
        assert tiny_model_config(name)["image_size"] == SIZE


# --- sequence models ------------------------------------------------------------------------


def test_every_registered_model_declares_its_prior() -> None:
    """The benchmark's verdict groups models by the prior they declare; the three
    Hamiltonian models and the four without a physics prior are the ones it compares."""
    priors = {name: MODELS[name].cls.prior for name in SEQUENCE_MODELS}
    assert set(priors.values()) <= {"hamiltonian", "lagrangian", "none"}
    assert {n for n, p in priors.items() if p == "none"} >= {"ode", "rgn", "lstm", "gru"}
    assert {n for n, p in priors.items() if p == "hamiltonian"} >= {"hgn", "hgn++", "hnn"}
    assert priors["lgn"] == "lagrangian"


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_shapes(name: str) -> None:
    model = tiny_sequence_model(name).eval()
    x = _window(model)
    assert 1 <= model.context_frames <= x.shape[1]
    assert 0 <= model.state_offset < model.context_frames
    with torch.no_grad():
        state = model.encode(x)
        # q and p may differ in size (a recurrent model's p is its memory)
        assert isinstance(state, State) and state.q.shape[0] == state.p.shape[0] == BATCH
        states = model.rollout(state, 3)
        assert states.q.shape == (BATCH, 4, *state.q.shape[1:])
        assert states.p.shape == (BATCH, 4, *state.p.shape[1:])
        torch.testing.assert_close(states.q[:, 0], state.q)
        torch.testing.assert_close(states.p[:, 0], state.p)
        assert model.decode(state).shape == (BATCH, 3, SIZE, SIZE)
        assert model.decode(states).shape == (BATCH, 4, 3, SIZE, SIZE)
        energy = model.hamiltonian(states)
        assert energy is None or energy.shape == (BATCH, 4)
        out = model.predict(x, 5)
        assert out["images"].shape == (BATCH, 6, 3, SIZE, SIZE)
        assert out["energy"].shape == (BATCH, 6)
        assert out["q"].shape[:1] == out["p"].shape[:1] == (BATCH,)
        assert torch.isfinite(out["images"]).all()
        known = torch.isnan(out["energy"]) if energy is None else torch.isfinite(out["energy"])
        assert known.all()
        try:
            sample = model.sample(3, 4)
        except UserError as error:  # a model without a prior says so in one line
            assert "\n" not in str(error) and str(error)
        else:
            assert sample.shape == (3, 5, 3, SIZE, SIZE) and torch.isfinite(sample).all()


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_loss_metrics_and_a_gradient_for_every_parameter(name: str) -> None:
    model = tiny_sequence_model(name)
    x = _window(model)
    torch.manual_seed(2)
    loss, metrics = model.loss(x)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad
    assert "mse" in metrics
    for key, value in metrics.items():
        assert isinstance(value, Tensor) and value.dim() == 0, key
        assert not value.requires_grad and value.grad_fn is None, key
    if model.reports_sequence_errors:
        errors = model.sequence_errors
        assert errors is not None and errors.shape == (BATCH,) and not errors.requires_grad
    loss.backward()
    missing = {k for k, p in model.named_parameters() if p.requires_grad and p.grad is None}
    assert missing == set(NO_GRADIENT.get(type(model).__name__, {})), missing
    for key, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), key
    # what gets no gradient really does not matter to the loss
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key in missing:
                p.add_(1.0)
    torch.manual_seed(2)
    with torch.no_grad():
        moved, _ = model.loss(x)
    assert float(moved) == float(loss.detach())


def _trained_step(model: SequenceModel, x: Tensor) -> None:
    """One optimiser step, so that weights and any buffers a loss updates have moved."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(3)
    model.loss(x)[0].backward()
    optimizer.step()


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_save_then_open_returns_the_same_outputs(name: str, tmp_path: Path) -> None:
    """The checkpoint holds what the trainer's holds (``hgn.training.loop``: the kind, the
    step, the run config as ``RunConfig.to_dict``, the model's state dict); opened by
    ``hgn.runs.open_sequence_model`` it predicts, scores and samples exactly as the model
    that was saved."""
    model = tiny_sequence_model(name)
    x = _window(model)
    _trained_step(model, x)
    model.eval()
    with torch.no_grad():
        model.fit_aggregate_posterior([x])
    config = RunConfig(name=name, model=model.config, train=TrainConfig()).to_dict()
    save_checkpoint(
        tmp_path / CHECKPOINT,
        {
            "kind": SEQUENCE, "step": 1, "seconds": 0.0, "budget_start": 0.0,
            "config": config, "state": {"model": model.state_dict()},
        },
    )  # fmt: skip
    opened, saved = open_sequence_model(tmp_path)
    assert type(opened) is type(model) and not opened.training
    assert opened.config == model.config and saved["config"] == config

    def outputs(m: SequenceModel) -> dict[str, Tensor]:
        with torch.no_grad():
            out = dict(m.predict(x, 6))
            torch.manual_seed(4)
            out["loss"] = m.loss(x)[0]
            torch.manual_seed(5)
            with contextlib.suppress(UserError):  # no prior: test_shapes checks the message
                out["sample"] = m.sample(2, 3)
        return out

    before, after = outputs(model), outputs(opened)
    assert before.keys() == after.keys()
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, equal_nan=True)


ROUNDING = 1e-10
"""Round-trip error, relative to the state's size, of an exactly reversible rollout in
float64 (rounding only: measured ~1e-15)."""


def _round_trip(model: SequenceModel, start: State, dt: float, steps: int) -> tuple[float, float]:
    """(relative error of forward ``steps`` then back ``steps``, relative distance moved)."""
    scale = 1.0 + max(float(start.q.abs().max()), float(start.p.abs().max()))
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        there = model.rollout(start, steps, dt)
        end = State(there.q[:, -1], there.p[:, -1])
        back = model.rollout(end, steps, -dt)

    def distance(a: State, b: State) -> float:
        return max(float((a.q - b.q).abs().max()), float((a.p - b.p).abs().max()))

    back_end = State(back.q[:, -1], back.p[:, -1])
    return distance(back_end, start) / scale, distance(end, start) / scale


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_forward_then_back_returns_to_the_start(name: str) -> None:
    """k steps of the trained dt forward, then k of -dt, in float64, from an encoded state.

    Tolerance: a model whose ``exactly_reversible()`` is True (leapfrog on a separable H,
    implicit midpoint) returns to its start up to rounding (:data:`ROUNDING`). Any other
    (False, or None: not declared) either does too, as measured, or its integrator's error
    shows its order: every integrator hgn has is at least first order, so the round trip's
    error over the same time at half the step is at most 0.6 of it (1/2 for first order,
    with room for the next order's term; 1/4 and 1/16 for second- and fourth-order ones).
    A model that cannot change speed cannot halve its step: its round trip must then stay
    within k·dt of the state's size (k steps of a first-order local error O(dt²)/dt).
    A model that cannot run backwards refuses a negative dt in one line.
    """
    model = tiny_sequence_model(name).eval().double()
    with torch.no_grad():
        start = model.encode(_window(model).double())
    dt, k = model.trained_dt, 4
    if not model.can_run_backwards:
        with pytest.raises(UserError) as error:
            model.rollout(start, 2, -dt)
        assert "backwards" in _single_line(error)
        return
    error, moved = _round_trip(model, start, dt, k)
    assert moved > 1e-4, "the rollout did not move: the round trip shows nothing"
    if model.exactly_reversible() or error <= ROUNDING:
        assert error <= ROUNDING, f"{name}: declared exactly reversible, off by {error:.3g}"
    elif model.can_change_speed:
        finer, _ = _round_trip(model, start, dt / 2, 2 * k)
        assert finer <= 0.6 * error, f"{name}: round trip {error:.3g} at dt, {finer:.3g} at dt/2"
    else:
        assert error <= k * abs(dt), f"{name}: round trip off by {error:.3g}"


# --- flows ------------------------------------------------------------------------------------


def _tiny_flow(kind: str) -> nhf.DensityModel:
    torch.manual_seed(0)
    model = nhf.build(tiny_flow_config(kind))
    # a standardisation that is not the identity, so that saving must keep its buffers
    model.set_standardisation(torch.tensor([0.5, -0.25]), torch.tensor([2.0, 0.5]))
    return model


def _points(n: int = 16) -> Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(6))


@pytest.mark.parametrize("kind", FLOWS)
def test_flow_shapes_and_finite_densities(kind: str) -> None:
    model = _tiny_flow(kind).eval()
    x = _points()
    with torch.no_grad():
        log_p = model.log_prob(x, n_importance=4)
        assert log_p.shape == (16,) and torch.isfinite(log_p).all()
        assert model.log_prob(x.reshape(4, 4, 2), n_importance=4).shape == (4, 4)
        sample = model.sample((5,))
        assert sample.shape == (5, 2) and torch.isfinite(sample).all()
        assert model().sample((3, 2)).shape == (3, 2, 2)


@pytest.mark.parametrize("kind", FLOWS)
def test_flow_gradient_reaches_every_parameter(kind: str) -> None:
    model = _tiny_flow(kind).train()
    torch.manual_seed(7)
    loss = model.loss(_points())
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    for key, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), key


@pytest.mark.parametrize("kind", FLOWS)
def test_flow_save_then_load_gives_the_same_log_prob(kind: str, tmp_path: Path) -> None:
    model = _tiny_flow(kind)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.loss(_points()).backward()
    optimizer.step()
    model.eval()
    nhf.save(model, tmp_path / CHECKPOINT)
    loaded = nhf.load(tmp_path)
    assert type(loaded) is type(model) and loaded.config() == model.config()
    x = _points()
    with torch.no_grad():
        torch.manual_seed(8)
        before = model.log_prob(x, n_importance=4)
        torch.manual_seed(8)
        after = loaded.log_prob(x, n_importance=4)
        torch.manual_seed(9)
        drawn = model.sample((4,))
        torch.manual_seed(9)
        again = loaded.sample((4,))
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    torch.testing.assert_close(again, drawn, rtol=0, atol=0)


# --- the tiny config of a model the helpers have never seen ----------------------------------


@dataclass
class _WideConfig:
    image_size: int = 64
    frames: int = 31
    dt: float = 0.125
    width: int = 512  # a size under a name tiny_model_config does not know


class _Wide(SequenceModel):
    """A registered model whose size hides under an unknown key."""

    Config = _WideConfig
    can_run_backwards = can_change_speed = False

    def __init__(self, config: _WideConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Linear(config.width, config.width)

    context_frames = 1

    def encode(self, frames: Tensor, sample: bool = False) -> State:
        raise NotImplementedError

    def rollout(self, state: State, steps: int, dt: float | None = None) -> State:
        raise NotImplementedError

    def decode(self, state: State) -> Tensor:
        raise NotImplementedError

    def loss(self, frames: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError


def test_a_model_the_tiny_config_cannot_shrink_fails_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a skip: the contract of such a model fails, naming it and its largest weights."""
    # registered for this test only (a Registry is read-only: its mapping is patched)
    monkeypatch.setitem(MODELS._entries, "wide", ModelSpec(_Wide))
    config = tiny_model_config("wide")
    assert config == {"image_size": SIZE, "frames": 6, "dt": 0.125, "width": 512}
    with pytest.raises(AssertionError, match=r"did not shrink _Wide: .*'net\.weight'"):
        tiny_sequence_model("wide")
