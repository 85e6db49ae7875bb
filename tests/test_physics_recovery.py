"""Reading physics back from pixels: body positions from rendered frames of every
built-in system, the true-energy spread of recovered motion, body counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hgn.evaluation import physics
from hgn.physics.systems import BACKGROUND, PALETTE, SYSTEMS, get_system

torch.set_num_threads(1)

DT = 0.125


def trajectories(name: str, n: int = 6, steps: int = 20) -> tuple[object, torch.Tensor]:
    system = get_system(name)
    q, _ = system.sample_trajectories(n, np.random.default_rng(7), DT, steps)
    return system, q


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_positions_recovered_to_sub_pixel(name: str) -> None:
    """Every body of every built-in system is found, at its true position within a
    small fraction of a pixel, on frames as the dataset renders them."""
    system, q = trajectories(name)
    rec = physics.recover(system.render(q, 32), system)
    error_px = physics.position_rms(rec.bodies(), physics.true_positions(system, q))
    error_px = error_px * rec.canvas.scale
    assert error_px.mean() < 0.06
    assert error_px.max() < 0.5
    assert rec.right_count().all()
    own = list(rec.canvas.own)
    np.testing.assert_allclose(rec.mass[..., own], 1.0, atol=0.1)


def test_recovery_reads_floats_and_uint8_alike_and_keeps_leading_axes() -> None:
    system, q = trajectories("two-body", n=2, steps=3)
    frames = system.render(q.numpy(), 32)  # (2, 4, 32, 32, 3) uint8
    a = physics.recover(frames, system)
    b = physics.recover(torch.from_numpy(frames).float() / 255.0, system)
    assert a.positions.shape == (2, 4, len(PALETTE), 2)
    assert a.bodies().shape == (2, 4, 2, 2)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)


def test_blank_blurred_and_extra_bodies_are_not_counted_right() -> None:
    """The body count fails for an empty canvas, a disc smeared over the frame, a
    faint disc and a disc of a colour the system does not have."""
    system, q = trajectories("mass-spring", n=1, steps=1)
    good = system.render(q[0, :1].numpy(), 32).astype(np.float32) / 255.0  # (1, 32, 32, 3)
    background = np.broadcast_to(np.asarray(BACKGROUND, np.float32), good.shape)
    faint = background + 0.3 * (good - background)
    smeared = background + (good - background).mean((1, 2), keepdims=True) * 4.0
    intruder = get_system("pendulum").render(np.zeros((1, 1)), 32).astype(np.float32) / 255.0
    extra = np.minimum(good, intruder)  # blue disc plus a red one
    frames = np.concatenate([good, background, faint, smeared, extra])
    right = physics.recover(frames, system).right_count()
    assert right.tolist() == [True, False, False, False, False]


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_true_energy_of_recovered_ground_truth_is_nearly_constant(name: str) -> None:
    """Recovered positions + finite-difference momenta give the system's energy with a
    small spread on clean ground truth (the reference a sample is held to); from the
    exact states the spread is only the finite-difference error."""
    system, q = trajectories(name, n=8, steps=30)
    exact = physics.relative_spread(physics.energy_along(system, q.numpy(), DT))
    assert np.median(exact) < 0.02
    scores = physics.sequence_physics(system.render(q, 32), system, DT)
    assert scores["energy_spread_median"] < 0.15
    assert scores["right_body_count_fraction"] == 1.0


def test_positions_to_q_inverts_positions() -> None:
    for name in SYSTEMS:
        system, q = trajectories(name, n=3, steps=4)
        back = physics.positions_to_q(system, physics.true_positions(system, q))
        np.testing.assert_allclose(back, q.numpy(), atol=1e-9)


def test_a_wrong_motion_has_a_larger_energy_spread() -> None:
    """Frames of a mass-spring whose time runs unevenly (a physically impossible
    motion) score a far larger true-energy spread than the real ones."""
    system, q = trajectories("mass-spring", n=8, steps=30)
    real = physics.sequence_physics(system.render(q, 32), system, DT)
    warped = q[:, (np.linspace(0, 1, 31) ** 2 * 30).round().astype(int)]
    fake = physics.sequence_physics(system.render(warped, 32), system, DT)
    ratio = fake["energy_spread_median"] / real["energy_spread_median"]
    assert ratio > 4


@pytest.mark.parametrize("name", ["pendulum", "double-pendulum", "three-body"])
def test_positions_recovered_in_the_suites_picture_style(name: str) -> None:
    """The DeepMind suite's style (dark background, hue colours, sigmoid edges) reads
    back as well: the unmixing basis is the system's own colours."""
    system = get_system(name, style="dm")
    q, _ = system.sample_trajectories(4, np.random.default_rng(1), DT, 10)
    rec = physics.recover(system.render(q.numpy(), 32), system)
    error_px = physics.position_rms(rec.bodies(), physics.true_positions(system, q))
    assert (error_px * rec.canvas.scale).mean() < 0.1
    assert rec.right_count().mean() > 0.95
