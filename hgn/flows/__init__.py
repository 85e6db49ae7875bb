"""Neural Hamiltonian Flows (paper Sec. 3.3) beside the HGN pipeline: the flow models and
zuko's RealNVP and NSF behind one API (:mod:`hgn.flows.nhf`), the 2-D, 10-D, digits and
array targets (:mod:`hgn.flows.targets`), training and evaluation (:mod:`hgn.flows.train`),
the time-to-NLL comparison (:mod:`hgn.flows.compare`) and the figures
(:mod:`hgn.flows.plots`)."""

from hgn.flows.compare import compare
from hgn.flows.nhf import (
    FLOWS,
    NHF,
    NSF,
    PRIORS,
    DensityModel,
    EnergyMLP,
    FlowDistribution,
    FlowKind,
    NHFConfig,
    NSFConfig,
    RealNVP,
    RealNVPConfig,
    SoftUniform,
    build,
    load,
    n_parameters,
    save,
)
from hgn.flows.train import FlowTrainConfig, evaluate, train

__all__ = [
    "FLOWS",
    "NHF",
    "NSF",
    "PRIORS",
    "DensityModel",
    "EnergyMLP",
    "FlowDistribution",
    "FlowKind",
    "FlowTrainConfig",
    "NHFConfig",
    "NSFConfig",
    "RealNVP",
    "RealNVPConfig",
    "SoftUniform",
    "build",
    "compare",
    "evaluate",
    "load",
    "n_parameters",
    "save",
    "train",
]
