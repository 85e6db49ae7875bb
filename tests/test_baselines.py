"""HNN and HNN Conv: registry, shapes, the learned vector field, losses, rollouts."""

from __future__ import annotations

import pytest
import torch

from hgn import models
from hgn.models import get_model
from hgn.models.hnn import HNN, HNNConfig
from hgn.physics import integrators
from hgn.utils import UserError

SIZE = 16


def _model(name: str, dof: int = 2, **kw) -> HNN:
    torch.manual_seed(0)
    return get_model(name)({"image_size": SIZE, "dof": dof, "frames": 6, **kw})


def _moving_disc(batch: int = 4, frames: int = 6) -> torch.Tensor:
    """A bright disc oscillating horizontally on grey: a 1-dof system seen in pixels."""
    t = torch.arange(frames) * 0.125
    phase = torch.rand(batch, 1) * 6.28
    x = 8 + 4 * torch.cos(2 * t + phase)  # (B, T)
    grid = torch.arange(SIZE).float()
    d2 = (grid.view(1, 1, 1, SIZE) - x[..., None, None]) ** 2 + (grid.view(1, 1, SIZE, 1) - 8) ** 2
    disc = torch.sigmoid(4 - d2)  # (B, T, H, W)
    frames_ = 0.85 * torch.ones(batch, frames, 3, SIZE, SIZE)
    frames_[:, :, 0] = frames_[:, :, 0] * (1 - disc) + disc
    return frames_


@pytest.mark.parametrize("name", ["hnn", "hnn-conv"])
def test_registered_and_latent_has_true_dimension(name: str) -> None:
    model = _model(name, dof=3)
    assert isinstance(model, HNN) and model.config.conv == (name == "hnn-conv")
    out = model.predict(torch.rand(2, 4, 3, SIZE, SIZE), steps=5)
    assert out["images"].shape == (2, 6, 3, SIZE, SIZE)
    assert out["energy"].shape == (2, 6)
    assert out["q"].shape == out["p"].shape == (2, 6, 3)
    assert out["images"].min() >= 0 and out["images"].max() <= 1


def test_conv_variant_reuses_hgn_networks() -> None:
    model = _model("hnn-conv")
    assert isinstance(model.encoder.hgn, models.hgn.Encoder)
    assert isinstance(model.decoder.hgn, models.hgn.Decoder)


def test_field_is_the_symplectic_gradient_of_h() -> None:
    model = _model("hnn", dof=2)
    z = torch.randn(5, 4, requires_grad=True)
    energy = model.h_net(z[:, :2], z[:, 2:]).sum()
    (grad,) = torch.autograd.grad(energy, z)
    expected = torch.cat([grad[:, 2:], -grad[:, :2]], dim=1)
    torch.testing.assert_close(model.field(z.detach()), expected)


