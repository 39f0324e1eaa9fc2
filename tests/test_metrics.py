import math

import pytest
import torch

from ppp_lightning.assessment.metrics import (
    ReconstructionMetrics,
    abs_ncc,
    image_scores,
    match_reconstructions,
    to_unit_interval,
)

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)


def _digits(n=3):
    """Bright strokes on a dark background, in [0, 1]."""
    images = torch.zeros(n, 3, 32, 32)
    for i in range(n):
        images[i, :, 4 + 3 * i : 26 - 2 * i, 10 + 2 * i : 14 + 3 * i] = 1.0
        images[i, :, 8 + i : 11 + i, 6:26] = 0.8
    return images


def _normalise(images):
    return (images - torch.tensor(MEAN).view(-1, 1, 1)) / torch.tensor(STD).view(-1, 1, 1)


def test_unit_interval_inverts_the_normalisation_and_clamps():
    images = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(to_unit_interval(_normalise(images), MEAN, STD), images)
    assert to_unit_interval(torch.full((1, 3, 2, 2), 100.0), MEAN, STD).max() == 1


def test_exact_reconstruction_scores_perfectly():
    truth = _digits()
    scores = image_scores(truth, truth)
    assert torch.isinf(scores["psnr"]).all()
    torch.testing.assert_close(scores["ssim"], torch.ones(3))
    assert scores["mse"].max() == 0
    torch.testing.assert_close(scores["ncc"], torch.ones(3))


def test_correlation_is_sign_invariant_and_zero_for_a_blank_image_that_ssim_likes():
    truth = _digits(1)
    inverted, blank = 1 - truth, torch.zeros_like(truth)
    assert abs_ncc(inverted, truth).item() == pytest.approx(1.0, abs=1e-6)
    assert abs_ncc(blank, truth).item() == 0
    blank_scores, inverted_scores = image_scores(blank, truth), image_scores(inverted, truth)
    assert blank_scores["ssim"].item() > inverted_scores["ssim"].item()
    noise = torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    noisy = (truth + 0.3 * noise).clamp(0, 1)
    assert 0.5 < abs_ncc(noisy, truth).item() < 1


def test_batches_are_matched_before_scoring():
    truth = _digits(3)
    shuffled = truth[[2, 0, 1]] + 0.01
    order = match_reconstructions(shuffled, truth)
    assert order.tolist() == [1, 2, 0]
    report = ReconstructionMetrics(MEAN, STD)(_normalise(shuffled), _normalise(truth))
    assert report["order"] == [1, 2, 0]
    assert min(report["per_image"]["psnr"]) > 35
    assert report["success_rate"] == 1.0 and report["successes"] == [True] * 3


def test_report_has_floor_statistics_and_success_rate_at_the_threshold():
    truth = _digits(2)
    good, bad = truth[0], torch.rand_like(truth[1])
    floor_image = truth.mean(0)
    metrics = ReconstructionMetrics(MEAN, STD, success_metric="psnr", success_threshold=20.0)
    floor_normalised = _normalise(floor_image[None])[0]
    report = metrics(_normalise(torch.stack([good, bad])), _normalise(truth), floor_image=floor_normalised)
    assert report["successes"] == [True, False] and report["success_rate"] == 0.5
    floor = image_scores(floor_image.expand_as(truth), truth)
    assert report["floor"]["mse"] == pytest.approx(floor["mse"].mean().item(), rel=1e-5)
    assert set(report["mean"]) == set(report["median"]) == set(report["max"]) == {"psnr", "ssim", "mse", "ncc"}
    assert math.isinf(report["max"]["psnr"])
    flat = metrics(_normalise(truth), _normalise(truth))["floor"]["ncc"]
    assert flat == pytest.approx(0.0, abs=1e-6)


def test_lower_is_better_metrics_use_an_upper_threshold():
    truth = _digits(2)
    metrics = ReconstructionMetrics(MEAN, STD, success_metric="mse", success_threshold=0.01)
    report = metrics(_normalise(torch.stack([truth[0], 1 - truth[1]])), _normalise(truth))
    assert report["successes"] == [True, False]


def test_invalid_arguments_are_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match="allowed: psnr, ssim, mse, ncc, lpips"):
        ReconstructionMetrics(success_metric="accuracy")
    with pytest.raises(ValueError, match="lpips only with lpips=True"):
        ReconstructionMetrics(success_metric="lpips")
    with pytest.raises(ValueError, match="std"):
        ReconstructionMetrics(std=(0.0,))


def test_reconstructions_of_batched_gradients_are_matched_within_their_batch():
    torch.manual_seed(0)
    truth = torch.rand(4, 1, 8, 8)
    swapped = truth[[2, 3, 0, 1]]  # each image sits in the other batch of two
    assert match_reconstructions(swapped, truth).tolist() == [2, 3, 0, 1]
    within = match_reconstructions(swapped, truth, batch_size=2).tolist()
    assert sorted(within[:2]) == [0, 1] and sorted(within[2:]) == [2, 3]
    assert match_reconstructions(truth[[1, 0, 3, 2]], truth, batch_size=2).tolist() == [1, 0, 3, 2]
