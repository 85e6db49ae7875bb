"""The HNN baseline from pixels (Greydanus et al., 2019) and its convolutional variant.

HNN learns a Hamiltonian ``H(q, p)`` by matching its symplectic gradient to observed time
derivatives. From pixels, following the paper's description (docs/SCIENCE.md §4):

* an autoencoder takes two consecutive frames ``[x_t, x_{t+1}]`` (flattened for the MLP
  variant, stacked on the channel axis for the conv variant) and maps them to a latent
  ``z_t = (q_t, p_t)`` of *exactly* the system's true phase-space dimension (``dof``
  coordinates each, read from the dataset's metadata); the decoder reconstructs the pair;
* the **HNN loss** matches ``(dH/dp, -dH/dq)`` to the finite-difference derivative of
  consecutive latents, ``(z_{t+1} - z_t) / dt``, with the field evaluated at the
  midpoint ``(z_t + z_{t+1}) / 2`` (so the match is second-order accurate in ``dt``);
* the **auxiliary loss** makes the finite-difference ``dq/dt`` equal ``p`` (HNN's
  assumption that momentum is velocity, which its authors found necessary to learn).

Rollouts start from the latent of the first frame pair and integrate the learned field
with RK4 by default: a learned MLP Hamiltonian is not separable, so leapfrog would be only
an approximation of a symplectic method (see :mod:`hgn.physics.integrators`), while RK4 is a
fourth-order accurate reference, and HNN's own code integrates with an RK scheme. The
integrator is a config option for those who want leapfrog.

Against collapse (HNN's failure mode from pixels, and the paper's: the dynamics losses are
zero for a constant latent, so an encoder that maps every pair to the same ``z`` and a
decoder that draws the mean image is a minimum the losses pull towards), three opt-in
config keys give the baseline an honest best effort, each off by default so that the
paper's recipe stays the default:

* ``ae_warmup``: train the autoencoder alone for this many steps, then ramp the dynamics
  losses in linearly over as many again, so the latent describes the frames before it
  is asked to be predictable;
* ``normalise_latent``: standardise ``q`` over the batch (no learned scale; running
  statistics at evaluation), so its spread cannot shrink to nothing; ``p`` is left free,
  because the auxiliary loss ties its scale to that of dq/dt;
* ``hnn_weight`` / ``aux_weight``: the dynamics losses' weights, which the reproduction
  searches on a small grid (their raw scale is that of latent derivatives, orders of
  magnitude above a per-pixel MSE);
* ``dynamics_detach``: the dynamics losses train H only, not the encoder, so that the
  latent is whatever the autoencoder needs and cannot be pulled to a constant (measured:
  with a standardised q the encoder still collapses *in time*, each sequence to its own
  constant, which zeroes both dynamics losses). The auxiliary loss then trains nothing
  and is only reported.

``HNN Conv`` swaps the MLPs of the autoencoder for HGN's convolutional encoder and
decoder (imported from :mod:`hgn.models`, not copied), with linear maps between their
feature maps and the low-dimensional latent.

Both models implement the sequence-model interface every hgn model shares, so training,
evaluation, rollouts and the reproduction harness treat them exactly like HGN:
``loss(frames) -> (loss, metrics)``, ``predict(frames, steps, dt=None) -> {"images",
"energy", "q", "p"}``. They have no prior, so ``sample`` refuses with a clear message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hgn.checks import check_range
from hgn.models.base import SequenceModel, State, check_dt
from hgn.models.hgn import Decoder, Encoder, HGNConfig
from hgn.nn import mlp
from hgn.physics import integrators
from hgn.utils import UserError


@dataclass
class HNNConfig:
    """Hyper-parameters of HNN and HNN Conv.

    ``dof`` is the number of position coordinates of the true system (1 for the
    mass-spring and the pendulum, 4 for two bodies in the plane, 6 for three), so the
    latent is ``2 * dof`` numbers: the defining (and limiting) assumption of HNN. The
    trainer fills it and ``dt`` from the dataset's metadata unless they are set.
    MLP widths follow HNN's pixel experiment (200 hidden units); the conv variant takes
    HGN's encoder and decoder at HGN's default widths and latent map size.
    """

    image_size: int = 64
    frames: int = 31
    """Frames per training window (the trainer cuts random windows of this length);
    every consecutive pair is an autoencoder input. HNN's losses are local in time (a
    frame triplet suffices), so short windows cut the cost of a step without changing
    what is learned."""
    dof: int = 1
    dt: float = 0.125
    conv: bool = False
    hidden: int = 200
    hamiltonian_hidden: int = 200
    latent_channels: int = 16
    """Conv variant: channels of the feature map between HGN's networks and the latent."""
    latent_size: int = 4
    encoder_filters: list[int] = field(default_factory=lambda: HGNConfig().encoder_filters)
    """Conv variant: HGN's encoder widths (HGN's defaults, so the networks match)."""
    decoder_filters: list[int] = field(default_factory=lambda: HGNConfig().decoder_filters)
    integrator: str = "rk4"
    ae_weight: float = 1.0
    hnn_weight: float = 1.0
    aux_weight: float = 1.0
    ae_warmup: int = 0
    """Steps of autoencoder-only training before the dynamics losses ramp in (linearly,
    over another ``ae_warmup`` steps); 0 = the paper's recipe, all losses from step 0."""
    normalise_latent: bool = False
    """Standardise ``q`` over each batch (running statistics at evaluation) so that the
    encoder cannot collapse it to a constant."""
    dynamics_detach: bool = False
    """The dynamics losses train the Hamiltonian only (the latent is the autoencoder's)."""

    def __post_init__(self) -> None:
        for key in (
            "image_size",
            "dof",
            "hidden",
            "hamiltonian_hidden",
            "latent_channels",
            "latent_size",
        ):
            check_range(getattr(self, key), f"model.{key}", gt=0)
        for key in ("encoder_filters", "decoder_filters"):
            if not getattr(self, key) or min(getattr(self, key)) <= 0:
                raise UserError(f"model.{key} must be a non-empty list of positive integers")
        if self.frames < 3:
            raise UserError(f"model.frames must be at least 3 (two frame pairs), got {self.frames}")
        if self.dt == 0 or not math.isfinite(self.dt):
            raise UserError(f"model.dt must be a finite non-zero number, got {self.dt}")
        if self.integrator not in integrators.INTEGRATORS:
            raise UserError(
                f"model.integrator must be one of {', '.join(integrators.INTEGRATORS)}, "
                f"got {self.integrator!r}"
            )
        for key in ("ae_weight", "hnn_weight", "aux_weight"):
            check_range(getattr(self, key), f"model.{key}", ge=0)
        check_range(self.ae_warmup, "model.ae_warmup", ge=0)
        for key in ("normalise_latent", "dynamics_detach"):
            if not isinstance(getattr(self, key), bool):
                raise UserError(f"model.{key} must be true or false, got {getattr(self, key)!r}")

    def hgn_config(self) -> HGNConfig:
        """The HGN config whose encoder reads one frame pair and whose decoder draws one
        frame, at this model's image size: HNN Conv's networks are HGN's."""
        return HGNConfig(
            image_size=self.image_size,
            frames=2,
            latent_channels=self.latent_channels,
            latent_size=self.latent_size,
            encoder_filters=self.encoder_filters,
            decoder_filters=self.decoder_filters,
        )


