"""The physical systems: exact physics, the paper's sampling, faithful pictures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from hgn.physics.systems import BACKGROUND, DM_BACKGROUND, SYSTEMS, get_system
from hgn.utils import UserError

NAMES = list(SYSTEMS)
DT, STEPS = 0.125, 30


def reference(system, q0: np.ndarray, p0: np.ndarray) -> np.ndarray:
    """SciPy DOP853 at tight tolerances on Hamilton's equations: (T+1, 2 dof)."""

    def field(_t: float, y: np.ndarray) -> np.ndarray:
        q, p = torch.from_numpy(y[: system.dof]), torch.from_numpy(y[system.dof :])
        dh_dq, dh_dp = system.grad(q, p)
        return np.concatenate([dh_dp.numpy(), -dh_dq.numpy()])

    times = np.arange(STEPS + 1) * DT
    y0 = np.concatenate([q0, p0])
    sol = solve_ivp(
        field, (0, times[-1]), y0, method="DOP853", rtol=1e-12, atol=1e-12, t_eval=times
    )
    assert sol.success
    return sol.y.T


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_ground_truth_matches_dop853_and_conserves_energy(name: str) -> None:
    """The claim of the data docs: for all four systems, trajectories agree with SciPy's
    DOP853 (rtol = atol = 1e-12) to 1e-6 and conserve energy to 1e-6 relative."""
    system = get_system(name)
    q, p = system.sample_trajectories(4, np.random.default_rng(3), DT, STEPS)
    for k in range(len(q)):
        ref = reference(system, q[k, 0].numpy(), p[k, 0].numpy())
        ours = torch.cat([q[k], p[k]], -1).numpy()
        assert np.abs(ours - ref).max() < 1e-6
    energy = system.hamiltonian(q, p)
    drift = (energy - energy[:, :1]).abs() / energy[:, :1].abs()
    assert drift.max() < 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_analytic_gradients_match_autograd(name: str) -> None:
    system = get_system(name)
    q, p = system.sample_initial(5, np.random.default_rng(0))
    q.requires_grad_(True)
    p.requires_grad_(True)
    auto_q, auto_p = torch.autograd.grad(system.hamiltonian(q, p).sum(), (q, p))
    dh_dq, dh_dp = system.grad(q.detach(), p.detach())
    torch.testing.assert_close(dh_dq, auto_q)
    torch.testing.assert_close(dh_dp, auto_p)


@pytest.mark.parametrize("name", ["mass-spring", "pendulum"])
def test_one_dimensional_states_lie_on_circles_of_radius_r(name: str) -> None:
    system = get_system(name)
    q, p = system.sample_initial(2000, np.random.default_rng(0))
    assert q.shape == p.shape == (2000, 1) and q.dtype == torch.float64
    r = torch.hypot(q, p)
    c = system.constants
    assert r.min() >= c["r_min"] and r.max() <= c["r_max"]
    assert r.min() < c["r_min"] + 0.01 and r.max() > c["r_max"] - 0.01  # uniform over range
    angle = torch.atan2(p, q)
    assert (angle > 0).float().mean().item() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("name", ["two-body", "three-body"])
def test_n_body_states_orbit_their_centre_of_mass(name: str) -> None:
    system = get_system(name)
    q, p = system.sample_initial(500, np.random.default_rng(0))
    bodies = system.bodies
    assert system.dof == 2 * bodies and q.shape == (500, 2 * bodies)
    x = q.view(500, bodies, 2)
    torch.testing.assert_close(p.view(500, bodies, 2).sum(1), torch.zeros(500, 2).double())
    torch.testing.assert_close(x.mean(1), torch.zeros(500, 2).double())
    r = x.norm(dim=-1)
    c = system.constants
    assert (r.min(1).values - r.max(1).values).abs().max() < 1e-12  # a regular polygon
    assert r.min() >= c["r_min"] and r.max() <= c["r_max"]
    energy = system.hamiltonian(q, p)
    assert (energy < 0).all()  # bound orbits


