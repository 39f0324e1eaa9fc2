"""The evidence report's chance section: the false-leak probability of a suite that only guesses, and each
calibration's answer re-derived from its audits by the grid's rule and by the familywise rule."""

import json
import math

import pytest

from benchmarks.evidence_chance import calibrated_answer, chance_leak_probability, chance_rows, suite_leaks
from benchmarks.evidence_records import load
from ppp_lightning.assessment.record import AttackRecord

POOL = 100
VICTIMS = 16
NONE = [False] * VICTIMS
TWO = [True, True] + [False] * (VICTIMS - 2)  # 2 of 16 identified: p 0.011 against chance 1/100


def _record(reconstructed=NONE, identified=NONE):
    return AttackRecord.from_dict({"label": "a", "successes": reconstructed, "identified": identified,
                                   "pool_size": POOL, "mean": {}})  # fmt: skip


def _suite(attacks=5, **one):
    """A suite of ``attacks`` records; the first finds ``one``, the rest nothing."""
    return [_record(**one)] + [_record() for _ in range(attacks - 1)]


def test_the_false_leak_probability_is_the_binomial_tail_of_the_fewest_significant_count():
    tail_two_of_8 = 1 - 0.99**8 - 8 * 0.01 * 0.99**7  # 2 of 8 is the fewest above chance at 0.05
    assert chance_leak_probability(8, 6, POOL) == pytest.approx(1 - (1 - tail_two_of_8) ** 6, rel=1e-9)
    # with 4 victims one identification is already above chance (p 0.039): 1 - P(no victim guessed by any attack)
    assert chance_leak_probability(4, 6, POOL) == pytest.approx(1 - 0.99 ** (4 * 6), rel=1e-9)
    assert chance_leak_probability(1, 3, 10) == 0.0  # one of one at chance 1/10 is p 0.1: never above chance


def test_two_of_sixteen_by_one_of_five_attacks_leaks_by_the_grid_rule_not_familywise_a_reconstruction_by_both():
    assert suite_leaks(_suite(identified=TWO), "grid") is True
    assert suite_leaks(_suite(identified=TWO), "familywise") is False  # p 0.011 > 0.05 / 5
    assert suite_leaks(_suite(identified=TWO, attacks=4), "familywise") is True  # p 0.011 < 0.05 / 4
    one = [True] + [False] * (VICTIMS - 1)  # one legible reconstruction, its victim identified (p 0.15)
    assert suite_leaks(_suite(reconstructed=one, identified=one), "grid") is True
    assert suite_leaks(_suite(reconstructed=one, identified=one), "familywise") is False
    unscored = AttackRecord.from_dict({"label": "a", "successes": one, "mean": {}})  # no identification scored
    assert suite_leaks([unscored, *_suite(4)], "familywise") is True
    with pytest.raises(ValueError, match=r"rule='bonferroni'; allowed: grid, familywise"):
        suite_leaks(_suite(), "bonferroni")


def test_the_answer_is_the_smallest_sigma_above_every_leak_confirmed_by_held_out_victims():
    audits = {
        10.0: (_suite(reconstructed=TWO, identified=TWO, attacks=1), []),
        20.0: (_suite(identified=TWO), _suite()),
        40.0: (_suite(), _suite()),
    }
    assert calibrated_answer(audits, "grid") == (40.0, "calibrated")
    assert calibrated_answer(audits, "familywise") == (20.0, "calibrated")
    audits[20.0] = (_suite(identified=TWO), [])
    assert calibrated_answer(audits, "familywise") == (20.0, "unconfirmed")
    # the held-out audit at 20 stopped at a leak only the grid's rule counts: the rest of the suite never ran there
    audits[20.0] = (_suite(identified=TWO), _suite(identified=TWO, attacks=1))
    assert calibrated_answer(audits, "familywise") == (20.0, "unconfirmed")
    assert suite_leaks(_suite(identified=TWO, attacks=1), "familywise", attacks=5) is False  # tested at 0.05 / 5
    audits[40.0] = (_suite(), _suite(identified=TWO))  # a chance finding on the held-out victims at the top
    assert calibrated_answer(audits, "grid") == (None, "not found")


