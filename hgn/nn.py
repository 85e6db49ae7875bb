"""Network pieces shared by the models (HNN, HGN++) and the flows (NHF): one MLP builder,
so that every fully connected network in hgn is laid out, and named in checkpoints, alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from hgn.physics import integrators


def mlp(
    sizes: Sequence[int], activation: type[nn.Module] = nn.SiLU, out_bias: bool = True
) -> nn.Sequential:
    """Linear layers of widths ``sizes`` (input first, output last) with ``activation``
    between them and none after the last, so the output is unbounded.

    The layout, ``Linear, act, Linear, …, Linear``, fixes the checkpoint keys (``0``,
    ``2``, …): changing it would make saved models unloadable. ``out_bias=False`` drops
    the last layer's bias, for an energy whose constant offset changes no dynamics.
    """
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs an input and an output size, got {list(sizes)}")
    layers: list[nn.Module] = []
    last = len(sizes) - 2
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b, bias=out_bias or i < last))
        if i < last:
            layers.append(activation())
    return nn.Sequential(*layers)


NARROW = 16
"""Products with fewer output columns than this are computed transposed (:func:`_mm`)."""


def _mm(a: Tensor, b: Tensor, add: Tensor | None = None) -> Tensor:
    """``add + a @ b``, computed as ``(bᵀ aᵀ)ᵀ`` when the product is narrow.

    On a CPU, BLAS takes 4× longer over an (N, 64) @ (64, 2) product than over the same
    arithmetic laid out as (2, 64) @ (64, N); ∇E of a 2-D energy has four such products,
    forward and backward, as many as its 64 × 64 ones (``benchmarks/bench_flows.py``).
    Below :data:`NARROW` output columns the transposed form was faster at every width
    timed (2-10), above it the plain one (16-64).
    """
    if b.shape[1] < NARROW:  # torch.mm: both are matrices, and matmul's checks cost a call
        out = torch.mm(b.t(), a.t()).t()
        return out if add is None else out + add
    return torch.mm(a, b) if add is None else torch.addmm(add, a, b)


def _energy_grad(
    x: Tensor, quadratic: bool, w: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor]
) -> tuple[Tensor, list[Tensor]]:
    """∇E(x) by hand-written backpropagation (:class:`_EnergyGrad`), and what its
    backward pass needs: ``[h_0 = x, …, h_{L-1}, σ(a_1), …, σ(a_L), g_1, …, g_{L-1},
    c_2, …, c_L]``."""
    depth = len(weights)
    hs, ss = [x], []
    h = x
    for k, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
        a = _mm(h, weight.t(), bias)
        if k < depth - 1:  # the last layer's softplus is not needed for ∇E
            h = F.softplus(a)
            hs.append(h)
        ss.append(a.sigmoid_())  # a_k is not needed again
    # c_L = (σ(a_L) ⊙ w) W_L = σ(a_L) (diag(w) W_L): w scales a small matrix, not a batch
    gs: list[Tensor] = []
    cs: list[Tensor] = [_mm(ss[-1], w[:, None] * weights[-1])]
    for k in range(depth - 2, -1, -1):
        gs.insert(0, cs[0] * ss[k])
        cs.insert(0, _mm(gs[0], weights[k]))
    return (cs[0] + x if quadratic else cs[0]), [*hs, *ss, *gs, *cs[1:]]


def _energy_grad_vjp(
    u: Tensor, quadratic: bool, w: Tensor, weights: Sequence[Tensor], saved: Sequence[Tensor]
) -> tuple[Tensor, list[Tensor], list[Tensor], Tensor]:
    """The cotangent ``u`` of ∇E(x) pulled back to x (a Hessian-vector product), with the
    per-row terms :func:`_energy_param_grads` sums into the parameters' gradients:
    ``∂L/∂a_k`` and ``∂L/∂c_k`` for every layer and the output weight's ``(B, hidden)``
    rows. Kept apart so that a rollout can sum the parameter gradients of all its
    evaluations in one product per weight (:class:`_EnergyLeapfrog`)."""
    depth = len(weights)
    ss = saved[depth : 2 * depth]
    cs = (None, *saved[3 * depth - 1 :])
    d_cs: list[Tensor] = []  # ∂L/∂c_k, down ∇E's path
    d_pre: list[Tensor] = []  # ∂L/∂a_k through σ(a_k) on ∇E's path
    d_c = u
    for k in range(depth):  # c_k = g_k W_k, then g_k = c_{k+1} ⊙ σ(a_k) or w ⊙ σ(a_L)
        d_cs.append(d_c)
        d_g = _mm(d_c, weights[k].t())
        s = ss[k]
        # in place wherever a temporary is not needed again: at 2,048 rows a fresh
        # batch-sized tensor cost more than its arithmetic (benchmarks/bench_flows.py)
        if k < depth - 1:
            d_s = d_g * cs[k + 1]
            d_c = d_g.mul_(s)
        else:
            d_s = d_g * w
            d_w_rows = d_g.mul_(s)
        d_s.mul_(s)
        d_pre.append(d_s.addcmul_(d_s, s, value=-1))  # ⊙ σ' = σ - σ²
    d_as: list[Tensor] = []  # ∂L/∂a_k, filled from the last layer down
    d_h = u
    for k in range(depth - 1, -1, -1):  # back up the forward activations
        d_as.insert(0, d_pre[k] if k == depth - 1 else d_pre[k].addcmul_(d_h, ss[k]))
        d_h = _mm(d_as[0], weights[k])
    return (d_h.add_(u) if quadratic else d_h), d_as, d_cs, d_w_rows


def _energy_param_grads(
    w: Tensor,
    saved: Sequence[Tensor],
    d_as: Sequence[Tensor],
    d_cs: Sequence[Tensor],
    d_w_rows: Tensor,
) -> list[Tensor]:
    """``[∂L/∂w, ∂L/∂W_1, ∂L/∂b_1, …]`` from :func:`_energy_grad_vjp`'s terms (rows of
    one evaluation, or of many stacked)."""
    depth = len(d_as)
    hs, ss, gs = saved[:depth], saved[depth : 2 * depth], saved[2 * depth : 3 * depth - 1]
    grads = [d_w_rows.sum(0)[None]]
    for k in range(depth):
        # ∂L/∂W_k = g_kᵀ ∂L/∂c_k + (∂L/∂a_k)ᵀ h_{k-1}; g_Lᵀ ∂L/∂c_L = diag(w) σ(a_L)ᵀ ∂L/∂c_L
        if k == depth - 1:
            path = _mm(ss[k].t(), d_cs[k]).mul_(w[:, None])
        else:
            path = _mm(gs[k].t(), d_cs[k])
        grads += [_mm(d_as[k].t(), hs[k], path), d_as[k].sum(0)]
    return grads


class _EnergyGrad(torch.autograd.Function):
    """∇E(x) of :class:`EnergyMLP` with a closed-form backward pass.

    E(x) = w · φ(W_L φ(… φ(W_1 x + b_1) …) + b_L), φ = softplus, φ' = σ (sigmoid). The
    forward pass is the hand-written backpropagation ``g_L = w ⊙ σ(a_L)``,
    ``c_k = g_k W_k``, ``g_{k-1} = c_k ⊙ σ(a_{k-1})``, ``∇E = c_1``. Training
    differentiates ∇E once more (the leapfrog moves q and p by it); this class's
    :meth:`backward` does that by hand too (a Hessian-vector product and the parameter
    gradients written out), reusing the forward pass's σ(a_k) and c_k: autograd would
    recompute σ inside softplus' backward and record a graph node for each of the ~30
    small products, where this records one. Each weight's two gradient terms (through
    ∇E's path and through the forward activations) are summed by one ``addmm`` where the
    layout allows, and every product is laid out the way BLAS is fastest at
    (:func:`_mm`). It is once differentiable:
    nothing in hgn takes a third derivative of an energy.

    Inputs are ``(x, quadratic, w, W_1, b_1, …, W_L, b_L)``; ``x`` is 2-D and ``w`` the
    output layer's ``(1, hidden)`` weight itself (selecting its row outside would record
    a node, and a backward through it, at every call).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, quadratic: bool, out_weight: Tensor, *wb: Tensor) -> Tensor:
        w = out_weight[0]
        out, saved = _energy_grad(x, quadratic, w, wb[0::2], wb[1::2])
        ctx.quadratic, ctx.depth = quadratic, len(wb) // 2
        ctx.save_for_backward(w, *wb[0::2], *saved)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        w, *rest = ctx.saved_tensors
        weights, saved = rest[: ctx.depth], rest[ctx.depth :]
        d_x, d_as, d_cs, d_w_rows = _energy_grad_vjp(grad_out, ctx.quadratic, w, weights, saved)
        return (d_x, None, *_energy_param_grads(w, saved, d_as, d_cs, d_w_rows))


