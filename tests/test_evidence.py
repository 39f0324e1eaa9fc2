"""The evidence grid's quick preset: structure and sanity of its output, controls, resumption."""

import copy
import json

import pytest
import torch
import yaml

from benchmarks.evidence import PRESETS, RESULTS, configure, datamodule, run
from benchmarks.evidence_sheets import noise_rows, pack_sheet_images, write_sheets
from ppp_lightning.assessment.record import AttackRecord
from ppp_lightning.assessment.reporting import append_record, read_records
from ppp_lightning.auditing.report import audit_records
from ppp_lightning.victims import draw_victims, victim_pool


def test_the_quick_grid_reports_every_cell_with_controls_and_resumes(tmp_path):
    path = run(copy.deepcopy(PRESETS["quick"]), tmp_path, progress=False)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    cells = {(r["kind"], r["family"], r.get("state"), r.get("batch_size")) for r in records}
    # 2 states x (4 families + a batch row), a repeat, then 4 accuracies
    assert len(records) == len(cells) == 15
    audits = {(r["family"], r["state"]): {a["label"]: a for a in r["records"]} for r in records
              if r["kind"] == "audit" and "batch_size" not in r}  # fmt: skip
    batched = [r for r in records if r.get("batch_size") == 2]
    assert [a["label"] for r in batched for a in r["records"]] == ["inverting"] * 2  # analytic needs one image
    verdicts = {cell: {label: AttackRecord.from_dict(a).verdict for label, a in by_label.items()}
                for cell, by_label in audits.items()}  # fmt: skip
    for cell, by_label in audits.items():  # the compact record gives the verdict its audit wrote
        assert {label: v.outcome for label, v in verdicts[cell].items()} == {
            label: a["outcome"] for label, a in by_label.items()}, cell  # fmt: skip
        assert all(a["pool_size"] == 100 and len(a["convergence"]["stop_reasons"]) == 2
                   for a in by_label.values())  # fmt: skip
    for state in ("init", "epoch1"):
        plain, precode = audits[("none", state)], audits[("precode", state)]
        assert verdicts[("none", state)]["analytic"].outcome == "leaked" and "control" not in plain["analytic"]
        # 10 steps of the plain attack reconstruct nothing even with PRECODE's sampling off: no protection claimed
        assert precode["inverting"]["control"]["successes"] == [False, False]
        assert verdicts[("precode", state)]["inverting"].outcome == "inconclusive"
        # the first layer lies before the bottleneck
        assert verdicts[("precode", state)]["analytic"].outcome == "leaked"
    # the 10 steps stop at their budget; at init, without the sampling, they still identify both victims among 100
    budget = "the attack stopped at its budget (100% of its problems)"
    assert verdicts[("precode", "init")]["inverting"].reason == budget
    unled = "the attack did not leak without the defense either"
    assert verdicts[("precode", "epoch1")]["inverting"].reason == f"{unled}; {budget}"
    for state in ("init", "epoch1"):  # the compact record's verdict is the full record's in the audit's folder
        full = {r.context["label"]: str(r.verdict) for r in audit_records(tmp_path / "audits/mlp/precode" / state)}
        assert {label: str(v) for label, v in verdicts[("precode", state)].items()} == full
    for r in (r for r in records if r["kind"] == "calibration"):
        # without PRECODE the 10 steps of inverting identify victims above chance: they leak too
        assert r["outcome"] == "calibrated"
        assert r["leaking_attacks"] == (["analytic"] if r["family"] == "ppp" else ["inverting", "analytic"])
        assert r["search"]["leaking"] < r["search"]["sigma"] <= 1.5 * r["search"]["leaking"]
        assert r["unions"]["0"] == [True, True] and not any(r["unions"][f"{r['search']['sigma']:.6g}"])
        at_sigma = r["identified"][f"{r['search']['sigma']:.6g}"]
        assert list(at_sigma) == r["leaking_attacks"] and not any(any(v) for v in at_sigma.values())
    accuracy = {r["family"]: r for r in records if r["kind"] == "accuracy"}
    assert all(0 <= r["test_acc"] <= 1 for r in accuracy.values())
    assert "test_acc_mean" in accuracy["ppp"] and "test_acc_mean" not in accuracy["noise_all"]
    assert accuracy["ppp"]["sigma"] == max(r["search"]["sigma"] for r in records
                                           if r["kind"] == "calibration" and r["family"] == "ppp")  # fmt: skip
    _check_repeat(tmp_path, records)
    run(copy.deepcopy(PRESETS["quick"]), tmp_path, progress=False)
    assert len((tmp_path / RESULTS).read_text().splitlines()) == 15  # a rerun skips every finished cell
    _check_sheets(tmp_path, next(r for r in records if r["kind"] == "calibration" and r["family"] == "ppp"))


