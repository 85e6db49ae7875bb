"""Densities to learn: the paper's Gaussian mixture, the FFJORD 2-D set, a 10-D Gaussian
mixture, scikit-learn's 8 × 8 digits (64-D) and user arrays of any dimension.

The synthetic targets are written as torch samplers at the scaling of the FFJORD code
(Grathwohl et al., 2019, ``lib/toy_data.py``), so that test NLLs in nats compare with
published numbers. Where the density has a closed form (or a closed form up to a Bessel
function) it is given too, which yields the target's entropy: the best test NLL any model
can reach. A sampler and its density are checked against each other in the tests.

Sampling uses the global torch RNG unless a ``torch.Generator`` is passed: training draws
fresh samples every step inside :func:`hgn.training.loop.train_loop`, which reseeds the global RNG
before each step, so resumed runs see the same batches. Test sets use their own seeded
generator and are therefore fixed and distinct from anything drawn in training.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hgn.utils import UserError, derive_seed

Sampler = Callable[[int, torch.Generator | None], Tensor]
LogDensity = Callable[[Tensor], Tensor]


def _randn(n: int, d: int, g: torch.Generator | None) -> Tensor:
    return torch.randn(n, d, generator=g)


def _rand(n: int, g: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=g)


def _choice(n: int, k: int, g: torch.Generator | None) -> Tensor:
    return torch.randint(0, k, (n,), generator=g)


# --- isotropic Gaussian mixtures -------------------------------------------------------------


def _mixture_log_density(x: Tensor, centres: Tensor, std: float | Tensor) -> Tensor:
    """Equal-weight mixture of isotropic Gaussians N(c_k, std_k² I) (``std`` one number or
    one per component)."""
    centres = centres.to(x)
    std = torch.as_tensor(std, dtype=x.dtype).expand(len(centres))
    sq = ((x[..., None, :] - centres) ** 2).sum(-1)
    log_comp = -0.5 * sq / std**2 - x.shape[-1] * torch.log(std * math.sqrt(2 * math.pi))
    return torch.logsumexp(log_comp, -1) - math.log(len(centres))


def _mixture_sampler(centres: Tensor, std: float | Tensor) -> Sampler:
    std = torch.as_tensor(std, dtype=centres.dtype).expand(len(centres))

    def sample(n: int, g: torch.Generator | None = None) -> Tensor:
        k = _choice(n, len(centres), g)
        return centres[k] + std[k, None] * _randn(n, centres.shape[1], g)

    return sample


_S2 = 1.0 / math.sqrt(2.0)
# FFJORD: centres on the unit circle times 4, unit-variance noise times 0.5, all / 1.414
_EIGHT_CENTRES = (
    torch.tensor(
        [[1, 0], [-1, 0], [0, 1], [0, -1], [_S2, _S2], [_S2, -_S2], [-_S2, _S2], [-_S2, -_S2]],
        dtype=torch.float32,
    )
    * 4.0
    / 1.414
)
_EIGHT_STD = 0.5 / 1.414

# The paper does not give its mixture's layout; ours: 4 well separated modes on a square.
_GMM_CENTRES = torch.tensor([[-2.0, -2.0], [2.0, -2.0], [-2.0, 2.0], [2.0, 2.0]])
_GMM_STD = 0.5

# d = 10: 8 components with centres ~ N(0, 2.5² I) (fixed seed; the closest two are 6.5
# apart) and stds 0.5 … 1.0; entropy 13.1432 nats (1.3143 per dimension), see below.
_GMM10_CENTRES = 2.5 * torch.randn(8, 10, generator=torch.Generator().manual_seed(10))
_GMM10_STD = torch.linspace(0.5, 1.0, 8)


@functools.cache
def _mixture_entropy(name: str, points: int = 1 << 16) -> float:
    """Entropy of an equal-weight mixture of isotropic Gaussians, H(X) = H(X | J) + H(J)
    - H(J | X) with J the component: the first two are closed forms (Σ_k (d/2) log(2πe
    σ_k²) / K and log K); only the small H(J | X), the uncertainty about the component
    given the point, is estimated, by Monte Carlo on fixed-seed samples (float64). Its
    integrand is bounded and nearly 0 for separated components (H(J | X) = 7e-6 nats for
    gmm10), so its error is far below 1e-4 nats, where a Monte Carlo estimate of
    -E[log p] itself, from 2^21 points, is off by ±2e-3."""
    target = TARGETS[name]
    assert isinstance(target.log_density, functools.partial)
    centres, std = target.log_density.keywords["centres"], target.log_density.keywords["std"]
    k, d = centres.shape
    std = torch.as_tensor(std, dtype=torch.float64).expand(k)
    given_j = float((0.5 * d * torch.log(2 * math.pi * math.e * std**2)).mean())
    x = target.sample(points, torch.Generator().manual_seed(derive_seed("entropy", name)))
    x, centres = x.double(), centres.double()
    sq = ((x[:, None, :] - centres) ** 2).sum(-1)
    log_comp = -0.5 * sq / std**2 - d * torch.log(std)  # common constants cancel
    log_post = log_comp - torch.logsumexp(log_comp, -1, keepdim=True)
    j_given_x = float(-(log_post.exp() * log_post).nan_to_num().sum(-1).mean())
    return given_j + math.log(k) - j_given_x


# --- rings: uniform on circles, blurred by Gaussian noise ------------------------------------


def _ring_log_density(x: Tensor, radii: tuple[float, ...], std: float) -> Tensor:
    """Equal mixture of circles of the given radii convolved with N(0, std² I) in 2-D.

    Per circle the density is exp(-(r² + R²) / 2σ²) I₀(rR/σ²) / (2πσ²) (a Rice law in
    r spread over the angle); ``i0e`` keeps the Bessel factor finite for thin rings.
    """
    r = x.norm(dim=-1, keepdim=True)
    big_r = torch.tensor(radii, dtype=x.dtype)
    z = r * big_r / std**2
    log_comp = (
        -((r - big_r) ** 2) / (2 * std**2)
        + torch.log(torch.special.i0e(z))
        - math.log(2 * math.pi * std**2)
    )
    return torch.logsumexp(log_comp, -1) - math.log(len(radii))


def _ring_sampler(radii: tuple[float, ...], std: float) -> Sampler:
    big_r = torch.tensor(radii)

    def sample(n: int, g: torch.Generator | None = None) -> Tensor:
        radius = big_r[_choice(n, len(radii), g)]
        angle = 2 * math.pi * _rand(n, g)
        circle = torch.stack([radius * angle.cos(), radius * angle.sin()], -1)
        return circle + std * _randn(n, 2, g)

    return sample


# --- the other FFJORD shapes ----------------------------------------------------------------


def _checkerboard(n: int, g: torch.Generator | None = None) -> Tensor:
    x1 = _rand(n, g) * 4 - 2
    x2 = _rand(n, g) - _choice(n, 2, g) * 2.0 + torch.floor(x1) % 2
    return torch.stack([x1, x2], -1) * 2


def _checkerboard_log_density(x: Tensor) -> Tensor:
    inside = (x.abs() <= 4).all(-1)
    cell = torch.floor(x / 2)
    black = (cell.sum(-1) % 2) == 0  # FFJORD's squares: even (column + row) in [-4, 4]²
    return torch.where(inside & black, -math.log(32.0), -math.inf)


def _two_spirals(n: int, g: torch.Generator | None = None) -> Tensor:
    t = torch.sqrt(_rand(n, g)) * 540 * (2 * math.pi) / 360
    x = torch.stack([-torch.cos(t) * t, torch.sin(t) * t], -1) + _rand(2 * n, g).view(n, 2) * 0.5
    sign = 1.0 - 2.0 * _choice(n, 2, g)[:, None]
    return sign * x / 3 + 0.1 * _randn(n, 2, g)


def _moons(n: int, g: torch.Generator | None = None) -> Tensor:
    t = math.pi * _rand(n, g)
    upper = torch.stack([t.cos(), t.sin()], -1)
    lower = torch.stack([1 - t.cos(), 0.5 - t.sin()], -1)
    which = _choice(n, 2, g)[:, None].bool()
    x = torch.where(which, lower, upper) + 0.1 * _randn(n, 2, g)
    return x * 2 + torch.tensor([-1.0, -0.2])


def _pinwheel(n: int, g: torch.Generator | None = None) -> Tensor:
    classes, rate = 5, 0.25
    feat = _randn(n, 2, g) * torch.tensor([0.3, 0.1]) + torch.tensor([1.0, 0.0])
    angle = 2 * math.pi * _choice(n, classes, g) / classes + rate * torch.exp(feat[:, 0])
    c, s = angle.cos(), angle.sin()
    # row vector times [[c, -s], [s, c]], as in FFJORD's einsum
    return 2 * torch.stack([feat[:, 0] * c + feat[:, 1] * s, -feat[:, 0] * s + feat[:, 1] * c], -1)


def _swissroll(n: int, g: torch.Generator | None = None) -> Tensor:
    t = 1.5 * math.pi * (1 + 2 * _rand(n, g))
    roll = torch.stack([t * t.cos(), t * t.sin()], -1)
    return (roll + _randn(n, 2, g)) / 5


@dataclass(frozen=True)
class Target:
    """A synthetic density: a sampler and, where it has a closed form, the log-density."""

    name: str
    sample: Sampler
    log_density: LogDensity | None = None
    exact_entropy: float | None = None
    description: str = ""
    dim: int = 2
    entropy_fn: Callable[[], float] | None = None

    @property
    def entropy(self) -> float | None:
        """Differential entropy in nats: the lowest expected NLL a model can reach
        (exact, by quadrature on a grid in 2-D, or by a target's own ``entropy_fn``)."""
        if self.exact_entropy is not None:
            return self.exact_entropy
        if self.entropy_fn is not None:
            return self.entropy_fn()
        if self.log_density is None or self.dim != 2:
            return None
        return _grid_entropy(self.name)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "8gaussians",
            _mixture_sampler(_EIGHT_CENTRES, _EIGHT_STD),
            functools.partial(_mixture_log_density, centres=_EIGHT_CENTRES, std=_EIGHT_STD),
            description="8 Gaussians on a circle of radius 2.83, std 0.354 (FFJORD)",
        ),
        Target(
            "checkerboard",
            _checkerboard,
            _checkerboard_log_density,
            exact_entropy=math.log(32.0),
            description="uniform on 8 squares of side 2 in [-4, 4]² (FFJORD)",
        ),
        Target("2spirals", _two_spirals, description="two interleaved spirals (FFJORD)"),
        Target(
            "rings",
            _ring_sampler((3.0, 2.25, 1.5, 0.75), 0.08),
            functools.partial(_ring_log_density, radii=(3.0, 2.25, 1.5, 0.75), std=0.08),
            description="4 concentric rings, radii 0.75-3, noise 0.08 (FFJORD)",
        ),
        Target("moons", _moons, description="two half moons (FFJORD)"),
        Target("pinwheel", _pinwheel, description="5-arm pinwheel (FFJORD)"),
        Target("swissroll", _swissroll, description="2-D swiss roll (FFJORD)"),
        Target(
            "circles",
            _ring_sampler((3.0, 1.5), 0.24),
            functools.partial(_ring_log_density, radii=(3.0, 1.5), std=0.24),
            description="2 concentric circles, radii 1.5 and 3, noise 0.24 (FFJORD)",
        ),
        Target(
            "gmm",
            _mixture_sampler(_GMM_CENTRES, _GMM_STD),
            functools.partial(_mixture_log_density, centres=_GMM_CENTRES, std=_GMM_STD),
            description="the paper's Gaussian mixture (our layout: 4 modes at (±2, ±2), std 0.5)",
        ),
        Target(
            "gmm10",
            _mixture_sampler(_GMM10_CENTRES, _GMM10_STD),
            functools.partial(_mixture_log_density, centres=_GMM10_CENTRES, std=_GMM10_STD),
            description="8 Gaussians in 10-D, stds 0.5-1.0, centres ~ N(0, 2.5² I) (seed 10)",
            dim=10,
            entropy_fn=functools.partial(_mixture_entropy, "gmm10"),
        ),
    )
}
FFJORD_TARGETS = (
    "8gaussians",
    "checkerboard",
    "2spirals",
    "rings",
    "moons",
    "pinwheel",
    "swissroll",
    "circles",
)