@pytest.mark.parametrize("name", ["two-body", "three-body"])
def test_rejection_keeps_bodies_on_canvas_and_apart(name: str) -> None:
    system = get_system(name)
    q, _ = system.sample_trajectories(64, np.random.default_rng(1), DT, STEPS)
    assert q.shape == (64, STEPS + 1, system.dof)
    info = system.render_info()
    assert q.abs().max() <= info["extent"] - info["radius"]
    x = q.view(64, STEPS + 1, system.bodies, 2)
    gaps = (x[:, :, :, None] - x[:, :, None]).norm(dim=-1)
    gaps = gaps + torch.eye(system.bodies) * 1e9
    c = system.constants
    assert gaps.min() >= c["min_distance"] * c["r_min"]


def test_sampling_is_reproducible_from_the_generator() -> None:
    system = get_system("three-body")
    a = system.sample_trajectories(10, np.random.default_rng(7), DT, 5)
    b = system.sample_trajectories(10, np.random.default_rng(7), DT, 5)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_impossible_rejection_sampling_is_a_user_error() -> None:
    system = get_system("three-body", min_distance=100.0)  # no trajectory qualifies
    with pytest.raises(UserError, match="stay on the canvas"):
        system.sample_trajectories(4, np.random.default_rng(0), DT, 2)


@pytest.mark.parametrize("name", NAMES)
def test_render_16px_frames_have_background_and_body_colours(name: str) -> None:
    system = get_system(name)
    q, _ = system.sample_trajectories(3, np.random.default_rng(0), DT, 4)
    frames = system.render(q.numpy(), 16)
    assert isinstance(frames, np.ndarray) and frames.dtype == np.uint8
    assert frames.shape == (3, 5, 16, 16, 3)
    background = np.round(np.array(BACKGROUND) * 255).astype(np.uint8)
    corner = frames[..., 0, 0, :].reshape(-1, 3)
    assert (corner == background).all()
    # every body shows up: some pixel is within a few levels of each body's colour
    for colour in system.render_info()["colours"]:
        target = np.array(colour) * 255
        closest = np.abs(frames.reshape(-1, 3) - target).max(-1).min()
        assert closest <= 40
    # the tensor path gives the same pixels
    assert torch.equal(system.render(q, 16), torch.from_numpy(frames))


def test_pendulum_bob_hangs_below_the_pivot_and_swings_right() -> None:
    system = get_system("pendulum")
    size = 32
    down, right = system.render(np.array([[0.0], [math.pi / 2]]), size)
    red = np.array(system.render_info()["colours"][0]) * 255

    def centre(frame: np.ndarray) -> tuple[float, float]:
        weight = (np.abs(frame - red).max(-1) < 60).astype(float)
        rows, cols = np.nonzero(weight)
        return rows.mean(), cols.mean()

    extent = system.render_info()["extent"]
    row, col = centre(down)
    assert col == pytest.approx(size / 2 - 0.5, abs=0.5)  # straight below the centre
    assert row == pytest.approx((extent + 1.0) / (2 * extent) * size - 0.5, abs=0.5)
    row, col = centre(right)
    assert row == pytest.approx(size / 2 - 0.5, abs=0.5)
    assert col == pytest.approx((extent + 1.0) / (2 * extent) * size - 0.5, abs=0.5)


def test_discs_are_anti_aliased_and_all_mass_spring_positions_fit() -> None:
    system = get_system("mass-spring")
    frames = system.render(np.linspace(-1.0, 1.0, 7)[:, None] + 0.013, 64)
    background = np.round(np.array(BACKGROUND) * 255)
    blue = np.array(system.render_info()["colours"][0]) * 255
    levels = frames.reshape(-1, 3).astype(float)
    full = np.abs(levels - blue).max(-1) < 1
    empty = np.abs(levels - background).max(-1) < 1
    partial = ~full & ~empty
    assert full.any() and partial.any()
    # a disc's area in pixels: full + partial coverage adds up to about pi r^2 per frame
    coverage = ((levels - background) / (blue - background)).mean(-1).reshape(7, -1).sum(-1)
    radius_px = system.render_info()["radius"] * 64 / (2 * system.render_info()["extent"])
    np.testing.assert_allclose(coverage, math.pi * radius_px**2, rtol=0.03)


