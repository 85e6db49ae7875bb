"""The sequence models hgn trains, by CLI name: HGN and its ablations (paper Sec. 3.2, 4),
HGN++ (the improved HGN of the latent-dynamics benchmark, docs/SCIENCE.md §3), the
benchmark's non-Hamiltonian baselines with HGN++'s encoder, decoder and training (a
neural ODE, RGN, LSTM, GRU, and a Lagrangian LGN: :mod:`hgn.models.baselines`) and the HNN baselines
(Greydanus et al., 2019). One registry, filled here, in one place."""

from __future__ import annotations

from hgn.models.base import ModelSpec, SequenceModel, State
from hgn.models.baselines import (
    GRU,
    LGN,
    LSTM,
    RGN,
    LGNConfig,
    NeuralODE,
    ODEConfig,
    RecurrentConfig,
    RGNConfig,
)
from hgn.models.hgn import HGN, HGNConfig
from hgn.models.hgnpp import HGNPP, HGNPPConfig
from hgn.models.hnn import HNN, HNNConfig
from hgn.registry import Registry

MODELS: Registry[ModelSpec] = Registry(
    "model",
    {
        "hgn": ModelSpec(HGN, {}, "HGN with leapfrog (the paper's full model)"),
        "hgn-euler": ModelSpec(HGN, {"integrator": "euler"}, "ablation: Euler integrator"),
        "hgn-determ": ModelSpec(HGN, {"deterministic": True}, "ablation: z = μ, no KL"),
        "hgn-no-fpsi": ModelSpec(HGN, {"use_fpsi": False}, "ablation: s₀ = z, no f_ψ"),
        "hgn++": ModelSpec(
            HGNPP,
            {},
            "HGN++: flat phase space, separable MLP energies, trained forwards and backwards",
        ),
        "ode": ModelSpec(
            NeuralODE, {}, "baseline: HGN++ with a latent neural ODE ds/dt = f(s) (MLP f, RK4)"
        ),
        "rgn": ModelSpec(
            RGN, {}, "baseline: HGN++ with a residual step s' = s + g(s) (forward only)"
        ),
        "lstm": ModelSpec(
            LSTM, {}, "baseline: HGN++'s encoder and decoder around a teacher-forced LSTM"
        ),
        "gru": ModelSpec(
            GRU, {}, "baseline: HGN++'s encoder and decoder around a teacher-forced GRU"
        ),
        "lgn": ModelSpec(
            LGN, {}, "baseline: HGN++ with a learned Lagrangian L(q, q̇) (Euler-Lagrange, RK4)"
        ),
        "hnn": ModelSpec(HNN, {}, "baseline: HNN from pixels (MLP autoencoder on frame pairs)"),
        "hnn-conv": ModelSpec(
            HNN, {"conv": True}, "baseline: HNN with HGN's convolutional encoder and decoder"
        ),
    },
)
"""Models by CLI name: a class and a preset over its config's defaults."""


def get_model(name: str) -> ModelSpec:
    """Look up a model by its CLI name."""
    return MODELS.lookup(name)


__all__ = [
    "GRU",
    "HGN",
    "HGNPP",
    "HNN",
    "LGN",
    "LSTM",
    "MODELS",
    "RGN",
    "HGNConfig",
    "HGNPPConfig",
    "HNNConfig",
    "LGNConfig",
    "ModelSpec",
    "NeuralODE",
    "ODEConfig",
    "RGNConfig",
    "RecurrentConfig",
    "SequenceModel",
    "State",
    "get_model",
]
