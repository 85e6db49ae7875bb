"""Neural Hamiltonian Flows (paper Sec. 3.3, docs/SCIENCE.md §6) and the zuko baselines
(RealNVP, NSF).

Why one file of more than 600 lines: the flows share one :class:`DensityModel` contract
(a zuko lazy distribution with the data maps, standardising and the logit map), and NHF
and its baselines stand beside it so that their differences read side by side.

An NHF is a normalising flow whose steps are Hamiltonian dynamics. Data x = q_T ∈ R^d is
the position half of a phase-space state s = (q, p); the momentum p is a latent variable.
Sampling draws s₀ = (q₀, p₀) from a simple prior π, runs T flow steps, and keeps q_T. Flow
step i integrates its own separable Hamiltonian H_i(q, p) = K_i(p) + V_i(q) with a few
leapfrog sub-steps. For a separable H the leapfrog map is exactly invertible (the same
steps with -dt, in reverse order) and has unit Jacobian determinant for any step size, so
the density of s_T is π at the pre-image: no log-determinant is ever computed.

Because p is latent, log p(x) = log ∫ π(F⁻¹(x, p)) dp is intractable; a Gaussian
f_ψ(p | x) gives the ELBO, E_{p~f_ψ}[log π(F⁻¹(x, p)) - log f_ψ(p | x)], which training
maximises, and the importance-weighted bound log (1/K) Σ_k exp(term_k), which is what
:meth:`NHF.log_prob` reports: it rises towards log p(x) as K grows.

Where the time goes: a training step is dominated by ∇K and ∇V through the MLPs, once
forward and twice more in the backward pass. Four things keep that to the minimum
(measured in ``benchmarks/bench_flows.py``): the first-same-as-last leapfrog of
:func:`hgn.physics.integrators.leapfrog_separable` (one ∇K and one ∇V per sub-step,
where a joint ``grad_fn`` spends one more of each); ∇E written out in closed form
(:class:`hgn.nn.EnergyMLP`), never through ``torch.func`` or ``create_graph``; a
closed-form backward of that gradient, which reuses the forward pass's sigmoids instead
of recomputing them and works in place; and every product in the layout BLAS is fast at
(on 2-D data, half of ∇E's products have 2 output columns, 4x slower the plain way).
What is left is six 64 x 64 products per ∇E and the element-wise work between them,
which ``torch.compile`` (``--compile``) fuses.

Every model here is a :class:`DensityModel`: an optional fixed standardisation of the
data (a constant log-determinant, so the Hamiltonian part stays volume preserving) and,
being a zuko ``LazyDistribution`` like zuko's own flows, calling the model returns a
``torch.distributions.Distribution`` (``model().log_prob(x)``, ``model().sample((n,))``)
whose ``support`` says where the data may lie. The models are registered by their
config's ``kind`` in :data:`FLOWS`. Runs are written by
:func:`hgn.flows.train.train`; :func:`save` writes the same checkpoint format and
:func:`load` reads either.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, constraints
from torch.distributions.utils import broadcast_all
from tqdm.auto import tqdm
from zuko.flows import LazyDistribution  # zuko.lazy.LazyDistribution, as zuko.flows exports it

from hgn import runs
from hgn.checks import check_range, config_from_dict
from hgn.nn import EnergyMLP, mlp
from hgn.physics.integrators import leapfrog_separable
from hgn.registry import Registry
from hgn.utils import UserError, save_checkpoint

Shape = int | tuple[int, ...] | torch.Size
_SCALAR: torch.Size = torch.Size()


def check_int(value: Any, key: str, ge: int = 1, le: int | None = None) -> int:
    """Refuse a non-integer (or a bool) or an integer outside ``[ge, le]`` with one line
    naming ``key``; every integer key of the flow configs goes through here."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{key} must be an integer, got {value!r}")
    check_range(value, key, ge=ge, le=le)
    return value


# --- priors -----------------------------------------------------------------------------------


