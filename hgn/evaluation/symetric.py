"""SyMetric (Higgins et al. 2021): is a model's latent phase space a symplectic image of
the true one?

Low pixel error does not show that a model has learnt Hamiltonian dynamics; SyMetric asks
whether its latent (q, p) relate to the true (q, p) by a map that preserves the
symplectic form, the property that makes the latent dynamics Hamiltonian in the true
coordinates too (docs/SCIENCE.md §1 for the form, §3a for the benchmark it comes from).
The published recipe, which this module follows:

1. keep latent pair i, (q_i, p_i), if either dimension's mean posterior variance is
   below 0.5 (the rest stayed near the unit prior and carry nothing);
2. standardise the kept latents and the true states, per dimension over all points;
3. regress the true state on polynomial features of the kept latent with Lasso, raising
   the order from 1 to 5 until R² ≥ 0.9 (order 1 only above 32 latent dimensions); α by
   2-fold cross-validation over ``logspace(-4, -0.5, 10)``, R² on the fitted data;
4. at 10 random points of each trajectory, the fitted map's Jacobian J (2d × k) from
   its coefficients above 1e-3; with the symplectic forms E_d, E_k, the product
   M = (J E_k Jᵀ)(J E_kᵀ Jᵀ), normalised per trajectory by the mean of each point's
   largest |entry|; "sym" is the mean squared deviation of M from the identity, ≤ 1000;
5. SyMetric = 1 if R² > 0.9 and sym < 0.05, else 0.

Reading the result: for J symplectic up to scale (J E_k Jᵀ = c E_d), M = c² I and sym = 0;
sym is blind to a global scale of J. What it checks is that J E_k Jᵀ is orthogonal up to
scale, which is weaker than "= c E_d" (a rotation among the q alone passes). In one
degree of freedom every invertible linear map passes: J E Jᵀ = det(J) E for 2 × 2 J.

Standardising is a diagonal map and can break symplecticity in two or more degrees of
freedom: diag(a_q, a_p) is conformally symplectic only if a_{q_i} a_{p_i} is the same
for every i, so true states with σ(q_1) σ(p_1) ≠ σ(q_2) σ(p_2) are scored through a
non-symplectic change of units even for a perfect latent. The reference standardises;
so do we. In one degree of freedom it is harmless (see above).

Checked against the reference (deepmind-research, physics_inspired_models/eval_metric.py
and its experiment's config): the constants below, the strict ``R² > 0.9`` gate after a
``R² < 0.9`` search loop, GridSearchCV with ``explained_variance`` scoring and unshuffled
folds, ``PolynomialFeatures(include_bias=False)``, 1e-6 added to J before forming M,
per-trajectory normalisation, points drawn without replacement. Ours differs where the
reference had no case or a machine-dependent one: latent NaN/±inf are cleaned before
standardising (it cleaned after); fewer than two individually informative latent
dimensions score 0 without a fit (it gated on the number of kept dimensions, always
even, and kept every dimension when no pair was informative); a feature-count cap
replaces its 400-s timeout on the order search (:func:`fit_polynomial`). Its reported
number is the mean of this score over 20 batches of 5 trajectories × 60 steps.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from math import comb
from typing import Any

import numpy as np
import torch

from hgn.utils import UserError

VARIANCE_THRESHOLD = 0.5
"""A latent dimension is informative if its mean posterior variance is below this."""
R2_THRESHOLD = 0.9
SYM_THRESHOLD = 0.05
MAX_ORDER = 5
MAX_DIMS_FOR_POLYNOMIAL = 32
"""Above this many kept latent dimensions only order 1 is tried (feature count explodes)."""
MAX_FEATURES = 10_000
"""An order with more polynomial features than this is not tried (ours, see fit_polynomial)."""
ALPHAS = np.logspace(-4, -0.5, 10)
CV_FOLDS = 2
LASSO_MAX_ITER = 1000
POINTS_PER_TRAJECTORY = 10
WEIGHT_TOLERANCE = 1e-3
"""Coefficients with |c| ≤ this are left out of the Jacobian."""
JACOBIAN_EPS = 1e-6
"""Added to every entry of J before forming M, as in the reference."""
MAX_SYM = 1000.0
LATENT_CLIP = 999_999.0


@dataclass(frozen=True)
class SyMetricResult:
    """The score and what decided it; ``reason`` names the failed gate(s), "" for 1."""

    score: int
    r2: float
    sym: float
    order: int
    kept: int
    reason: str


@dataclass(frozen=True)
class PolynomialFit:
    """Lasso fit of the true state on polynomial features of the latent."""

    coef: np.ndarray  # (2d, F): one row per true-state dimension
    powers: np.ndarray  # (F, k): exponent of each latent dimension in each feature
    r2: float
    order: int


def symplectic_form(dims: int) -> np.ndarray:
    """E = [[0, −I], [I, 0]] for a ``dims``-dimensional phase space laid out [q, p]."""
    half = dims // 2
    eye, zero = np.eye(half), np.zeros((half, half))
    return np.block([[zero, -eye], [eye, zero]])


def informative_mask(var: Any, dims: int) -> tuple[np.ndarray, int]:
    """The kept latent dimensions and the number of individually informative ones.

    A pair (q_i, p_i) is kept whole if either of its dimensions has mean posterior
    variance < 0.5: q and p are one degree of freedom and the map needs both. ``var``
    is ``(2m,)`` or ``(..., 2m)`` (averaged over the leading axes); ``None`` means a
    deterministic model, every dimension informative.
    """
    if var is None:
        return np.ones(dims, dtype=bool), dims
    v = _as_float64(var).reshape(-1, dims).mean(axis=0)
    informative = v < VARIANCE_THRESHOLD
    half = dims // 2
    pair = informative[:half] | informative[half:]
    return np.concatenate([pair, pair]), int(informative.sum())


def standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit (population) standard deviation per column; constant columns → 0."""
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std == 0, 1.0, std)