@functools.cache
def _grid_entropy(name: str, half_width: float = 8.0, points: int = 601) -> float:
    """-∫ p log p by the trapezoid rule on a grid (float64). The closed-form targets here
    are smooth with negligible mass beyond |x| = 8, where the rule converges
    geometrically: at 601 points (step 0.027, a third of the narrowest noise scale, 0.08)
    it agrees with a 2001-point grid to 1e-9 nats."""
    log_density = TARGETS[name].log_density
    assert log_density is not None
    axis = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    cell = (axis[1] - axis[0]).item() ** 2
    total = torch.zeros((), dtype=torch.float64)
    for row in axis.split(256):  # bounded memory
        x = torch.stack(torch.meshgrid(row, axis, indexing="ij"), -1).reshape(-1, 2)
        lp = log_density(x)
        p = lp.exp()
        total += torch.where(p > 0, -p * lp, 0.0).sum()
    return float(total * cell)


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise UserError(
            f"unknown target {name!r}; choose one of {', '.join(TARGETS)}, digits "
            "or give a .npy file"
        ) from None


# --- data sources: what training and evaluation read -----------------------------------------


class DataSource:
    """Training batches, a fixed test set and (where known) the entropy of one target.

    ``image_shape`` is (height, width) when each point is a flattened grey image (the
    digits, an (N, H, W) array): plots then draw samples as a grid of images. ``logit``
    is the α of the logit map that models of this target apply before standardising
    (:meth:`hgn.flows.nhf.DensityModel.set_logit`; 0: none), for data in [0, 1]^d.
    """

    name: str
    dim: int
    entropy: float | None = None
    image_shape: tuple[int, int] | None = None
    logit: float = 0.0

    def sample_train(self, n: int) -> Tensor:
        raise NotImplementedError

    def test_set(self) -> Tensor:
        raise NotImplementedError

    def reference(self, n: int) -> Tensor:
        """Samples to standardise data with and to draw the target in plots."""
        raise NotImplementedError


