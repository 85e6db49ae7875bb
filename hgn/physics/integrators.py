"""Time integrators for Hamilton's equations, shared by the simulator, HGN and NHF.

Every integrator advances a batch of states ``(q, p)`` by one step ``dt`` given a function
``grad_fn(q, p) -> (dH/dq, dH/dp)``. Tensors may have any shape (``q`` and ``p`` share
it); ``dt`` may be negative to run backwards in time, and everything is plain tensor
arithmetic so gradients flow through a rollout into whatever parameters ``grad_fn``
closes over.

Properties (tested in ``tests/test_integrators.py``):

* ``euler``: first order, neither symplectic nor reversible; energy drifts.
* ``symplectic_euler``: first order, symplectic (kick with the old q, then drift).
* ``leapfrog`` (Störmer–Verlet, kick-drift-kick): second order. For a *separable*
  ``H = K(p) + V(q)`` it is symplectic, exactly reversible and volume preserving for
  any step. For a non-separable ``H`` (e.g. a general learned Hamiltonian network) the
  explicit scheme below is only an approximation of the implicit Störmer–Verlet method:
  it is still second order but no longer exactly symplectic or reversible.
* ``yoshida4``: fourth-order symplectic composition of three leapfrog steps
  (Yoshida 1990 / Forest–Ruth); same structural caveats as leapfrog.
* ``rk4``: classical fourth-order Runge–Kutta, a non-symplectic reference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

GradFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""``(q, p) -> (dH/dq, dH/dp)``."""

StepFn = Callable[[GradFn, Tensor, Tensor, float], tuple[Tensor, Tensor]]


def euler(grad_fn: GradFn, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Explicit Euler: both updates use the gradients at the start of the step."""
    dh_dq, dh_dp = grad_fn(q, p)
    return q + dt * dh_dp, p - dt * dh_dq


def symplectic_euler(grad_fn: GradFn, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Symplectic Euler (kick then drift): p' = p - dt dH/dq(q, p); q' = q + dt dH/dp(q, p')."""
    dh_dq, _ = grad_fn(q, p)
    p = p - dt * dh_dq
    _, dh_dp = grad_fn(q, p)
    return q + dt * dh_dp, p


def leapfrog(grad_fn: GradFn, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Störmer–Verlet, kick-drift-kick, with H's own gradients at every stage."""
    dh_dq, _ = grad_fn(q, p)
    p_half = p - 0.5 * dt * dh_dq
    _, dh_dp = grad_fn(q, p_half)
    q_new = q + dt * dh_dp
    dh_dq_new, _ = grad_fn(q_new, p_half)
    return q_new, p_half - 0.5 * dt * dh_dq_new


_CBRT2 = 2.0 ** (1.0 / 3.0)
_YOSHIDA_W1 = 1.0 / (2.0 - _CBRT2)
_YOSHIDA_W0 = -_CBRT2 / (2.0 - _CBRT2)


def yoshida4(grad_fn: GradFn, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Fourth-order symplectic composition: leapfrog with steps w1·dt, w0·dt, w1·dt."""
    for w in (_YOSHIDA_W1, _YOSHIDA_W0, _YOSHIDA_W1):
        q, p = leapfrog(grad_fn, q, p, w * dt)
    return q, p


def rk4(grad_fn: GradFn, q: Tensor, p: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """Classical Runge–Kutta on the vector field (dH/dp, -dH/dq)."""

    def field(q_: Tensor, p_: Tensor) -> tuple[Tensor, Tensor]:
        dh_dq, dh_dp = grad_fn(q_, p_)
        return dh_dp, -dh_dq

    k1q, k1p = field(q, p)
    k2q, k2p = field(q + 0.5 * dt * k1q, p + 0.5 * dt * k1p)
    k3q, k3p = field(q + 0.5 * dt * k2q, p + 0.5 * dt * k2p)
    k4q, k4p = field(q + dt * k3q, p + dt * k3p)
    q_new = q + (dt / 6.0) * (k1q + 2.0 * k2q + 2.0 * k3q + k4q)
    p_new = p + (dt / 6.0) * (k1p + 2.0 * k2p + 2.0 * k3p + k4p)
    return q_new, p_new


INTEGRATORS: dict[str, StepFn] = {
    "euler": euler,
    "symplectic_euler": symplectic_euler,
    "leapfrog": leapfrog,
    "yoshida4": yoshida4,
    "rk4": rk4,
}
"""Integrators by name; ``ORDER`` gives each one's order of accuracy."""

ORDER: dict[str, int] = {
    "euler": 1,
    "symplectic_euler": 1,
    "leapfrog": 2,
    "yoshida4": 4,
    "rk4": 4,
}


def get(name: str) -> StepFn:
    """Look up an integrator by name, with a message listing the valid names."""
    try:
        return INTEGRATORS[name]
    except KeyError:
        from hgn.utils import UserError

        raise UserError(
            f"unknown integrator {name!r}; choose one of: {', '.join(INTEGRATORS)}"
        ) from None


def rollout(
    grad_fn: GradFn,
    q: Tensor,
    p: Tensor,
    dt: float,
    steps: int,
    method: str | StepFn = "leapfrog",
    substeps: int = 1,
) -> tuple[Tensor, Tensor]:
    """Integrate ``steps`` steps of size ``dt`` and return all states.

    Returns ``(qs, ps)`` stacked on a new leading time axis, of length ``steps + 1``
    (the initial state first). Each step is split into ``substeps`` equal sub-steps,
    which lets a simulator reach high accuracy while only recording every frame.
    """
    step = get(method) if isinstance(method, str) else method
    h = dt / substeps
    qs, ps = [q], [p]
    for _ in range(steps):
        for _ in range(substeps):
            q, p = step(grad_fn, q, p, h)
        qs.append(q)
        ps.append(p)
    return torch.stack(qs), torch.stack(ps)


def grad_of(hamiltonian: Callable[[Tensor, Tensor], Tensor]) -> GradFn:
    """Turn a batched Hamiltonian ``H(q, p) -> (batch,)`` into its gradient function.

    Uses ``torch.func.grad`` on the summed energy: samples in a batch are independent,
    so the gradient of the sum is the per-sample gradient. Unlike
    ``torch.autograd.grad(create_graph=True)`` this composes with ``torch.compile``, and
    the result stays differentiable with respect to the parameters ``hamiltonian``
    closes over, so a rollout can be trained end to end.
    """
    total = torch.func.grad(lambda q, p: hamiltonian(q, p).sum(), argnums=(0, 1))
    return total