class SoftUniform(Distribution):
    """The paper's soft-uniform density, per coordinate:

    π(s; σ, β) = sigmoid(β(s + σ/2)) · sigmoid(-β(s - σ/2)) / Z,  Z = σ / (1 - e^{-βσ}).

    It is exactly the law of U + L with U ~ Uniform(-σ/2, σ/2) and L ~ Logistic(0, 1/β)
    (their convolution is (sigmoid(β(s+σ/2)) - sigmoid(β(s-σ/2))) / σ, which equals the
    product form above), which gives an exact, reparameterised sampler. As β → ∞ it tends to
    Uniform(-σ/2, σ/2); the paper used it because flows of a flat prior show their
    attractors clearly.
    """

    arg_constraints = {"sigma": constraints.positive, "beta": constraints.positive}  # noqa: RUF012
    support = constraints.real
    has_rsample = True

    def __init__(
        self, sigma: float | Tensor, beta: float | Tensor, validate_args: bool | None = None
    ) -> None:
        self.sigma, self.beta = broadcast_all(sigma, beta)
        super().__init__(self.sigma.shape, validate_args=validate_args)

    def expand(self, batch_shape: Shape, _instance: Any = None) -> SoftUniform:
        shape = torch.Size(batch_shape)
        return SoftUniform(self.sigma.expand(shape), self.beta.expand(shape), validate_args=False)

    @property
    def mean(self) -> Tensor:
        return torch.zeros_like(self.sigma)

    @property
    def variance(self) -> Tensor:
        return self.sigma**2 / 12 + math.pi**2 / (3 * self.beta**2)

    def log_normaliser(self) -> Tensor:
        """log Z = log σ - log(1 - e^{-βσ}), written with expm1 for small βσ."""
        return torch.log(self.sigma) - torch.log(-torch.expm1(-self.beta * self.sigma))

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        half = self.sigma / 2
        return (
            F.logsigmoid(self.beta * (value + half))
            + F.logsigmoid(-self.beta * (value - half))
            - self.log_normaliser()
        )

    def rsample(self, sample_shape: Shape = _SCALAR) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        uniform = torch.rand(shape, dtype=self.sigma.dtype, device=self.sigma.device) - 0.5
        tiny = torch.finfo(self.sigma.dtype).tiny
        v = torch.rand(shape, dtype=self.sigma.dtype, device=self.sigma.device).clamp(tiny, 1)
        logistic = torch.log(v) - torch.log1p(-v)
        return self.sigma * uniform + logistic / self.beta


PRIORS = ("normal", "soft-uniform")


class HamiltonianStep(nn.Module):
    """One flow step: ``substeps`` leapfrog steps of H = K(p) + V(q), total time dt."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        layers: int,
        dt: float,
        learn_dt: bool,
        substeps: int,
        quadratic_kinetic: bool = True,
        quadratic_potential: bool = False,
    ) -> None:
        super().__init__()
        self.kinetic = EnergyMLP(dim, hidden, layers, quadratic=quadratic_kinetic)
        self.potential = EnergyMLP(dim, hidden, layers, quadratic=quadratic_potential)
        self.substeps = substeps
        log_dt = torch.tensor(math.log(dt))
        if learn_dt:
            self.log_dt = nn.Parameter(log_dt)
        else:
            self.register_buffer("log_dt", log_dt)

    @property
    def dt(self) -> Tensor:
        return self.log_dt.exp()

    def forward(
        self, q: Tensor, p: Tensor, reverse: bool = False, substeps: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Integrate for time dt (``-dt`` with ``reverse``, the exact inverse), in
        ``substeps`` sub-steps (default the model's; fewer only to draw a single one)."""
        n = self.substeps if substeps is None else substeps
        dt = (-self.dt if reverse else self.dt) * n / self.substeps
        return leapfrog_separable(
            self.kinetic.grad, self.potential.grad, q, p, dt, 1, substeps=n, all_states=False
        )