class SyntheticSource(DataSource):
    """An infinite synthetic target: fresh samples every step, a fixed-seed test set."""

    def __init__(self, target: Target, n_test: int = 5000) -> None:
        self.target = target
        self.name, self.dim, self.n_test = target.name, target.dim, n_test

    @property
    def entropy(self) -> float | None:  # type: ignore[override]
        return self.target.entropy

    def _fixed(self, split: str, n: int) -> Tensor:
        g = torch.Generator().manual_seed(derive_seed("target", self.name, split))
        return self.target.sample(n, g)

    def sample_train(self, n: int) -> Tensor:
        return self.target.sample(n, None)

    def test_set(self) -> Tensor:
        return self._fixed("test", self.n_test)

    def reference(self, n: int) -> Tensor:
        return self._fixed("reference", n)


class ArraySource(DataSource):
    """A user's ``(N, d)`` array (or ``(N, H, W)`` images, flattened), split into train
    and test by a permutation drawn from the run's seed."""

    def __init__(self, path: str | Path, seed: int = 0, test_fraction: float = 0.1) -> None:
        data, self.image_shape = load_array(path)
        n = len(data)
        n_test = min(max(1, round(test_fraction * n)), n - 1)
        perm = torch.from_numpy(np.random.default_rng(derive_seed(seed, "split")).permutation(n))
        self.test, self.train = data[perm[:n_test]], data[perm[n_test:]]
        self.name, self.dim = str(path), data.shape[1]

    def sample_train(self, n: int) -> Tensor:
        return self.train[torch.randint(0, len(self.train), (n,))]

    def test_set(self) -> Tensor:
        return self.test

    def reference(self, n: int) -> Tensor:
        return self.train[:n]


