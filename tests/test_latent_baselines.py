"""The benchmark's non-Hamiltonian baselines (issue 23): a latent neural ODE, RGN, LSTM
and GRU sharing HGN++'s encoder, decoder and training (hgn.models.latent); their shapes,
gradients, refusals, teacher forcing and open-loop rollouts, the CLI end to end, and
the extrapolation protocol's record of rollouts a model cannot do."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_HGNPP
from torch import Tensor

from hgn.models import HGNPP, MODELS, State
from hgn.models.latent import LatentConfig, LatentDynamicsModel
from hgn.training.config import resolve
from hgn.utils import UserError

BASELINES = ("ode", "rgn", "lstm", "gru")
"""The issue's four; the stretch, LGN, has tests of its own (its steps are slow)."""
ONE_WAY = {"rgn": "RGN", "lstm": "LSTM", "gru": "GRU"}

TINY = {k: v for k, v in TINY_HGNPP.items() if not k.startswith("energy_")}
"""HGN++'s tiny shared networks (tests/helpers.py), without its energies."""
DYNAMICS = {
    "ode": {"dynamics_hidden": 8, "dynamics_layers": 2},
    "rgn": {"dynamics_hidden": 8, "dynamics_layers": 2},
    "lstm": {"recurrent_hidden": 6},
    "gru": {"recurrent_hidden": 6},
    "lgn": {"dynamics_hidden": 8, "dynamics_layers": 2, "frames": 5},
}


def tiny(name: str, **overrides: object) -> LatentDynamicsModel:
    torch.manual_seed(0)
    return MODELS[name]({**TINY, **DYNAMICS[name], **overrides})


def frames(batch: int = 4, length: int = 9, size: int = 16) -> Tensor:
    torch.manual_seed(1)
    return torch.rand(batch, length, 3, size, size)


def tiny_cli(name: str, *extra: str) -> list[str]:
    """``--set`` arguments for a tiny model on the command line (``frames`` follows the
    data), plus ``extra`` keys."""
    keys = {k: v for k, v in {**TINY, **DYNAMICS[name]}.items() if k != "frames"}
    items = [f"model.{k}={json.dumps(v)}" for k, v in keys.items()]
    return [arg for key in (*items, *extra) for arg in ("--set", key)]


# ----------------------------------------------------------------------------- interface


@pytest.mark.parametrize("name", BASELINES)
def test_public_api_shapes(name: str) -> None:
    model = tiny(name).eval()
    x = frames()
    assert model.context_frames == 3 and model.state_offset == 2
    state = model.encode(x)
    latent = 8  # 2n: the whole state of every model
    q_size = 4 if name in ("ode", "rgn") else latent
    assert state.q.shape == (4, q_size)
    memory = {"ode": 4, "rgn": 4, "lstm": 12, "gru": 6}[name]
    assert state.p.shape == (4, memory)
    states = model.rollout(state, 5)
    assert states.q.shape == (4, 6, q_size) and states.p.shape == (4, 6, memory)
    torch.testing.assert_close(states.q[:, 0], state.q)
    assert model.decoder.linear.in_features == latent  # the whole state is drawn
    assert model.decode(states).shape == (4, 6, 3, 16, 16)
    assert model.hamiltonian(states) is None
    out = model.predict(x, 6)
    assert out["images"].shape == (4, 7, 3, 16, 16) and out["energy"].shape == (4, 7)
    assert torch.isnan(out["energy"]).all()
    if not model.can_run_backwards:  # the frames before the state are the given ones
        torch.testing.assert_close(out["images"][:, :2], x[:, :2])
    loss, metrics = model.train().loss(x)
    assert loss.ndim == 0 and loss.requires_grad
    assert {"mse", "kl", "horizon", "loss"} <= set(metrics)
    assert all(v.ndim == 0 and not v.requires_grad for v in metrics.values())
    assert model.sequence_errors is not None and model.sequence_errors.shape == (4,)
    assert model.eval().sample(2, 3).shape == (2, 4, 3, 16, 16)