class HamiltonianMLP(nn.Module):
    """``H(q, p) -> (batch,)``: a smooth MLP (tanh), as in HNN.

    Smoothness matters: training differentiates through ``dH``, so a ReLU network, whose
    second derivative vanishes, could not shape its own vector field.
    """

    def __init__(self, dof: int, hidden: int) -> None:
        super().__init__()
        self.net = mlp([2 * dof, hidden, hidden, 1], nn.Tanh)

    def forward(self, q: Tensor, p: Tensor) -> Tensor:
        return self.net(torch.cat([q, p], dim=-1)).squeeze(-1)


class MLPEncoder(nn.Module):
    """A flattened frame pair ``(N, 6, H, W)`` -> latent ``(N, 2 dof)`` (HNN's original)."""

    def __init__(self, cfg: HNNConfig) -> None:
        super().__init__()
        self.net = mlp(
            [6 * cfg.image_size**2, cfg.hidden, cfg.hidden, cfg.hidden, 2 * cfg.dof], nn.ReLU
        )

    def forward(self, pairs: Tensor) -> Tensor:
        return self.net(pairs.flatten(1))


class MLPDecoder(nn.Module):
    """Latent ``(N, 2 dof)`` -> frame pair ``(N, 6, H, W)`` in [0, 1]."""

    def __init__(self, cfg: HNNConfig) -> None:
        super().__init__()
        self.size = cfg.image_size
        self.net = mlp(
            [2 * cfg.dof, cfg.hidden, cfg.hidden, cfg.hidden, 6 * cfg.image_size**2], nn.ReLU
        )

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.net(z)).view(-1, 6, self.size, self.size)

    @torch.no_grad()
    def init_output(self, mean_frame: Tensor) -> None:
        """Start at the data's mean colour, as HGN's decoder does (same reason: escaping
        sigmoid(0) = grey through a bias takes many steps)."""
        colour = mean_frame.flatten(1).mean(1).clamp(0.01, 0.99).repeat(2)  # both frames
        last = self.net[-1]
        last.bias.copy_(torch.logit(colour).repeat_interleave(self.size**2))


