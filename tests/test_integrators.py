"""Properties of the shared integrators, proven on systems with known answers."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from hgn.physics import integrators
from hgn.physics.integrators import INTEGRATORS, ORDER, grad_of, rollout
from hgn.utils import UserError


@pytest.fixture(autouse=True)
def _float64() -> Iterator[None]:
    """Round-off-level assertions need float64; restore the default for other modules."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


K, M = 2.0, 0.5  # the paper's mass-spring constants
OMEGA = math.sqrt(K / M)


def spring_grad(q: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return K * q, p / M


def spring_energy(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return 0.5 * K * q**2 + p**2 / (2 * M)


def spring_exact(q0: torch.Tensor, p0: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    c, s = math.cos(OMEGA * t), math.sin(OMEGA * t)
    q = q0 * c + p0 / (M * OMEGA) * s
    p = -q0 * M * OMEGA * s + p0 * c
    return q, p


def pendulum_grad(q: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable, non-linear: H = 3 (1 - cos q) + p²."""
    return 3.0 * torch.sin(q), 2.0 * p


def pendulum_energy(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return 3.0 * (1 - torch.cos(q)) + p**2


def _error(method: str, steps: int, t_end: float = 2.0) -> float:
    q0 = torch.tensor([0.3, -0.8, 1.0])
    p0 = torch.tensor([0.5, 0.2, -0.1])
    qs, ps = rollout(spring_grad, q0, p0, t_end / steps, steps, method=method)
    qe, pe = spring_exact(q0, p0, t_end)
    return float(torch.sqrt((qs[-1] - qe) ** 2 + (ps[-1] - pe) ** 2).max())


@pytest.mark.parametrize("method", list(INTEGRATORS))
def test_order_of_convergence_against_closed_form(method: str) -> None:
    coarse, fine = _error(method, 64), _error(method, 128)
    observed = math.log2(coarse / fine)
    assert observed == pytest.approx(ORDER[method], abs=0.25), observed


@pytest.mark.parametrize("method", list(INTEGRATORS))
def test_negative_step_runs_backwards(method: str) -> None:
    q0, p0 = torch.tensor([0.7]), torch.tensor([-0.2])
    qs, ps = rollout(spring_grad, q0, p0, -0.001, 500, method=method)
    qe, pe = spring_exact(q0, p0, -0.5)
    assert torch.allclose(qs[-1], qe, atol=1e-3) and torch.allclose(ps[-1], pe, atol=1e-3)


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_reversible_over_1000_steps(method: str) -> None:
    q0 = torch.tensor([0.3, 2.0, -1.1])
    p0 = torch.tensor([1.5, -0.4, 0.0])
    qs, ps = rollout(pendulum_grad, q0, p0, 0.1, 1000, method=method)
    qb, pb = rollout(pendulum_grad, qs[-1], ps[-1], -0.1, 1000, method=method)
    assert float((qs[-1] - q0).abs().max()) > 0.1  # it really moved
    assert torch.allclose(qb[-1], q0, atol=1e-10) and torch.allclose(pb[-1], p0, atol=1e-10)


def test_euler_is_not_reversible() -> None:
    q0, p0 = torch.tensor([0.3]), torch.tensor([1.5])
    qs, ps = rollout(pendulum_grad, q0, p0, 0.1, 100, method="euler")
    qb, _ = rollout(pendulum_grad, qs[-1], ps[-1], -0.1, 100, method="euler")
    assert float((qb[-1] - q0).abs().max()) > 1e-2


def _step_jacobian(method: str, q: torch.Tensor, p: torch.Tensor, dt: float) -> torch.Tensor:
    """Jacobian of 10 steps of the map (q, p) -> (q', p') for a 2-D separable system."""

    def flow(state: torch.Tensor) -> torch.Tensor:
        qs, ps = rollout(pendulum_grad, state[:2], state[2:], dt, 10, method=method)
        return torch.cat([qs[-1], ps[-1]])

    return torch.autograd.functional.jacobian(flow, torch.cat([q, p]))


OMEGA_2D = torch.tensor(
    [[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0]],
    dtype=torch.float64,
)


@pytest.mark.parametrize("method", ["leapfrog", "symplectic_euler", "yoshida4"])
def test_symplectic_and_volume_preserving(method: str) -> None:
    jac = _step_jacobian(method, torch.tensor([0.4, 2.5]), torch.tensor([-1.0, 0.3]), 0.3)
    assert torch.allclose(jac.T @ OMEGA_2D @ jac, OMEGA_2D, atol=1e-12)
    assert float(torch.linalg.det(jac)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_non_symplectic_methods_change_volume(method: str) -> None:
    jac = _step_jacobian(method, torch.tensor([0.4, 2.5]), torch.tensor([-1.0, 0.3]), 0.3)
    assert abs(float(torch.linalg.det(jac)) - 1.0) > 1e-4


def test_leapfrog_energy_bounded_over_100k_steps_while_euler_grows() -> None:
    q0, p0 = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.5])
    e0 = pendulum_energy(q0, p0)

    def energy_errors(method: str) -> torch.Tensor:
        step = INTEGRATORS[method]
        q, p, errors = q0, p0, []
        for i in range(100_000):
            q, p = step(pendulum_grad, q, p, 0.05)
            if i % 1000 == 999:
                errors.append((pendulum_energy(q, p) - e0).abs().max())
        return torch.stack(errors)

    leap = energy_errors("leapfrog")
    assert float(leap.max()) < 0.02  # O(dt²) oscillation (H ≈ 4.5 here), no drift
    assert float(leap[-10:].max()) < 2 * float(leap[:10].max()) + 1e-6
    euler = energy_errors("euler")[:20]  # Euler's error grows without bound
    assert bool((euler[1:] >= euler[:-1]).all()) and float(euler[-1]) > 1.0


def test_grad_of_matches_analytic_gradient_and_trains_parameters() -> None:
    net = torch.nn.Sequential(
        torch.nn.Linear(2, 16), torch.nn.Softplus(), torch.nn.Linear(16, 1, bias=False)
    )
    # (an output bias shifts H by a constant and rightly gets no gradient)

    def learned_h(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return net(torch.stack([q, p], dim=-1)).squeeze(-1)

    def analytic_h(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return spring_energy(q, p)

    q, p = torch.randn(5), torch.randn(5)
    dq, dp = grad_of(analytic_h)(q, p)
    assert torch.allclose(dq, K * q) and torch.allclose(dp, p / M)

    qs, ps = rollout(grad_of(learned_h), q, p, 0.1, 5, method="leapfrog")
    (qs[-1].square().sum() + ps[-1].square().sum()).backward()
    for name, param in net.named_parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, name


def test_rollout_keeps_shapes_and_substeps_refine() -> None:
    q0, p0 = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    qs, ps = rollout(spring_grad, q0, p0, 0.2, 7, method="rk4", substeps=3)
    assert qs.shape == ps.shape == (8, 4, 2, 3)
    assert torch.equal(qs[0], q0)
    coarse = rollout(spring_grad, q0, p0, 0.2, 7, method="leapfrog")[0][-1]
    fine = rollout(spring_grad, q0, p0, 0.2, 7, method="leapfrog", substeps=10)[0][-1]
    exact = spring_exact(q0, p0, 1.4)[0]
    assert (fine - exact).abs().max() < (coarse - exact).abs().max() / 50


def test_unknown_integrator_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"unknown integrator 'verlet'.*leapfrog"):
        integrators.get("verlet")