def test_longer_pendulum_keeps_its_picture_but_swings_slower() -> None:
    """q'' = -(2g/l) sin q: four times the length is exactly half the speed."""
    short, long = get_system("pendulum"), get_system("pendulum", l=4.0)
    assert long.render_info()["extent"] == 4 * short.render_info()["extent"]
    q = np.array([[0.7]])
    assert np.array_equal(short.render(q, 32), long.render(q, 32))
    q0, p0 = short.sample_initial(3, np.random.default_rng(0))
    qs_short, _ = short.simulate(q0, p0, DT, 10)
    qs_long, _ = long.simulate(q0, p0 * 8.0, DT, 20)  # p = m l² dq/dt at half the speed
    torch.testing.assert_close(qs_long[:, ::2], qs_short, atol=1e-6, rtol=0)


def test_size_too_small_names_the_minimum() -> None:
    for name in NAMES:
        system = get_system(name)
        assert system.min_size <= 16
        system.render(np.zeros((1, system.dof)), system.min_size)
        with pytest.raises(UserError, match=f"minimum is {system.min_size}"):
            system.render(np.zeros((1, system.dof)), system.min_size - 1)


def test_unknown_names_and_bad_constants_are_user_errors() -> None:
    with pytest.raises(UserError, match=r"unknown system 'pendulumm'.*mass-spring"):
        get_system("pendulumm")
    with pytest.raises(UserError, match=r"unknown constant.*length.*valid: g, m, l"):
        get_system("pendulum", length=2)
    with pytest.raises(UserError, match="must be positive"):
        get_system("mass-spring", k=0)
    with pytest.raises(UserError, match="r_min"):
        get_system("two-body", r_min=2.0, r_max=1.0)
    with pytest.raises(UserError, match="noise"):
        get_system("pendulum", noise=-0.1)
    assert get_system("pendulum", noise=0).noise == 0


def reference_field(system, q0: np.ndarray, p0: np.ndarray, steps: int = STEPS) -> np.ndarray:
    """DOP853 on the system's own equations of motion, friction included, with the
    constants of a bound one-trajectory system: (T+1, 2 dof)."""

    def field(_t: float, y: np.ndarray) -> np.ndarray:
        q = torch.from_numpy(y[: system.dof])[None]
        p = torch.from_numpy(y[system.dof :])[None]
        dh_dq, dh_dp = system.grad(q, p)
        friction = system.constants["friction"]
        return np.concatenate([dh_dp[0].numpy(), -(dh_dq + friction * dh_dp)[0].numpy()])

    times = np.arange(steps + 1) * DT
    sol = solve_ivp(
        field,
        (0, times[-1]),
        np.concatenate([q0, p0]),
        "DOP853",
        rtol=1e-12,
        atol=1e-12,
        t_eval=times,
    )
    assert sol.success
    return sol.y.T


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("double-pendulum", {}),
        ("pendulum", {"friction": 0.05}),
        ("double-pendulum", {"friction": 0.05}),
        ("two-body", {"friction": 0.05}),
        ("pendulum", {"vary": {"m": (0.5, 1.5), "l": (0.5, 1.0), "g": (3.0, 4.0)}}),
        ("mass-spring", {"vary": {"k": (1.0, 3.0), "m": (0.3, 0.7)}}),
        ("double-pendulum", {"vary": {"m2": (0.4, 0.6), "l1": (0.8, 1.2)}}),
        ("two-body", {"vary": {"m": (0.5, 1.5), "g": (0.5, 1.5)}}),
    ],
)
def test_new_systems_and_variants_match_dop853(name: str, settings: dict) -> None:
    """Every new system and variant, trajectory by trajectory with its own constants,
    against SciPy's DOP853 at rtol = atol = 1e-12."""
    system = get_system(name, **settings)
    q, p, values = system.sample_with_variant(4, np.random.default_rng(5), DT, STEPS)
    assert set(values) == set(settings.get("vary", {}))
    for k in range(len(q)):
        one = system.bind({key: v[k : k + 1] for key, v in values.items()})
        ref = reference_field(one, q[k, 0].numpy(), p[k, 0].numpy())
        assert np.abs(torch.cat([q[k], p[k]], -1).numpy() - ref).max() < 1e-6
    energy = system.bind(values).hamiltonian(q, p)
    if settings.get("friction"):  # damped: energy falls, it is not Hamiltonian
        assert (energy[:, -1] < energy[:, 0]).all()
    else:
        drift = (energy - energy[:, :1]).abs() / energy[:, :1].abs()
        assert drift.max() < 1e-6


