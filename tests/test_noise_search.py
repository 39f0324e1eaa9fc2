"""The smallest protective sigma: geometric bisection and grid sweeps against a monotone leak oracle."""

import math
from types import SimpleNamespace

import pytest
import torch

from ppp_lightning.auditing.noise_search import (
    _Audits,
    noise_statistics,
    smallest_protective_sigma,
    sweep_protective_sigma,
)


@pytest.mark.parametrize("threshold", [0.0123, 0.9, 3.7, 250.0])
@pytest.mark.parametrize("factor", [1.5, 1.1])
def test_bisection_brackets_the_threshold_of_a_monotone_oracle_to_the_factor(threshold, factor):
    search = smallest_protective_sigma(lambda sigma: sigma < threshold, factor=factor)
    assert search.leaking < threshold <= search.sigma <= factor * search.leaking
    assert all(leaked == (sigma < threshold) for sigma, leaked in search.evaluations)
    assert len(search.evaluations) < 20  # measured: at most 9 for these thresholds


def test_the_ends_of_the_range_are_reported_not_guessed():
    never = smallest_protective_sigma(lambda sigma: True, max_sigma=100.0)
    assert never.sigma is None and never.leaking == 100.0
    always = smallest_protective_sigma(lambda sigma: False, min_sigma=0.01)
    assert always.sigma == 0.01 and always.leaking is None


def test_settings_are_validated():
    with pytest.raises(ValueError, match=r"factor=1; allowed"):
        smallest_protective_sigma(lambda sigma: False, factor=1)
    with pytest.raises(ValueError, match=r"min_sigma=1.0, start=0.5, max_sigma=10.0; allowed: min <= start <= max"):
        smallest_protective_sigma(lambda sigma: False, start=0.5, min_sigma=1.0, max_sigma=10.0)


class _GridOracle:
    """A monotone oracle that counts the batched calls (each one engine run in calibrate)."""

    def __init__(self, threshold):
        self.threshold, self.calls = threshold, []

    def __call__(self, sigmas):
        self.calls.append(list(sigmas))
        return {sigma: sigma < self.threshold for sigma in sigmas}


@pytest.mark.parametrize("threshold", [0.0123, 0.9, 3.7, 250.0])
def test_the_sweep_finds_what_the_bisection_finds_within_one_step_in_far_fewer_passes(threshold):
    oracle = _GridOracle(threshold)
    sweep = sweep_protective_sigma(oracle, factor=1.5)
    bisection = smallest_protective_sigma(lambda sigma: sigma < threshold, factor=1.5)
    assert sweep.leaking < threshold <= sweep.sigma <= 1.5 * sweep.leaking
    assert max(sweep.sigma, bisection.sigma) / min(sweep.sigma, bisection.sigma) <= 1.5  # one grid step
    assert all(leaked == (sigma < threshold) for sigma, leaked in sweep.evaluations)
    # the first grid is start * 4**k, k in [-2, 2]; passes: it, the grids extending it, one finer grid
    assert oracle.calls[0] == [0.0625, 0.25, 1.0, 4.0, 16.0]
    assert len(oracle.calls) <= 3 < len(bisection.evaluations)


def test_the_sweep_asks_each_sigma_once_and_reports_the_ends_of_its_range():
    never = _GridOracle(math.inf)
    assert sweep_protective_sigma(never, max_sigma=100.0).sigma is None
    asked = [sigma for call in never.calls for sigma in call]
    assert len(asked) == len(set(asked)) and max(asked) == 100.0
    always = sweep_protective_sigma(_GridOracle(0.0), min_sigma=0.01)
    assert always.sigma == 0.01 and always.leaking is None
    with pytest.raises(ValueError, match=r"span=0; allowed: >= 1"):
        sweep_protective_sigma(never, span=0)


def test_the_whole_gradient_unit_credits_perturbing_a_part_and_the_perturbed_part_unit_does_not():
    clean = {"small": torch.full((100,), 0.1), "large": torch.full((300,), 1.0)}
    noisy = {"small": clean["small"] + 0.05 * torch.tensor([1.0, -1.0]).repeat(50), "large": clean["large"]}
    units = noise_statistics([noisy], [clean], ["small"])
    assert units["absolute"] == pytest.approx(0.05) and units["relative"] == pytest.approx(0.5)
    assert units["noise_to_signal"] == pytest.approx(0.5)  # over the perturbed entries: as relative
    # over the entire gradient: noise norm 0.5, gradient norm sqrt(1 + 300)
    assert units["noise_to_whole_signal"] == pytest.approx(0.5 / math.sqrt(301))


@pytest.mark.parametrize("at_once", [1, 3])
def test_held_out_victims_are_audited_only_near_the_answer_as_many_sigmas_at_once_as_asked(at_once):
    runs = []

    def run(sigmas, held):  # the victims stop leaking at 10, the held-out victims only at 30
        runs.append((list(sigmas), held))
        return {sigma: SimpleNamespace(leaking=["a"] if sigma < (30 if held else 10) else []) for sigma in sigmas}

    audits = _Audits(run, held_out_seed=1, at_once=at_once)
    search = sweep_protective_sigma(lambda sigmas: audits.leaks(sigmas, lambda found: bool(found.leaking)), 4.0)
    assert 30 <= search.sigma <= 1.5 * search.leaking and search.leaking < 30
    held = [sigmas for sigmas, is_held in runs if is_held]
    # the first grid (0.25..64) holds 16 and 64 above every leak; then the finer grid 22.6, 32, 45.3 inside 16..64
    if at_once == 1:  # one sigma per run, upwards until the held-out victims stop leaking: 16, 64; 22.6, 32
        assert held == [[16.0], [64.0], [22.6274], [32.0]]
    else:  # the candidates together; the finer grid's in one run
        assert held == [[16.0, 64.0], [22.6274, 32.0, 45.2548]]


def test_a_sweep_can_start_from_sigmas_already_audited():
    oracle = _GridOracle(3.7)
    search = sweep_protective_sigma(oracle, start=100.0, first=[1.0, 2.0, 8.0])
    assert oracle.calls[0] == [1.0, 2.0, 8.0] and len(oracle.calls) == 2  # then only the finer grid in 2..8
    assert search.leaking < 3.7 <= search.sigma <= 1.5 * search.leaking
