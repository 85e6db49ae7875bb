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
        weights, biases = wb[0::2], wb[1::2]
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
        ctx.quadratic, ctx.depth = quadratic, depth
        ctx.save_for_backward(w, *weights, *hs, *ss, *gs, *cs[1:])
        return cs[0] + x if quadratic else cs[0]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        depth = ctx.depth
        saved = ctx.saved_tensors
        w = saved[0]
        weights = saved[1 : 1 + depth]
        hs = saved[1 + depth : 1 + 2 * depth]
        ss = saved[1 + 2 * depth : 1 + 3 * depth]
        gs = saved[1 + 3 * depth : 4 * depth]  # g_1 … g_{L-1}; g_L = σ(a_L) ⊙ w is not kept
        cs = (None, *saved[4 * depth :])
        d_cs: list[Tensor] = []  # ∂L/∂c_k, down ∇E's path
        d_pre: list[Tensor] = []  # ∂L/∂a_k through σ(a_k) on ∇E's path
        d_c = grad_out
        d_w = w
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
                d_w = d_g.mul_(s).sum(0)
            d_s.mul_(s)
            d_pre.append(d_s.addcmul_(d_s, s, value=-1))  # ⊙ σ' = σ - σ²
        grads: list[Tensor | None] = [None] * (3 + 2 * depth)
        grads[2] = d_w[None]
        d_h = None
        for k in range(depth - 1, -1, -1):  # back up the forward activations
            d_a = d_pre[k] if d_h is None else d_pre[k].addcmul_(d_h, ss[k])
            # ∂L/∂W_k = g_kᵀ ∂L/∂c_k + (∂L/∂a_k)ᵀ h_{k-1}; g_Lᵀ ∂L/∂c_L = diag(w) σ(a_L)ᵀ ∂L/∂c_L
            if k == depth - 1:
                path = _mm(ss[k].t(), d_cs[k]).mul_(w[:, None])
            else:
                path = _mm(gs[k].t(), d_cs[k])
            grads[3 + 2 * k] = _mm(d_a.t(), hs[k], path)
            grads[4 + 2 * k] = d_a.sum(0)
            d_h = _mm(d_a, weights[k])
        grads[0] = d_h.add_(grad_out) if ctx.quadratic else d_h
        return tuple(grads)


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
        params: list[Tensor] = []
        for layer in self.layers:
            params += [layer.weight, layer.bias]
        if x.dim() == 2:  # as the leapfrog calls it: no reshapes to record
            return _EnergyGrad.apply(x, self.quadratic, self.out.weight, *params)
        flat = x.reshape(-1, x.shape[-1])
        grad = _EnergyGrad.apply(flat, self.quadratic, self.out.weight, *params)
        return grad.reshape(x.shape)

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
