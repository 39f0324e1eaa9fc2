"""Rederiving committed evidence: records of an earlier rule read today's outcome; nothing measured changes."""

import json

import pytest

from benchmarks.evidence import HERE, RESULTS
from benchmarks.evidence_rederive import main, rederive
from ppp_lightning.assessment.reporting import read_records
from ppp_lightning.auditing.report import RESULTS as AUDIT_RESULTS

IDENTIFIED = [True, False] * 3 + [False] * 10  # 3 of 16 among 100 candidates: above chance (p 5e-4)


def _v2_record(reidentified):
    """An audit record as evidence v2 wrote it: re-identification under its old name, an outcome from
    reconstruction alone, no stop reasons."""
    return {"label": "inverting", "audited": "precode sampling", "successes": [False] * 16,
            "reidentified": reidentified, "success_rule": "metric and re-identified", "mean": {"ncc": 0.11},
            "leaked": {"leaked": 0, "total": 16}, "outcome": "protected",
            "verdict": "protected: 0/16 (95% CI 0.00-0.21) leaked; control (no defense) 16/16",
            "control": {"successes": [True] * 16, "reidentified": [True] * 16, "mean": {"ncc": 0.9}}}  # fmt: skip


def _write(folder):
    audit = folder / "audits/mlp/precode/init"
    audit.mkdir(parents=True)
    full = {**_v2_record(IDENTIFIED), "per_image": {"ncc": [0.1] * 16}, "seed": 0, "image": "inverting.png"}
    (audit / "results.jsonl").write_text(json.dumps(full) + "\n")
    cells = [{"kind": "audit", "arch": "mlp", "family": "precode", "state": "init",
              "records": [_v2_record(IDENTIFIED), {**_v2_record([False] * 16), "label": "adaptive"}]},
             {"kind": "calibration", "arch": "mlp", "family": "ppp", "state": "init", "outcome": "calibrated"}]
    (folder / "evidence.jsonl").write_text("".join(json.dumps(cell) + "\n" for cell in cells))
    return full, cells


def test_a_protected_record_with_victims_identified_above_chance_now_reads_leaked(tmp_path):
    full, cells = _write(tmp_path)
    # the full record and its compact copy change; "adaptive" identified nobody: without stop reasons, no protection
    assert rederive(tmp_path) == {("protected", "leaked"): 2, ("protected", "inconclusive"): 1}
    [fresh] = [json.loads(line) for line in (tmp_path / "audits/mlp/precode/init/results.jsonl").open()]
    assert fresh["outcome"] == "leaked" and fresh["verdict"].startswith("leaked: identified 3/16 above chance")
    assert fresh["identified"] == IDENTIFIED and "reidentified" not in fresh
    unchanged = ("successes", "per_image", "mean", "seed", "image", "label", "audited")
    assert {key: fresh[key] for key in unchanged} == {key: full[key] for key in unchanged}
    assert fresh["control"]["identified"] == [True] * 16 and fresh["control"]["successes"] == [True] * 16
    audit, calibration = [json.loads(line) for line in (tmp_path / "evidence.jsonl").open()]
    assert [r["outcome"] for r in audit["records"]] == ["leaked", "inconclusive"]
    assert audit["records"][0]["findings"]["identified"]["identified"] == 3 and calibration == cells[1]
    assert rederive(tmp_path) == {}  # a second run rewrites nothing


def test_the_command_line_says_what_changed_and_refuses_a_missing_folder(tmp_path, capsys):
    _write(tmp_path)
    main([str(tmp_path)])
    assert capsys.readouterr().out == (f"{tmp_path}: 3 outcome(s) changed (protected -> inconclusive: 1, "
                                       "protected -> leaked: 2)\n")  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "nowhere")])
    assert stop.value.code == 2
    assert f"no such folder: {tmp_path / 'nowhere'}" in capsys.readouterr().err


def _attack_records(record):
    """The attack records of one committed record: a cell's ``records``, or an audit folder's record itself."""
    if record.get("kind") not in (None, "audit"):
        return []
    return record.get("records", [record])


def test_every_committed_audit_record_with_2_of_8_identified_reads_leaked():
    """Issue 17's bar on the committed evidence (every version, cells and audit folders alike): 2+ of 8+ victims
    identified among 100 candidates is above chance, so no such record may read protected or inconclusive."""
    folders = sorted((HERE / "results").glob("evidence*/"))
    files = [path for folder in folders for path in (folder / RESULTS, *folder.rglob(AUDIT_RESULTS))]
    records = [r for path in files if path.exists() for record in read_records(path) for r in _attack_records(record)]
    identified = [r for r in records if len(r.get("identified") or []) >= 8 and sum(r["identified"]) >= 2]
    assert len(identified) > 1000  # the v2 and v3 grids' audits, calibrations' per-sigma audits included
    assert {r["outcome"] for r in identified} == {"leaked"}