class EnergyMLP(nn.Module):
    """A scalar Softplus MLP E(x) whose input gradient is written out in closed form.

    Hamiltonian dynamics only need ∇E, at every leapfrog stage. :meth:`grad` computes it
    by hand-written backpropagation (softplus' = sigmoid) with a hand-written backward
    pass of its own (:class:`_EnergyGrad`); it is several times faster on a CPU than
    ``torch.func.grad`` for these small networks (``benchmarks/bench_flows.py``).
    Softplus, not ReLU: the flow's training differentiates through ∇E.

    With ``quadratic`` the energy is ½|x|² + MLP(x): for the kinetic energy this is the
    physical K = |p|²/2 plus a learned correction, so that from the first step every flow
    step moves q along p (a freshly initialised MLP has a nearly flat gradient, which
    leaves the flow close to the identity and learning slow).
    """

    def __init__(self, dim: int, hidden: int, layers: int, quadratic: bool = False) -> None:
        super().__init__()
        sizes = [dim] + [hidden] * layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.out = nn.Linear(hidden, 1, bias=False)  # a constant offset moves nothing
        self.quadratic = quadratic

    def forward(self, x: Tensor) -> Tensor:
        e = x
        for layer in self.layers:
            e = F.softplus(layer(e))
        e = self.out(e).squeeze(-1)
        return e + 0.5 * (x * x).sum(-1) if self.quadratic else e

    def grad(self, x: Tensor) -> Tensor:
        """∇E(x) for x of shape (..., dim), differentiable once (closed-form backward).

        Under autocast the ops' dtypes are autocast's to choose, which a hand-written
        backward cannot follow: there autograd differentiates :meth:`grad_autograd`
        instead. ``torch.compile`` traces :class:`_EnergyGrad` forward and backward as
        they are, which keeps the product layouts of :func:`_mm` in the backward pass
        (autograd's own backward of a matrix product cannot choose them)."""
        if torch.is_autocast_enabled(x.device.type):
            return self.grad_autograd(x)
        if x.dim() == 2:  # as the leapfrog calls it: no reshapes to record
            return _EnergyGrad.apply(x, self.quadratic, *self.closed_form_params())
        flat = x.reshape(-1, x.shape[-1])
        grad = _EnergyGrad.apply(flat, self.quadratic, *self.closed_form_params())
        return grad.reshape(x.shape)

    def closed_form_params(self) -> list[Tensor]:
        """``[w, W_1, b_1, …, W_L, b_L]``: the parameters in the order the closed forms
        (:class:`_EnergyGrad`, :class:`_EnergyLeapfrog`) take them."""
        params = [self.out.weight]
        for layer in self.layers:
            params += [layer.weight, layer.bias]
        return params

    def grad_autograd(self, x: Tensor) -> Tensor:
        """The same ∇E as plain tensor algebra, for autograd to differentiate (any order):
        the reference :meth:`grad` is tested and benchmarked against."""
        flat = x.reshape(-1, x.shape[-1])
        pre, h = [], flat
        for layer in self.layers:
            pre.append(_mm(h, layer.weight.t(), layer.bias))
            h = F.softplus(pre[-1])
        g = self.out.weight[0]
        for layer, a in zip(reversed(self.layers), reversed(pre), strict=True):
            g = _mm(g * torch.sigmoid(a), layer.weight)
        g = g.reshape(x.shape)
        return g + x if self.quadratic else g


