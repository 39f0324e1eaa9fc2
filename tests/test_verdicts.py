"""Verdicts: confidence intervals, the control rule, the union over attacks, re-identification, channel means."""

import pytest
import torch

from datamodules import CIFAR10DataModule, MNISTDataModule, OfflineMNISTDataModule
from ppp_lightning.metrics import ReconstructionMetrics, abs_ncc, channel_view
from ppp_lightning.reidentification import reidentify, same_class_pool
from ppp_lightning.sheets import CHAR_W, LINE, PAD, SheetRow, draw_sheet
from ppp_lightning.verdicts import LeakRate, clopper_pearson, judge, union_over_attacks


@pytest.fixture(scope="module")
def digits():
    data = OfflineMNISTDataModule()
    data.setup("fit")
    count = 2000
    images = torch.stack([data.train_set[i][0] for i in range(count)])
    labels = [int(data.train_set[i][1]) for i in range(count)]
    return data.denormalize(images), labels


@pytest.mark.parametrize(
    "k, n, expected",
    # reference values: the beta quantiles of Clopper and Pearson (1934), as tabulated by R's binom.test
    [(0, 8, (0.0, 0.3694)), (8, 8, (0.6306, 1.0)), (3, 8, (0.0852, 0.7551)), (5, 16, (0.1102, 0.5866))],
)
def test_clopper_pearson_matches_reference_values(k, n, expected):
    assert clopper_pearson(k, n) == pytest.approx(expected, abs=1e-4)


def test_clopper_pearson_refuses_impossible_counts():
    with pytest.raises(ValueError, match=r"successes=9, trials=8; allowed"):
        clopper_pearson(9, 8)
    with pytest.raises(ValueError, match=r"confidence=1; allowed: a number in \(0, 1\)"):
        clopper_pearson(1, 8, confidence=1)


def test_protected_only_with_a_passing_control_else_inconclusive():
    none = LeakRate(0, 8)
    assert (
        str(judge(none, LeakRate(8, 8)))
        == "protected: 0/8 (95% CI 0.00-0.37) leaked; control (without the audited defense) 8/8 (95% CI 0.63-1.00)"
    )
    assert judge(none, LeakRate(1, 8)).outcome == "inconclusive"
    assert (
        str(judge(none, LeakRate(1, 8))) == "inconclusive: the attack did not succeed without the defense either (1/8)"
    )
    assert str(judge(none, None)).startswith("inconclusive: 0/8")
    assert str(judge(LeakRate(2, 8), LeakRate(8, 8))) == "leaked: 2/8 (95% CI 0.03-0.65)"


def test_union_counts_a_victim_leaked_by_any_attack():
    union = union_over_attacks({"inverting": [True, False, False], "analytic": [False, False, True]})
    assert union == [True, False, True] and LeakRate.of(union) == LeakRate(2, 3)
    with pytest.raises(ValueError, match="different numbers of victims"):
        union_over_attacks({"a": [True], "b": [True, False]})


def test_a_noisy_or_inverted_victim_is_reidentified_and_the_mean_image_is_not(digits):
    images, labels = digits
    generator = torch.Generator().manual_seed(0)
    mean_image = images.mean(0)
    noisy, inverted, average = [], [], []
    for victim in range(20):
        rivals = images[same_class_pool(labels, labels[victim], seed=victim, exclude=[victim])]
        assert len(rivals) == 99
        mild = (images[victim] + 0.1 * torch.randn(images[victim].shape, generator=generator)).clamp(0, 1)
        noisy.append(reidentify(mild, images[victim], rivals).reidentified)
        inverted.append(reidentify(1 - images[victim], images[victim], rivals).reidentified)
        average.append(reidentify(mean_image, images[victim], rivals).reidentified)
    assert all(noisy) and all(inverted)
    assert sum(average) <= 2  # chance is 1/100 per victim; measured 0/20


def test_rivals_are_the_victims_class_without_the_victim_and_seeded(digits):
    images, labels = digits
    rivals = same_class_pool(labels, labels[7], size=50, seed=3, exclude=[7])
    assert 7 not in rivals and len(set(rivals)) == 49 and {labels[i] for i in rivals} == {labels[7]}
    assert rivals == same_class_pool(labels, labels[7], size=50, seed=3, exclude=[7])
    assert rivals != same_class_pool(labels, labels[7], size=50, seed=4, exclude=[7])
    with pytest.raises(ValueError, match="size=1; allowed: >= 2"):
        same_class_pool(labels, 7, size=1)
    with_copy = torch.cat([images[7:8], images[rivals]])  # a copy of the victim among the rivals is no rival
    result = reidentify(images[7], images[7], with_copy)
    assert result.reidentified and result.pool_size == 50 and result.chance == 1 / 50


def test_channel_mean_scores_a_grey_digit_with_colour_noise_higher(digits):
    images, _ = digits
    truth = images[:8]
    noisy = truth + 0.4 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    three = abs_ncc(noisy, truth)
    mean = abs_ncc(channel_view(noisy, True), channel_view(truth, True))
    assert (mean > three + 0.05).all()  # measured: about 0.70 -> 0.80
    assert torch.equal(channel_view(noisy, False), noisy)
    assert OfflineMNISTDataModule.one_channel and MNISTDataModule.one_channel and not CIFAR10DataModule.one_channel
    data = OfflineMNISTDataModule
    normalised = (noisy - data.mean[0]) / data.std[0], (truth - data.mean[0]) / data.std[0]
    aware = ReconstructionMetrics(data.mean, data.std, one_channel=True)(*normalised)
    plain = ReconstructionMetrics(data.mean, data.std)(*normalised)
    assert aware["mean"]["ncc"] > plain["mean"]["ncc"] + 0.05 and aware["mean"]["psnr"] == plain["mean"]["psnr"]


def test_sheets_enlarge_every_image_by_nearest_neighbour_to_96_px():
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rows = [SheetRow("truth", images), SheetRow("attack", images, ["ncc 0.91\nreid yes", "ncc 0.20\nreid no"])]
    sheet = draw_sheet("inverting, step 0\nleaked: 1/2", rows)
    left, top = CHAR_W * len("attack") + 2 * PAD, 2 * LINE + PAD  # the first tile, under two title lines
    tile = sheet[:, top : top + 96, left : left + 96]
    expected = images[0].repeat_interleave(3, 1).repeat_interleave(3, 2)  # each pixel a 3x3 block
    assert torch.allclose(tile, expected, atol=1 / 255)
    assert sheet.shape[1] >= 2 * 96 + 2 * LINE and sheet.shape[2] >= 2 * 96
