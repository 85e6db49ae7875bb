"""Reading physics back from pixels: body positions from rendered frames of every
built-in system, the true-energy spread of recovered motion, body counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import TINY_HGNPP

from hgn import runs
from hgn.evaluation import physics
from hgn.physics.systems import BACKGROUND, PALETTE, SYSTEMS, get_system

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


def synthetic_energies(
    levels: np.ndarray, noise: float = 0.01, steps: int = 60, seed: int = 0
) -> np.ndarray:
    """Energies ``(N, steps)`` around each level with a drift that, like the recovery
    from pixels, grows only as √level: relative spread falls as the level rises."""
    rng = np.random.default_rng(seed)
    return levels[:, None] + noise * np.sqrt(levels)[:, None] * rng.standard_normal(
        (len(levels), steps)
    )


def test_matched_spread_ratio_compares_like_with_like() -> None:
    """The energy-matched ratio is 1 for sequences as well conserved as the data at
    their own energy, whatever energies they have (where the ratio of median
    std / |mean| is not: low-energy sequences look worse by it), scales with the drift,
    and is unchanged by adding a constant to H (the zero of the potential energy is
    arbitrary) or by H's units."""
    rng = np.random.default_rng(1)
    truth = synthetic_energies(rng.uniform(0.1, 1.0, 64), seed=2)
    low = synthetic_energies(rng.uniform(0.1, 0.3, 64), seed=3)  # physical, little energy
    matched = physics.matched_spread_ratios(low, truth)
    assert 0.8 < np.median(matched) < 1.25
    naive = np.median(physics.relative_spread(low)) / np.median(physics.relative_spread(truth))
    assert naive > 1.4
    worse = synthetic_energies(rng.uniform(0.1, 0.3, 64), noise=0.03, seed=4)
    assert 2.4 < np.median(physics.matched_spread_ratios(worse, truth)) < 3.75
    for scale, shift in [(1.0, -5.0), (7.0, 0.0), (0.01, 123.0)]:
        np.testing.assert_allclose(
            physics.matched_spread_ratios(scale * low + shift, scale * truth + shift),
            matched,
            rtol=1e-6,
        )
    assert not np.allclose(physics.relative_spread(low - 0.5), physics.relative_spread(low))


def test_samples_of_the_data_score_as_the_data() -> None:
    """Two sets of rendered ground-truth sequences from the same simulator, one read as
    'samples': both ratios near 1, every body found, energies inside the data's."""
    system = get_system("mass-spring")
    q, _ = system.sample_trajectories(48, np.random.default_rng(11), DT, 30)
    frames = system.render(q, 32)
    result = physics.samples_physics(frames[:16], frames[16:], system, DT)
    assert 0.6 < result["energy_matched_ratio"] < 1.6
    assert 0.5 < result["energy_spread_ratio"] < 2.0
    assert result["samples"]["right_body_count_fraction"] == 1.0
    assert result["energy_outside_data_fraction"] <= 0.1
    assert "energy" not in result["samples"]  # arrays stay out of metrics.json
    assert "matched energy" in physics.samples_markdown({**result, "seed": 0, "steps": 30})


def test_sequences_with_undefined_energy_are_counted_not_averaged(monkeypatch) -> None:
    """Where read-back bodies coincide the true H is infinite (1/r at r = 0): those
    sequences are counted as undefined and the spreads are those of the rest, without
    numpy's inf - inf warnings; with none left, the statistics are NaN (n/a)."""
    system = get_system("mass-spring")
    q, _ = system.sample_trajectories(8, np.random.default_rng(3), DT, 12)  # 11 energies each
    frames = system.render(q, 32)
    real = physics.energy_along

    def with_collisions(system_, q_, dt):  # two sampled sequences "collide"
        energy = real(system_, q_, dt)
        if len(energy) == 4:  # the samples; the ground truth has 4 sequences more
            energy[:2, 3] = np.inf
        return energy

    monkeypatch.setattr(physics, "energy_along", with_collisions)
    with np.errstate(all="raise"):
        result = physics.samples_physics(frames[:4], frames[:8], system, DT)
    assert result["samples"]["energy_defined_fraction"] == 0.5
    assert result["ground_truth"]["energy_defined_fraction"] == 1.0
    assert np.isfinite(result["energy_spread_ratio"]) and result["samples"]["sequences"] == 4
    text = physics.samples_markdown({**result, "seed": 0, "steps": 12})
    assert "undefined" in text and "50 % of the sampled" in text
    monkeypatch.setattr(physics, "energy_along", lambda s_, q_, dt: np.full((len(q_), 11), np.inf))
    none_left = physics.samples_physics(frames[:4], frames[4:], system, DT)
    assert np.isnan(none_left["energy_matched_ratio"])
    assert np.isnan(none_left["samples"]["energy_spread_median"])
    assert "drifts n/a×" in physics.samples_markdown({**none_left, "seed": 0, "steps": 12})


class FakeSplit:
    """What :func:`runs.fit_sampler` reads of a split: channels-last uint8 images."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)


def test_fit_sampler_fits_hgnpp_to_its_training_sequences_once() -> None:
    from hgn.models import MODELS

    torch.manual_seed(0)
    model = MODELS["hgn++"](TINY_HGNPP).eval()
    images = np.random.default_rng(0).integers(0, 256, (10, 6, 16, 16, 3), dtype=np.uint8)
    assert runs.fit_sampler(model, FakeSplit(images[:, :, :8, :8])) == 0  # another size
    assert runs.fit_sampler(model, FakeSplit(images), n=7, batch=3) == 7
    frames = torch.from_numpy(images[:7]).permute(0, 1, 4, 2, 3).float() / 255.0
    torch.testing.assert_close(model.posterior_means, model.posterior(frames)[0])
    assert runs.fit_sampler(model, FakeSplit(images)) == 0  # already fitted: kept
    assert len(model.posterior_means) == 7
    hnn = MODELS["hnn"]({"image_size": 16, "dof": 1})
    assert runs.fit_sampler(hnn, FakeSplit(images)) == 0  # a model without a sampler
    assert runs.training_split({}) is None
    assert runs.training_split({"trained_on": {"path": "/no/such/data"}}) is None
