"""Neural Hamiltonian Flows (paper Sec. 3.3, SPEC §6) and the RealNVP baseline.

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

Both NHF and the RealNVP baseline (zuko's) share :class:`DensityModel`: an optional
fixed standardisation of the data (a constant log-determinant, so the Hamiltonian part
stays volume preserving), and the ``torch.distributions``-style ``log_prob`` / ``sample``
/ ``rsample``. Models are saved by the training loop; :func:`load` rebuilds one from a run.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, constraints
from torch.distributions.utils import broadcast_all

from hgn.nn import mlp
from hgn.physics.integrators import leapfrog
from hgn.utils import UserError, load_checkpoint, save_checkpoint

Shape = int | tuple[int, ...] | torch.Size
_SCALAR: torch.Size = torch.Size()


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


# --- networks ---------------------------------------------------------------------------------


class EnergyMLP(nn.Module):
    """A scalar Softplus MLP E(x) whose input gradient is written out in closed form.

    Hamiltonian dynamics only need ∇E, at every leapfrog stage. Back-propagating by hand
    through the layers (softplus' = sigmoid) is plain tensor algebra, so the parameters
    still get their gradients by ordinary autograd, and it runs about twice as fast on a
    CPU as ``torch.func.grad`` for these small networks (``benchmarks/bench_flows.py``).
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
        pre, h = [], x
        for layer in self.layers:
            pre.append(layer(h))
            h = F.softplus(pre[-1])
        g = self.out.weight[0]
        for layer, a in zip(reversed(self.layers), reversed(pre), strict=True):
            g = (g * torch.sigmoid(a)) @ layer.weight
        return g + x if self.quadratic else g


class _SeparableGrad:
    """``grad_fn`` for the shared leapfrog on H = K(p) + V(q): (∇V(q), ∇K(p)).

    Each half is remembered for its last argument (compared by identity, and held, so an id
    is never reused): the leapfrog evaluates ∇V at the same q at the end of one sub-step
    and the start of the next, and ∇K at the same p in the drift and the closing kick,
    so this halves the work. Tensors here are never modified in place.
    """

    def __init__(self, kinetic: EnergyMLP, potential: EnergyMLP) -> None:
        self.kinetic, self.potential = kinetic, potential
        self._q: Tensor | None = None
        self._p: Tensor | None = None

    def __call__(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        if q is not self._q:
            self._q, self._dv = q, self.potential.grad(q)
        if p is not self._p:
            self._p, self._dk = p, self.kinetic.grad(p)
        return self._dv, self._dk


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
    ) -> None:
        super().__init__()
        self.kinetic = EnergyMLP(dim, hidden, layers, quadratic=quadratic_kinetic)
        self.potential = EnergyMLP(dim, hidden, layers)
        self.substeps = substeps
        log_dt = torch.tensor(math.log(dt))
        if learn_dt:
            self.log_dt = nn.Parameter(log_dt)
        else:
            self.register_buffer("log_dt", log_dt)

    @property
    def dt(self) -> Tensor:
        return self.log_dt.exp()

    def grad_fn(self) -> _SeparableGrad:
        """(q, p) -> (∇V(q), ∇K(p)) for :mod:`hgn.physics.integrators` (fresh memo per use)."""
        return _SeparableGrad(self.kinetic, self.potential)

    def forward(self, q: Tensor, p: Tensor, reverse: bool = False) -> tuple[Tensor, Tensor]:
        grad_fn = self.grad_fn()
        h = (-self.dt if reverse else self.dt) / self.substeps
        for _ in range(self.substeps):
            q, p = leapfrog(grad_fn, q, p, h)
        return q, p


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


class DensityModel(nn.Module):
    """What NHF and RealNVP share: fixed data standardisation and a distribution's API.

    The model works on z = (x - loc) / scale; ``loc`` and ``scale`` are buffers set once
    from training data (identity by default). This is a fixed affine bijection with
    constant log-determinant -Σ log scale, added to every log-density.
    """

    kind: str

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    @property
    def event_shape(self) -> torch.Size:
        return torch.Size([self.dim])

    def set_standardisation(self, loc: Tensor, scale: Tensor) -> None:
        self.loc.copy_(loc)
        self.scale.copy_(scale.clamp_min(1e-6))

    def _to_model(self, x: Tensor) -> Tensor:
        return (x - self.loc) / self.scale

    def _log_scale(self) -> Tensor:
        return self.scale.log().sum()

    def rsample(self, sample_shape: Shape = _SCALAR) -> Tensor:
        shape = torch.Size([sample_shape] if isinstance(sample_shape, int) else sample_shape)
        z = self._rsample_model(shape.numel())
        return (self.loc + self.scale * z).reshape(*shape, self.dim)

    @torch.no_grad()
    def sample(self, sample_shape: Shape = _SCALAR) -> Tensor:
        return self.rsample(sample_shape)

    def loss(self, x: Tensor, n_samples: int = 1) -> Tensor:
        """The training objective to minimise, averaged over the batch."""
        raise NotImplementedError

    def _rsample_model(self, n: int) -> Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Everything :func:`build` needs to rebuild this model (saved with each run)."""
        raise NotImplementedError


@dataclass
class NHFConfig:
    """Architecture of an NHF. ``dt`` is the initial (or fixed) time of each flow step."""

    dim: int
    flow_steps: int = 8
    leapfrog_steps: int = 2
    hidden: int = 64
    layers: int = 2
    dt: float = 0.5
    learn_dt: bool = True
    quadratic_kinetic: bool = True
    prior: str = "normal"
    sigma: float = 4.0
    beta: float = 4.0
    posterior_hidden: int = 64

    def __post_init__(self) -> None:
        for name in ("dim", "flow_steps", "leapfrog_steps", "hidden", "layers", "posterior_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise UserError(f"{name.replace('_', '-')} must be a positive integer, got {value}")
        for name in ("dt", "sigma", "beta"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"{name} must be a positive number, got {value}")
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
                config.leapfrog_steps, config.quadratic_kinetic,
            )
            for _ in range(config.flow_steps)
        )  # fmt: skip
        self.posterior = GaussianPosterior(config.dim, config.posterior_hidden)
        self.register_buffer("sigma", torch.tensor(float(config.sigma)))
        self.register_buffer("beta", torch.tensor(float(config.beta)))

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self.cfg)}

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
        z = self._to_model(x)
        posterior = self.posterior(z)
        p = posterior.rsample((n,))
        q0, p0 = self.inverse(z.expand(n, *z.shape), p)
        log_pi = self.prior.log_prob(torch.cat([q0, p0], -1))
        return log_pi - posterior.log_prob(p) - self._log_scale()

    def elbo(self, x: Tensor, n_samples: int = 1) -> Tensor:
        """Per-point ELBO (B,), averaged over ``n_samples`` momentum draws."""
        return self.log_weights(x, n_samples).mean(0)

    def log_prob(self, x: Tensor, n_importance: int = 128) -> Tensor:
        """Per-point importance-weighted bound with K = ``n_importance`` (≤ log p(x)),
        computed in chunks (:func:`log_prob_chunks`) to bound memory."""
        out = [
            torch.logsumexp(self.log_weights(xb, n_importance), 0) - math.log(n_importance)
            for xb in log_prob_chunks(x, n_importance)
        ]
        return torch.cat(out).reshape(x.shape[:-1])

    def loss(self, x: Tensor, n_samples: int = 1) -> Tensor:
        """-ELBO: minimising it maximises the ELBO (the paper's objective)."""
        return -self.elbo(x, n_samples).mean()

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
        if self.dim < 2:
            raise UserError("RealNVP needs data of dimension 2 or more (coupling splits it)")


class RealNVP(DensityModel):
    """The RealNVP baseline (Dinh et al., 2017), taken from zuko with alternating masks."""

    kind = "realnvp"

    def __init__(self, config: RealNVPConfig) -> None:
        super().__init__(config.dim)
        import zuko

        self.cfg = config
        self.flow = zuko.flows.RealNVP(
            features=config.dim,
            transforms=config.transforms,
            hidden_features=(config.hidden,) * config.layers,
        )

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self.cfg)}

    def log_prob(self, x: Tensor, n_importance: int | None = None) -> Tensor:
        """Exact log-density (``n_importance`` is accepted for a common API and ignored)."""
        return self.flow().log_prob(self._to_model(x)) - self._log_scale()

    def loss(self, x: Tensor, n_samples: int = 1) -> Tensor:
        return -self.log_prob(x).mean()

    def _rsample_model(self, n: int) -> Tensor:
        return self.flow().rsample((n,))


