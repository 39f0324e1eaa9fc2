"""The calibrate benchmark: a tiny run writes every row in its order, agrees on sigma and resumes."""

import json

import pytest

from benchmarks import calibrate_speed
from ppp_lightning.attacks import AttackSpec


def test_a_tiny_run_compares_sweep_and_bisection_and_a_rerun_adds_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(calibrate_speed, "ARCHS", {"mlp": {"width": 32}})
    analytic = {"analytic": AttackSpec("analytic", {"tie_channels": True})}
    monkeypatch.setattr(calibrate_speed, "attack_suite", lambda *args, **kwargs: analytic)
    kept = tmp_path / "kept"
    argv = ["--archs", "mlp", "--victims", "2", "--held-out", "0", "--out", str(tmp_path), "--keep", str(kept)]
    calibrate_speed.main(argv)
    rows = [json.loads(line) for line in (tmp_path / "calibrate_speed.jsonl").read_text().splitlines()]
    assert [row["method"] for row in rows] == ["sweep", "bisection", "audit"]
    sweep, bisection, audit = rows
    assert sweep["outcome"] == bisection["outcome"] == "calibrated" and sweep["suite"] == ["analytic"]
    assert max(sweep["sigma"], bisection["sigma"]) / min(sweep["sigma"], bisection["sigma"]) <= 1.5
    assert audit["sigma"] == sweep["sigma"] and audit["leaked"] == []  # the answer protects, its control leaks
    table = (tmp_path / "calibrate_speed.md").read_text()
    assert f"| mlp | {sweep['sigma']:.4g} / {bisection['sigma']:.4g} |" in table
    assert calibrate_speed._ratio(bisection["cpu_s"], sweep["cpu_s"]) in table
    assert calibrate_speed._ratio(3.0, 0.0) == "-" and calibrate_speed._ratio(3.0, 2.0) == "1.50x"
    # every run's audits stay for a comparison sigma by sigma (the reconstruction search asks more sigmas)
    assert sorted(path.name for path in kept.iterdir()) == ["mlp_audit", "mlp_bisection", "mlp_sweep"]
    audited = [path for path in (kept / "mlp_sweep").glob("sigma=*") if (path / "results.jsonl").exists()]
    assert len(audited) >= sweep["sigmas_tried"] and (kept / "mlp_audit" / "results.jsonl").exists()
    calibrate_speed.main([*argv, "--note", "Why the answers differ."])
    assert len((tmp_path / "calibrate_speed.jsonl").read_text().splitlines()) == 3
    assert (tmp_path / "calibrate_speed.md").read_text().endswith("|\n\nWhy the answers differ.\n")


def test_sweep_and_bisection_alternate_across_architectures():
    assert list(calibrate_speed._order(["cnn", "mlp"])) == [
        ("cnn", "sweep"), ("cnn", "bisection"), ("mlp", "bisection"), ("mlp", "sweep"), ("cnn", "audit"),
        ("mlp", "audit"),
    ]  # fmt: skip
    with pytest.raises(SystemExit):
        calibrate_speed.main(["--archs", "vit"])