class _EnergyLeapfrog(torch.autograd.Function):
    """:func:`hgn.physics.integrators.leapfrog_separable` of two :class:`EnergyMLP`'s
    closed-form gradients as one graph node, with the reverse pass written out.

    Through autograd a rollout of T steps records 2T + 1 :class:`_EnergyGrad` nodes and
    ~4T small kick and drift nodes, and every energy evaluation's backward computes and
    accumulates its own parameter gradients (~10 small products and sums each). Here the
    forward pass runs the same integrator over the closed form without recording, keeping
    each evaluation's activations, and :meth:`backward` runs the adjoint of the
    kick-drift-kick map (Hessian-vector products through :func:`_energy_grad_vjp`),
    keeping each evaluation's per-row terms, then sums all parameter gradients in one
    product per weight over the stacked rows. The same map and the same gradients,
    to float64 round-off (``tests/test_hgnpp.py``).

    Inputs: ``(q, p, dt, steps, substeps, K's depth, K quadratic, V quadratic, K's w,
    W_1, b_1, …, V's w, W_1, b_1, …)``, ``dt`` a float or a tensor that needs no
    gradient. Outputs: ``(qs, ps)``, ``(steps + 1, B, n)`` each.
    """

    @staticmethod
    def forward(
        ctx: Any,
        q: Tensor,
        p: Tensor,
        dt: float | Tensor,
        steps: int,
        substeps: int,
        k_depth: int,
        k_quadratic: bool,
        v_quadratic: bool,
        *params: Tensor,
    ) -> tuple[Tensor, Tensor]:
        k_params, v_params = params[: 1 + 2 * k_depth], params[1 + 2 * k_depth :]
        (wk, *k_wb), (wv, *v_wb) = k_params, v_params
        ks: list[list[Tensor]] = []  # each evaluation's saved terms, in the order made
        vs: list[list[Tensor]] = []

        def grad_k(p: Tensor) -> Tensor:
            dk, saved = _energy_grad(p, k_quadratic, wk[0], k_wb[0::2], k_wb[1::2])
            ks.append(saved)
            return dk

        def grad_v(q: Tensor) -> Tensor:
            dv, saved = _energy_grad(q, v_quadratic, wv[0], v_wb[0::2], v_wb[1::2])
            vs.append(saved)
            return dv

        qs, ps = integrators.leapfrog_separable(grad_k, grad_v, q, p, dt, steps, substeps=substeps)
        ctx.h, ctx.substeps, ctx.k_depth = dt / substeps, substeps, k_depth
        ctx.quadratic = (k_quadratic, v_quadratic)
        ctx.ks, ctx.vs = ks, vs  # intermediates, not inputs or outputs
        ctx.save_for_backward(*params)
        return qs, ps

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_qs: Tensor, d_ps: Tensor) -> tuple[Tensor | None, ...]:
        params = ctx.saved_tensors
        k_params, v_params = params[: 1 + 2 * ctx.k_depth], params[1 + 2 * ctx.k_depth :]
        (wk, *k_wb), (wv, *v_wb) = k_params, v_params
        wk, wv, kw, vw = wk[0], wv[0], k_wb[0::2], v_wb[0::2]
        k_quadratic, v_quadratic = ctx.quadratic
        h, half = ctx.h, 0.5 * ctx.h
        steps = d_qs.shape[0] - 1
        k_terms: list[tuple[list[Tensor], list[Tensor], Tensor]] = []
        v_terms: list[tuple[list[Tensor], list[Tensor], Tensor]] = []
        l_q, l_p = d_qs[steps].clone(), d_ps[steps].clone()
        l_dv = torch.zeros_like(l_q)  # the cotangent of the ∇V(q') the next step opens with
        j = steps * ctx.substeps
        for t in range(steps - 1, -1, -1):
            # the adjoint of p½ = p − ½h∇V(q), q' = q + h∇K(p½), p' = p½ − ½h∇V(q')
            for _ in range(ctx.substeps):
                l_dv = l_dv - half * l_p
                d_q, *terms = _energy_grad_vjp(l_dv, v_quadratic, wv, vw, ctx.vs[j])
                v_terms.append(terms)
                l_q = l_q + d_q
                d_p, *terms = _energy_grad_vjp(h * l_q, k_quadratic, wk, kw, ctx.ks[j - 1])
                k_terms.append(terms)
                l_p = l_p + d_p
                l_dv = -half * l_p
                j -= 1
            l_q = l_q + d_qs[t]
            l_p = l_p + d_ps[t]
        d_q, *terms = _energy_grad_vjp(l_dv, v_quadratic, wv, vw, ctx.vs[0])
        v_terms.append(terms)
        l_q = l_q + d_q
        k_grads = _stacked_param_grads(wk, ctx.ks[::-1], k_terms)
        v_grads = _stacked_param_grads(wv, ctx.vs[::-1], v_terms)
        return (l_q, l_p, None, None, None, None, None, None, *k_grads, *v_grads)


