"""HGN: physics in the latent space, gradients, shapes, configs, the registry."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import TINY_HGN, frames, tiny_model
from torch import Tensor, nn

from hgn.checks import config_from_dict
from hgn.models import HGN, MODELS, HGNConfig, HNNConfig, State, get_model
from hgn.models.hgn import MAX_LOGVAR
from hgn.physics import integrators
from hgn.utils import UserError

TINY = {
    **{key: value for key, value in TINY_HGN.items() if not key.startswith("hamiltonian_")},
    "frames": 5,
    "hamiltonian_filters": [8, 8, 8, 8],  # HGNConfig's kernels and strides: five layers
}
"""The tiny HGN with a deeper H (:data:`helpers.TINY_HGN` has two layers)."""


def tiny(name: str = "hgn", **overrides) -> HGN:
    return tiny_model(name, TINY, **overrides)


class SpringH(nn.Module):
    """An analytic, separable H: ½ k q² + p² / (2m) summed over the latent map."""

    def forward(self, q: Tensor, p: Tensor) -> Tensor:
        return (q.square() + 0.25 * p.square()).flatten(1).sum(1)


def spring_grad(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
    return 2.0 * q, 0.5 * p


@pytest.mark.parametrize("method", ["leapfrog", "euler", "rk4"])
def test_rollout_with_analytic_h_equals_the_integrator(method: str) -> None:
    model = tiny(integrator=method)
    model.h_net = SpringH()
    q, p = torch.randn(3, 4, 4, 4), torch.randn(3, 4, 4, 4)
    states = model.rollout(State(q, p), 12, dt=0.1)
    qs, ps = integrators.rollout(spring_grad, q, p, 0.1, 12, method=method)
    assert states.q.shape == (3, 13, 4, 4, 4)
    torch.testing.assert_close(states.q, qs.transpose(0, 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(states.p, ps.transpose(0, 1), rtol=1e-5, atol=1e-6)
    energy = model.hamiltonian(states)  # conserved to O(dt²) by leapfrog
    assert energy.shape == (3, 13)
    if method == "leapfrog":
        assert float((energy - energy[:, :1]).abs().max() / energy.abs().min()) < 0.01


def test_separable_leapfrog_rollout_is_reversible() -> None:
    model = tiny(separable=True).double()
    q, p = torch.randn(2, 4, 4, 4, dtype=torch.float64), torch.randn(2, 4, 4, 4).double()
    with torch.autocast("cpu", enabled=False):
        fwd = model.rollout(State(q, p), 30, dt=0.2)
        back = model.rollout(State(fwd.q[:, -1], fwd.p[:, -1]), 30, dt=-0.2)
    moved = (fwd.q[:, -1] - q).abs().max().item()
    assert moved > 1e-3  # it really moved
    assert (back.q[:, -1] - q).abs().max().item() < 1e-4
    assert (back.p[:, -1] - p).abs().max().item() < 1e-4


def test_separable_option_splits_kinetic_and_potential() -> None:
    model = tiny(separable=True)
    q, p = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    h = model.hamiltonian(State(q, p))
    parts = model.h_net.kinetic(p) + model.h_net.potential(q)
    torch.testing.assert_close(h, parts)
    dh_dq, _ = integrators.grad_of(model.h_net)(q, torch.zeros_like(p))
    dh_dq2, _ = integrators.grad_of(model.h_net)(q, torch.randn_like(p))
    torch.testing.assert_close(dh_dq, dh_dq2)  # ∂H/∂q does not depend on p


@pytest.mark.parametrize("dt", [0.125, 0.25])  # 0.25: two trained steps each
def test_separable_rollout_is_the_joint_leapfrog(dt: float) -> None:
    """A separable H rolls out by one ∇K and one ∇V a step: the same states, and the
    same gradients into every parameter, as the leapfrog with the joint ∇H."""
    model = tiny(separable=True, quadratic=True).double()
    with torch.no_grad():
        model.h_net.log_ab.copy_(torch.tensor([0.03, -0.02]))
    q, p = torch.randn(2, 4, 4, 4).double(), torch.randn(2, 4, 4, 4).double()
    fast = model.rollout(State(q, p), 6, dt=dt)
    qs, ps = integrators.rollout(
        integrators.grad_of(model.h_net), q, p, dt, 6, substeps=round(dt / 0.125)
    )
    torch.testing.assert_close(fast.q, qs.transpose(0, 1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.p, ps.transpose(0, 1), rtol=1e-12, atol=1e-12)
    params = list(model.h_net.parameters())
    mine = torch.autograd.grad((fast.q.sin().sum() + fast.p.square().sum()), params)
    theirs = torch.autograd.grad((qs.sin().sum() + ps.square().sum()), params)
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("hgn", {}),
        ("hgn-euler", {}),
        ("hgn-determ", {}),
        ("hgn-no-fpsi", {}),
        ("hgn", {"separable": True, "quadratic": True, "objective": "geco"}),
    ],
)
def test_gradients_reach_every_parameter(name: str, options: dict) -> None:
    model = tiny(name, **options)
    loss, metrics = model.loss(frames())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing
    assert {"loss", "mse", "kl"} <= set(metrics)
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_variants_are_presets_of_one_model() -> None:
    assert tiny("hgn-euler").config.integrator == "euler"
    assert tiny("hgn-determ").config.deterministic
    no_fpsi = tiny("hgn-no-fpsi")
    assert no_fpsi.fpsi is None
    assert sum(p.numel() for p in no_fpsi.parameters()) < sum(
        p.numel() for p in tiny().parameters()
    )
    _, metrics = tiny("hgn-determ").loss(frames())
    assert metrics["kl"] == 0.0


@pytest.mark.slow
def test_tiny_model_overfits_one_sequence() -> None:
    torch.manual_seed(1)
    x = torch.full((1, 5, 3, 16, 16), 0.8)
    t = torch.arange(5)
    x[0, t, 2, 6:10, :] = 0.2  # a band that moves right, one pixel per frame
    for i in range(5):
        x[0, i, :, 6:10, 2 + i : 6 + i] = torch.tensor([0.1, 0.2, 0.9])[:, None, None]
    model = tiny("hgn-determ")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss, _ = model.loss(x)
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


def test_shapes_of_predict_sample_encode_decode() -> None:
    model = tiny(input_frames=3)
    x = frames(batch=2, length=5)
    out = model.predict(x, 7, dt=-0.1)
    assert out["images"].shape == (2, 8, 3, 16, 16)
    assert out["energy"].shape == (2, 8)
    assert out["images"].min() >= 0 and out["images"].max() <= 1
    assert model.sample(3, 4).shape == (3, 5, 3, 16, 16)
    state = model.encode(x)
    assert state.q.shape == (2, 4, 4, 4) and model.decode(state).shape == (2, 3, 16, 16)
    assert model.context_frames == 3
    # the encoder reads only the prefix it was configured for
    y = x.clone()
    y[:, 3:] = 0
    torch.testing.assert_close(model.encode(y).q, state.q)


@pytest.mark.parametrize("size", [16, 32, 64, 128])
def test_image_sizes(size: int) -> None:
    model = tiny(image_size=size, encoder_filters=[4] * 6, decoder_filters=[4])
    assert model.predict(frames(1, 5, size), 2)["images"].shape == (1, 3, 3, size, size)


def test_negative_dt_runs_back_in_time() -> None:
    model = tiny()
    s = State(torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4))
    fwd = model.rollout(s, 1, dt=0.01)
    back = model.rollout(s, 1, dt=-0.01)
    step_f, step_b = fwd.q[:, 1] - s.q, back.q[:, 1] - s.q
    torch.testing.assert_close(step_f, -step_b, rtol=0.05, atol=1e-6)


def test_deterministic_model_refuses_to_sample() -> None:
    with pytest.raises(UserError, match="no prior"):
        tiny("hgn-determ").sample(2, 3)


def test_geco_multiplier_grows_while_the_constraint_is_violated() -> None:
    model = tiny(objective="geco", geco_target=1e-3, geco_speed=1e-2)
    model.train()
    lams = []
    for _ in range(3):
        _, metrics = model.loss(frames())
        lams.append(metrics["geco_lambda"])
    assert lams[0] < lams[1] < lams[2]
    model.eval()
    _, metrics = model.loss(frames())
    assert metrics["geco_lambda"] == lams[-1]  # no update outside training
    assert "geco.lam" in model.state_dict()


def test_config_validation_names_the_key() -> None:
    with pytest.raises(UserError, match=r"model\.nope"):
        config_from_dict(HGNConfig, {"nope": 1}, "model")
    with pytest.raises(UserError, match=r"model\.dt must be float"):
        config_from_dict(HGNConfig, {"dt": "fast"}, "model")
    with pytest.raises(UserError, match=r"model\.encoder_filters\[1\] must be int"):
        config_from_dict(HGNConfig, {"encoder_filters": [8, 1.5]}, "model")
    with pytest.raises(UserError, match="image_size"):
        HGNConfig(image_size=48)
    with pytest.raises(UserError, match="integrator"):
        HGNConfig(integrator="magic")
    with pytest.raises(UserError, match="context_frames"):
        HGNConfig(frames=5, context_frames=6)
    with pytest.raises(UserError, match="encoder_filters"):
        HGNConfig(encoder_filters=[8, 8])  # too few layers to reach 4×4 from 64×64
    cfg = config_from_dict(HGNConfig, {"dt": 1, "context_frames": None}, "model")
    assert cfg.dt == 1.0 and isinstance(cfg.dt, float)


@pytest.mark.parametrize(
    ("cls", "values", "message"),
    [
        (HGNConfig, {"kl_weight": float("nan")}, r"model\.kl_weight must be a finite number ≥ 0"),
        (HGNConfig, {"kl_weight": float("inf")}, r"model\.kl_weight must be a finite"),
        (HGNConfig, {"geco_speed": -1.0}, r"model\.geco_speed must be a finite number > 0"),
        (HGNConfig, {"geco_target": float("nan")}, r"model\.geco_target"),
        (HGNConfig, {"geco_alpha": 1.0}, r"model\.geco_alpha must be .* < 1"),
        (HGNConfig, {"warmup": -1}, r"model\.warmup must be an integer ≥ 0"),
        (HGNConfig, {"dt": float("nan")}, r"model\.dt must be a finite non-zero"),
        (HNNConfig, {"aux_weight": float("nan")}, r"model\.aux_weight must be a finite"),
        (HNNConfig, {"latent_size": 0}, r"model\.latent_size must be an integer > 0"),
        (HNNConfig, {"decoder_filters": [0]}, r"model\.decoder_filters must be a non-empty"),
    ],
)
def test_every_numeric_model_key_is_range_checked(cls: type, values: dict, message: str) -> None:
    """NaN, infinite and wrong-signed values fail at once with the key's name (a NaN
    KL weight used to pass and fail at step 1 with advice about the learning rate)."""
    with pytest.raises(UserError, match=message):
        config_from_dict(cls, values, "model")


def test_encoder_needs_enough_frames() -> None:
    with pytest.raises(UserError, match="needs 5 frames"):
        tiny().loss(frames(length=3))


def test_registry() -> None:
    assert {"hgn", "hgn-euler", "hgn-determ", "hgn-no-fpsi"} <= set(MODELS)
    spec = get_model("hgn-euler")
    cfg = spec.config({"dt": 0.5})
    assert dataclasses.asdict(cfg)["integrator"] == "euler" and cfg.dt == 0.5
    with pytest.raises(UserError, match="unknown model"):
        get_model("transformer")


def test_rollout_keeps_float32_under_bf16_autocast() -> None:
    model = tiny()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        states = model.rollout(State(torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)), 3)
    assert states.q.dtype == torch.float32


def test_warmup_grows_the_horizon_and_the_kl_weight() -> None:
    model = tiny(warmup=4, kl_weight=1.0)
    model.train()
    horizons = [model.loss(frames(length=5))[1]["horizon"] for _ in range(5)]
    assert horizons == [1, 1, 2, 4, 4]  # 4·(t/4)² rounded
    assert int(model.trained_steps) == 5 and "trained_steps" in model.state_dict()
    model.eval()
    assert model.loss(frames(length=5))[1]["horizon"] == 4
    assert int(model.trained_steps) == 5


def test_posterior_log_variance_is_bounded_so_the_kl_stays_finite() -> None:
    # a huge log-variance from one bad optimiser step used to overflow exp() into NaN
    model = tiny()
    with torch.no_grad():
        bias = model.encoder.head.bias
        bias[bias.numel() // 2 :] = 200.0  # the log-variance half of the head
    _, logvar = model.posterior(frames())
    assert logvar.max() <= MAX_LOGVAR
    loss, metrics = model.loss(frames())
    assert torch.isfinite(loss) and metrics["kl"] < 1e6
    # far below the bound the head's output passes through almost unchanged
    model = tiny()
    _, logvar = model.posterior(frames())
    assert -4.5 < logvar.mean() < -3.5
