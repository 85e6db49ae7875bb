"""Time integrators for Hamilton's equations, shared by the simulator, HGN and NHF.

Every step function advances a batch of states ``(q, p)`` by one step ``dt`` given a
function ``grad_fn(q, p) -> (dH/dq, dH/dp)``. Tensors may have any shape (``q`` and ``p``
share it); ``dt`` may be negative to run backwards in time, and everything is plain
tensor arithmetic so gradients flow through a rollout into whatever parameters
``grad_fn`` closes over.

Properties (measured in ``tests/test_integrators.py``):

* ``euler``: first order, neither symplectic nor reversible; energy drifts.
* ``symplectic_euler``: first order, symplectic (kick with the old q, then drift) for a
  separable H.
* ``leapfrog`` (Störmer–Verlet, kick-drift-kick): for a *separable* ``H = K(p) + V(q)``
  second order, symplectic, exactly reversible (a step with ``-dt`` undoes a step with
  ``dt`` up to round-off) and volume preserving, for any step. For a *non-separable*
  ``H(q, p)`` (a general learned Hamiltonian network) the explicit scheme here is **only
  first order and not reversible**: its first half-kick evaluates ``dH/dq`` at the old
  ``p`` where Störmer–Verlet needs the (implicit) half-step momentum. The tests measure
  an order of 1 and a round-trip error of order ``dt`` per step, not round-off.
* ``yoshida4``: fourth-order symplectic composition of three leapfrog steps
  (Yoshida 1990 / Forest–Ruth); same caveats as leapfrog for a non-separable H.
* ``implicit_midpoint``: the integrator for a **non-separable** H: second order,
  symplectic and symmetric (so reversible) for any H, solved by a fixed number of
  fixed-point iterations (see :func:`implicit_midpoint` for why this and not Tao's
  extended phase space).
* ``rk4``: classical fourth-order Runge–Kutta, a non-symplectic reference.

For separable Hamiltonians, :func:`leapfrog_separable` is the fast path shared by HGN++
and NHF: it takes ``∇K`` and ``∇V`` separately and evaluates each once per step
("first same as last": the closing half-kick's ``∇V(q')`` is the next step's opening one),
half the gradient evaluations of calling :func:`leapfrog` with a joint ``grad_fn``.
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


IMPLICIT_ITERATIONS = 12
"""Fixed-point iterations of :func:`implicit_midpoint`. Each contracts the error by about
``|dt|/2 · L`` (``L`` the Lipschitz constant of the vector field), so at the trained step
of a well-scaled model (``|dt| L`` ≲ 0.5) twelve leave a residual below float32 round-off."""


def implicit_midpoint(
    grad_fn: GradFn, q: Tensor, p: Tensor, dt: float, iterations: int = IMPLICIT_ITERATIONS
) -> tuple[Tensor, Tensor]:
    """Implicit midpoint rule, z' = z + dt·J∇H((z + z')/2), for a non-separable H.

    It is symplectic for every H and symmetric (the step with ``-dt`` from z' solves the
    same equation, so it returns z), hence reversible, and second order. The midpoint
    ``m = z + (dt/2)·J∇H(m)`` is found by ``iterations`` fixed-point iterations started
    from an explicit Euler half step; a fixed count (no tolerance test) keeps the step
    a static graph that autograd trains through and ``torch.compile`` can trace, and
    the properties hold up to the fixed-point residual (measured in the tests).

    Why not Tao's (2016) explicit scheme: it doubles the phase space (q, p, x, y) and
    is exactly symplectic and reversible only on that doubled state, which a model's
    ``rollout(state, ...)`` API (states of (q, p)) cannot carry between calls; and its
    binding constant ω must be tuned against the stiffness of an unknown learned H. The
    implicit midpoint acts on (q, p) itself and has no constant to tune; its price is
    ``iterations + 1`` gradient evaluations a step.
    """
    half = 0.5 * dt
    dh_dq, dh_dp = grad_fn(q, p)
    mq, mp = q + half * dh_dp, p - half * dh_dq
    for _ in range(iterations):
        dh_dq, dh_dp = grad_fn(mq, mp)
        mq, mp = q + half * dh_dp, p - half * dh_dq
    return 2.0 * mq - q, 2.0 * mp - p


INTEGRATORS: dict[str, StepFn] = {
    "euler": euler,
    "symplectic_euler": symplectic_euler,
    "leapfrog": leapfrog,
    "yoshida4": yoshida4,
    "rk4": rk4,
    "implicit_midpoint": implicit_midpoint,
}
"""Integrators by name; ``ORDER`` gives each one's order of accuracy."""