@pytest.mark.parametrize("name", BASELINES)
def test_one_backward_pass_reaches_every_parameter(name: str) -> None:
    model = tiny(name, decode_frames=3, consistency_weight=1.0).train()
    loss, _ = model.loss(frames())
    loss.backward()
    for key, param in model.named_parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, key


@pytest.mark.parametrize("name", BASELINES)
def test_a_hundred_steps_fit_a_batch(name: str) -> None:
    """Sequences of one colour each (learnable from the context): every baseline leaves
    the mean image's error behind (measured: 0.05 -> 0.001-0.003)."""
    model = tiny(name, decode_frames=3, kl_weight=0.0)
    model.init_from_data(torch.full((3, 16, 16), 0.5))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(1)
    x = torch.rand(4, 1, 3, 1, 1).expand(4, 9, 3, 16, 16)
    first = None
    for _ in range(100):
        loss, metrics = model.loss(x)
        first = first or float(metrics["mse"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(metrics["mse"]) < 0.2 * first


def test_the_models_share_hgnpp_and_differ_only_in_their_dynamics() -> None:
    shared = {f.name for f in dataclasses.fields(LatentConfig)}
    hgnpp = MODELS["hgn++"]({**TINY, "energy_hidden": 8, "energy_layers": 2})
    assert isinstance(hgnpp, LatentDynamicsModel) and isinstance(hgnpp, HGNPP)
    prefixes = {key.split(".")[0] for key, _ in hgnpp.named_parameters()}
    assert prefixes == {"encoder", "fpsi", "kinetic", "potential", "decoder"}
    for name in BASELINES:
        model = tiny(name)
        assert shared <= {f.name for f in dataclasses.fields(model.config)}
        for part in ("encoder", "fpsi"):  # the same networks, weights shapes and all
            mine = {k: v.shape for k, v in getattr(model, part).state_dict().items()}
            theirs = {k: v.shape for k, v in getattr(hgnpp, part).state_dict().items()}
            assert mine == theirs, (name, part)


def test_small_profile_gives_the_baselines_hgnpp_settings_and_equal_sized_dynamics() -> None:
    reference = resolve("small", model="hgn++")
    shared = [f.name for f in dataclasses.fields(LatentConfig)]
    energies = sum(
        p.numel()
        for part in ("kinetic", "potential")
        for p in getattr(MODELS["hgn++"](reference.model), part).parameters()
    )
    for name in (*BASELINES, "lgn"):
        config = resolve("small", model=name)
        for key in shared:
            if key != "forward_backward":
                assert getattr(config.model, key) == getattr(reference.model, key), (name, key)
        assert config.train == reference.train
        assert config.model.forward_backward == (name in ("ode", "lgn"))
        model = MODELS[name](config.model)
        dynamics = sum(
            p.numel()
            for key, p in model.named_parameters()
            if key.split(".")[0] not in ("encoder", "fpsi", "decoder")
        )
        assert abs(dynamics - energies) < 0.05 * energies, (name, dynamics, energies)


# ----------------------------------------------------------------------------- ODE


def test_ode_forward_then_back_returns_within_rk4_error() -> None:
    """RK4 is not reversible, but forward then back over a fixed time (1 unit, the state
    moving by about 0.4) misses the start by a high power of the step h: at least O(h⁴),
    so halving the step divides the miss by 10 or more (not by 2 or 4 as a first- or
    second-order method would; measured: 7e-11 at h = 0.1, 2e-12 at 0.05, a factor 32)."""
    model = tiny("ode").double()
    with torch.no_grad():
        model.field.out.weight.mul_(30.0)  # a field that moves the state
    torch.manual_seed(2)
    s = State(torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64))

    @torch.no_grad()
    def miss(dt: float, steps: int) -> float:
        fwd = model.rollout(s, steps, dt)
        assert float((fwd.q[:, -1] - s.q).abs().max()) > 0.05  # it moved
        back = model.rollout(State(fwd.q[:, -1], fwd.p[:, -1]), steps, -dt)
        return float((back.q[:, -1] - s.q).abs().max())

    coarse, fine = miss(0.1, 10), miss(0.05, 20)
    assert coarse < 1e-8 and fine < coarse / 10, (coarse, fine)
    assert fine > 0  # and not exactly reversible


def test_ode_takes_trained_steps_at_other_speeds() -> None:
    model = tiny("ode").double()
    dt = model.config.dt
    s = State(torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64))
    fast, fine = model.rollout(s, 3, 2 * dt), model.rollout(s, 6, dt)
    torch.testing.assert_close(fast.q, fine.q[:, ::2], atol=1e-12, rtol=0)
    assert model.exactly_reversible() is None  # the protocol measures its round trip


