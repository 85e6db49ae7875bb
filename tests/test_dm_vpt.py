"""DeepMind's valid prediction time: known answers (hgn/evaluation/dm_vpt.py)."""

from __future__ import annotations

import pytest
import torch

from hgn.evaluation.dm_vpt import (
    CAVEAT,
    THRESHOLD,
    dm_vpt,
    normalized_errors,
    valid_prediction_time,
)


def _frames(b: int = 3, t: int = 8, value: float | None = None) -> torch.Tensor:
    """``(B, T, C, H, W)`` frames: random in [0.2, 1], or a constant ``value``."""
    if value is not None:
        return torch.full((b, t, 3, 4, 5), value, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    return 0.2 + 0.8 * torch.rand(b, t, 3, 4, 5, generator=g, dtype=torch.float64)


def test_shapes_and_dtypes() -> None:
    truth = _frames(b=4, t=6)
    assert normalized_errors(truth, truth).shape == (4, 6)
    vpt = valid_prediction_time(truth, truth)
    assert vpt.shape == (4,) and vpt.dtype == torch.int64
    with pytest.raises(ValueError):
        normalized_errors(truth, truth[:, :5])
    with pytest.raises(ValueError):
        normalized_errors(truth[0], truth[0])


def test_perfect_prediction_is_valid_for_the_whole_length() -> None:
    truth = _frames(t=9)
    assert normalized_errors(truth, truth).eq(0).all()
    assert valid_prediction_time(truth, truth).tolist() == [9, 9, 9]


def test_ratio_of_a_scaled_prediction() -> None:
    """x̂ = 1.1 x: (x − x̂)² = 0.01 x² pixel by pixel, so the ratio is 0.01 on every frame."""
    truth = _frames()
    ratio = normalized_errors(truth, 1.1 * truth)
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.01))


def test_constant_offset_on_both_sides_of_the_threshold() -> None:
    """Truth 2 everywhere, prediction 3: ratio 1/4 exactly (all binary fractions).

    At a threshold equal to the ratio the frames are valid (the bound is "exceeds");
    just below it, none is. With the benchmark's 0.025, an offset of 0.1 on a frame of 1
    (ratio 0.01) is valid and 0.2 (ratio 0.04) is not.
    """
    truth, pred = _frames(value=2.0), _frames(value=3.0)
    assert normalized_errors(truth, pred).eq(0.25).all()
    assert valid_prediction_time(truth, pred, threshold=0.25).tolist() == [8, 8, 8]
    assert valid_prediction_time(truth, pred, threshold=0.2499).tolist() == [0, 0, 0]
    ones = _frames(value=1.0)
    assert THRESHOLD == 0.025
    assert valid_prediction_time(ones, ones + 0.1).tolist() == [8, 8, 8]
    assert valid_prediction_time(ones, ones + 0.2).tolist() == [0, 0, 0]


def test_error_starting_at_frame_k_gives_k_per_sequence() -> None:
    """Sequence b goes wrong at frame k_b; frames after a bad one do not count, even good."""
    truth = _frames(b=4, t=10)
    pred = truth.clone()
    for b, k in enumerate([0, 3, 7]):
        pred[b, k] += 1.0  # one bad frame only: the later ones are perfect again
    assert valid_prediction_time(truth, pred).tolist() == [0, 3, 7, 10]


def test_nan_prediction_and_black_truth_frame_are_invalid() -> None:
    truth = _frames(b=2, t=6)
    pred = truth.clone()
    pred[0, 4, 0, 0, 0] = float("nan")
    truth[1, 2] = 0.0
    pred[1, 2] = 0.0  # 0 / 0: NaN, not a valid prediction of an empty frame
    assert torch.isnan(normalized_errors(truth, pred)[1, 2])
    assert valid_prediction_time(truth, pred).tolist() == [4, 2]


def test_integer_frames_are_converted() -> None:
    truth = torch.full((1, 4, 1, 2, 2), 100, dtype=torch.uint8)
    pred = torch.full((1, 4, 1, 2, 2), 110, dtype=torch.uint8)  # no uint8 wrap-around
    torch.testing.assert_close(normalized_errors(truth, pred), torch.full((1, 4), 0.01))


def test_median_and_forward_backward_average() -> None:
    forward = torch.tensor([1, 10, 3, 2])  # median of an even count: (2 + 3) / 2
    assert dm_vpt(forward) == 2.5
    assert dm_vpt(forward, torch.tensor([4, 4, 9, 1, 4])) == (2.5 + 4) / 2
    assert dm_vpt(torch.tensor([7])) == 7.0
    with pytest.raises(ValueError):
        dm_vpt(torch.tensor([], dtype=torch.int64))


def test_caveat_is_one_sentence() -> None:
    assert CAVEAT.endswith(".") and CAVEAT.count(". ") == 0 and "dm-*" in CAVEAT