ORDER: dict[str, int] = {
    "euler": 1,
    "symplectic_euler": 1,
    "leapfrog": 2,
    "yoshida4": 4,
    "rk4": 4,
    "implicit_midpoint": 2,
}

REVERSIBLE_ANY_H = frozenset({"implicit_midpoint"})
"""Integrators that are symplectic and reversible for a non-separable H as well (the
leapfrog family is so only for a separable one)."""


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


EnergyGrad = Callable[[Tensor], Tensor]
"""``x -> ∇E(x)`` of one energy term (∇K of momenta or ∇V of positions)."""


def grad_of_energy(energy: Callable[[Tensor], Tensor]) -> EnergyGrad:
    """Turn a batched energy ``E(x) -> (batch,)`` into ``x -> ∇E(x)``.

    The separable counterpart of :func:`grad_of`, for :func:`leapfrog_separable`: the
    per-sample gradient of the summed energy, differentiable with respect to the
    parameters ``energy`` closes over whenever gradients are recorded. Eagerly it is
    ``torch.autograd.grad(create_graph=True)``: on the conv HGN's small energy networks
    ``torch.func.grad`` dispatched every operation through its transform too, and a
    rollout with its backward pass took 1.16× as long for the same numbers
    (docs/RESULTS.md, "Training speed"). Under ``torch.compile``, which traces
    ``torch.func`` but not a nested ``autograd.grad``, it is ``torch.func.grad``.
    """
    traced = torch.func.grad(lambda x: energy(x).sum())

    def grad(x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            return traced(x)
        record = torch.is_grad_enabled()
        with torch.enable_grad():
            leaf = x if x.requires_grad else x.detach().requires_grad_()
            (gradient,) = torch.autograd.grad(
                energy(leaf).sum(), leaf, create_graph=record, materialize_grads=True
            )
        return gradient

    return grad


def leapfrog_separable(
    grad_k: EnergyGrad,
    grad_v: EnergyGrad,
    q: Tensor,
    p: Tensor,
    dt: float | Tensor,
    steps: int,
    *,
    substeps: int = 1,
    all_states: bool = True,
) -> tuple[Tensor, Tensor]:
    """Leapfrog rollout of a separable ``H = K(p) + V(q)`` that evaluates ∇V once a step.

    Kick-drift-kick with ``h = dt / substeps``: ``p½ = p − (h/2)∇V(q)``,
    ``q' = q + h∇K(p½)``, ``p' = p½ − (h/2)∇V(q')``. The closing kick's ``∇V(q')`` is the
    next step's opening one ("first same as last"), so a step costs one ∇V and one ∇K,
    half of what :func:`leapfrog` with a joint ``grad_fn`` spends; the map is the same,
    so it is exactly as symplectic and reversible (``dt < 0`` runs backwards).

    ``grad_k(p)`` and ``grad_v(q)`` return tensors shaped like their argument (e.g. from
    :func:`grad_of_energy`, or a closed form). ``dt`` may be a tensor (a learned step
    size: gradients flow into it). Returns ``(qs, ps)`` stacked on a new leading time axis
    of length ``steps + 1`` (initial state first), one entry per ``dt``; with
    ``all_states=False`` only the final ``(q, p)``, which saves the stacking when a
    caller (a flow step) needs no trajectory.
    """
    if steps < 0 or substeps < 1:
        raise ValueError(f"need steps ≥ 0 and substeps ≥ 1, got {steps} and {substeps}")
    h = dt / substeps
    half = 0.5 * h
    dv = grad_v(q)
    qs, ps = [q], [p]
    for _ in range(steps):
        for _ in range(substeps):
            p = p - half * dv
            q = q + h * grad_k(p)
            dv = grad_v(q)
            p = p - half * dv
        if all_states:
            qs.append(q)
            ps.append(p)
    if not all_states:
        return q, p
    return torch.stack(qs), torch.stack(ps)