def fit_polynomial(x: np.ndarray, y: np.ndarray, seed: int = 0) -> PolynomialFit:
    """Lowest polynomial order (1 … 5) whose Lasso fit of ``y`` on ``x`` reaches R² ≥ 0.9.

    α by ``CV_FOLDS``-fold grid search (explained variance, unshuffled folds), then R² of
    the refitted model on all the data, as the reference does: the question is whether a
    simple map exists, not how well it generalises. Returns the last order tried if none
    reaches 0.9. ``seed`` goes to Lasso (it only matters for random coordinate order).

    The reference stops an order whose grid search runs past 400 s and keeps the one
    before; we stop, deterministically, before an order with more than ``MAX_FEATURES``
    features (16 latent dims: order 4 is the last; 32: order 3).
    """
    PolynomialFeatures, Lasso, GridSearchCV, ConvergenceWarning = _sklearn()
    max_order = 1 if x.shape[1] > MAX_DIMS_FOR_POLYNOMIAL else MAX_ORDER
    n_features = [comb(x.shape[1] + order, order) - 1 for order in range(1, max_order + 1)]
    orders = [1] + [o for o in range(2, max_order + 1) if n_features[o - 1] <= MAX_FEATURES]
    for order in orders:
        poly = PolynomialFeatures(order, include_bias=False)
        features = poly.fit_transform(x)
        lasso = Lasso(max_iter=LASSO_MAX_ITER, random_state=seed)
        search = GridSearchCV(
            lasso, {"alpha": ALPHAS}, cv=CV_FOLDS, scoring="explained_variance", refit=True
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            search.fit(features, y)
        r2 = float(search.best_estimator_.score(features, y))
        if r2 >= R2_THRESHOLD:
            break
    coef = np.atleast_2d(search.best_estimator_.coef_)
    return PolynomialFit(coef=coef, powers=poly.powers_, r2=r2, order=order)


def polynomial_jacobian(
    powers: np.ndarray, coef: np.ndarray, x: np.ndarray, tolerance: float = WEIGHT_TOLERANCE
) -> np.ndarray:
    """Analytic Jacobian of y = coef · features(x) at points ``x`` (n, k) → (n, out, k).

    Feature f is ∏_j x_j^{P_fj}; its derivative in x_i is P_fi x_i^{P_fi − 1} ∏_{j≠i}
    x_j^{P_fj}. The product over j ≠ i comes from prefix and suffix cumulative products
    (no division, so exact at x_j = 0). Coefficients with |c| ≤ ``tolerance`` are zeroed
    and features with no coefficient left are skipped.
    """
    coef = np.where(np.abs(coef) > tolerance, coef, 0.0)
    active = np.any(coef != 0, axis=0)
    coef, powers = coef[:, active], powers[active]
    base = x[:, None, :] ** powers  # (n, F, k)
    ones = np.ones_like(base[..., :1])
    before = np.concatenate([ones, np.cumprod(base, axis=2)[..., :-1]], axis=2)
    after = np.concatenate([np.cumprod(base[..., ::-1], axis=2)[..., -2::-1], ones], axis=2)
    own = powers * x[:, None, :] ** np.maximum(powers - 1, 0)
    return np.einsum("of,nfk->nok", coef, own * before * after)


def symplecticity(jacobians: np.ndarray) -> float:
    """ "sym": mean squared deviation from I of M = (J E Jᵀ)(J Eᵀ Jᵀ), normalised.

    ``jacobians`` is ``(trajectories, points, 2d, k)``. Per trajectory, every M is divided
    by the mean over its points of the largest |entry| (left alone if that is 0), which
    makes sym blind to a global scale of J. Capped at 1000; a non-finite value counts
    as 1000.
    """
    j = jacobians + JACOBIAN_EPS
    e = symplectic_form(j.shape[-1])
    jt = np.swapaxes(j, -1, -2)
    m = (j @ e @ jt) @ (j @ e.T @ jt)
    scale = np.abs(m).max(axis=(-2, -1)).mean(axis=1)  # (trajectories,)
    m = m / np.where(scale == 0, 1.0, scale)[:, None, None, None]
    deviation = np.square(m - np.eye(m.shape[-1])).mean(axis=(-2, -1))
    sym = float(deviation.mean())
    return sym if np.isfinite(sym) and sym < MAX_SYM else MAX_SYM


def symetric(z: Any, var: Any, s: Any, seed: int = 0) -> SyMetricResult:
    """SyMetric of latents ``z`` (N, T, 2m) against true states ``s`` (N, T, 2d).

    Both are laid out [q, p]; ``var`` holds the posterior variances, ``(2m,)`` or
    ``(N, T, 2m)``, or ``None`` for a deterministic model. numpy or torch inputs.
    ``seed`` draws the evaluation points (10 per trajectory, without replacement).
    """
    z, s = _as_float64(z), _as_float64(s)
    _check_shapes(z, s)
    keep, informative = informative_mask(var, z.shape[-1])
    kept = int(keep.sum())
    if informative < 2:
        plural = "" if informative == 1 else "s"
        reason = f"only {informative} informative latent dimension{plural}"
        return SyMetricResult(0, 0.0, MAX_SYM, 0, kept, reason)
    n, t = z.shape[:2]
    latent = np.clip(np.nan_to_num(z[..., keep]), -LATENT_CLIP, LATENT_CLIP)
    x = standardise(latent.reshape(n * t, kept))
    y = standardise(s.reshape(n * t, s.shape[-1]))
    fit = fit_polynomial(x, y, seed)
    picks = _evaluation_points(n, t, seed)  # (n, P) time indices
    points = x.reshape(n, t, kept)[np.arange(n)[:, None], picks]
    jac = polynomial_jacobian(fit.powers, fit.coef, points.reshape(-1, kept))
    sym = symplecticity(jac.reshape(n, picks.shape[1], *jac.shape[1:]))
    reasons = []
    if not fit.r2 > R2_THRESHOLD:
        reasons.append(f"R² {fit.r2:.3f} {'<' if fit.r2 < R2_THRESHOLD else '≤'} {R2_THRESHOLD}")
    if not sym < SYM_THRESHOLD:
        reasons.append(f"sym {sym:.3g} ≥ {SYM_THRESHOLD}")
    return SyMetricResult(int(not reasons), fit.r2, sym, fit.order, kept, "; ".join(reasons))


def _evaluation_points(n: int, t: int, seed: int) -> np.ndarray:
    """Per trajectory, ``POINTS_PER_TRAJECTORY`` distinct time indices (all if fewer)."""
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((n, t)), axis=1)[:, :POINTS_PER_TRAJECTORY]


def _as_float64(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _check_shapes(z: np.ndarray, s: np.ndarray) -> None:
    if z.ndim != 3 or s.ndim != 3 or z.shape[:2] != s.shape[:2]:
        raise ValueError(
            f"z and s must be (N, T, 2m) and (N, T, 2d) with the same N, T; got "
            f"{z.shape} and {s.shape}"
        )
    if z.shape[-1] % 2 or s.shape[-1] % 2:
        raise ValueError(
            f"phase spaces are [q, p]: even last dimensions, got {z.shape[-1]}, {s.shape[-1]}"
        )


def _sklearn() -> tuple[Any, Any, Any, Any]:
    """scikit-learn's pieces, imported only when SyMetric runs: it is an optional extra."""
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import Lasso
        from sklearn.model_selection import GridSearchCV
        from sklearn.preprocessing import PolynomialFeatures
    except ImportError:
        raise UserError("SyMetric needs scikit-learn: pip install 'hgn[benchmark]'") from None
    return PolynomialFeatures, Lasso, GridSearchCV, ConvergenceWarning