DIGITS_LEVELS = 17
"""Grey levels of sklearn's digits: integers 0 … 16."""


DIGITS_LOGIT = 1e-6
"""α of the digits' logit map (docs/RESULTS.md, "gmm10 and digits")."""


class DigitsSource(DataSource):
    """scikit-learn's handwritten digits (``load_digits``: 1,797 images of 8 × 8 pixels,
    integers 0 … 16; shipped with the package, no download), as 64-dimensional densities.

    Dequantised and scaled the usual way: y = (x + u) / 17 with u ~ Uniform[0, 1)^64, so
    y ∈ [0, 1)^64 and a density on y is one on the dequantised images (the discrete
    images' log-likelihood is at least that of y minus 64 ln 17 nats). Training batches
    draw fresh u every step; the test set (360 images, 20 %, a fixed split independent of
    the run's seed so that every model is scored on the same points) and the reference
    set (the training images) are dequantised once with fixed seeds. The models then map
    y through u = logit(α + (1 - 2α) y), the usual map of dequantised images (RealNVP's,
    with MAF's α = :data:`DIGITS_LOGIT`; ``--logit`` changes α), and standardise u per
    pixel as any target (``--standardise``); every density is still one on y, the
    Jacobian included.
    """

    name, dim, image_shape = "digits", 64, (8, 8)
    n_test = 360
    logit = DIGITS_LOGIT

    def __init__(self) -> None:
        images = _load_digits()
        perm = np.random.default_rng(derive_seed("digits", "split")).permutation(len(images))
        self.test_images = images[perm[: self.n_test]]
        self.train_images = images[perm[self.n_test :]]

    @staticmethod
    def _dequantise(images: Tensor, g: torch.Generator | None) -> Tensor:
        return (images + torch.rand(images.shape, generator=g)) / DIGITS_LEVELS

    def sample_train(self, n: int) -> Tensor:
        rows = torch.randint(0, len(self.train_images), (n,))
        return self._dequantise(self.train_images[rows], None)

    def test_set(self) -> Tensor:
        g = torch.Generator().manual_seed(derive_seed("digits", "test"))
        return self._dequantise(self.test_images, g)

    def reference(self, n: int) -> Tensor:
        g = torch.Generator().manual_seed(derive_seed("digits", "reference"))
        return self._dequantise(self.train_images[:n], g)