def _check_repeat(folder, records):
    """The repeat calibrates ppp at init again on a second draw, its first grid centred on the first answer."""
    first = next(r for r in records if r["kind"] == "calibration" and r["family"] == "ppp" and r["state"] == "init")
    repeat = next(r for r in records if r["kind"] == "repeat")
    assert (repeat["family"], repeat["state"], repeat["seed"], repeat["outcome"]) == ("ppp", "init", 1, "calibrated")
    assert f"{first['search']['sigma']:.6g}" in repeat["unions"]
    baseline = [json.loads(line) for line in (folder / "repeats/mlp/ppp/init/seed=1/no_noise/results.jsonl")
                .read_text().splitlines()]  # fmt: skip
    assert {record["seed"] for record in baseline} == {1}  # victims, candidates, samples and noise drawn with seed 1


def _check_sheets(folder, calibration):
    """The ppp rows show the attack that leaked just below the protective sigma, at both sigmas."""
    assert [p.name for p in write_sheets(folder, shown=1)] == ["sheet_mlp_init.png", "sheet_mlp_epoch1.png"]
    data = datamodule({}, 0)
    data.setup("fit")
    pool = victim_pool(data, "test")
    rows = noise_rows(folder / "calibrations/mlp/ppp/init", "ppp", calibration, pool)
    search = calibration["search"]
    leaks = f"ppp sigma {search['leaking']:.3g} (leaks): analytic"
    protective = f"ppp sigma {search['sigma']:.3g} (protective): analytic"
    assert [row.name for row in rows] == [leaks, f"{leaks} (stretched)", protective, f"{protective} (stretched)"]
    assert [row.images.shape[0] for row in rows] == [2, 2, 2, 2]
    # both findings per image, as the calibration recorded them (analytic is the only attack searched, so the union
    # is its own); at the leaking sigma it leaked (1 of 2 identified among 100 is above chance), at the protective
    # sigma it found nothing (on the held-out victims neither)
    words = {True: "yes", False: "no"}
    for row, sigma in ((rows[0], search["leaking"]), (rows[2], search["sigma"])):
        key = f"{sigma:.6g}"
        expected = [[f"identified {words[i]}", f"reconstructed {words[r]}"]
                    for i, r in zip(calibration["identified"][key]["analytic"], calibration["unions"][key])]
        assert [caption.split("\n")[2:] for caption in row.captions] == expected
    below = f"{search['leaking']:.6g}"  # it leaked the victims there, or else the held-out ones
    held_out = calibration["held_out"]
    assert any(calibration["identified"][below]["analytic"]) or held_out[below]["leaking"] == ["analytic"]
    assert [caption.split("\n")[2:] for caption in rows[2].captions] == [["identified no", "reconstructed no"]] * 2
    _check_packed(folder, calibration, rows, pool)


def _check_packed(folder, calibration, rows, pool):
    """The 8-bit copies redraw the same rows once the raw tensors are gone, at a fraction of their size."""
    packed = pack_sheet_images(folder)
    raw = list(folder.rglob("reconstructions/*.pt"))
    assert {path.with_suffix(".pt") for path in packed} <= set(raw) and len(packed) >= 4
    assert sum(path.stat().st_size for path in packed) < sum(path.with_suffix(".pt").stat().st_size
                                                              for path in packed) / 4  # fmt: skip
    for path in raw:
        path.unlink()
    again = noise_rows(folder / "calibrations/mlp/ppp/init", "ppp", calibration, pool)
    assert [row.name for row in again] == [row.name for row in rows]
    for new, old in zip(again[::2], rows[::2]):  # each row, its stretched copy aside: within half an 8-bit step
        assert (new.images - old.images).abs().max().item() <= 0.5 / 255 + 1e-6
    assert [p.name for p in write_sheets(folder, shown=1)] == ["sheet_mlp_init.png", "sheet_mlp_epoch1.png"]