class ConvEncoder(nn.Module):
    """HGN's encoder on a stacked frame pair, then a linear map to ``(N, 2 dof)``.

    HNN has no posterior, so HGN's two output maps (its mean and log-variance heads)
    are simply features here.
    """

    def __init__(self, cfg: HNNConfig) -> None:
        super().__init__()
        self.hgn = Encoder(cfg.hgn_config())
        self.to_latent = nn.Linear(4 * cfg.latent_channels * cfg.latent_size**2, 2 * cfg.dof)

    def forward(self, pairs: Tensor) -> Tensor:
        return self.to_latent(torch.cat(self.hgn(pairs), dim=1).flatten(1))


class ConvDecoder(nn.Module):
    """A linear map from ``(N, 2 dof)`` to one feature map per frame of the pair, each
    drawn by HGN's decoder (shared weights), giving the pair ``(N, 6, H, W)``."""

    def __init__(self, cfg: HNNConfig) -> None:
        super().__init__()
        self.shape = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
        self.from_latent = nn.Linear(2 * cfg.dof, 2 * math.prod(self.shape))
        self.hgn = Decoder(cfg.hgn_config())

    def forward(self, z: Tensor) -> Tensor:
        maps = self.from_latent(z).view(-1, *self.shape)  # (2N, C, L, L): frame t, t+1
        images = self.hgn(maps)
        return images.view(z.shape[0], 6, *images.shape[-2:])

    @torch.no_grad()
    def init_output(self, mean_frame: Tensor) -> None:
        self.hgn.init_output(mean_frame)


