"""SyMetric: known answers (hgn/evaluation/symetric.py).

Most tests build the true states ``s`` *whitened*: over all points every coordinate has
mean 0, standard deviation 1 and no correlation with another (sample statistics, exact).
Then the standardisation step is the identity on ``s``, and a linear latent z = A s has
per-dimension standard deviations σ_z = sqrt(diag(A Aᵀ)) exactly, so the map that the
Lasso should find from standardised latents to the true state is J = A⁻¹ diag(σ_z),
and the expected "sym" follows from J in a few lines of matrix algebra (:func:`_sym_of`).
Without whitening, sample spreads that differ by a few per cent would make the
standardisation itself slightly non-symplectic in two degrees of freedom (σ(q₁)σ(p₁) ≠
σ(q₂)σ(p₂)), and the answer would be "small" rather than known.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from sklearn.preprocessing import PolynomialFeatures

import hgn.evaluation.symetric as symetric_module
from hgn.evaluation.symetric import (
    MAX_SYM,
    SyMetricResult,
    informative_mask,
    polynomial_jacobian,
    symetric,
    symplectic_form,
    symplecticity,
)
from hgn.utils import UserError

N, T = 5, 60  # the reference's batch: 5 trajectories of 60 steps


def _whitened(dims: int, n: int = N, t: int = T, seed: int = 0) -> np.ndarray:
    """(n, t, dims) Gaussian points with sample mean 0 and sample covariance exactly I."""
    x = np.random.default_rng(seed).normal(size=(n * t, dims))
    x -= x.mean(axis=0)
    chol = np.linalg.cholesky(x.T @ x / len(x))
    return np.linalg.solve(chol, x.T).T.reshape(n, t, dims)


def _sym_of(j: np.ndarray) -> float:
    """sym of one constant Jacobian, computed directly from the definition (no eps)."""
    e_in = symplectic_form(j.shape[1])
    m = (j @ e_in @ j.T) @ (j @ e_in.T @ j.T)
    m = m / np.abs(m).max()
    return float(np.mean((m - np.eye(len(m))) ** 2))


def _rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def _linear_case(
    a: np.ndarray, spread: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """True states s = w diag(spread) (w whitened), latents z = A s, and the expected sym.

    Standardising s gives w exactly, and z's standard deviations are exactly
    σ_z = sqrt(diag(A diag(spread²) Aᵀ)), so the map from standardised z to standardised s
    is J = diag(1 / spread) A⁻¹ diag(σ_z).
    """
    spread = np.ones(len(a)) if spread is None else spread
    s = _whitened(len(a)) * spread
    sigma_z = np.sqrt(np.diag(a @ np.diag(spread**2) @ a.T))
    return s, s @ a.T, _sym_of(np.diag(1 / spread) @ np.linalg.inv(a) @ np.diag(sigma_z))


def _mixing_symplectic() -> np.ndarray:
    """A = [[X, −Y], [Y, X]] with X + iY unitary: symplectic and orthogonal, and it mixes
    both degrees of freedom."""
    phase, r = 0.4, _rotation(1.1)
    x, y = np.cos(phase) * r, np.sin(phase) * r
    return np.block([[x, -y], [y, x]])


def test_rotation_in_one_degree_of_freedom_scores_one() -> None:
    s, z, expected = _linear_case(_rotation(0.7))
    assert expected < 1e-20
    result = symetric(z, np.full(2, 0.01), s, seed=1)
    assert result == SyMetricResult(1, result.r2, result.sym, 1, 2, "")
    assert result.r2 > 0.999 and result.sym < 1e-9


def test_symplectic_scaling_with_uninformative_pair_dropped() -> None:
    """(q, p) → (a q, p / a) in latent pair 0; pair 1 is noise with posterior variance 1.

    The variance filter drops pair 1 (both its variances ≥ 0.5), the map is symplectic,
    and the posterior variances given per point (N, T, 2m) are averaged first.
    """
    s = _whitened(2)
    noise = np.random.default_rng(5).normal(size=(N, T, 2))
    a = 3.0
    z = np.stack([a * s[..., 0], noise[..., 0], s[..., 1] / a, noise[..., 1]], axis=-1)
    var = np.broadcast_to(np.array([0.01, 1.0, 0.01, 1.0]), (N, T, 4))
    result = symetric(torch.as_tensor(z), torch.as_tensor(var.copy()), s)
    assert (result.score, result.kept, result.order, result.reason) == (1, 2, 1, "")
    assert result.sym < 1e-9


def test_any_invertible_linear_map_passes_in_one_degree_of_freedom() -> None:
    """(q, p) → (2 q, p) is not symplectic, yet scores 1, and must.

    For 2 × 2 J, J E Jᵀ = det(J) E: every invertible linear map of one degree of freedom
    is symplectic up to scale, and sym ignores scale. (Standardising the latent would
    undo this particular scaling anyway.) A non-symplectic linear map needs d ≥ 2.
    """
    s, z, expected = _linear_case(np.diag([2.0, 1.0]))
    assert expected < 1e-20
    result = symetric(z, None, s)
    assert result.score == 1 and result.sym < 1e-9


def test_orthogonal_symplectic_map_in_two_degrees_of_freedom_scores_one() -> None:
    """With equal spreads, σ_z = 1 everywhere, J = A⁻¹ = Aᵀ: expected sym 0."""
    a = _mixing_symplectic()
    np.testing.assert_allclose(a.T @ symplectic_form(4) @ a, symplectic_form(4), atol=1e-12)
    s, z, expected = _linear_case(a)
    assert expected < 1e-20
    result = symetric(z, np.full(4, 0.1), s)
    assert (result.score, result.order, result.kept) == (1, 1, 4)
    assert result.sym < 1e-6


def test_unequal_spreads_make_a_symplectic_latent_fail_after_standardising() -> None:
    """The same symplectic A, true q₂ spread 3 times wider than the rest.

    Standardising is diagonal, and diag(a) is symplectic up to scale only if
    a_{q_i} a_{p_i} is the same for every i: here σ(q₁)σ(p₁) = 1 ≠ 3 = σ(q₂)σ(p₂), so a
    perfect latent is scored through a non-symplectic change of units. Its sym is exact
    (:func:`_linear_case`) and above the 0.05 gate: the reference's recipe, followed.
    """
    s, z, expected = _linear_case(_mixing_symplectic(), spread=np.array([1.0, 3.0, 1.0, 1.0]))
    assert expected > 0.05
    result = symetric(z, None, s)
    assert result.score == 0 and result.r2 > 0.999
    assert result.sym == pytest.approx(expected, rel=1e-3)


def test_shear_among_positions_is_not_symplectic_in_two_degrees_of_freedom() -> None:
    """z_q = S q with S = [[1, 2], [0, 1]], z_p = p. Symplectic would need z_p = S⁻ᵀ p.

    J = A⁻¹ diag(σ_z) is constant, so sym is exactly :func:`_sym_of` (up to the Lasso's
    shrinkage of the coefficients, of relative size ~α = 1e-4).
    """
    shear = np.array([[1.0, 2.0], [0.0, 1.0]])
    a = np.block([[shear, np.zeros((2, 2))], [np.zeros((2, 2)), np.eye(2)]])
    s, z, expected = _linear_case(a)
    assert expected > 0.05
    result = symetric(z, None, s)
    assert result.score == 0 and result.r2 > 0.999 and result.order == 1
    assert result.sym == pytest.approx(expected, rel=1e-3)
    assert result.reason == f"sym {result.sym:.3g} ≥ 0.05"


def test_nonlinear_symplectic_shear_needs_order_two_and_scores_one() -> None:
    """True state (q, p) = (z_q, z_p + z_q²) of a whitened Gaussian latent z.

    Order 1 cannot reach R² 0.9: z_q² is uncorrelated with z (odd moments of a centred
    Gaussian vanish), so R² is ≈ 1 for q and ≈ 1 / (1 + var z_q²) = 1/3 for p, mean ≈ 2/3.
    Order 2 fits exactly. J = diag(1/σ_q, 1/σ_p) [[1, 0], [2 z_q, 1]] has constant
    determinant (standardising the true state is diagonal, harmless in one degree of
    freedom), so M is the same multiple of I at every point: sym 0, score 1.
    """
    z = _whitened(2, seed=3)
    s = np.stack([z[..., 0], z[..., 1] + z[..., 0] ** 2], axis=-1)
    result = symetric(z, None, s)
    assert (result.score, result.order, result.reason) == (1, 2, "")
    assert result.r2 > 0.999 and result.sym < 1e-4


def test_nonlinear_non_symplectic_map_has_the_exact_sym() -> None:
    """True state (q, p) = (z_q, z_p (1 + z_q)): det J ∝ 1 + z_q varies from point to point.

    Order 1 reaches R² ≈ (1 + 1/2) / 2 (z_q z_p is uncorrelated with z), order 2 is exact.
    With T = 10 every point of a trajectory is an evaluation point, and for 2 × 2 J,
    M = det(J)² I, so with r = det² / (mean of det² over the trajectory) the expected
    sym is the mean over all points of (r − 1)² / 2, standardisation scales cancelling.
    """
    z = _whitened(2, n=30, t=10, seed=4)
    s = np.stack([z[..., 0], z[..., 1] * (1 + z[..., 0])], axis=-1)
    det2 = (1 + z[..., 0]) ** 2
    r = det2 / det2.mean(axis=1, keepdims=True)
    expected = float(np.mean((r - 1) ** 2 / 2))
    result = symetric(z, None, s)
    assert (result.score, result.order) == (0, 2) and result.r2 > 0.999
    assert result.sym == pytest.approx(expected, rel=1e-2)
    assert result.reason.startswith("sym ")


def test_noise_latents_fail_on_r2() -> None:
    s = _whitened(2)
    z = np.random.default_rng(9).normal(size=(N, T, 2))
    result = symetric(z, None, s)
    assert result.score == 0 and result.order == 5 and result.r2 < 0.9
    assert result.reason.startswith(f"R² {result.r2:.3f} < 0.9")


def test_order_search_stops_before_too_many_features(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two latent dims give 2, 5, 9, 14, 20 features at orders 1-5: a cap of 9 stops at 3."""
    monkeypatch.setattr(symetric_module, "MAX_FEATURES", 9)
    s = _whitened(2)
    z = np.random.default_rng(9).normal(size=(N, T, 2))
    assert symetric(z, None, s).order == 3


