"""The evidence grid's cost ledger: a cell's time over all its runs, kept across an interruption."""

import json

import pytest

from benchmarks.evidence_ledger import CellClock, Spent


def test_a_resumed_cell_adds_its_run_to_what_the_interrupted_runs_spent(tmp_path):
    ledger = tmp_path / "claims" / "cell.spent.json"
    ledger.parent.mkdir()
    ledger.write_text(json.dumps({"seconds": 100.0, "cpu_seconds": 40.0, "runs": 1}))  # a run killed after 100 s
    with CellClock(ledger, every=3600) as clock:
        clock.beat()  # what the heartbeat thread writes
        written = Spent(**json.loads(ledger.read_text()))
    spent = clock.spent()
    assert written.runs == spent.runs == 2 and 100.0 <= written.seconds <= spent.seconds
    assert 40.0 <= written.cpu_seconds <= spent.cpu_seconds
    assert Spent(**json.loads(ledger.read_text())).seconds >= written.seconds  # the final beat at the end
    assert Spent(**json.loads(ledger.read_text())) == clock.spent()  # the record and the ledger agree
    clock.forget()
    assert not ledger.exists()
    with CellClock(ledger, every=3600) as fresh:
        pass
    assert fresh.spent().runs == 1 and fresh.spent().seconds < 100.0  # a cell with no ledger starts from zero


def test_the_heartbeat_interval_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match=r"every=0; allowed: seconds > 0"):
        CellClock(tmp_path / "ledger.json", every=0)