def test_every_preset_names_known_families_states_and_attacks():
    from benchmarks.evidence import AUDITED, CALIBRATED, STATES

    labels = {"inverting", "inverting/before_bottleneck", "inverting/before_decoder", "adaptive", "feature_inversion",
              "analytic", "dlg", "clean_layer", "april", "april_inverting"}  # fmt: skip
    for name, preset in PRESETS.items():
        families = set(preset["families"]) | set(preset["batch_rows"]["families"])
        assert families <= set(AUDITED) | set(CALIBRATED), name
        assert set(preset["states"]) <= set(STATES) and preset["states"][0] == "init", name
        assert set(preset["attacks"] or []) | set(preset["attack_settings"]) | set(preset["attack_families"]) <= labels


def test_a_preset_narrows_to_chosen_architectures_and_families_and_names_the_allowed_ones():
    config = configure("cpu", ["mlp"], ["precode", "ppp"])
    assert config["archs"] == {"mlp": {"width": 1024}} and config["families"] == ["precode", "ppp"]
    assert config["batch_rows"]["families"] == ["precode"]
    assert configure("cpu", families=["ppp"])["batch_rows"]["families"] == []
    assert PRESETS["cpu"]["families"] == ["none", "precode", "prune", "noise_all", "ppp", "ppp_no_encoder"]
    with pytest.raises(ValueError, match=r"--archs \['vit'\]; allowed: cnn, mlp"):
        configure("cpu", ["vit"])
    with pytest.raises(ValueError, match=r"--families \['dp'\]; allowed: none, precode, prune"):
        configure("cpu", families=["dp"])


def test_the_grid_runs_on_cifar10_files_on_disk(tmp_path, cifar10_root):
    config = configure("quick", families=["none"])
    config.update(states=["init"], accuracy_seeds=[], data={"data_dir": str(cifar10_root), "val_size": 10})
    records = [json.loads(line) for line in run(config, tmp_path, progress=False).read_text().splitlines()]
    assert [(r["family"], r.get("batch_size")) for r in records] == [("none", None), ("none", 2)]
    data = datamodule(config["data"], config["seed"])
    data.setup("fit")
    victims, _ = draw_victims(data.train_set, 2, config["seed"], stratified=True)
    recovered = torch.load(tmp_path / "audits/mlp/none/init/reconstructions/analytic.pt")["attack"]
    assert torch.allclose(recovered, victims, atol=1e-3)  # the first layer's input: these CIFAR-10 images, exactly
    assert [p.name for p in write_sheets(tmp_path, shown=1, data=config["data"])] == ["sheet_mlp_init.png"]


def test_a_time_budget_starts_no_cell_after_it_and_says_how_many_are_left(tmp_path, capsys):
    path = run(configure("quick"), tmp_path, progress=False, minutes=0)
    assert read_records(path) == []
    assert "stopped after 0 minutes: 15 units left (rerun to continue)" in capsys.readouterr().out


def test_the_command_line_refuses_contradictions_and_gpu_selects_the_gpu_preset(capsys, monkeypatch):
    from benchmarks.evidence import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv, message in ((["--gpu", "--preset", "cpu"], "--gpu and --preset cpu; choose one"),
                          (["--gpu", "--archs", "foo"], "--archs ['foo']; allowed: cnn, mlp, resnet18, vit"),
                          (["--gpu"], "--preset gpu runs on CUDA, and torch sees no CUDA device here")):  # fmt: skip
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err


def test_a_cell_another_process_finished_meanwhile_is_skipped(tmp_path, monkeypatch):
    import benchmarks.evidence as evidence

    config = configure("quick", families=["none", "precode"])
    config.update(states=["init"], accuracy_seeds=[], batch_rows={"batch_size": 2, "families": []})
    measured = []

    def measure(unit, config, data, pool, out, results):  # the other process finishes precode while none runs
        measured.append(unit["family"])
        append_record(results, {**unit, "family": "precode", "by": "the other process"})
        return {"records": []}

    monkeypatch.setattr(evidence, "_measure", measure)
    records = read_records(run(config, tmp_path, progress=False))
    assert measured == ["none"] and [(r["family"], r.get("by")) for r in records] == [
        ("precode", "the other process"), ("none", None)]  # fmt: skip


