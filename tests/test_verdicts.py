"""Verdicts: confidence intervals, the control rule, the union over attacks, re-identification, channel means."""

import pytest
import torch
from scipy.stats import binomtest

from datamodules import CIFAR10DataModule, MNISTDataModule, OfflineMNISTDataModule
from ppp_lightning.assessment.assess import assess
from ppp_lightning.assessment.metrics import ReconstructionMetrics, abs_ncc, channel_view
from ppp_lightning.assessment.record import AttackRecord, Convergence
from ppp_lightning.assessment.reidentification import Reidentifier, reidentify, same_class_pool
from ppp_lightning.assessment.sheets import CHAR_W, LINE, PAD, SheetRow, draw_sheet
from ppp_lightning.assessment.verdicts import (
    Findings,
    Identification,
    LeakRate,
    binomial_p_value,
    clopper_pearson,
    judge,
    union_over_attacks,
)


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


def _findings(reconstructed=0, identified=0, total=16, budget_share=0.0, pool_size=100):
    return Findings(LeakRate(reconstructed, total), Identification(identified, total, pool_size), budget_share)


def test_protected_only_when_neither_finding_leaked_the_attack_converged_and_the_control_leaked():
    control = _findings(reconstructed=16, identified=16)
    assert str(judge(_findings(), control)) == (
        "protected: reconstructed 0/16 (95% CI 0.00-0.21), identified 0/16 not above chance (95% CI 0.00-0.21; "
        "chance 1/100, p 1); control (without the audited defense): identified 16/16 above chance (95% CI "
        "0.79-1.00; chance 1/100, p 1e-32), reconstructed 16/16 (95% CI 0.79-1.00)"
    )
    assert str(judge(_findings(), _findings(identified=1))).startswith(
        "inconclusive (the attack did not leak without the defense either): "
    )
    assert judge(_findings(), None).reason == "no control ran without the defense"
    unscored = Findings(LeakRate(0, 16), budget_share=0.0)
    assert judge(unscored, control).reason == "identification was not scored (no candidates)"
    unrecorded = Findings(LeakRate(0, 16), Identification(0, 16, 100))  # an old record: no stop reasons kept
    assert judge(unrecorded, control).reason == "how the attack stopped was not recorded"


def test_identification_alone_above_chance_is_a_leak_and_the_verdict_says_which_finding_leaked():
    verdict = judge(_findings(identified=14), _findings(reconstructed=16, identified=16))
    assert verdict.outcome == "leaked"
    assert str(verdict).startswith(
        "leaked: identified 14/16 above chance (95% CI 0.62-0.98; chance 1/100, p 1.2e-26), reconstructed 0/16"
    )
    assert judge(_findings(reconstructed=1, identified=1), None).outcome == "leaked"  # any reconstruction leaks


def test_one_of_16_identified_among_100_is_chance_and_two_are_above_it():
    assert not Identification(1, 16, 100).above_chance
    assert Identification(2, 16, 100).above_chance
    assert Identification(1, 16, 100).p_value == pytest.approx(1 - 0.99**16)  # P(X >= 1)
    assert Identification(2, 16, 100).advantage == pytest.approx(2 / 16 - 1 / 100)
    # a union over 3 attacks has 3 guesses per victim: chance 1 - 0.99^3
    assert Identification(2, 16, 100, attempts=3).chance == pytest.approx(1 - 0.99**3)
    assert not Identification(2, 16, 100, attempts=3).above_chance


@pytest.mark.parametrize("k, n, chance", [(0, 16, 0.01), (2, 16, 0.01), (14, 16, 0.01), (5, 8, 0.3), (8, 8, 0.5)])
def test_the_binomial_p_value_matches_scipys_exact_test(k, n, chance):
    expected = binomtest(k, n, chance, alternative="greater").pvalue
    assert binomial_p_value(k, n, chance) == pytest.approx(expected, rel=1e-9)


def test_binomial_p_value_refuses_impossible_arguments():
    with pytest.raises(ValueError, match=r"successes=3, trials=2; allowed"):
        binomial_p_value(3, 2, 0.1)
    with pytest.raises(ValueError, match=r"chance=0; allowed: a probability in \(0, 1\)"):
        binomial_p_value(1, 2, 0)


def test_an_attack_stopped_by_its_budget_is_never_protected():
    verdict = judge(_findings(budget_share=0.75), _findings(reconstructed=16, identified=16))
    assert verdict.outcome == "inconclusive"
    assert verdict.reason == "the attack stopped at its budget (75% of its problems)"
    assert judge(_findings(budget_share=0.5), _findings(reconstructed=16)).outcome == "protected"


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


@pytest.fixture(scope="module")
def mnist():
    data = OfflineMNISTDataModule()
    data.setup("fit")
    victims = torch.stack([data.train_set[i][0] for i in range(4)])
    labels = torch.tensor([int(data.train_set[i][1]) for i in range(4)])
    reidentifier = Reidentifier(data.train_set, data.mean, data.std, one_channel=True)
    return data, victims, labels, reidentifier


def test_a_faint_reconstruction_that_identifies_its_victims_leaks_though_none_is_legible(mnist):
    data, victims, labels, reidentifier = mnist
    noise = torch.randn(victims.shape, generator=torch.Generator().manual_seed(0)) * victims.std()
    faint = 0.16 * victims + 0.84 * noise
    metrics = ReconstructionMetrics(data.mean, data.std, success_threshold=0.5, one_channel=True)  # the former rule
    assessed = assess(metrics, faint, victims, labels, reidentifier=reidentifier, control=victims)
    ncc = assessed.attack.scores["per_image"]["ncc"]
    assert max(ncc) < 0.5 and min(ncc) > 0.25  # measured 0.28-0.42: none legible by a pixel rule at 0.5
    assert assessed.attack.reconstructed == [False] * 4 and assessed.attack.identified == [True, False, True, True]
    record = assessed.record({"label": "faint"}).to_dict()
    assert record["outcome"] == "leaked" and record["verdict"].startswith("leaked: identified 3/4 above chance")
    assert record["findings"]["identified"]["p_value"] == pytest.approx(binomtest(3, 4, 0.01, "greater").pvalue)
    assert AttackRecord.from_dict(record).verdict == assessed.record({}).verdict  # read back, judged the same


def test_a_flat_reconstruction_identifies_no_one_ties_go_against_the_victim(mnist):
    data, victims, labels, reidentifier = mnist
    flat = torch.zeros_like(victims)
    found = reidentifier(flat, victims, labels)
    assert [f.reidentified for f in found] == [False] * 4 and {f.rank for f in found} == {99}
    metrics = ReconstructionMetrics(data.mean, data.std, one_channel=True)
    converged = Convergence([[120]] * 4, [["converged"]] * 4)
    assessed = assess(metrics, flat, victims, labels, reidentifier=reidentifier, control=victims, convergence=converged)
    assert assessed.record({}).verdict.outcome == "protected"  # the control (the victims themselves) leaked 4/4
    stopped = Convergence([[500]] * 4, [["budget"]] * 3 + [["converged"]])
    assessed = assess(metrics, flat, victims, labels, reidentifier=reidentifier, control=victims, convergence=stopped)
    assert assessed.record({}).verdict.reason == "the attack stopped at its budget (75% of its problems)"
