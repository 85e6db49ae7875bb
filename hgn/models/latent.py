"""What the latent-dynamics models share (docs/SCIENCE.md §3a): HGN++ and the
benchmark's non-Hamiltonian baselines are one model with the dynamics swapped.

DeepMind's physics_inspired_models compare HGN, LGN, a latent neural ODE, a discrete
residual network (RGN) and autoregressive recurrent models (RNN, LSTM, GRU) as one model
class whose encoder, decoder, 5 inference frames, 60 target steps and training are the
same: only how the latent state moves differs. This module is that shared part:

* :class:`LatentConfig`: image size, training window (``frames``), ``context_frames``,
  ``state_dim``, the encoder, f_ψ and decoder widths, the time step, the forward–backward
  training, the KL weight, the decoded subset, the warm-up and curriculum, the colour
  settings and the latent consistency term. Each model's config subclasses it and adds
  only its dynamics' keys (:class:`hgn.models.hgnpp.HGNPPConfig`: the energies);
* the networks: :class:`FrameEncoder` (k frames stacked → z), :class:`InitialState`
  (f_ψ: z → the state) and :class:`ImageDecoder` (a state's decoded part → image);
* :class:`LatentDynamicsModel`: encode, decode, the training loss (targets, the random
  ``decode_frames`` subset, warm-up and curriculum, KL, colour and consistency terms,
  forward–backward halves), the aggregate-posterior sampler and the training progress
  buffers. A model adds its dynamics networks (:meth:`~LatentDynamicsModel.build_dynamics`),
  :meth:`~SequenceModel.rollout` and the training rollout
  (:meth:`~LatentDynamicsModel.train_rollout`).

The latent state has 2n numbers (n = ``state_dim``) in every model, so they are compared
at equal latent size. What the decoder reads is the model's choice
(:attr:`~LatentDynamicsModel.decoder_width`): HGN++ decodes the positions q alone (its
prior: the picture is a function of the configuration, so p must carry the motion), and
so does the Lagrangian LGN; the other baselines (ODE, RGN, LSTM, GRU) decode the whole
state, q and p concatenated, because nothing in their dynamics makes one half a
configuration and the other its momentum.

Why one file of more than 600 lines: the config, the three networks and the model that
joins them are one contract that every latent model subclasses; apart, each model would
import three modules to read what it inherits.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hgn.models.base import SequenceModel, State
from hgn.models.hgn import INIT_LOGVAR, MAX_LOGVAR, Decoder, HGNConfig
from hgn.utils import UserError


@dataclass
class LatentConfig:
    """What every latent-dynamics model (HGN++ and its baselines) shares. Defaults follow
    DeepMind's published configuration where it is known (flat 16 + 16 state, 5 context
    frames, 60 target steps); the ``small`` profile (``hgn.training.config``) shrinks the
    networks for a CPU, the same way for every model."""

    image_size: int = 32
    frames: int = 65
    """Frames per training window: ``context_frames`` read, then ``frames −
    context_frames`` target steps. Follows the data (clamped to its sequence length)
    unless set explicitly."""
    context_frames: int = 5
    """Frames stacked on the channel axis for the encoder; the state it infers is that
    of the last of them (``state_offset = context_frames − 1``)."""
    state_dim: int = 16
    """n: the state has 2n numbers in every model (HGN++, the ODE and RGN: q and p, n
    each; LGN: q and q̇; the recurrent models: their latent, see
    :mod:`hgn.models.baselines`)."""
    encoder_filters: list[int] = field(default_factory=lambda: [32, 64, 64, 64])
    """3×3 convolutions, the first at full resolution, then stride 2 down to
    ``latent_size``; flattened and mapped linearly to the posterior of z."""
    fpsi_hidden: int = 256
    """Width of f_ψ, the two-layer MLP from z (2n numbers) to the state (q, p)."""
    latent_channels: int = 32
    """Channels of the map the decoder starts from (what the model decodes, q or the
    whole state, is mapped linearly to it)."""
    latent_size: int = 4
    decoder_filters: list[int] = field(default_factory=lambda: [64])
    """HGN's decoder widths: stem and up-sampling blocks, coarse to fine (the last repeats)."""
    dt: float = 0.125
    """The time between frames (follows the data)."""
    substeps: int = 1
    """Integration steps per frame in training (continuous models: HGN++'s leapfrog, the
    ODE's RK4; a discrete model has one step per frame by definition and requires 1): the
    trained integration step is ``dt / substeps``, and rollouts at any speed never
    integrate a longer one."""
    kl_weight: float = 0.1
    """β: weight of the KL term (both terms are per pixel and time step)."""
    forward_backward: bool = True
    """Train half of each batch backwards in time (:meth:`LatentDynamicsModel.loss`;
    only for models that can run backwards)."""
    encoder_colour_gain: float | None = 0.0
    """The encoder sees each pixel's deviation from its grey level amplified by
    ``1 + encoder_colour_gain`` (0: the frames as they are; an invertible per-pixel map,
    so no information is lost). Its convolutions then tell bodies apart by colour from
    the first step, before position alone has shaped them (see ``colour_weight``).
    None: follow the data (:data:`hgn.models.hgnpp.SEVERAL_BODIES`)."""
    colour_weight: float | None = 0.0
    """Extra weight on the colour part of the reconstruction error: the squared error
    of each pixel's deviation from its own grey level (channel mean), added to the
    plain MSE with this weight (0: off; on grey data it only pulls the drawn colours
    to grey). Bodies that differ only in colour (two-body's equal masses) are a
    symmetry of the dynamics: a model can predict every position right with a state
    that does not say which body is which, and then draws both in their average
    colour (measured: issue 10). That colour error is small next to position errors
    early in training, so the state never learns the difference; weighting it makes
    the identity worth learning. None: follow the data (:data:`hgn.models.hgnpp.SEVERAL_BODIES`)."""
    consistency_weight: float = 0.0
    """Weight of a latent consistency term: at one random target frame per sequence, the
    rolled-out state's squared distance to the state the encoder infers from the k frames
    ending there (held fixed), over the spread of those states in the batch. The images
    alone do not pin the state: q and p have more numbers than the system has degrees of
    freedom, and a rollout may drift along directions the decoder ignores within the
    trained window and only pays for past it (measured: issue 10). The term keeps the
    rollout on the states real frames map to, so the dynamics past the window act on
    states the decoder knows (0: off)."""
    decode_frames: int | None = None
    """Rolled-out states decoded per sequence per training step (None: all): the state's
    own frame and a random subset of the others."""
    warmup: int = 0
    """Training steps over which the KL weight grows from 0 to ``kl_weight`` and a floor
    under the rollout horizon grows (∝ (step/warmup)²) from ``min_horizon`` to all
    target steps; the horizon may grow faster, see ``grow_below``."""
    min_horizon: int = 1
    """Shortest trained rollout; 0 starts by autoencoding the state's own frame."""
    grow_below: float = 0.0
    """Curriculum: lengthen the trained horizon by one step whenever the moving average
    of the reconstruction error, as a fraction of the mean frame's error on the same
    targets, is below this (0: off, the horizon follows the warm-up floor only). Early
    on H is random and the images cannot depend on q yet; a long rollout then only
    teaches the decoder to draw the mean image (measured: the issue-10 runs). Growing
    the horizon once the current one is predicted adapts to however fast the machine
    is, where a fixed schedule in steps cannot."""

    def __post_init__(self) -> None:
        for key in (
            "image_size", "context_frames", "state_dim", "fpsi_hidden", "latent_channels",
            "latent_size", "substeps",
        ):  # fmt: skip
            if getattr(self, key) <= 0:
                raise UserError(f"model.{key} must be positive, got {getattr(self, key)}")
        if self.min_horizon < 0:
            raise UserError(f"model.min_horizon must be ≥ 0, got {self.min_horizon}")
        if not 0 <= self.grow_below < 1:
            raise UserError(f"model.grow_below must be in [0, 1), got {self.grow_below}")
        if self.frames < self.context_frames + 1:
            raise UserError(
                f"model.frames ({self.frames}) must exceed model.context_frames "
                f"({self.context_frames}): a window needs at least one target step"
            )
        ratio = self.image_size / self.latent_size
        if not 8 <= self.image_size <= 128 or ratio != 2 ** round(math.log2(ratio)):
            raise UserError(
                f"model.image_size must be latent_size·2^k between 8 and 128, "
                f"got {self.image_size} (latent_size {self.latent_size})"
            )
        if self.upsamplings > len(self.encoder_filters) - 1:
            raise UserError(
                f"model.encoder_filters needs at least {self.upsamplings + 1} layers to reach "
                f"{self.latent_size}×{self.latent_size} from {self.image_size}×{self.image_size}"
            )
        for key in ("encoder_filters", "decoder_filters"):
            if not getattr(self, key) or min(getattr(self, key)) <= 0:
                raise UserError(f"model.{key} must be a non-empty list of positive integers")
        if self.dt == 0 or not math.isfinite(self.dt):
            raise UserError(f"model.dt must be a finite non-zero number, got {self.dt}")
        colour = (self.colour_weight or 0.0, self.encoder_colour_gain or 0.0)
        weights = (self.kl_weight, self.warmup, self.consistency_weight, *colour)
        if not all(value >= 0 for value in weights):  # NaN too
            raise UserError(
                "model.kl_weight, model.warmup, model.consistency_weight, "
                "model.colour_weight and model.encoder_colour_gain must be ≥ 0"
            )
        if self.decode_frames is not None and self.decode_frames <= 0:
            raise UserError(f"model.decode_frames must be positive, got {self.decode_frames}")

    @property
    def upsamplings(self) -> int:
        """Factor-2 resolution steps between the decoder's first map and the image."""
        return round(math.log2(self.image_size // self.latent_size))

    @property
    def target_steps(self) -> int:
        """Rollout steps trained per window."""
        return self.frames - self.context_frames

    def decoder_config(self) -> HGNConfig:
        """The HGN config whose :class:`Decoder` draws this model's frames."""
        return HGNConfig(
            image_size=self.image_size,
            latent_channels=self.latent_channels,
            latent_size=self.latent_size,
            encoder_filters=[1] * (self.upsamplings + 1),  # unused: only the decoder is built
            decoder_filters=self.decoder_filters,
        )


# ----------------------------------------------------------------------------- networks


class FrameEncoder(nn.Module):
    """``k`` frames stacked on channels ``(B, 3k, S, S)`` → mean, log-variance of z (B, 2n).

    The network sees the last frame (whose state it infers) and the differences of the
    earlier frames from it, ``[x_{k−1}, x_0 − x_{k−1}, …, x_{k−2} − x_{k−1}]``: the same
    information as the raw stack (an invertible linear map of it), but the position the
    state needs is in three channels of its own and the motion stands out from a zero
    background. With the raw stack, an encoder starts by mixing k copies of the scene
    and learns to pick out one slowly: on the pendulum it did not learn to
    autoencode the state's frame in 800 steps; with the differences, in under 100
    (docs/RESULTS.md, "Learned dynamics (issue 10)").

    Then a full-resolution 3×3 convolution, stride-2 ones down to ``latent_size``, and a
    linear map of the flattened features: a flat state has no spatial layout to keep.
    """

    def __init__(self, cfg: LatentConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 3 * cfg.context_frames
        for i, filters in enumerate(cfg.encoder_filters):
            stride = 2 if 1 <= i <= cfg.upsamplings else 1
            layers += [nn.Conv2d(width, filters, 3, stride, padding=1), nn.LeakyReLU(0.2)]
            width = filters
        self.body = nn.Sequential(*layers)
        z_dim = 2 * cfg.state_dim
        self.head = nn.Linear(width * cfg.latent_size**2, 2 * z_dim)
        self.colour_gain = cfg.encoder_colour_gain or 0.0
        with torch.no_grad():  # nearly deterministic at first, as HGN's (INIT_LOGVAR)
            self.head.bias[z_dim:] = INIT_LOGVAR

    def forward(self, stacked: Tensor) -> tuple[Tensor, Tensor]:
        if self.colour_gain:
            frames = stacked.unflatten(1, (-1, 3))
            chroma = frames - frames.mean(2, keepdim=True)
            stacked = (frames + self.colour_gain * chroma).flatten(1, 2)
        last = stacked[:, -3:]
        earlier = stacked[:, :-3] - last.repeat(1, stacked.shape[1] // 3 - 1, 1, 1)
        stacked = torch.cat([last, earlier], dim=1).contiguous(memory_format=torch.channels_last)
        features = self.body(stacked)
        mean, raw = self.head(features.flatten(1)).chunk(2, dim=1)
        return mean, MAX_LOGVAR - F.softplus(MAX_LOGVAR - raw)


class InitialState(nn.Module):
    """f_ψ: z (2n) → (q, p), a two-layer SiLU MLP."""

    def __init__(self, cfg: LatentConfig) -> None:
        super().__init__()
        n, hidden = cfg.state_dim, cfg.fpsi_hidden
        self.net = nn.Sequential(
            nn.Linear(2 * n, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, 2 * n),
        )  # fmt: skip

    def forward(self, z: Tensor) -> State:
        q, p = self.net(z).chunk(2, dim=-1)
        return State(q, p)


class ImageDecoder(nn.Module):
    """What a model decodes ``(N, inputs)`` (HGN++: q, ``inputs = n``, the default; the
    baselines: the whole state, ``2n``) → image ``(N, 3, S, S)``: a linear map to a small
    feature map, then HGN's up-sampling decoder (reused, not copied)."""

    def __init__(self, cfg: LatentConfig, inputs: int | None = None) -> None:
        super().__init__()
        self.shape = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
        width = cfg.state_dim if inputs is None else inputs
        self.linear = nn.Linear(width, math.prod(self.shape))
        self.hgn = Decoder(cfg.decoder_config())

    def forward(self, q: Tensor) -> Tensor:
        return self.hgn(F.leaky_relu(self.linear(q), 0.2).view(-1, *self.shape))

    def init_output(self, mean_frame: Tensor) -> None:
        self.hgn.init_output(mean_frame)


# ----------------------------------------------------------------------------- model


class LatentDynamicsModel(SequenceModel):
    """k frames → z → f_ψ → the state at the last frame read → the model's dynamics →
    decode; trained as a temporal VAE on long windows (forwards and, where the model can
    run backwards and ``forward_backward`` is on, backwards in time).

    A subclass builds its dynamics networks in :meth:`build_dynamics` (called between
    f_ψ and the decoder, so that parameters, and optimiser states saved by index, keep
    HGN++'s order: ``encoder``, ``fpsi``, the dynamics, ``decoder``), and implements
    :meth:`rollout` and :meth:`train_rollout`; it may change what the decoder reads
    (:attr:`decoder_width`, :meth:`decoder_input`) and what the consistency term
    compares (:meth:`comparable`)."""

    Config: ClassVar[type] = LatentConfig
    config: LatentConfig
    reports_sequence_errors = True
    sampler_buffers = ("posterior_means", "posterior_logvars")
    label: ClassVar[str] = ""
    """The model's name in messages (the class name where empty)."""

    def __init__(self, config: LatentConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = FrameEncoder(config)
        self.fpsi = InitialState(config)
        self.build_dynamics(config)
        self.decoder = ImageDecoder(config, self.decoder_width)
        # training progress, in buffers so that checkpoints resume it exactly: steps taken,
        # the curriculum's horizon, the moving average of the error ratio, and the mean
        # frame (init_from_data) that the ratio is taken against
        self.register_buffer("trained_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("horizon", torch.tensor(config.min_horizon, dtype=torch.long))
        self.register_buffer("fit", torch.ones(()))
        size = config.image_size
        self.register_buffer("mean_frame", torch.full((3, size, size), 0.5))
        # where sample() draws z: the aggregate posterior of training sequences once
        # fitted (fit_aggregate_posterior), N(0, I) while these hold no rows
        for name, value in self._sampler_defaults().items():
            self.register_buffer(name, value)

    def _sampler_defaults(self) -> dict[str, Tensor]:
        """The aggregate-posterior buffers of an unfitted model: no sequences."""
        empty = torch.zeros(0, 2 * self.config.state_dim)
        return {"posterior_means": empty, "posterior_logvars": empty.clone()}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Checkpoints written before the sampler existed (issue 10's pp20b, pend20c) lack
        # its buffers: they load as not fitted (N(0, I)). A fitted one holds as many rows
        # as it was fitted to: take that shape before the strict, shape-checked copy.
        for name, value in self._sampler_defaults().items():
            saved = state_dict.setdefault(prefix + name, value)
            if isinstance(saved, Tensor) and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def context_frames(self) -> int:  # type: ignore[override]
        """Frames the encoder reads (the first ones of what it is given)."""
        return self.config.context_frames

    @property
    def state_offset(self) -> int:  # type: ignore[override]
        """The encoded state is that of the last frame read."""
        return self.config.context_frames - 1

    # --- the pieces of the public API

    def posterior(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q_φ(z | the first ``context_frames`` frames)."""
        k = self.context_frames
        if frames.shape[1] < k:
            raise UserError(f"the encoder needs {k} frames, got a sequence of {frames.shape[1]}")
        return self.encoder(frames[:, :k].flatten(1, 2))

    def initial_state(self, z: Tensor) -> State:
        """f_ψ: z → (q, p)."""
        return self.fpsi(z)

    def encode(self, frames: Tensor, sample: bool = False) -> State:
        """The state at frame ``state_offset``: posterior mean, or a posterior sample."""
        mean, logvar = self.posterior(frames)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar) if sample else mean
        return self.initial_state(z)

    # --- what a model adds

    @abstractmethod
    def build_dynamics(self, config: LatentConfig) -> None:
        """Create the dynamics' networks as attributes (called once, by ``__init__``)."""

    @abstractmethod
    def train_rollout(self, s0: State, dt: Tensor, steps: int, frames: Tensor) -> State:
        """The training rollout of :meth:`loss`: ``steps`` steps from ``s0`` with a
        per-sample signed step ``dt`` ``(B, 1)`` (−dt for the backward half), time on
        axis 1. ``frames`` is the training window (its first ``context_frames`` read
        for the forward half); only a teacher-forced model reads it."""

    @property
    def decoder_width(self) -> int:
        """Numbers the decoder reads per state: the whole state, 2n, unless overridden."""
        return 2 * self.config.state_dim

    def decoder_input(self, state: State) -> Tensor:
        """What the decoder reads of states ``(..., ·)``: q and p concatenated."""
        return torch.cat([state.q, state.p], dim=-1)

    def comparable(self, state: State) -> Tensor:
        """The part of a state the consistency term compares with the encoder's state of
        the same frame (q and p concatenated unless overridden)."""
        return torch.cat([state.q, state.p], dim=-1)

    def decode(self, state: State) -> Tensor:
        """Images of states with any leading axes → ``(..., 3, S, S)``."""
        x = self.decoder_input(state)
        images = self.decoder(x.reshape(-1, x.shape[-1]))
        return images.reshape(*x.shape[:-1], *images.shape[1:])

    # --- the SequenceModel interface

    def init_from_data(self, mean_frame: Tensor) -> None:
        self.decoder.init_output(mean_frame)
        self.mean_frame.copy_(mean_frame)

    def _schedule(self) -> tuple[int, float]:
        """(rollout horizon, KL warm-up factor) at the current training step: the
        curriculum's horizon, at least the warm-up floor; all steps outside training."""
        cfg = self.config
        steps = cfg.target_steps
        if not self.training or not (cfg.warmup or cfg.grow_below):
            return steps, 1.0
        warm = min(1.0, float(self.trained_steps) / cfg.warmup) if cfg.warmup else 1.0
        lo = min(cfg.min_horizon, steps)
        floor = round(lo + warm**2 * (steps - lo)) if cfg.warmup else lo
        if cfg.grow_below == 0:
            return floor, warm
        return min(steps, max(floor, int(self.horizon))), warm

    @torch.no_grad()
    def _grow(self, mse: Tensor, target: Tensor, horizon: int) -> None:
        """Update the moving average of the error ratio; lengthen the horizon if low."""
        baseline = (target.float() - self.mean_frame).square().mean()
        ratio = (mse / baseline.clamp_min(1e-12)).clamp(max=2.0)
        self.fit.mul_(0.95).add_(0.05 * ratio)  # an average over ~20 steps
        if self.fit < self.config.grow_below and horizon < self.config.target_steps:
            self.horizon.fill_(max(int(self.horizon), horizon) + 1)

    def loss(self, frames: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Negative ELBO per pixel and time step on windows ``(B, W, 3, H, W)``.

        Forward half: read frames ``0…k−1``, roll +dt from frame ``k−1`` over the frames
        after it. Backward half (``forward_backward``): read frames ``W−k…W−1``, roll −dt
        from frame ``W−1`` over the frames before it. One batched rollout
        (:meth:`train_rollout`) serves both (a per-sample signed dt). Windows longer than
        ``config.frames`` are cut to it.
        """
        cfg = self.config
        if self.training:
            self.trained_steps += 1
        window = min(frames.shape[1], cfg.frames)
        k = cfg.context_frames
        if window < k + 1:
            name = self.label or type(self).__name__
            raise UserError(f"{name} trains on windows of at least {k + 1} frames, got {window}")
        frames = frames[:, :window]
        batch, device = frames.shape[0], frames.device
        horizon, warm = self._schedule()
        horizon = min(horizon, window - k)
        backward = torch.zeros(batch, dtype=torch.bool, device=device)
        if cfg.forward_backward and self.training:
            backward[batch // 2 :] = True
        rows = torch.arange(batch, device=device)[:, None]
        z, kl = self._sample_posterior(frames, backward, rows)
        s0 = self.initial_state(z)
        sign = torch.where(backward, -1.0, 1.0)[:, None]
        states = self.train_rollout(s0, sign * cfg.dt, horizon, frames)  # (B, H+1, ·)
        offsets = torch.arange(horizon + 1, device=device)
        times = torch.where(backward[:, None], window - 1 - offsets, k - 1 + offsets)
        picked = self._decoded_steps(batch, horizon, device)
        target = frames[rows, times[rows, picked]]
        recon = self.decode(State(states.q[rows, picked], states.p[rows, picked]))
        error = recon.float() - target.float()  # one difference serves every term below
        per_sequence = error.square().flatten(1).mean(1)  # equal pixels per sequence
        mse = per_sequence.mean()
        if self.training:
            self.sequence_errors = per_sequence.detach()
        pixels = frames[0, 0].numel() * (horizon + 1)
        loss = mse + warm * cfg.kl_weight * kl / pixels
        if cfg.colour_weight:
            loss = loss + cfg.colour_weight * (error - error.mean(-3, keepdim=True)).square().mean()
        metrics = {"mse": mse, "kl": kl, "horizon": torch.tensor(float(horizon))}
        if cfg.consistency_weight and horizon > 0:
            distance = self._consistency(frames, states, times, rows)
            consistency = distance.clamp(max=1.0).mean()
            loss = loss + warm * cfg.consistency_weight * consistency
            metrics["consistency"] = distance.mean()
        if self.training and cfg.grow_below:
            self._grow(mse.detach(), target, horizon)
        metrics["loss"] = loss
        return loss, {key: value.detach() for key, value in metrics.items()}

    def _sample_posterior(
        self, frames: Tensor, backward: Tensor, rows: Tensor
    ) -> tuple[Tensor, Tensor]:
        """A latent ``z`` drawn from the posterior of each window's context (its first k
        frames forwards, its last k backwards) and the batch's mean KL to the prior."""
        window, k = frames.shape[1], self.config.context_frames
        start = torch.where(backward, window - k, 0)
        context = frames[rows, start[:, None] + torch.arange(k, device=frames.device)]
        mean, logvar = self.posterior(context)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum(1).mean()
        return z, kl

    def _decoded_steps(self, batch: int, horizon: int, device: torch.device) -> Tensor:
        """The rolled-out steps decoded and scored, per sequence ``(B, ·)``: all of them,
        or with ``decode_frames`` the state's own step, which anchors the encoder, and a
        random subset of the rest (decoding is most of a step's cost)."""
        picked = torch.arange(horizon + 1, device=device).expand(batch, -1)
        n = self.config.decode_frames
        if n is not None and n < horizon + 1:
            later = 1 + torch.rand(batch, horizon, device=device).argsort(1)
            picked = torch.cat([picked[:, :1], later[:, : n - 1]], dim=1)
        return picked

    def _consistency(self, frames: Tensor, states: State, times: Tensor, rows: Tensor) -> Tensor:
        """Per sequence ``(B,)``, the distance the latent consistency term
        (``consistency_weight``) penalises: at one random rolled-out step, the squared
        distance of the state to the encoder's state of the k frames ending at that frame
        (no gradient into the encoder: it is the target), summed over the state's
        numbers, over the same sum of the targets' variances in the batch (so shrinking
        the state's scale cannot lower it). :meth:`loss` caps it at 1 per sequence: a
        rollout further from its target than a random other state is has lost the
        sequence (chaos: three-body), and pulling it back drove the latent scale up
        until training diverged (measured: issue 12)."""
        k = self.context_frames
        horizon = states.q.shape[1] - 1
        pick = torch.randint(1, horizon + 1, (len(frames), 1), device=frames.device)
        last = times[rows, pick]  # (B, 1): every target frame is at least k − 1
        with torch.no_grad():
            context = frames[rows, last - k + 1 + torch.arange(k, device=frames.device)]
            target = self.comparable(self.initial_state(self.posterior(context)[0]))
        rolled = self.comparable(State(states.q[rows, pick], states.p[rows, pick]))[:, 0]
        spread = target.var(0).sum().clamp_min(1e-8) if len(target) > 1 else 1.0
        return (rolled.float() - target.float()).square().sum(1) / spread

    @property
    def sampling_from(self) -> str:
        """Where :meth:`sample` draws z, in words (for reports)."""
        count = len(self.posterior_means)
        if count:
            return f"aggregate posterior of {count} training sequences"
        return "prior N(0, I) (aggregate posterior not fitted)"

    @property
    def sampler_fitted(self) -> bool:
        return bool(len(self.posterior_means))

    @torch.no_grad()
    def fit_aggregate_posterior(self, batches: Iterable[Tensor]) -> int:
        """Make :meth:`sample` draw z from the aggregate posterior
        ``q(z) = (1/N) Σᵢ N(μᵢ, diag σᵢ²)`` of ``N`` sequences (its training data): frames
        ``(B, T, 3, H, W)`` (floats in [0, 1] or uint8, T ≥ ``context_frames``; the
        encoder reads the first ``context_frames``) in any number of batches. The
        posteriors' means and log-variances are kept in buffers that checkpoints save
        (2·2n numbers per sequence). Deterministic (no draws; the encoder in eval mode).
        Returns N.

        Why: the ELBO's N(0, I) prior is only softly enforced (β·KL, β = 0.01 in the
        issue-10 runs), and the states the encoder gives real sequences do not fill it,
        so a rollout from an N(0, I) draw starts where the dynamics and the decoder were
        never trained. The aggregate posterior is the prior the ELBO would have wanted
        (Hoffman & Johnson 2016, "ELBO surgery"; Tomczak & Welling 2018 sample a mixture
        of posteriors too, the VampPrior). The mixture itself, not a Gaussian fitted to
        its moments: the states of a physical system lie on curved sets (an angle, an
        energy shell), and a Gaussian fills their insides and beyond. Measured (issue
        10, 64 samples of 90 steps, seeds 0 and 1): on the pendulum run pend20c,
        trajectories from such a Gaussian found the right body in 56–57 % of frames
        (N(0, I): 31–42 %), from the mixture in 84–87 %, about as often as rollouts from
        the test sequences' own states (90 %); on the mass-spring run pp20b both were as
        good as those rollouts. Each draw is a fresh sample from one sequence's
        posterior, so the samples follow the training data's distribution of states;
        what happens after the first state is the model's alone.
        """
        was_training = self.training
        self.eval()
        device = self.posterior_means.device
        means, logvars = [], []
        try:
            for frames in batches:
                frames = frames.to(device)
                frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
                mean, logvar = self.posterior(frames)
                means.append(mean.to(self.posterior_means.dtype))
                logvars.append(logvar.to(self.posterior_means.dtype))
        finally:
            self.train(was_training)
        if not means:
            raise UserError("fit_aggregate_posterior needs at least one sequence")
        self.posterior_means = torch.cat(means)
        self.posterior_logvars = torch.cat(logvars)
        return len(self.posterior_means)

    def aggregate_moments(self) -> tuple[Tensor, Tensor]:
        """Mean ``(2n,)`` and covariance ``(2n, 2n)`` of the distribution :meth:`sample_z`
        draws from: the fitted mixture's exact ones, ``mean(μᵢ)`` and
        ``cov(μᵢ) + diag(mean(σᵢ²))`` (population moments); 0 and I when not fitted."""
        z_dim = 2 * self.config.state_dim
        mu = self.posterior_means.double()
        if not len(mu):
            return torch.zeros(z_dim, dtype=mu.dtype), torch.eye(z_dim, dtype=mu.dtype)
        centre, variance = mu.mean(0), self.posterior_logvars.double().exp().mean(0)
        dev = mu - centre
        return centre, dev.T @ dev / len(mu) + torch.diag(variance)

    def sample_z(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws of z ``(n, 2n)``: a random fitted sequence's posterior, sampled
        (:meth:`fit_aggregate_posterior`), or N(0, I) where none is fitted. The global
        generator, or ``generator``, fixes them."""
        device = self.posterior_means.device
        z_dim = 2 * self.config.state_dim
        dtype = self.posterior_means.dtype  # follows .double() like the weights
        noise = torch.randn(n, z_dim, device=device, dtype=dtype, generator=generator)
        count = len(self.posterior_means)
        if not count:
            return noise
        pick = torch.randint(count, (n,), device=device, generator=generator)
        return self.posterior_means[pick] + noise * (0.5 * self.posterior_logvars[pick]).exp()

    def sample(self, n: int, steps: int, dt: float | None = None) -> Tensor:
        """New trajectories: z from :meth:`sample_z` (the aggregate posterior of training
        sequences once fitted, else N(0, I); :attr:`sampling_from` says which) → f_ψ →
        roll out → decode."""
        z = self.sample_z(n)
        return self.decode(self.rollout(self.initial_state(z), steps, dt))
