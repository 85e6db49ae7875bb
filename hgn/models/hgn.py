"""The Hamiltonian Generative Network (paper Sec. 3.2), its networks and ablations.

Reading order: :class:`HGNConfig` (every knob, with the paper's defaults), the four
networks (:class:`Encoder`, :class:`InitialState` = f_ψ, :class:`HamiltonianNet`,
:class:`Decoder`), then :class:`HGN`, which ties them together with the shared
integrators (the registry of models is :mod:`hgn.models`).

Shapes: a batch of sequences is ``(B, T+1, 3, H, W)`` floats in [0, 1]; the latent state
is ``q, p`` of ``(B, C, L, L)`` each (paper: C = 16, L = 4); a rollout stacks time on
axis 1, ``(B, steps+1, C, L, L)``.

Every trainable sequence model (HGN and its ablations here, HNN in ``hgn.models.hnn``)
subclasses :class:`SequenceModel` and offers ``loss``, ``predict`` and ``sample``, so the
trainer, the evaluator and the CLI never need to know which model they hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hgn.checks import check_range
from hgn.models.base import SequenceModel, State, check_dt, substeps_for
from hgn.physics import integrators
from hgn.utils import UserError


@dataclass
class HGNConfig:
    """Everything that defines an HGN. Defaults are the paper's (Sec. 3.2 and appendix)."""

    image_size: int = 64
    frames: int = 31
    """Frames per training sequence (T+1); a rollout of ``frames - 1`` steps is trained."""
    context_frames: int | None = None
    """How many leading frames the encoder reads: ``None`` = all (the paper's protocol);
    k = infer the state from a k-frame prefix and predict the rest. (Older configs call
    it ``input_frames``; :data:`hgn.models.base.LEGACY_KEYS` maps the old name.)"""
    latent_channels: int = 16
    latent_size: int = 4
    encoder_filters: list[int] = field(default_factory=lambda: [32, 64, 64, 64, 64, 64, 64, 48])
    fpsi_filters: list[int] = field(default_factory=lambda: [64, 64, 64])
    hamiltonian_filters: list[int] = field(default_factory=lambda: [32, 64, 64, 64])
    hamiltonian_kernels: list[int] = field(default_factory=lambda: [3, 2, 2, 2, 2])
    hamiltonian_strides: list[int] = field(default_factory=lambda: [1, 2, 1, 2, 1])
    decoder_filters: list[int] = field(default_factory=lambda: [64])
    """Widths of the decoder's stem and upsampling blocks, coarse to fine; the last
    entry repeats for any further blocks (the paper uses 64 throughout)."""
    integrator: str = "leapfrog"
    dt: float = 0.125
    deterministic: bool = False
    """Ablation 'HGN determ': z = μ, no KL term, no prior to sample from."""
    use_fpsi: bool = True
    """Ablation 'HGN no f_ψ': the sampled z is the initial state itself."""
    separable: bool = False
    """H = K(p) + V(q) with two networks: leapfrog is then exactly reversible."""
    quadratic: bool = False
    """Add ½a|q|² + ½b|p|² (learned a, b > 0, starting at 1) to the network's H, so
    rollouts start as oscillations rather than the near-uniform drift of a freshly
    initialised (nearly linear) network; the network learns the rest."""
    objective: str = "elbo"
    """'elbo': Σ squared error + kl_weight·KL; 'geco': KL + λ·(MSE − geco_target)."""
    kl_weight: float = 1.0
    warmup: int = 0
    """Training steps over which the trained rollout grows from 1 step to all
    ``frames - 1`` and the KL weight from 0 to ``kl_weight``, both ∝ (step/warmup)².
    Early on, a random Hamiltonian scrambles long rollouts and the images cannot depend
    on q yet; short rollouts without a KL penalty let the encoder and decoder learn
    positions first (and cost less), instead of settling on the mean image."""
    geco_target: float = 5e-4
    """GECO's bound on the per-pixel reconstruction MSE."""
    geco_alpha: float = 0.99
    """Moving-average factor of the GECO constraint."""
    geco_speed: float = 1e-3
    """GECO's λ ← λ·exp(speed · C_ma / target) step size."""

    def __post_init__(self) -> None:
        for key in ("image_size", "frames", "latent_channels", "latent_size"):
            check_range(getattr(self, key), f"model.{key}", gt=0)
        ratio = self.image_size / self.latent_size
        if not 16 <= self.image_size <= 128 or ratio != 2 ** round(math.log2(ratio)):
            raise UserError(
                f"model.image_size must be latent_size·2^k between 16 and 128, "
                f"got {self.image_size} (latent_size {self.latent_size})"
            )
        if self.context_frames is not None and not 1 <= self.context_frames <= self.frames:
            raise UserError(
                f"model.context_frames must be between 1 and frames={self.frames}, "
                f"got {self.context_frames}"
            )
        if self.frames < 2:
            raise UserError(f"model.frames must be at least 2, got {self.frames}")
        if self.integrator not in integrators.INTEGRATORS:
            raise UserError(
                f"model.integrator must be one of {', '.join(integrators.INTEGRATORS)}, "
                f"got {self.integrator!r}"
            )
        if self.objective not in ("elbo", "geco"):
            raise UserError(f"model.objective must be 'elbo' or 'geco', got {self.objective!r}")
        if len(self.hamiltonian_kernels) != len(self.hamiltonian_filters) + 1 or len(
            self.hamiltonian_strides
        ) != len(self.hamiltonian_kernels):
            raise UserError(
                "model.hamiltonian_kernels and model.hamiltonian_strides need one entry more "
                "than model.hamiltonian_filters (the last layer outputs the energy)"
            )
        for key in ("encoder_filters", "fpsi_filters", "hamiltonian_filters", "decoder_filters"):
            if not getattr(self, key) or min(getattr(self, key)) <= 0:
                raise UserError(f"model.{key} must be a non-empty list of positive integers")
        if self.upsamplings > len(self.encoder_filters) - 1:
            raise UserError(
                f"model.encoder_filters needs at least {self.upsamplings + 1} layers to reach "
                f"{self.latent_size}×{self.latent_size} from {self.image_size}×{self.image_size}"
            )
        if self.dt == 0 or not math.isfinite(self.dt):
            raise UserError(f"model.dt must be a finite non-zero number, got {self.dt}")
        check_range(self.warmup, "model.warmup", ge=0)
        check_range(self.kl_weight, "model.kl_weight", ge=0)
        check_range(self.geco_target, "model.geco_target", gt=0)
        check_range(self.geco_alpha, "model.geco_alpha", ge=0, lt=1)
        check_range(self.geco_speed, "model.geco_speed", gt=0)

    @property
    def upsamplings(self) -> int:
        """Factor-2 resolution steps between the latent map and the image."""
        return round(math.log2(self.image_size // self.latent_size))


# ----------------------------------------------------------------------------- networks


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


INIT_LOGVAR = -4.0
"""Initial log-variance of the posterior. At the default 0 the sampling noise (std 1)
drowns the encoder's still small means, the decoder learns to ignore z, and training
sits on the mean image for hundreds of steps; the KL term widens the posterior later."""

MAX_LOGVAR = 2.0
"""Soft upper bound of the posterior log-variance. A posterior wider than the N(0, I)
prior is never useful, and an unbounded head can jump to log-variances of 70+ after one
large Adam step, so exp() overflows and the run dies with NaN (seen on two-body)."""


class Encoder(nn.Module):
    """Stacked frames ``(B, 3k, S, S)`` → mean and log-variance of z ``(B, 2C, L, L)``.

    Stride-2 3×3 convolutions halve the resolution right after the first layer until it
    reaches the latent size, so most layers run on small maps (cheap on a CPU).
    """

    def __init__(self, cfg: HGNConfig) -> None:
        super().__init__()
        downsamples = cfg.upsamplings
        layers: list[nn.Module] = []
        width = 3 * (cfg.context_frames or cfg.frames)
        for i, filters in enumerate(cfg.encoder_filters):
            stride = 2 if 1 <= i <= downsamples else 1
            layers += [nn.Conv2d(width, filters, 3, stride, padding=1), _act()]
            width = filters
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, 2 * 2 * cfg.latent_channels, 3, padding=1)
        with torch.no_grad():  # start nearly deterministic: std e^-2 ≈ 0.14, see INIT_LOGVAR
            self.head.bias[2 * cfg.latent_channels :] = INIT_LOGVAR

    def forward(self, stacked: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw = self.head(self.body(stacked)).chunk(2, dim=1)
        return mean, MAX_LOGVAR - F.softplus(MAX_LOGVAR - raw)  # ≈ raw well below the bound


class InitialState(nn.Module):
    """f_ψ: z → s₀ = (q₀, p₀), a few 3×3 convolutions at the latent resolution."""

    def __init__(self, cfg: HGNConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 2 * cfg.latent_channels
        for filters in cfg.fpsi_filters:
            layers += [nn.Conv2d(width, filters, 3, padding=1), _act()]
            width = filters
        layers.append(nn.Conv2d(width, 2 * cfg.latent_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class EnergyNet(nn.Module):
    """A conv net from a latent map to one energy per sample, summed over positions.

    Softplus, not ReLU: training differentiates through ∂H, and a piecewise-linear H
    would have zero second derivatives. Stride-1 layers use 'same' padding and stride-2
    layers halve the map (DeepMind's published config reduces 4×4 to 1×1).
    """

    def __init__(self, cfg: HGNConfig, in_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        widths = [*cfg.hamiltonian_filters, 1]
        specs = zip(widths, cfg.hamiltonian_kernels, cfg.hamiltonian_strides, strict=True)
        for i, (filters, kernel, stride) in enumerate(specs):
            last = i == len(widths) - 1
            if stride == 1:  # 'same' padding, asymmetric for even kernels
                layers.append(nn.ZeroPad2d(((kernel - 1) // 2, kernel // 2) * 2))
                padding = 0
            else:
                padding = (kernel - 1) // 2
            # a constant in H changes no dynamics, so the energy layer has no bias
            layers.append(nn.Conv2d(width, filters, kernel, stride, padding, bias=not last))
            if not last:
                layers.append(nn.Softplus())
            width = filters
        self.net = nn.Sequential(*layers)
        # the map's side after each layer, by the convolution's arithmetic (a probe forward
        # pass cost ~0.2 s a model on the meta device, where the trainer sizes models first)
        side = cfg.latent_size
        for kernel, stride in zip(cfg.hamiltonian_kernels, cfg.hamiltonian_strides, strict=True):
            padding = kernel - 1 if stride == 1 else 2 * ((kernel - 1) // 2)
            side = (side + padding - kernel) // stride + 1
            if side < 1:
                raise UserError(
                    f"model.hamiltonian_kernels/strides shrink a {cfg.latent_size}×"
                    f"{cfg.latent_size} latent map below one pixel; use fewer stride-2 layers"
                )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1).sum(1)


QUADRATIC_RATE = 10.0


class HamiltonianNet(nn.Module):
    """H_γ(q, p) → (B,). General H(q, p) by default; K(p) + V(q) when ``separable``."""

    def __init__(self, cfg: HGNConfig) -> None:
        super().__init__()
        c = cfg.latent_channels
        self.separable = cfg.separable
        if self.separable:
            self.kinetic = EnergyNet(cfg, c)
            self.potential = EnergyNet(cfg, c)
        else:
            self.joint = EnergyNet(cfg, 2 * c)
        # log-stiffness of q and log-inverse-mass of p of the optional quadratic part,
        # in units of 1/QUADRATIC_RATE: Adam moves a parameter by about the learning
        # rate per step, and these must travel O(1) to set the oscillation frequency
        self.log_ab = nn.Parameter(torch.zeros(2)) if cfg.quadratic else None

    def _quadratic(self, x: Tensor, which: int) -> Tensor:
        """½a|q|² (``which`` 0) or ½b|p|² (1) per sample, of the ``quadratic`` option."""
        assert self.log_ab is not None
        return 0.5 * (QUADRATIC_RATE * self.log_ab[which]).exp() * x.square().flatten(1).sum(1)

    def kinetic_energy(self, p: Tensor) -> Tensor:
        """K(p) of a separable H, the quadratic part included."""
        energy = self.kinetic(p)
        return energy if self.log_ab is None else energy + self._quadratic(p, 1)

    def potential_energy(self, q: Tensor) -> Tensor:
        """V(q) of a separable H, the quadratic part included."""
        energy = self.potential(q)
        return energy if self.log_ab is None else energy + self._quadratic(q, 0)

    def forward(self, q: Tensor, p: Tensor) -> Tensor:
        if self.separable:
            energy = self.kinetic(p) + self.potential(q)
        else:
            energy = self.joint(torch.cat([q, p], dim=1))
        if self.log_ab is not None:
            a, b = (QUADRATIC_RATE * self.log_ab).exp()
            energy = energy + 0.5 * (a * q.square() + b * p.square()).flatten(1).sum(1)
        return energy


class UpBlock(nn.Module):
    """Progressive-GAN style: nearest ×2 upsampling, two 3×3 convs, residual skip."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = _act()

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.skip(x) + self.act(self.conv2(self.act(self.conv1(x))))


class Decoder(nn.Module):
    """q ``(N, C, L, L)`` → image ``(N, 3, S, S)``: an image does not show momentum."""

    def __init__(self, cfg: HGNConfig) -> None:
        super().__init__()
        blocks = cfg.upsamplings
        widths = cfg.decoder_filters + cfg.decoder_filters[-1:] * blocks
        self.stem = nn.Sequential(nn.Conv2d(cfg.latent_channels, widths[0], 3, padding=1), _act())
        self.blocks = nn.Sequential(*(UpBlock(widths[i], widths[i + 1]) for i in range(blocks)))
        self.to_rgb = nn.Conv2d(widths[blocks], 3, 3, padding=1)

    def forward(self, q: Tensor) -> Tensor:
        # channels-last: oneDNN's convolutions of a few channels on large maps are
        # several times slower in NCHW (docs/RESULTS.md, "Training speed"); the images
        # leave in the usual layout for the losses and callers
        x = self.stem(q.contiguous(memory_format=torch.channels_last))
        return torch.sigmoid(self.to_rgb(self.blocks(x))).contiguous()

    @torch.no_grad()
    def init_output(self, mean_frame: Tensor) -> None:
        """Start from the data's mean colour: Adam moves a bias by about the learning
        rate per step, so reaching a light background from sigmoid(0) = 0.5 would take
        thousands of steps on a plateau where the output ignores q."""
        colour = mean_frame.flatten(1).mean(1).clamp(0.01, 0.99)
        self.to_rgb.bias.copy_(torch.logit(colour))


class Geco(nn.Module):
    """GECO (Rezende & Viola, 2018): minimise KL subject to MSE ≤ target.

    The Lagrange multiplier λ is updated multiplicatively from a moving average of the
    constraint, λ ← λ·exp(speed · C_ma / target), so it grows while the reconstruction
    is worse than the target and shrinks once it is better. Both live in buffers: they
    are checkpointed with the model and DDP keeps them equal across ranks.
    """

    def __init__(self, cfg: HGNConfig) -> None:
        super().__init__()
        self.target, self.alpha, self.speed = cfg.geco_target, cfg.geco_alpha, cfg.geco_speed
        self.register_buffer("lam", torch.ones(()))
        self.register_buffer("c_ma", torch.zeros(()))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    def forward(self, mse: Tensor) -> Tensor:
        """Return λ·Ĉ, with Ĉ the constraint carrying the moving average's value and
        the batch's gradient; update λ and the average in training mode."""
        constraint = mse - self.target
        if self.training:
            with torch.no_grad():
                c = constraint.detach()
                ma = torch.where(self.started, self.alpha * self.c_ma + (1 - self.alpha) * c, c)
                self.c_ma.copy_(ma)
                self.started.fill_(True)
                lam = self.lam * torch.exp(self.speed * ma / self.target)
                self.lam.copy_(lam.clamp(1e-6, 1e6))
        smoothed = constraint + (self.c_ma - constraint).detach()
        return self.lam * smoothed


# ----------------------------------------------------------------------------- models


class HGN(SequenceModel):
    """Encoder → z → f_ψ → s₀ → integrate H_γ → decode q_t, trained as a temporal VAE."""

    Config = HGNConfig
    can_run_backwards = True
    can_change_speed = True
    prior = "hamiltonian"

    def __init__(self, config: HGNConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.fpsi = InitialState(config) if config.use_fpsi else None
        self.h_net = HamiltonianNet(config)
        self.decoder = Decoder(config)
        self.geco = Geco(config) if config.objective == "geco" else None
        self.step_fn = integrators.get(config.integrator)
        # training steps taken, for the warm-up; a buffer, so checkpoints resume it
        self.register_buffer("trained_steps", torch.zeros((), dtype=torch.long))

    state_offset = 0
    """The encoded state describes the first frame of the window (paper Sec. 3.2)."""

    @property
    def context_frames(self) -> int:  # type: ignore[override]
        """Frames the encoder reads: ``config.context_frames``, or all ``frames``."""
        return self.config.context_frames or self.config.frames

    # --- the pieces of the public API (``hgn.load(RUN)`` returns this object)

    def posterior(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q_φ(z | first ``context_frames`` frames)."""
        k = self.context_frames
        if frames.shape[1] < k:
            raise UserError(f"the encoder needs {k} frames, got a sequence of {frames.shape[1]}")
        stacked = frames[:, :k].flatten(1, 2)  # (B, 3k, H, W): frames on the channel axis
        return self.encoder(stacked)

    def initial_state(self, z: Tensor) -> State:
        s0 = self.fpsi(z) if self.fpsi is not None else z
        q, p = s0.chunk(2, dim=1)
        return State(q, p)

    def encode(self, frames: Tensor, sample: bool = False) -> State:
        """The state at the first frame: posterior mean, or a posterior sample."""
        mean, logvar = self.posterior(frames)
        z = mean
        if sample and not self.config.deterministic:
            z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        return self.initial_state(z)

    def hamiltonian(self, state: State) -> Tensor:
        """H_γ of states with any leading axes ``(..., C, L, L)`` → ``(...)``."""
        lead = state.q.shape[:-3]
        energy = self.h_net(
            state.q.reshape(-1, *state.q.shape[-3:]), state.p.reshape(-1, *state.p.shape[-3:])
        )
        return energy.reshape(lead)

    def rollout(self, state: State, steps: int, dt: float | None = None) -> State:
        """One state per ``dt`` for ``steps`` steps (dt defaults to the trained one; < 0
        runs backwards), never integrating with a step longer than the trained dt
        (:func:`hgn.models.base.substeps_for`: 2× speed takes two trained steps each).

        Runs in float32 even under bf16 autocast: the integrator accumulates small
        increments, which bf16's 8-bit mantissa would swamp. Gradients of H come from
        ``torch.func`` (``integrators.grad_of``), so this compiles and trains end to end.
        """
        dt = self.config.dt if dt is None else check_dt(dt)
        substeps = substeps_for(dt, self.config.dt)
        with torch.autocast(state.q.device.type, enabled=False):
            dtype = torch.promote_types(state.q.dtype, torch.float32)  # at least float32
            q, p = state.q.to(dtype), state.p.to(dtype)
            if self.config.separable and self.config.integrator == "leapfrog":
                # the same map with one ∇K and one ∇V a step instead of three joint ∇H
                # (first same as last: the closing kick's ∇V is the next opening one)
                h = self.h_net
                qs, ps = integrators.leapfrog_separable(
                    integrators.grad_of_energy(h.kinetic_energy),
                    integrators.grad_of_energy(h.potential_energy),
                    q, p, dt, steps, substeps=substeps,
                )  # fmt: skip
            else:
                grad_fn = integrators.grad_of(self.h_net)
                qs, ps = integrators.rollout(grad_fn, q, p, dt, steps, self.step_fn, substeps)
        return State(qs.transpose(0, 1), ps.transpose(0, 1))

    def decode(self, state: State) -> Tensor:
        """Images of states with any leading axes, decoded from q in one batched call."""
        q = state.q
        images = self.decoder(q.reshape(-1, *q.shape[-3:]))
        return images.reshape(*q.shape[:-3], *images.shape[1:])

    # --- the SequenceModel interface

    def init_from_data(self, mean_frame: Tensor) -> None:
        self.decoder.init_output(mean_frame)

    def loss(self, frames: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Negative ELBO (or its GECO form) per pixel, averaged over the batch.

        Likelihood: Gaussian with fixed variance, so -log p(x|q) is the summed squared
        error up to a constant (σ² = ½ at kl_weight 1; a smaller weight means a sharper
        likelihood). We prefer it to Bernoulli/BCE because frames are soft discs on a
        grey background, not binary, and the reported metric is pixel MSE.
        """
        warm = 1.0
        if self.training:
            self.trained_steps += 1
            if self.config.warmup:  # quadratic: most of the warm-up at short rollouts
                warm = min(1.0, float(self.trained_steps) / self.config.warmup) ** 2
        steps = max(1, round(warm * (frames.shape[1] - 1)))
        target = frames[:, : steps + 1]
        mean, logvar = self.posterior(frames)
        if self.config.deterministic:
            z, kl = mean, torch.zeros((), device=frames.device)
        else:
            z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1).mean()
        states = self.rollout(self.initial_state(z), steps)
        recon = self.decode(states)
        mse = F.mse_loss(recon.float(), target.float())
        pixels = target[0].numel()
        if self.geco is not None:
            loss = self.geco(mse) + warm * kl / pixels
        else:
            loss = mse + warm * self.config.kl_weight * kl / pixels
        metrics = {"loss": loss, "mse": mse, "kl": kl, "horizon": torch.tensor(float(steps))}
        if self.geco is not None:
            metrics["geco_lambda"] = self.geco.lam.clone()  # updated in place next step
        return loss, {key: value.detach() for key, value in metrics.items()}

    def exactly_reversible(self) -> bool | None:
        """Implicit midpoint is reversible for any H, leapfrog and its Yoshida
        composition only for a separable H (docs/SCIENCE.md §5a), Euler and RK4 never."""
        name = self.config.integrator
        if name in integrators.REVERSIBLE_ANY_H:
            return True
        return name in ("leapfrog", "yoshida4") and self.config.separable

    def sample(self, n: int, steps: int, dt: float | None = None) -> Tensor:
        """New trajectories: z ~ N(0, I) → f_ψ → roll out → decode (paper Fig. 8)."""
        if self.config.deterministic:
            raise UserError("a deterministic HGN has no prior to sample from")
        c, size = 2 * self.config.latent_channels, self.config.latent_size
        device = next(self.parameters()).device
        z = torch.randn(n, c, size, size, device=device)
        return self.decode(self.rollout(self.initial_state(z), steps, dt))