class HNN(SequenceModel):
    """HNN from pixels: an autoencoder on frame pairs plus a Hamiltonian on its latent."""

    Config = HNNConfig
    context_frames = 2  # type: ignore[assignment]
    """The state is inferred from the first frame pair, whatever the sequence length."""
    can_run_backwards = True
    can_change_speed = True
    prior = "hamiltonian"

    def __init__(self, config: HNNConfig) -> None:
        super().__init__()
        self.config = config
        self.dof = config.dof
        if config.conv:
            self.encoder: nn.Module = ConvEncoder(config)
            self.decoder: nn.Module = ConvDecoder(config)
        else:
            self.encoder = MLPEncoder(config)
            self.decoder = MLPDecoder(config)
        self.h_net = HamiltonianMLP(config.dof, config.hamiltonian_hidden)
        self.norm = (
            nn.BatchNorm1d(config.dof, affine=False, momentum=0.01)
            if config.normalise_latent
            else None
        )
        # training steps taken, for the autoencoder warm-up; a buffer, so checkpoints
        # resume it (checkpoints written before it existed load with 0)
        self.register_buffer("trained_steps", torch.zeros((), dtype=torch.long))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        """Accept checkpoints from before the ``trained_steps`` buffer (a fresh 0), and
        from when the Hamiltonian sub-module was called ``hamiltonian`` (now the
        interface's method)."""
        state_dict.setdefault(prefix + "trained_steps", torch.zeros((), dtype=torch.long))
        old = prefix + "hamiltonian."
        for key in [k for k in state_dict if k.startswith(old)]:
            state_dict[prefix + "h_net." + key[len(old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def encode_pairs(self, pairs: Tensor) -> Tensor:
        """Latents ``(N, 2 dof)`` of stacked frame pairs ``(N, 6, H, W)``, with ``q``
        standardised when ``normalise_latent`` is set."""
        z = self.encoder(pairs)
        if self.norm is None:
            return z
        q, p = z.split(self.dof, dim=-1)
        return torch.cat([self.norm(q), p], dim=-1)

    def dynamics_scale(self) -> float:
        """The factor on the dynamics losses at the current step: 0 during the
        autoencoder warm-up, then a linear ramp to 1 over as many steps again."""
        warm = self.config.ae_warmup
        if not warm:
            return 1.0
        return min(1.0, max(0.0, (float(self.trained_steps) - warm) / warm))

    def init_from_data(self, mean_frame: Tensor) -> None:
        self.decoder.init_output(mean_frame)

    def field(self, z: Tensor) -> Tensor:
        """The symplectic gradient ``(dH/dp, -dH/dq)`` at latents ``z (..., 2 dof)``."""
        q, p = z.split(self.dof, dim=-1)
        dh_dq, dh_dp = integrators.grad_of(self.h_net)(q.flatten(0, -2), p.flatten(0, -2))
        return torch.cat([dh_dp, -dh_dq], dim=-1).view_as(z)

    def loss(self, frames: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Autoencoder + HNN + auxiliary loss on a batch of sequences ``(B, T+1, 3, H, W)``.

        Every consecutive frame pair of every sequence contributes, in one batched pass.
        ``mse`` (the shared metric name) is the autoencoder's per-pixel error.
        """
        if frames.shape[1] < 3:
            raise UserError("HNN needs sequences of at least 3 frames (two frame pairs)")
        pairs = torch.cat([frames[:, :-1], frames[:, 1:]], dim=2).flatten(0, 1)
        scale = self.dynamics_scale()
        if self.training:
            self.trained_steps += 1
        z_flat = self.encode_pairs(pairs)
        ae = F.mse_loss(self.decoder(z_flat), pairs)
        z = z_flat.view(frames.shape[0], -1, 2 * self.dof)
        if self.config.dynamics_detach:
            z = z.detach()
        dz_dt = (z[:, 1:] - z[:, :-1]) / self.config.dt
        midpoint = 0.5 * (z[:, 1:] + z[:, :-1])
        hnn = F.mse_loss(self.field(midpoint), dz_dt)
        aux = F.mse_loss(dz_dt[..., : self.dof], midpoint[..., self.dof :])
        c = self.config
        total = c.ae_weight * ae + scale * (c.hnn_weight * hnn + c.aux_weight * aux)
        metrics = {"loss": total, "mse": ae, "hnn": hnn, "aux": aux}
        if c.ae_warmup:
            metrics["dynamics_scale"] = torch.tensor(scale)
        return total, {key: value.detach() for key, value in metrics.items()}

    def encode(self, frames: Tensor, sample: bool = False) -> State:
        """The latent of the first frame pair (the autoencoder is deterministic)."""
        if frames.shape[1] < 2:
            raise UserError("HNN infers its state from a frame pair: give at least 2 frames")
        q, p = self.encode_pairs(frames[:, :2].flatten(1, 2)).split(self.dof, dim=-1)
        return State(q, p)

    def rollout(self, state: State, steps: int, dt: float | None = None) -> State:
        """Integrate the learned field ``steps`` steps of ``dt`` (the trained one by
        default; negative runs backwards) with the configured integrator."""
        dt = self.trained_dt if dt is None else check_dt(dt)
        grad_fn = integrators.grad_of(self.h_net)
        qs, ps = integrators.rollout(grad_fn, state.q, state.p, dt, steps, self.config.integrator)
        return State(qs.transpose(0, 1), ps.transpose(0, 1))

    def decode(self, state: State) -> Tensor:
        """The first frame of the pair each state ``(..., 2 dof)`` decodes to."""
        z = torch.cat([state.q, state.p], dim=-1)
        images = self.decoder(z.reshape(-1, z.shape[-1]))[:, :3]
        return images.reshape(*z.shape[:-1], *images.shape[1:])

    def hamiltonian(self, state: State) -> Tensor:
        """The learned H of states with any leading axes."""
        lead = state.q.shape[:-1]
        return self.h_net(state.q.reshape(-1, self.dof), state.p.reshape(-1, self.dof)).view(lead)

    def exactly_reversible(self) -> bool:
        """Only implicit midpoint is time-reversible for a non-separable learned H."""
        return self.config.integrator in integrators.REVERSIBLE_ANY_H