MODELS: dict[str, tuple[type[DensityModel], type]] = {
    "nhf": (NHF, NHFConfig),
    "realnvp": (RealNVP, RealNVPConfig),
}


def build(config: dict[str, Any]) -> DensityModel:
    """Build an untrained model from a :meth:`DensityModel.config` dictionary."""
    config = dict(config)
    kind = config.pop("kind", "nhf")
    if kind not in MODELS:
        raise UserError(f"unknown model kind {kind!r}; choose one of {', '.join(MODELS)}")
    model_cls, config_cls = MODELS[kind]
    known = {f.name for f in fields(config_cls)}
    return model_cls(config_cls(**{k: v for k, v in config.items() if k in known}))


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save(model: DensityModel, path: str | Path) -> None:
    """Save a model on its own, in the same format as a run's checkpoint."""
    save_checkpoint(
        path, {"config": {"model": model.config()}, "state": {"model": model.state_dict()}}
    )


def load(run: str | Path) -> DensityModel:
    """Load the model of a run directory (or a checkpoint file) in eval mode."""
    run = Path(run)
    saved = load_checkpoint(run / "checkpoint.pt" if run.is_dir() else run)
    try:
        model = build(saved["config"]["model"])
        model.load_state_dict(saved["state"]["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise UserError(f"{run} does not hold a flow model ({type(exc).__name__}: {exc})") from None
    return model.eval()