def test_rollout_conserves_learned_energy_and_reverses() -> None:
    """RK4 on the learned H: energy nearly constant, and -dt retraces the path."""
    model = _model("hnn", dof=1)
    frames = torch.rand(3, 4, 3, SIZE, SIZE)
    with torch.no_grad():
        fwd = model.predict(frames, steps=20, dt=0.05)
        energy = fwd["energy"]
        assert (energy - energy[:, :1]).abs().max() < 1e-4 * (1 + energy.abs().max())
        # integrate back from the end state with -dt: we must land on the start state
        grad_fn = integrators.grad_of(model.h_net)
        qs, ps = integrators.rollout(
            grad_fn, fwd["q"][:, -1], fwd["p"][:, -1], -0.05, 20, method="rk4"
        )
    torch.testing.assert_close(qs[-1], fwd["q"][:, 0], atol=1e-4, rtol=0)
    torch.testing.assert_close(ps[-1], fwd["p"][:, 0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["hnn", "hnn-conv"])
def test_training_lowers_every_loss_term_together(name: str) -> None:
    torch.manual_seed(0)
    small = {"hidden": 64, "hamiltonian_hidden": 32, "encoder_filters": [16, 16, 16]}
    model = _model(name, dof=1, decoder_filters=[16], **small)
    data = _moving_disc()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first, _ = model.loss(data)
    for _ in range(40):
        loss, metrics = model.loss(data)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert set(metrics) >= {"loss", "mse", "hnn", "aux"}
    assert metrics["loss"] < 0.5 * first.item()
    assert metrics["loss"] == pytest.approx(metrics["mse"] + metrics["hnn"] + metrics["aux"])


def test_loss_terms_have_the_documented_meaning() -> None:
    """A constant latent (q, p): dz/dt = 0, so the HNN term is |dH|² and the auxiliary
    term (dq/dt = p) is p²."""
    model = _model("hnn", dof=1)
    frames = torch.rand(2, 5, 3, SIZE, SIZE)
    last = model.encoder.net[-1]
    torch.nn.init.zeros_(last.weight)
    with torch.no_grad():
        last.bias.copy_(torch.tensor([0.3, 0.2]))
    torch.nn.init.zeros_(model.h_net.net[-1].weight)  # H constant: zero field
    _, metrics = model.loss(frames)
    assert metrics["hnn"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["aux"] == pytest.approx(0.2**2)


@pytest.mark.parametrize("name", ["hnn", "hnn-conv"])
def test_init_from_data_starts_at_the_mean_colour(name: str) -> None:
    model = _model(name)
    mean = torch.tensor([0.2, 0.5, 0.9])[:, None, None].expand(3, SIZE, SIZE)
    model.init_from_data(mean)
    assert model.context_frames == 2
    out = model.predict(torch.rand(2, 3, 3, SIZE, SIZE), steps=2)["images"]
    colour = out.mean((0, 1, 3, 4))
    torch.testing.assert_close(colour, torch.tensor([0.2, 0.5, 0.9]), atol=0.1, rtol=0)


def test_hnn_cannot_sample_and_rejects_bad_input() -> None:
    model = _model("hnn")
    with pytest.raises(UserError, match="cannot sample"):
        model.sample(2, 5)
    with pytest.raises(UserError, match="at least 2 frames"):
        model.predict(torch.rand(1, 1, 3, SIZE, SIZE), steps=3)
    with pytest.raises(UserError, match="at least 3 frames"):
        model.loss(torch.rand(1, 2, 3, SIZE, SIZE))
    with pytest.raises(UserError, match=r"model\.dof"):
        HNNConfig(dof=0)
    with pytest.raises(UserError, match="integrator"):
        HNNConfig(integrator="rk5")
    with pytest.raises(UserError, match=r"unknown config key model\.latent"):
        get_model("hnn")({"latent": 3})


def test_autoencoder_warmup_switches_the_dynamics_losses_in_gradually() -> None:
    """``ae_warmup`` steps of autoencoder alone, then a linear ramp over as many again."""
    model = _model("hnn", ae_warmup=2)
    frames = torch.rand(2, 5, 3, SIZE, SIZE)
    seen = []
    for _ in range(5):
        loss, metrics = model.loss(frames)
        seen.append(metrics["dynamics_scale"])
        if metrics["dynamics_scale"] == 0:
            assert loss.item() == pytest.approx(metrics["mse"])
    assert seen == [0.0, 0.0, 0.0, 0.5, 1.0]
    model.eval()
    model.loss(frames)  # evaluation does not advance the schedule
    assert int(model.trained_steps) == 5


def test_normalised_latent_standardises_q_over_the_batch() -> None:
    model = _model("hnn-conv", dof=2, normalise_latent=True)
    pairs = torch.rand(16, 6, SIZE, SIZE)
    raw_q, raw_p = model.encoder(pairs).split(2, dim=-1)
    q, p = model.encode_pairs(pairs).split(2, dim=-1)
    eps = model.norm.eps
    expected = (raw_q - raw_q.mean(0)) / (raw_q.var(0, unbiased=False) + eps).sqrt()
    torch.testing.assert_close(q, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(p, raw_p)  # p is left free
    model.eval()  # running statistics at evaluation: one pair is enough
    assert model.predict(torch.rand(1, 2, 3, SIZE, SIZE), steps=2)["q"].shape == (1, 3, 2)


def test_checkpoints_from_before_the_step_counter_still_load() -> None:
    model = _model("hnn")
    state = {k: v for k, v in model.state_dict().items() if k != "trained_steps"}
    fresh = _model("hnn")
    fresh.load_state_dict(state)
    assert int(fresh.trained_steps) == 0


def test_detached_dynamics_losses_train_the_hamiltonian_only() -> None:
    model = _model("hnn", dynamics_detach=True, ae_weight=0.0)
    loss, metrics = model.loss(torch.rand(2, 5, 3, SIZE, SIZE))
    loss.backward()
    assert metrics["hnn"] > 0 and metrics["aux"] > 0  # still measured
    assert all(p.grad is None or not p.grad.any() for p in model.encoder.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.h_net.parameters())


def test_anti_collapse_keys_are_validated() -> None:
    with pytest.raises(UserError, match=r"model\.ae_warmup"):
        HNNConfig(ae_warmup=-1)
    with pytest.raises(UserError, match=r"model\.normalise_latent"):
        HNNConfig(normalise_latent="yes")  # type: ignore[arg-type]
    with pytest.raises(UserError, match=r"model\.dynamics_detach"):
        HNNConfig(dynamics_detach=1)  # type: ignore[arg-type]