LOG_PROB_EVALUATIONS = 1 << 16
"""Flow evaluations (points × importance samples) per chunk of a log-density
computation: enough to keep the CPU busy, few enough to bound memory."""


def log_prob_chunks(x: Tensor, n_importance: int) -> tuple[Tensor, ...]:
    """Points ``(..., d)`` as rows ``(N, d)`` in chunks of about
    :data:`LOG_PROB_EVALUATIONS` flow evaluations, the one chunking every log-density
    computation (evaluation, plots, the model itself) uses."""
    return x.reshape(-1, x.shape[-1]).split(max(1, LOG_PROB_EVALUATIONS // n_importance))


class GaussianPosterior(nn.Module):
    """f_ψ(p | q): a diagonal Gaussian whose mean and log-std are an MLP of q.

    The log-std is squashed into [-6, 3]: a collapsing or exploding variance would make
    the ELBO's -log f term blow up before the flow has learned anything.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = mlp([dim, hidden, hidden, 2 * dim], nn.SiLU)

    def forward(self, q: Tensor) -> Independent:
        mean, raw = self.net(q).chunk(2, -1)
        log_std = -1.5 + 4.5 * torch.tanh(raw / 4.5 + 1.5 / 4.5)
        return Independent(Normal(mean, log_std.exp()), 1)


# --- models -----------------------------------------------------------------------------------


class FlowDistribution(Distribution):
    """The density a :class:`DensityModel` defines, as a ``torch.distributions`` object.

    zuko's flows are lazy distributions, modules that, called, return a distribution;
    these models are too (``model()``), so code written for zuko (``flow().log_prob(x)``,
    ``flow().rsample((n,))``) runs on an NHF unchanged. For an NHF, ``log_prob`` is the
    importance-weighted bound with ``n_importance`` samples (a lower bound on log p(x)).

    ``support`` is R^d, or, once the model's logit map confines the data
    (:meth:`DensityModel.set_logit`), the box the map takes onto R^d: [-a, 1 + a]^d with
    a = α / (1 - 2α), the unit box the data must lie in widened by what the sigmoid of
    the way back reaches (at α = 1e-6, a ≈ 1e-6). Not [0, 1]^d itself: a sample lands in
    the margin whenever the model's u falls beyond ±logit(1 - α), which it may.
    """

    arg_constraints: dict[str, Any] = {}  # noqa: RUF012
    has_rsample = True

    def __init__(self, model: DensityModel, n_importance: int = 128) -> None:
        self.model, self.n_importance = model, n_importance
        super().__init__(_SCALAR, model.event_shape, validate_args=False)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> constraints.Constraint:
        return self.model.support

    def log_prob(self, value: Tensor) -> Tensor:
        return self.model.log_prob(value, self.n_importance)

    def rsample(self, sample_shape: Shape = _SCALAR) -> Tensor:
        return self.model.rsample(sample_shape)


class DensityModel(LazyDistribution):
    """What every flow model shares: a fixed map of the data into the model's
    coordinates, and a distribution's API, both its own (:meth:`log_prob`,
    :meth:`sample`) and, as a zuko ``LazyDistribution``, the ``Distribution`` that
    calling it returns.

    The model works on z = (u - loc) / scale with u = x, or, for data in the unit box
    (``set_logit``), u = logit(α + (1 - 2α) x), the usual map of dequantised images
    (Dinh et al., 2017) that turns each pixel's bounded, peaked marginal into one on the
    whole line. ``loc`` and ``scale`` are buffers set once from training data (identity by
    default). The map is a fixed bijection whose log-determinant enters every
    log-density, so every density stays one on x.
    """

    kind: str

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.logit = 0.0
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    @property
    def event_shape(self) -> torch.Size:
        return torch.Size([self.dim])

    def forward(self, c: Tensor | None = None, n_importance: int = 128) -> FlowDistribution:
        """The model's density as a ``torch.distributions.Distribution`` (zuko's
        ``LazyDistribution.forward``). These flows are unconditional: ``c`` must be None;
        ``n_importance`` is K of NHF's bound in the distribution's ``log_prob``."""
        if c is not None:
            raise TypeError(
                f"{type(self).__name__} is an unconditional flow: call it with no context "
                "(pass n_importance by keyword)"
            )
        return FlowDistribution(self, n_importance)

    @property
    def support(self) -> constraints.Constraint:
        """Where the data may lie: R^d, or the box the logit map takes onto R^d
        (:class:`FlowDistribution` says which box)."""
        if not self.logit:
            return constraints.real_vector
        margin = self.logit / (1 - 2 * self.logit)
        return constraints.independent(constraints.interval(-margin, 1 + margin), 1)

    def set_logit(self, alpha: float) -> None:
        """Map data in [0, 1]^d through u = logit(α + (1 - 2α) x) first (0: no map).
        Saved with the model's config (:meth:`config`)."""
        check_range(alpha, "--logit", ge=0, lt=0.5)
        self.logit = float(alpha)

    def set_standardisation(self, loc: Tensor, scale: Tensor) -> None:
        self.loc.copy_(loc)
        self.scale.copy_(scale.clamp_min(1e-6))

    def to_unbounded(self, x: Tensor) -> Tensor:
        """u: x itself, or its logit (:meth:`set_logit`); standardisation starts here."""
        if not self.logit:
            return x
        return torch.logit(self.logit + (1 - 2 * self.logit) * x)

    def _to_model(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """z for data x (..., d), and log |det ∂z/∂x| per point (...,)."""
        u = self.to_unbounded(x)
        log_det = -self.scale.log().sum()
        if self.logit:  # du/dx = (1 - 2α) / (s (1 - s)), s = σ(u); -log s(1 - s) = sp(u) + sp(-u)
            per_dim = F.softplus(u) + F.softplus(-u) + math.log1p(-2 * self.logit)
            log_det = log_det + per_dim.sum(-1)
        return (u - self.loc) / self.scale, log_det

    def rsample(self, sample_shape: Shape = _SCALAR) -> Tensor:
        shape = torch.Size([sample_shape] if isinstance(sample_shape, int) else sample_shape)
        u = self.loc + self.scale * self._rsample_model(shape.numel())
        if self.logit:
            u = (torch.sigmoid(u) - self.logit) / (1 - 2 * self.logit)
        return u.reshape(*shape, self.dim)

    @torch.no_grad()
    def sample(self, sample_shape: Shape = _SCALAR) -> Tensor:
        return self.rsample(sample_shape)

    def log_prob(self, x: Tensor, n_importance: int = 128, progress: str | None = None) -> Tensor:
        """log p(x) for x of shape (..., d), in chunks (:func:`log_prob_chunks`) to bound
        memory: exact for the zuko flows, the importance-weighted bound for NHF. With
        ``progress`` (a label), long computations show a progress bar."""
        chunks = log_prob_chunks(x, n_importance)
        bar = tqdm(
            chunks, desc=progress, leave=False, dynamic_ncols=True,
            disable=progress is None or len(chunks) < 4,
        )  # fmt: skip
        out = [self._log_prob_rows(xb, n_importance) for xb in bar]
        return torch.cat(out).reshape(x.shape[:-1])

    def loss(self, x: Tensor, n_samples: int = 1, iwae: bool = False) -> Tensor:
        """The training objective to minimise, averaged over the batch."""
        raise NotImplementedError

    def _log_prob_rows(self, x: Tensor, n_importance: int) -> Tensor:
        raise NotImplementedError

    def _rsample_model(self, n: int) -> Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Everything :func:`build` needs to rebuild this model (saved with each run);
        ``logit`` only where it is set, so that runs from before it load unchanged."""
        return {
            "kind": self.kind,
            **asdict(self.cfg),
            **({"logit": self.logit} if self.logit else {}),
        }


@dataclass
class NHFConfig:
    """Architecture of an NHF. ``dt`` is the initial (or fixed) time of each flow step.

    The defaults are those that did best on checkerboard per unit of training time
    (docs/RESULTS.md, "Checkerboard in 10 minutes"): 6 flow steps of one leapfrog step
    each beat 8 × 2, 16 × 1 and 4 × 1 at equal steps, and cost 40 % of the earlier 8 × 2
    per step."""

    dim: int
    flow_steps: int = 6
    leapfrog_steps: int = 1
    hidden: int = 64
    layers: int = 2
    dt: float = 0.5
    learn_dt: bool = True
    quadratic_kinetic: bool = True
    quadratic_potential: bool = False
    prior: str = "normal"
    sigma: float = 4.0
    beta: float = 4.0
    posterior_hidden: int = 64

    def __post_init__(self) -> None:
        check_int(self.dim, "dim", 1, 1 << 20)
        check_int(self.flow_steps, "--flow-steps", 1, 1000)
        check_int(self.leapfrog_steps, "--leapfrog-steps", 1, 100)
        check_int(self.hidden, "--hidden", 1, 8192)
        check_int(self.layers, "--layers", 1, 32)
        check_int(self.posterior_hidden, "--posterior-hidden", 1, 8192)
        check_range(self.dt, "--dt", gt=0, le=100)
        check_range(self.sigma, "--sigma", gt=0, le=1e4)
        check_range(self.beta, "--beta", gt=0, le=1e4)
        for key in ("learn_dt", "quadratic_kinetic", "quadratic_potential"):
            if not isinstance(getattr(self, key), bool):
                raise UserError(f"{key} must be true or false, got {getattr(self, key)!r}")
        if self.prior not in PRIORS:
            raise UserError(f"unknown prior {self.prior!r}; choose one of {', '.join(PRIORS)}")


class NHF(DensityModel):
    """Neural Hamiltonian Flow over R^d (module docstring has the maths).

    ``transform``/``inverse`` map phase-space states (q, p) of shape (..., d) in the
    model's standardised coordinates; ``log_prob``/``sample``/``elbo`` work in data space.
    ``steps[i].kinetic`` and ``steps[i].potential`` are K_i and V_i, for plotting.
    """

    kind = "nhf"

    def __init__(self, config: NHFConfig) -> None:
        super().__init__(config.dim)
        self.cfg = config
        self.steps = nn.ModuleList(
            HamiltonianStep(
                config.dim, config.hidden, config.layers, config.dt, config.learn_dt,
                config.leapfrog_steps, config.quadratic_kinetic, config.quadratic_potential,
            )
            for _ in range(config.flow_steps)
        )  # fmt: skip
        self.posterior = GaussianPosterior(config.dim, config.posterior_hidden)
        self.register_buffer("sigma", torch.tensor(float(config.sigma)))
        self.register_buffer("beta", torch.tensor(float(config.beta)))

    @property
    def prior(self) -> Distribution:
        """π over s₀ = (q₀, p₀) ∈ R^{2d}, one event of 2d independent coordinates."""
        shape = torch.Size([2 * self.dim])
        if self.cfg.prior == "normal":
            zero = self.sigma.new_zeros(shape)
            return Independent(Normal(zero, zero + 1), 1)
        return Independent(SoftUniform(self.sigma, self.beta).expand(shape), 1)

    def transform(self, q0: Tensor, p0: Tensor) -> tuple[Tensor, Tensor]:
        """Run the flow forward: s₀ → s_T."""
        for step in self.steps:
            q0, p0 = step(q0, p0)
        return q0, p0

    def inverse(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """Run the flow backward (-dt, steps in reverse order): s_T → s₀, exactly."""
        for step in reversed(self.steps):
            q, p = step(q, p, reverse=True)
        return q, p

    def path(self, q0: Tensor, p0: Tensor) -> tuple[Tensor, Tensor]:
        """States after each flow step, stacked on a leading axis of length T + 1."""
        qs, ps = [q0], [p0]
        for step in self.steps:
            q0, p0 = step(q0, p0)
            qs.append(q0)
            ps.append(p0)
        return torch.stack(qs), torch.stack(ps)

    def log_weights(self, x: Tensor, n: int) -> Tensor:
        """(n, B) terms log π(F⁻¹(x, p_k)) - log f_ψ(p_k | x), p_k ~ f_ψ(· | x), in data space."""
        z, log_det = self._to_model(x)
        posterior = self.posterior(z)
        p = posterior.rsample((n,))
        q0, p0 = self.inverse(z.expand(n, *z.shape), p)
        log_pi = self.prior.log_prob(torch.cat([q0, p0], -1))
        return log_pi - posterior.log_prob(p) + log_det

    def elbo(self, x: Tensor, n_samples: int = 1) -> Tensor:
        """Per-point ELBO (B,), averaged over ``n_samples`` momentum draws."""
        return self.log_weights(x, n_samples).mean(0)

    def _log_prob_rows(self, x: Tensor, n_importance: int) -> Tensor:
        """Importance-weighted bound with K = ``n_importance`` (≤ log p(x)) of rows (N, d)."""
        return torch.logsumexp(self.log_weights(x, n_importance), 0) - math.log(n_importance)

    def loss(self, x: Tensor, n_samples: int = 1, iwae: bool = False) -> Tensor:
        """-ELBO (the paper's objective) over ``n_samples`` momentum draws per point or,
        with ``iwae``, minus the importance-weighted bound with K = ``n_samples``: the
        bound evaluation reports, tighter than the ELBO, and so training no longer
        penalises flows whose posterior over p is not Gaussian (same thing at K = 1)."""
        if not iwae:
            return -self.elbo(x, n_samples).mean()
        return -self._log_prob_rows(x, n_samples).mean()

    def _rsample_model(self, n: int) -> Tensor:
        s0 = self.prior.rsample((n,))
        return self.transform(*s0.split(self.dim, -1))[0]


@dataclass
class RealNVPConfig:
    """zuko's RealNVP: ``transforms`` affine coupling layers, MLPs of ``layers`` x ``hidden``."""

    dim: int
    transforms: int = 3
    hidden: int = 64
    layers: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.dim, int) and not isinstance(self.dim, bool) and self.dim < 2:
            raise UserError("RealNVP needs data of dimension 2 or more (coupling splits it)")
        check_int(self.dim, "dim", 2, 1 << 20)
        check_int(self.transforms, "--transforms", 1, 1000)
        check_int(self.hidden, "--hidden", 1, 8192)
        check_int(self.layers, "--layers", 1, 32)


@dataclass
class NSFConfig:
    """zuko's neural spline flow (Durkan et al., 2019): ``transforms`` autoregressive
    rational-quadratic spline layers of ``bins`` bins, MADEs of ``layers`` x ``hidden``."""

    dim: int
    transforms: int = 3
    hidden: int = 64
    layers: int = 2
    bins: int = 8

    def __post_init__(self) -> None:
        check_int(self.dim, "dim", 1, 1 << 20)
        check_int(self.transforms, "--transforms", 1, 1000)
        check_int(self.hidden, "--hidden", 1, 8192)
        check_int(self.layers, "--layers", 1, 32)
        check_int(self.bins, "--bins", 2, 1024)


class ZukoFlow(DensityModel):
    """A zuko flow behind the :class:`DensityModel` API: exact log-density, one sample
    per pass (NSF's inverse is autoregressive: ``dim`` passes)."""

    def __init__(self, config: RealNVPConfig | NSFConfig) -> None:
        super().__init__(config.dim)
        self.cfg = config
        self.flow = self._zuko(config)

    def _zuko(self, config: Any) -> nn.Module:
        raise NotImplementedError

    def _log_prob_rows(self, x: Tensor, n_importance: int) -> Tensor:
        z, log_det = self._to_model(x)
        return self.flow().log_prob(z) + log_det

    def loss(self, x: Tensor, n_samples: int = 1, iwae: bool = False) -> Tensor:
        """NLL (``n_samples`` and ``iwae`` are NHF's and ignored: the density is exact)."""
        return -self._log_prob_rows(x, 1).mean()

    def _rsample_model(self, n: int) -> Tensor:
        return self.flow().rsample((n,))


class RealNVP(ZukoFlow):
    """The RealNVP baseline (Dinh et al., 2017), taken from zuko with alternating masks."""

    kind = "realnvp"

    def _zuko(self, config: RealNVPConfig) -> nn.Module:
        import zuko

        return zuko.flows.RealNVP(
            features=config.dim,
            transforms=config.transforms,
            hidden_features=(config.hidden,) * config.layers,
        )


class NSF(ZukoFlow):
    """The neural spline flow baseline (Durkan et al., 2019), taken from zuko."""

    kind = "nsf"

    def _zuko(self, config: NSFConfig) -> nn.Module:
        import zuko

        return zuko.flows.NSF(
            features=config.dim,
            transforms=config.transforms,
            bins=config.bins,
            hidden_features=(config.hidden,) * config.layers,
        )


@dataclass(frozen=True)
class FlowKind:
    """A registered density model: its class, its config class and one line of help."""

    model: type[DensityModel]
    config: type
    help: str


FLOWS: Registry[FlowKind] = Registry(
    "model kind",
    {
        "nhf": FlowKind(
            NHF, NHFConfig, "Neural Hamiltonian Flow: leapfrog steps of learned Hamiltonians"
        ),
        "realnvp": FlowKind(RealNVP, RealNVPConfig, "zuko's RealNVP: affine coupling layers"),
        "nsf": FlowKind(NSF, NSFConfig, "zuko's neural spline flow: autoregressive splines"),
    },
)
"""The density models by their config's ``kind`` (:meth:`DensityModel.config`)."""


def build(config: dict[str, Any]) -> DensityModel:
    """Build an untrained model from a :meth:`DensityModel.config` dictionary; an unknown
    kind or key, or a value of the wrong type, is refused with one line naming it."""
    config = dict(config)
    kind = config.pop("kind", "nhf")
    entry = FLOWS.lookup(kind)
    logit = config.pop("logit", 0.0)
    model = entry.model(config_from_dict(entry.config, config, kind))
    model.set_logit(logit)
    return model


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save(model: DensityModel, path: str | Path, target: str | None = None, seed: int = 0) -> None:
    """Save a model on its own, in a run checkpoint's format, so that ``hgn flow
    evaluate``, ``sample`` and ``plot`` read it. ``target`` (a target name or a .npy path)
    is what those commands use when given no ``--target``; ``seed`` fixes a .npy
    target's train/test split, as for a run trained with that seed. The keys are those of
    the checkpoint :func:`hgn.flows.train.train` writes (one format, one reader)."""
    config = {"model": model.config(), "target": target, "train": {"seed": seed}}
    state = {"model": model.state_dict()}
    save_checkpoint(
        path, {"kind": runs.FLOW, "step": 0, "seconds": 0.0, "config": config, "state": state}
    )


def open_run(run: str | Path) -> tuple[DensityModel, dict[str, Any]]:
    """The model of a flow run directory (or a checkpoint file) in eval mode, and its
    checkpoint (:func:`hgn.runs.read`: weights-only; a sequence run is refused)."""
    saved = runs.read(run)
    runs.expect_kind(saved, runs.FLOW, run)
    try:
        model = build(saved["config"]["model"])
        model.load_state_dict(saved["state"]["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"{run} does not hold a flow model ({type(exc).__name__}: {exc})") from None
    return model.eval(), saved


def load(run: str | Path) -> DensityModel:
    """The model of a flow run directory (or a checkpoint file), in eval mode."""
    return open_run(run)[0]
