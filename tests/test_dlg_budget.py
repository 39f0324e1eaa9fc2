"""The DLG budget study: a tiny run writes a row per budget and stopping rule, and a rerun adds none."""

import json

from benchmarks import dlg_budget


def test_a_tiny_run_scores_every_budget_with_and_without_the_stopping_rule(tmp_path):
    argv = ["--budgets", "1", "3", "--victims", "2", "--width", "32", "--out", str(tmp_path)]
    dlg_budget.main(argv)
    rows = [json.loads(line) for line in (tmp_path / "dlg_budget.jsonl").read_text().splitlines()]
    assert [(row["budget"], row["stopping"]) for row in rows] == [(1, True), (1, False), (3, True), (3, False)]
    # without the stopping rule every problem runs its whole budget
    assert [row["median_steps"] for row in rows if not row["stopping"]] == [1, 3]
    assert all(row["stopped_by_budget"] == 1.0 for row in rows if not row["stopping"])
    assert all(0 <= row["identified"] <= 2 and 0 <= row["median_ncc"] <= 1 for row in rows)
    table = (tmp_path / "dlg_budget.md").read_text()
    assert "| undefended | 3 | off |" in table and "| undefended | 1 | on |" in table
    dlg_budget.main(argv)
    assert len((tmp_path / "dlg_budget.jsonl").read_text().splitlines()) == 4
