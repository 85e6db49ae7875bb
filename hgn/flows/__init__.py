"""Neural Hamiltonian Flows (paper Sec. 3.3) beside the HGN pipeline: the flow models
(:mod:`hgn.flows.nhf`), the 2-D and array targets (:mod:`hgn.flows.targets`), training,
evaluation and comparison (:mod:`hgn.flows.train`) and Figures 9–10
(:mod:`hgn.flows.plots`)."""

from hgn.flows.nhf import (
    NHF,
    PRIORS,
    DensityModel,
    EnergyMLP,
    NHFConfig,
    RealNVP,
    RealNVPConfig,
    SoftUniform,
    build,
    load,
    n_parameters,
    save,
)

__all__ = [
    "NHF",
    "PRIORS",
    "DensityModel",
    "EnergyMLP",
    "NHFConfig",
    "RealNVP",
    "RealNVPConfig",
    "SoftUniform",
    "build",
    "load",
    "n_parameters",
    "save",
]