def test_double_pendulum_picture_and_gradient() -> None:
    system = get_system("double-pendulum")
    q = torch.tensor([[0.0, 0.0], [math.pi / 2, math.pi / 2]], dtype=torch.float64)
    pos = system.positions(q)
    torch.testing.assert_close(
        pos[0], torch.tensor([[0.0, -1.0], [0.0, -2.0]], dtype=torch.float64)
    )
    torch.testing.assert_close(pos[1], torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64))
    frames = system.render(q.numpy(), 32)
    assert frames.shape == (2, 32, 32, 3)
    info = system.render_info()
    assert info["extent"] >= 2.0 + info["radius"]  # both bobs always on the canvas


def test_random_colours_offsets_and_dm_style() -> None:
    system = get_system("two-body", random_colours=True, offset=0.3, style="dm")
    rng = np.random.default_rng(2)
    q, _, values = system.sample_with_variant(6, rng, DT, 4)
    assert values["colours"].shape == (6, 2, 3) and values["shift"].shape == (6, 2)
    assert values["shift"].abs().max() <= 0.3
    frames = system.bind(values).render(q, 32)
    background = np.round(np.array(DM_BACKGROUND) * 255)
    assert (frames[:, :, 0, 0].numpy() == background).all()
    for k in range(6):  # each trajectory shows its own colours
        for colour in values["colours"][k].numpy():
            gap = np.abs(frames[k].numpy().reshape(-1, 3) - colour * 255).max(-1).min()
            assert gap <= 40
    # a shift moves the whole picture: the same state, shifted by exactly 8 pixels
    plain = get_system("mass-spring", offset=1.0)
    extent = plain.render_info()["extent"]
    shift = torch.tensor([[8 * 2 * extent / 64, 0.0]], dtype=torch.float64)  # 0.625: exact
    base = plain.bind({"shift": torch.zeros(1, 2, dtype=torch.float64)}).render(
        torch.zeros(1, 1, 1, dtype=torch.float64), 64
    )
    moved = plain.bind({"shift": shift}).render(torch.zeros(1, 1, 1, dtype=torch.float64), 64)
    assert torch.equal(base[0, 0, :, :-8], moved[0, 0, :, 8:])


def test_dm_style_radius_follows_the_mass() -> None:
    light = get_system("pendulum", style="dm", m=0.5)
    heavy = get_system("pendulum", style="dm", m=1.5)
    assert heavy.render_info()["radius"] == pytest.approx(math.sqrt(1.5 / math.pi))
    q = np.zeros((1, 1))
    area = [
        (
            np.abs(s.render(q, 64).astype(int) - np.round(np.array(DM_BACKGROUND) * 255)).sum(-1)
            > 30
        ).sum()
        for s in (light, heavy)
    ]
    scale = [64 / (2 * s.render_info()["extent"]) for s in (light, heavy)]
    ratio = (area[1] / scale[1] ** 2) / (area[0] / scale[0] ** 2)
    assert ratio == pytest.approx(3.0, rel=0.15)  # area ∝ r² ∝ m