def _stacked_param_grads(
    w: Tensor,
    saved: Sequence[Sequence[Tensor]],
    terms: Sequence[tuple[list[Tensor], list[Tensor], Tensor]],
) -> list[Tensor]:
    """:func:`_energy_param_grads` over many evaluations at once: each term's rows
    stacked, so each weight's gradient is one product, not one per evaluation."""
    stack = [torch.cat(rows) for rows in zip(*saved, strict=True)]
    d_as = [torch.cat(rows) for rows in zip(*(t[0] for t in terms), strict=True)]
    d_cs = [torch.cat(rows) for rows in zip(*(t[1] for t in terms), strict=True)]
    return _energy_param_grads(w, stack, d_as, d_cs, torch.cat([t[2] for t in terms]))


def energy_leapfrog(
    kinetic: EnergyMLP,
    potential: EnergyMLP,
    q: Tensor,
    p: Tensor,
    dt: float | Tensor,
    steps: int,
    substeps: int = 1,
) -> tuple[Tensor, Tensor]:
    """:func:`~hgn.physics.integrators.leapfrog_separable` of ``H = K(p) + V(q)``, with K
    and V :class:`EnergyMLP`\\s and ``q, p`` of shape ``(B, n)``: ``(qs, ps)``, each
    ``(steps + 1, B, n)``.

    When training needs its gradients, the rollout is one :class:`_EnergyLeapfrog` node;
    otherwise (no gradient wanted, no step, autocast, a ``dt`` that is learned, or under
    ``torch.compile``) it is the plain integrator over :meth:`EnergyMLP.grad`."""
    learned_dt = isinstance(dt, Tensor) and dt.requires_grad
    wants_grad = torch.is_grad_enabled() and (
        q.requires_grad or p.requires_grad or any(t.requires_grad for t in kinetic.parameters())
    )
    if (
        not wants_grad
        or steps == 0
        or learned_dt
        or q.dim() != 2
        or torch.is_autocast_enabled(q.device.type)
        or torch.compiler.is_compiling()
    ):
        return integrators.leapfrog_separable(
            kinetic.grad, potential.grad, q, p, dt, steps, substeps=substeps
        )
    params = [*kinetic.closed_form_params(), *potential.closed_form_params()]
    return _EnergyLeapfrog.apply(
        q, p, dt, steps, substeps, len(kinetic.layers),
        kinetic.quadratic, potential.quadratic, *params,
    )  # fmt: skip