def test_a_cell_another_live_process_holds_is_passed_over_and_what_builds_on_it_waits(tmp_path, monkeypatch):
    import fcntl

    import benchmarks.evidence as evidence

    config = configure("quick", families=["none", "precode"])
    config.update(accuracy_seeds=[], batch_rows={"batch_size": 2, "families": []})
    claim = tmp_path / "claims" / "audit_mlp_none_init_None_None.pid"
    claim.parent.mkdir()
    other = claim.open("a")  # a live process measures "none" at initialisation: it holds the claim's lock
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    measured = []

    def wait(seconds):  # while this process waits, the claimant records its cell and lets go
        measured.append(("waited", seconds))
        append_record(tmp_path / RESULTS, {"kind": "audit", "arch": "mlp", "family": "none", "state": "init",
                                           "by": "the other process"})  # fmt: skip
        claim.unlink()
        other.close()

    monkeypatch.setattr(evidence.time, "sleep", wait)
    monkeypatch.setattr(evidence, "_measure",
                        lambda unit, *_: measured.append((unit["family"], unit["state"])) or {"records": []})  # fmt: skip
    records = read_records(run(config, tmp_path, progress=False))
    # precode goes on at both states; none's second state trains from its first, so it waits for it
    assert measured == [("precode", "init"), ("precode", "epoch1"), ("waited", evidence.CLAIM_POLL_SECONDS),
                        ("none", "epoch1")]  # fmt: skip
    assert [(r["family"], r["state"], r.get("by")) for r in records] == [
        ("precode", "init", None), ("precode", "epoch1", None), ("none", "init", "the other process"),
        ("none", "epoch1", None)]  # fmt: skip
    assert list(claim.parent.iterdir()) == []  # this process let its own claims go


def test_calibrations_at_initialisation_that_share_their_audit_without_noise_wait_for_each_other():
    from benchmarks.evidence import _lanes
    from benchmarks.evidence_schedule import next_ready

    def unit(family, state="init"):
        return {"kind": "calibration", "arch": "mlp", "family": family, "state": state}

    pending = [unit("ppp"), unit("ppp_no_encoder"), unit("noise_all"), unit("ppp_no_encoder", "epoch1")]
    # ppp (PRECODE's model) is held: its sibling on the same model waits, the plain model's noise goes on
    assert next_ready(pending, _lanes, lambda u: u == unit("ppp")) == unit("noise_all")
    assert next_ready(pending, _lanes, lambda u: u["state"] == "init") is None  # epoch1 builds on its init
    assert next_ready(pending, _lanes, lambda u: False) == unit("ppp")
    # a trained state shares no audit across families
    assert _lanes(unit("ppp", "epoch1")) == {("mlp", "ppp")}
    assert _lanes(unit("ppp")) == {("mlp", "ppp"), ("mlp", "precode-model")}


def test_a_claim_whose_process_died_is_taken_over(tmp_path, monkeypatch):
    import subprocess
    import sys

    import benchmarks.evidence as evidence

    config = configure("quick", families=["none"])
    config.update(states=["init"], accuracy_seeds=[], batch_rows={"batch_size": 2, "families": []})
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    claim = tmp_path / "claims" / "audit_mlp_none_init_None_None.pid"
    claim.parent.mkdir()
    claim.write_text(str(finished.pid))
    monkeypatch.setattr(evidence.time, "sleep", lambda seconds: pytest.fail("waited for a dead process"))
    monkeypatch.setattr(evidence, "_measure", lambda unit, *_: {"records": [], "by": "this process"})
    records = read_records(run(config, tmp_path, progress=False))
    assert [(r["family"], r["by"]) for r in records] == [("none", "this process")] and not claim.exists()


