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


@pytest.mark.slow
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


# --- non-separable H: explicit leapfrog degrades, implicit midpoint holds ---------------


def coupled_grad(q: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-separable: H = ½ p² (1 + q²) + ½ q² (a position-dependent mass)."""
    return q * p**2 + q, p * (1 + q**2)


def _coupled_error(method: str, steps: int, t_end: float = 1.0) -> float:
    q0, p0 = torch.tensor([0.8, -0.5]), torch.tensor([0.6, 1.1])
    ref = rollout(coupled_grad, q0, p0, t_end / 4096, 4096, method="rk4")
    qs, ps = rollout(coupled_grad, q0, p0, t_end / steps, steps, method=method)
    return float(torch.maximum((qs[-1] - ref[0][-1]).abs(), (ps[-1] - ref[1][-1]).abs()).max())


def _round_trip(method: str, dt: float, steps: int) -> float:
    q0, p0 = torch.tensor([0.8, -0.5]), torch.tensor([0.6, 1.1])
    qs, ps = rollout(coupled_grad, q0, p0, dt, steps, method=method)
    qb, pb = rollout(coupled_grad, qs[-1], ps[-1], -dt, steps, method=method)
    return float(torch.maximum((qb[-1] - q0).abs(), (pb[-1] - p0).abs()).max())


@pytest.mark.slow
def test_explicit_leapfrog_is_first_order_and_irreversible_for_non_separable_h() -> None:
    order = math.log2(_coupled_error("leapfrog", 32) / _coupled_error("leapfrog", 64))
    assert order == pytest.approx(1.0, abs=0.25), order
    # the round trip misses by O(dt) per unit time, nowhere near round-off, and halves
    # with the step: the map with -dt is not the inverse of the map with dt
    coarse, fine = _round_trip("leapfrog", 0.1, 20), _round_trip("leapfrog", 0.05, 40)
    assert coarse > 1e-3 and math.log2(coarse / fine) == pytest.approx(1.0, abs=0.3)


@pytest.mark.slow
def test_implicit_midpoint_is_second_order_and_reversible_for_non_separable_h() -> None:
    order = math.log2(
        _coupled_error("implicit_midpoint", 32) / _coupled_error("implicit_midpoint", 64)
    )
    assert order == pytest.approx(2.0, abs=0.25), order
    assert _round_trip("implicit_midpoint", 0.1, 200) < 1e-10


def test_implicit_midpoint_is_symplectic_for_non_separable_h() -> None:
    def flow(state: torch.Tensor) -> torch.Tensor:
        qs, ps = rollout(coupled_grad, state[:2], state[2:], 0.1, 10, method="implicit_midpoint")
        return torch.cat([qs[-1], ps[-1]])

    jac = torch.autograd.functional.jacobian(flow, torch.tensor([0.8, -0.5, 0.6, 1.1]))
    assert torch.allclose(jac.T @ OMEGA_2D @ jac, OMEGA_2D, atol=1e-10)

    def leap(state: torch.Tensor) -> torch.Tensor:
        qs, ps = rollout(coupled_grad, state[:2], state[2:], 0.1, 10, method="leapfrog")
        return torch.cat([qs[-1], ps[-1]])

    jac = torch.autograd.functional.jacobian(leap, torch.tensor([0.8, -0.5, 0.6, 1.1]))
    assert not torch.allclose(jac.T @ OMEGA_2D @ jac, OMEGA_2D, atol=1e-4)


# --- the first-same-as-last separable leapfrog ---------------------------------------------


def test_leapfrog_separable_equals_leapfrog_with_one_grad_v_per_step() -> None:
    q0, p0 = torch.randn(5, 3), torch.randn(5, 3)
    calls = {"v": 0, "k": 0}

    def grad_v(q: torch.Tensor) -> torch.Tensor:
        calls["v"] += 1
        return 3.0 * torch.sin(q)

    def grad_k(p: torch.Tensor) -> torch.Tensor:
        calls["k"] += 1
        return 2.0 * p

    qs, ps = integrators.leapfrog_separable(grad_k, grad_v, q0, p0, 0.1, 7, substeps=3)
    ref_q, ref_p = rollout(pendulum_grad, q0, p0, 0.1, 7, method="leapfrog", substeps=3)
    assert qs.shape == ps.shape == (8, 5, 3)
    assert torch.allclose(qs, ref_q, atol=1e-14) and torch.allclose(ps, ref_p, atol=1e-14)
    assert calls == {"v": 7 * 3 + 1, "k": 7 * 3}
    q_end, p_end = integrators.leapfrog_separable(
        grad_k, grad_v, q0, p0, 0.1, 7, substeps=3, all_states=False
    )
    assert torch.equal(q_end, qs[-1]) and torch.equal(p_end, ps[-1])


def test_leapfrog_separable_reverses_and_trains_parameters_and_step() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Softplus(), torch.nn.Linear(8, 1))
    grad_v = integrators.grad_of_energy(lambda q: net(q).squeeze(-1))
    grad_k = integrators.grad_of_energy(lambda p: 0.5 * p.square().sum(-1))
    q0, p0 = torch.randn(4, 2), torch.randn(4, 2)
    log_dt = torch.tensor(-2.0, requires_grad=True)
    qs, ps = integrators.leapfrog_separable(grad_k, grad_v, q0, p0, log_dt.exp(), 50)
    qb, pb = integrators.leapfrog_separable(grad_k, grad_v, qs[-1], ps[-1], -log_dt.exp(), 50)
    assert torch.allclose(qb[-1], q0, atol=1e-11) and torch.allclose(pb[-1], p0, atol=1e-11)
    qs[-1].square().sum().backward()
    assert log_dt.grad is not None and float(log_dt.grad.abs()) > 0
    assert all(float(w.grad.abs().sum()) > 0 for w in net.parameters() if w.dim() > 1)