@pytest.mark.parametrize(("name", "both"), [("ode", True), ("rgn", False)])
def test_ode_trains_forwards_and_backwards_rgn_forwards_only(
    name: str, both: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny(name).train()
    seen: list[Tensor] = []
    original = model.train_rollout
    monkeypatch.setattr(
        model, "train_rollout", lambda s0, dt, n, f: seen.append(dt) or original(s0, dt, n, f)
    )
    model.loss(frames())
    assert seen[0].flatten().sign().tolist() == ([1.0, 1.0, -1.0, -1.0] if both else [1.0] * 4)


# ----------------------------------------------------------------------------- LGN


def test_lgn_shapes_gradients_and_decoded_configuration() -> None:
    model = tiny("lgn").train()
    x = frames(length=5)
    loss, metrics = model.loss(x)
    assert all(v.ndim == 0 and not v.requires_grad for v in metrics.values())
    loss.backward()
    for key, param in model.named_parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, key
    model.eval()
    assert model.can_run_backwards and model.can_change_speed
    assert model.decoder.linear.in_features == 4  # q alone, as HGN++
    with torch.no_grad():
        states = model.rollout(model.encode(x), 3, -model.config.dt / 2)
        assert states.q.shape == states.p.shape == (4, 4, 4)
        assert model.decode(states).shape == (4, 4, 3, 16, 16)
        assert model.hamiltonian(states).shape == (4, 4)
        assert model.predict(x, 4)["images"].shape == (4, 5, 3, 16, 16)


def test_lgn_follows_the_euler_lagrange_equations() -> None:
    """Its q̈ is M⁻¹(∂L/∂q − (∂²L/∂q̇∂q) q̇) (checked against autograd's Hessians); with
    the learned part off it is a free particle, moved exactly by RK4; and its energy
    q̇·∂L/∂q̇ − L is conserved along a curved rollout up to RK4's error."""
    model = tiny("lgn").double()
    with torch.no_grad():
        model.lagrangian_net.out.weight.mul_(300.0)  # a Lagrangian that bends paths
    torch.manual_seed(2)
    q = torch.randn(4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(4, dtype=torch.float64, requires_grad=True)
    dq, dv = torch.autograd.grad(model.lagrangian(q, v), (q, v), create_graph=True)
    rows = [torch.autograd.grad(dv[i], (v, q), retain_graph=True) for i in range(4)]
    mass = torch.stack([r[0] for r in rows])
    mixed = torch.stack([r[1] for r in rows])
    expected = torch.linalg.solve(mass, dq - mixed @ v).detach()
    got = model.velocity(torch.cat([q, v]).detach()[None])[0]
    torch.testing.assert_close(got[4:].detach(), expected, atol=1e-10, rtol=0)
    s = State(torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64))
    with torch.no_grad():
        states = model.rollout(s, 20, 0.05)
        assert float((states.q[:, -1] - (s.q + s.p)).abs().max()) > 0.1  # not a straight line
        energy = model.hamiltonian(states)
        assert float(((energy - energy[:, :1]).abs() / energy[:, :1].abs()).max()) < 1e-8
        model.lagrangian_net.out.weight.zero_()  # L = ½|q̇|²: a free particle
        free = model.rollout(s, 4, 0.25)
        torch.testing.assert_close(free.q[:, -1], s.q + s.p, atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("name", list(ONE_WAY))
def test_one_way_models_refuse_backwards_and_other_speeds_in_one_line(name: str) -> None:
    model = tiny(name).eval()
    assert not model.can_run_backwards and not model.can_change_speed
    state = model.encode(frames())
    dt = model.config.dt
    calls = {
        "backwards": lambda: model.rollout(state, 3, -dt),
        "2x": lambda: model.rollout(state, 3, 2 * dt),
        "half": lambda: model.rollout(state, 3, dt / 2),
        "predict": lambda: model.predict(frames(), 4, -dt),
        "sample": lambda: model.sample(2, 3, 2 * dt),
    }
    for what, call in calls.items():
        with pytest.raises(UserError) as info:
            call()
        message = str(info.value)
        assert message.startswith(ONE_WAY[name] + " cannot") and "\n" not in message, what
        if what != "backwards" and what != "predict":
            assert "another speed" in message
    assert model.rollout(state, 2, dt).q.shape[1] == 3  # the trained dt is fine


@pytest.mark.parametrize(("name", "key"), [("rgn", "forward_backward"), ("lstm", "substeps")])
def test_one_way_configs_refuse_backward_training_and_substeps(name: str, key: str) -> None:
    with pytest.raises(UserError, match=f"model.{key}"):
        tiny(name, **{key: True if key == "forward_backward" else 2})


# ----------------------------------------------------------------------------- recurrent


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_training_is_teacher_forced_with_the_true_frames_encodings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each training step's cell input j ≥ 1 is the encoding (posterior mean through f_ψ)
    of the true frames ending at frame k − 1 + j, not the cell's previous prediction."""
    model = tiny(name).train()
    x = frames()
    inputs: list[Tensor] = []
    outputs: list[Tensor] = []
    step = model.step

    def record(latent: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        inputs.append(latent.detach().clone())
        out = step(latent, memory)
        outputs.append(out[0].detach().clone())
        return out

    monkeypatch.setattr(model, "step", record)
    _, metrics = model.loss(x)
    k, horizon = 3, int(metrics["horizon"])
    assert horizon == 6 and len(inputs) == horizon
    with torch.no_grad():
        for j in range(1, horizon):
            mean, _ = model.posterior(x[:, j : j + k])
            torch.testing.assert_close(inputs[j], model.latent(mean), atol=1e-6, rtol=0)
            assert not torch.allclose(inputs[j], outputs[j - 1])  # not its own prediction


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_rollout_is_open_loop(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """At test time each input is the cell's own previous prediction (the frames after
    the context are never read), and the memory carries over."""
    model = tiny(name).eval()
    x = frames()
    inputs: list[Tensor] = []
    step = model.step
    monkeypatch.setattr(model, "step", lambda z, m: inputs.append(z) or step(z, m))
    with torch.no_grad():
        state = model.encode(x)
        assert float(state.p.abs().max()) == 0  # an empty memory at the state's frame
        states = model.rollout(state, 4)
    assert len(inputs) == 4
    for j, given in enumerate(inputs):
        torch.testing.assert_close(given, states.q[:, j])
    assert float(states.p[:, -1].abs().max()) > 0
    y = x.clone()
    y[:, 3:] = 0.0  # frames after the context change nothing
    with torch.no_grad():
        torch.testing.assert_close(model.predict(y, 6)["images"], model.predict(x, 6)["images"])


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hgn import data as hgn_data

    out = tmp_path_factory.mktemp("data") / "clean"
    hgn_data.generate(
        out, "mass-spring", n_train=6, n_test=3, steps=12, size=16, noise=0, progress=False
    )
    return out


@pytest.fixture(scope="module")
def runs(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``hgn train --model NAME --steps 2`` for each baseline, through the CLI."""
    from hgn.cli import main

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name in (*BASELINES, "lgn"):
        run = root / name
        argv = ["train", "--data", str(data), "--out", str(run), "--steps", "2", "--no-progress"]
        extra = ["train.batch_size=2", "train.image_every=0"]
        extra += ["model.frames=5"] if name == "lgn" else []  # its steps are slow
        argv += ["--model", name, *tiny_cli(name, *extra)]
        assert main(argv) == 0, name
        out[name] = run
    return out


@pytest.mark.parametrize("name", [*BASELINES, "lgn"])
def test_cli_trains_each_baseline_and_the_run_loads(name: str, runs: dict[str, Path]) -> None:
    import hgn
    from hgn.runs import CHECKPOINT
    from hgn.utils import load_checkpoint

    saved = load_checkpoint(runs[name] / CHECKPOINT)
    assert saved["config"]["model"]["name"] == name and int(saved["step"]) == 2
    model = hgn.load(str(runs[name]))
    assert type(model) is type(tiny(name))
    assert model.sample(2, 3).shape == (2, 4, 3, 16, 16)  # the aggregate posterior, fitted
    assert "aggregate posterior" in model.sampling_from


def test_extrapolation_records_what_rgn_cannot_do(
    runs: dict[str, Path], data: Path, tmp_path: Path
) -> None:
    """``hgn evaluate --protocol extrapolate`` on an RGN run: forward is scored; backward,
    2× and ½× are recorded as skipped with the model's one-line reason, the Markdown says
    "cannot", the pictures are drawn (blank rows), and there is no round trip."""
    from hgn.cli import main
    from hgn.evaluation.reports import FILES

    out = tmp_path / "ex"
    argv = ["evaluate", str(runs["rgn"]), "--data", str(data), "--out", str(out)]
    assert main([*argv, "--protocol", "extrapolate", "--start", "3", "--no-progress"]) == 0
    results = json.loads((out / "extrapolate.json").read_text())
    rollouts = results["rollouts"]
    assert np.isfinite(rollouts["forward"]["ratio"]) and rollouts["forward"]["steps"] == 7
    for name in ("backward", "2x", "half"):
        assert rollouts[name]["skipped"].startswith("RGN cannot"), name
        assert "ratio" not in rollouts[name]
    assert "backwards" in rollouts["backward"]["skipped"]
    assert "another speed" in rollouts["2x"]["skipped"]
    assert results["reversible"]["round_trip_relative_error"] is None
    assert results["reversible"]["reversible"] is False
    saved = json.loads((out / "extrapolate.json").read_text())
    assert saved["rollouts"]["half"]["skipped"] == rollouts["half"]["skipped"]
    text = (out / "extrapolate.md").read_text()
    assert "| backward (−dt) | -0.125 | cannot |" in text
    assert "Rollouts the model cannot do" in text and "cannot run backwards" in text
    assert "Learned H: none" in text
    for key in ("strip", "gif", "errors", "energy"):
        assert (out / FILES[key]).stat().st_size > 0
    assert results["energy_drift"]["relative_spread_mean"] is None or math.isnan(
        results["energy_drift"]["relative_spread_mean"]
    )  # no learned H (NaN, which the JSON writes as NaN)


def test_extrapolation_scores_every_rollout_of_the_ode(runs: dict[str, Path], data: Path) -> None:
    import hgn
    from hgn import data as hgn_data
    from hgn.data import mean_frame
    from hgn.evaluation import extrapolate as ex

    model = hgn.load(str(runs["ode"]))
    split = hgn_data.load(data, "test")
    mean = mean_frame(hgn_data.load(data, "train"))
    results, _ = ex.run_protocol(model, split, mean, start=3, drift_steps=10, progress=False)
    assert all(np.isfinite(r["ratio"]) for r in results["rollouts"].values())
    assert results["rolled_back_steps"] == 2  # taken back to the window's first frame
    assert results["reversible"]["round_trip_relative_error"] is not None