def test_fewer_than_two_informative_dimensions_score_zero_without_a_fit() -> None:
    s = _whitened(2)
    z = s.copy()
    one = symetric(z, np.array([0.1, 0.9]), s)
    assert one == SyMetricResult(0, 0.0, MAX_SYM, 0, 2, "only 1 informative latent dimension")
    none = symetric(z, np.array([0.9, 0.9]), s)
    assert none.score == 0 and none.kept == 0
    assert none.reason == "only 0 informative latent dimensions"


def test_informative_mask_keeps_whole_pairs() -> None:
    """Layout [q₀ q₁ q₂, p₀ p₁ p₂]: pair 0 both informative, pair 1 only p, pair 2 neither."""
    keep, informative = informative_mask(np.array([0.1, 0.9, 0.7, 0.2, 0.3, 0.6]), 6)
    assert keep.tolist() == [True, True, False, True, True, False] and informative == 3
    keep, informative = informative_mask(None, 4)
    assert keep.all() and informative == 4


def test_polynomial_jacobian_matches_finite_differences_and_drops_small_weights() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3))
    x[0] = 0.0  # 0⁰ = 1 and no division by zero
    powers = PolynomialFeatures(4, include_bias=False).fit(x).powers_
    coef = rng.normal(size=(2, len(powers)))
    coef[:, 5] = 5e-4  # at or below the 1e-3 tolerance: ignored

    def f(points: np.ndarray) -> np.ndarray:
        kept = np.where(np.abs(coef) > 1e-3, coef, 0.0)
        return np.prod(points[:, None, :] ** powers, axis=2) @ kept.T

    h = 1e-6
    numeric = np.stack(
        [(f(x + h * np.eye(3)[i]) - f(x - h * np.eye(3)[i])) / (2 * h) for i in range(3)], -1
    )
    jac = polynomial_jacobian(powers, coef, x)
    assert jac.shape == (6, 2, 3)
    np.testing.assert_allclose(jac, numeric, atol=1e-6)


def test_symplecticity_known_values() -> None:
    """One trajectory, two points with det J = 1 and 2: M = I and 4 I, normaliser
    (1 + 4) / 2, so M becomes 0.4 I and 1.6 I: sym = (2 · 0.36 / 4 + 2 · 0.36 / 4) / 2."""
    jac = np.stack([np.eye(2), np.diag([2.0, 1.0])])[None]
    assert symplecticity(jac) == pytest.approx(0.18, abs=1e-5)
    rotation = np.stack([7.0 * _rotation(0.3), 7.0 * _rotation(1.3)])[None]
    assert symplecticity(rotation) < 1e-10  # symplectic up to a scale: 0
    assert symplecticity(np.full((1, 2, 2, 2), np.nan)) == MAX_SYM


def test_bad_shapes_are_rejected() -> None:
    s = _whitened(2)
    with pytest.raises(ValueError):
        symetric(s[:, :10], None, s)
    with pytest.raises(ValueError):
        symetric(np.zeros((N, T, 3)), None, s)


def test_without_scikit_learn_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)
    s = _whitened(2)
    with pytest.raises(UserError, match=r"pip install 'hgn\[benchmark\]'"):
        symetric(s, None, s)
