"""The smallest protective sigma: geometric bisection against a monotone leak oracle."""

import pytest

from ppp_lightning.auditing.noise_search import smallest_protective_sigma


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