def test_chance_rows_read_a_calibrations_sigma_folders_and_reproduce_its_answer(tmp_path):
    folder = tmp_path / "run"
    record = {"kind": "calibration", "arch": "a", "family": "ppp", "state": "init", "outcome": "calibrated",
              "search": {"sigma": 40.0, "leaking": 20.0, "evaluations": [[20.0, True], [40.0, False]]},
              "unions": {"0": [True] * VICTIMS}, "leaking_attacks": ["a"] * 5}  # fmt: skip
    folder.mkdir()
    (folder / "evidence.jsonl").write_text(json.dumps(record) + "\n")
    for sigma, victims, held in ((20.0, TWO, NONE), (40.0, NONE, NONE)):
        for where, identified in (("", victims), ("held_out", held)):
            path = folder / "calibrations" / "a" / "ppp" / "init" / f"sigma={sigma:.6g}" / where
            path.mkdir(parents=True, exist_ok=True)
            lines = [{"label": f"a{i}", "successes": NONE, "identified": identified if i == 0 else NONE,
                      "pool_size": POOL, "mean": {}} for i in range(5)]  # fmt: skip
            (path / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    [row] = chance_rows(load([folder]))
    assert (row["grid"], row["familywise"], row["reproduced"]) == (
        {"sigma": 40.0, "status": "calibrated"},
        {"sigma": 20.0, "status": "calibrated"},
        True,
    )
    assert (row["attacks"], row["victims"], row["held_out"]) == (5, VICTIMS, VICTIMS)
    assert row["discounted"] == ["20 victims: a0 0/16 reconstructed, 2/16 identified (p 0.011)"]
    assert row["chance"]["grid"]["held_out"] == {
        "identification": pytest.approx(chance_leak_probability(VICTIMS, 5, POOL)),
        "with_reconstructions_at_most": pytest.approx(1 - 0.99 ** (VICTIMS * 5)),
    }
    # familywise (0.05 / 5): 2 of 16 (p 0.011) is no longer above chance, 3 of 16 is
    three_of_16 = 1 - sum(math.comb(VICTIMS, k) * 0.01**k * 0.99 ** (VICTIMS - k) for k in range(3))
    assert row["chance"]["familywise"]["victims"] == {"identification": pytest.approx(1 - (1 - three_of_16) ** 5)}


def test_audit_findings_that_only_the_grid_rule_counts_are_listed_per_attack(tmp_path):
    from benchmarks.evidence_chance import audit_chance_rows, chance_md

    one_of_4, three_of_4 = [True, False, False, False], [True, True, True, False]  # p 0.039 and p 4e-06

    def attack(label, identified):
        return {"label": label, "successes": [False] * 4, "identified": identified, "pool_size": POOL, "mean": {}}

    # 2 attacks: one identification of 4 (p 0.039) is above chance at 0.05, not at 0.05 / 2; three of 4 is at both
    audits = [{"kind": "audit", "arch": "r", "family": "precode", "state": "init",
               "records": [attack("inverting", three_of_4), attack("inverting/before_decoder", one_of_4)]},
              {"kind": "audit", "arch": "r", "family": "none", "state": "init", "batch_size": 4,
               "records": [attack("inverting", one_of_4)]}]  # fmt: skip
    (tmp_path / "evidence.jsonl").write_text("".join(json.dumps(audit) + "\n" for audit in audits))
    rows = audit_chance_rows(load([tmp_path]))
    assert rows == [{"arch": "r", "family": "precode", "state": "init", "batch_size": 1,
                     "attack": "inverting/before_decoder", "attacks": 2,
                     "findings": "0/4 reconstructed, 1/4 identified (p 0.039)"}]  # fmt: skip
    text = "\n".join(chance_md([], rows))
    assert "| r | precode | init | inverting/before_decoder | 2 | 0/4 reconstructed, 1/4 identified (p 0.039) |" in text
    assert chance_md([], []) == []  # nothing to re-derive: no section