def _load_digits() -> Tensor:
    """The 1,797 digit images as a float tensor (N, 64); scikit-learn is an optional extra."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError(
            "--target digits needs the optional package scikit-learn (pip install 'hgn[digits]')"
        ) from None
    return torch.as_tensor(load_digits().data, dtype=torch.float32)


def load_array(path: str | Path) -> tuple[Tensor, tuple[int, int] | None]:
    """Read and validate a user's ``.npy`` file: (N, d) points or (N, H, W) grey images
    (returned flattened, with (H, W)); N ≥ 2, all finite, real numbers."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for damaged or non-.npy files
        raise UserError(f"cannot read {path} as a .npy array ({type(exc).__name__})") from None
    if data.ndim not in (2, 3):
        raise UserError(
            f"{path} must hold an array of points (N, d) or of images (N, H, W); "
            f"it has shape {data.shape}"
        )
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise UserError(f"{path} must hold real numbers; its dtype is {data.dtype}")
    if data.shape[0] < 2:
        raise UserError(f"{path} has {data.shape[0]} rows; need at least 2 (train and test)")
    if data.size == 0:
        raise UserError(f"{path} has no columns")
    image_shape = (int(data.shape[1]), int(data.shape[2])) if data.ndim == 3 else None
    data = data.reshape(len(data), -1)
    bad = int((~np.isfinite(data)).any(axis=1).sum())
    if bad:
        raise UserError(f"{path} has {bad} rows with NaN or Inf; clean them first")
    # squares of larger values overflow float32 in the standardisation (±1e38 did)
    huge = int((np.abs(data) > MAX_MAGNITUDE).any(axis=1).sum())
    if huge:
        raise UserError(
            f"{path} has {huge} rows with values beyond ±{MAX_MAGNITUDE:g}; rescale the data"
        )
    return torch.as_tensor(data, dtype=torch.float32), image_shape


MAX_MAGNITUDE = 1e15
"""The largest magnitude a user's data point may have: its square, summed over the
points, must stay finite in float32 (about 3e38)."""


def check_points(x: Tensor, dim: int, what: str, unit_box: bool = False) -> Tensor:
    """Refuse points a model of dimension ``dim`` cannot score: wrong shape, non-finite,
    or, for a model with a logit map (``unit_box``), outside [0, 1]."""
    if x.ndim != 2 or x.shape[1] != dim:
        raise UserError(f"{what} has shape {tuple(x.shape)}; the model expects (N, {dim})")
    if not torch.isfinite(x).all():
        raise UserError(f"{what} contains NaN or Inf")
    if unit_box and (x.min() < 0 or x.max() > 1):
        raise UserError(
            f"{what} spans [{float(x.min()):.3g}, {float(x.max()):.3g}]; a logit map "
            "(--logit) needs points in [0, 1] (train with --logit 0 for other data)"
        )
    return x


TARGET_NAMES = (*TARGETS, "digits")
"""Every name ``--target`` accepts (besides a .npy file)."""


def data_source(spec: str, seed: int = 0) -> DataSource:
    """A target name or a ``.npy`` path, as given to ``hgn flow train --target``; ``seed``
    (the run's) fixes a .npy array's train/test split."""
    if spec.endswith(".npy"):
        return ArraySource(spec, seed)
    if spec == "digits":
        return DigitsSource()
    return SyntheticSource(get_target(spec))