def test_one_process_at_a_time_holds_a_claim_and_a_killed_holder_frees_it_at_once(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from benchmarks.evidence_schedule import claimed, is_held

    path = tmp_path / "claims" / "cell.pid"
    with claimed(path) as first:
        with claimed(path) as second:
            assert (first, second) == (True, False) and is_held(path)
            assert path.read_text() == f"{os.getpid()}\n"
        assert is_held(path)  # the refused claim left the first one held
    assert not is_held(path) and not path.exists()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom benchmarks.evidence_schedule import claimed\n"
         "with claimed(__import__('pathlib').Path(sys.argv[1])):\n print('held', flush=True); time.sleep(120)",
         str(path)], cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        assert is_held(path) and path.read_text() == f"{holder.pid}\n"
        with claimed(path) as taken:
            assert not taken
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert path.exists() and not is_held(path)  # killed: its file stays, its lock does not
    with claimed(path) as taken:
        assert taken and path.read_text() == f"{os.getpid()}\n"


def test_a_bisection_starts_at_the_previous_answer_or_where_the_previous_search_gave_up(tmp_path):
    from benchmarks.evidence import _search_start

    results = tmp_path / RESULTS
    for family, outcome, evaluations in (("ppp", "calibrated", [[1.0, True], [4.0, False], [2.0, False]]),
                                         ("noise_all", "not found", [[1.0, True], [4.0, True], [16.0, True]]),
                                         ("ppp_no_encoder", "inconclusive", [])):  # fmt: skip
        search = {"sigma": 2.0 if outcome == "calibrated" else None, "evaluations": evaluations}
        append_record(results, {"kind": "calibration", "arch": "mlp", "family": family, "state": "init",
                                "outcome": outcome, "search": search})  # fmt: skip
    starts = {family: _search_start(results, "mlp", family, "epoch1") for family in ("ppp", "noise_all",
                                                                                     "ppp_no_encoder")}  # fmt: skip
    assert starts == {"ppp": 2.0, "noise_all": 16.0, "ppp_no_encoder": None}
    assert _search_start(results, "mlp", "ppp", "init") is None
    assert _search_start(results, "mlp", "ppp", "plateau") is None  # epoch1 has no record


@pytest.mark.parametrize("family", ["ppp", "noise_all"])
def test_the_noise_configs_carry_the_largest_sigma_the_committed_evidence_measured(family):
    from benchmarks.evidence import HERE, _calibrations, _protective_sigma

    def calibrated_in_every_state(folder, arch, states):
        found = _calibrations(HERE / "results" / folder / RESULTS, arch, family, states)
        return {r["state"] for r in found} == set(states)

    configs = HERE.parent / "configs" / family
    for arch in ("cnn", "mlp", "resnet18", "vit"):
        text = (configs / f"{arch}.yaml").read_text()
        callback = yaml.safe_load(text)["trainer"]["callbacks"][0]["init_args"]
        # evidence v3 where it has calibrated the family in every state of its preset, else v2
        folders = [folder for folder, preset in (("evidence_v3", "cpu"), ("evidence_reduced_v3", "reduced"))
                   if arch in PRESETS[preset]["archs"]
                   and calibrated_in_every_state(folder, arch, tuple(PRESETS[preset]["states"]))]  # fmt: skip
        folders = folders or ["evidence", "evidence_reduced"]
        measured = [_protective_sigma(HERE / "results" / folder / RESULTS, arch, family) for folder in folders]
        largest = max((sigma for sigma in measured if sigma is not None), default=None)
        if largest is None:
            assert "No measured protective sigma exists for this architecture" in text, arch
        else:
            assert callback["sigma"] == pytest.approx(largest, rel=1e-3), arch
            assert "measured by the evidence grid" in text, arch


def test_a_cell_interrupted_and_resumed_counts_the_time_of_both_runs(tmp_path, monkeypatch):
    import benchmarks.evidence as evidence

    config = configure("quick", families=["none"])
    config.update(states=["init"], accuracy_seeds=[], batch_rows={"batch_size": 2, "families": []})
    ledger = tmp_path / "claims" / "audit_mlp_none_init_None_None.spent.json"
    ledger.parent.mkdir()
    ledger.write_text(json.dumps({"seconds": 500.0, "cpu_seconds": 300.0, "runs": 1}))  # killed after 500 s
    monkeypatch.setattr(evidence, "_measure", lambda *args: {"records": []})
    [record] = read_records(run(config, tmp_path, progress=False))
    assert record["runs"] == 2 and 500.0 <= record["seconds"] < 600.0 and 300.0 <= record["cpu_seconds"] < 400.0
    assert not ledger.exists()  # the record holds the time now
