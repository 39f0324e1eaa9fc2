"""``ppp-lightning audit`` and ``ppp-lightning calibrate`` end to end on a tiny mlp, and the attack suite."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pytorch_lightning.loggers import WandbLogger

from callbacks import PartialPerturbation
from datamodules import OfflineMNISTDataModule
from ppp_lightning.attacks import AttackSpec
from ppp_lightning.attacks.suite import attack_suite
from ppp_lightning.auditing.noise_search import calibrate
from ppp_lightning.defenses.spec import DefenseSpec
from ppp_lightning.lightning.cli import LEAK_EXIT_STATUS, main
from ppp_lightning.models import build_network

NOISY = {"class_path": "callbacks.PartialPerturbation", "init_args": {"layers": "all", "sigma": 100.0, "relative": True}}


def _config(callbacks=()) -> str:
    config = {
        "seed_everything": 0,
        "model": {"class_path": "ppp_lightning.ImageClassifier", "init_args": {"arch": "mlp", "arch_kwargs": {"width": 32}}},
        "data": {"class_path": "datamodules.OfflineMNISTDataModule"},
        "trainer": {"logger": False, "callbacks": list(callbacks)},
    }
    Path("tiny.yaml").write_text(yaml.safe_dump(config))
    return "tiny.yaml"


def _audit(*flags: str, victims: int = 4) -> None:
    main(["audit", "--config", *flags, "--attacks=[analytic]", f"--victims={victims}", "--folder=audit"])


def test_audit_reports_an_undefended_mlp_as_leaking_and_fails_when_asked(capsys):
    _audit(_config())
    report = Path("audit/report.md").read_text()
    found = "4/4 above chance (95% CI 0.40-1.00; chance 1/100, p 1e-08)"
    assert f"| analytic | {found} | 4/4 (95% CI 0.40-1.00) | - | leaked |" in report
    assert "Any attack (per victim): identified 4/4 above chance" in capsys.readouterr().out
    assert Image.open("audit/sheet.png").size[1] >= 2 * 96  # the victims and the reconstructions
    with pytest.raises(SystemExit) as exit_info:
        _audit(_config(), "--fail_on_leak=true")
    assert exit_info.value.code == LEAK_EXIT_STATUS
    assert len(Path("audit/results.jsonl").read_text().splitlines()) == 1  # the rerun skipped the finished attack


def test_audit_reports_a_strongly_noised_mlp_as_protected_with_its_control_passing():
    _audit(_config([NOISY]), "--fail_on_leak=true", victims=8)  # no leak: no exit
    (record,) = [json.loads(line) for line in Path("audit/results.jsonl").read_text().splitlines()]
    assert record["successes"] == [False] * 8 and record["control"]["successes"] == [True] * 8
    assert record["identified"] == [False] * 8 and record["findings"]["identified"]["p_value"] == 1.0
    assert record["outcome"] == "protected" and record["audited"] == "gradient perturbation"
    assert record["defense"]["sigma"] == 100.0


def test_audit_refuses_a_folder_holding_another_models_audit():
    _audit(_config())
    with pytest.raises(SystemExit):
        _audit(_config([NOISY]))
    assert len(Path("audit/results.jsonl").read_text().splitlines()) == 1


def test_calibrate_finds_the_protective_sigma_to_the_factor_and_prints_a_callback_block(capsys):
    main(["calibrate", "--config", _config([NOISY]), "--attacks=[analytic]", "--victims=8", "--folder=cal"])
    (result,) = json.loads(Path("cal/calibration.json").read_text())
    search, legible = result["search"], result["reconstruction"]
    assert result["outcome"] == "calibrated" and result["leaking_attacks"] == ["analytic"]
    assert search["leaking"] < search["sigma"] <= 1.5 * search["leaking"]
    assert all(leaked == (sigma <= search["leaking"]) for sigma, leaked in search["evaluations"])
    assert legible["leaking"] < legible["sigma"] <= 1.5 * legible["leaking"] and legible["sigma"] <= search["sigma"]
    assert result["upper_bound"] == pytest.approx(0.1424, abs=1e-4)  # 0/24 reconstructed: 8 victims, 16 held out
    at_answer = result["identified"][f"{search['sigma']:.6g}"]["analytic"]
    assert sum(at_answer) <= 1  # 2 of 8 would be above chance 1/100
    # held-out victims are audited only where the victims leaked nothing, and must leak nothing there either
    leaked = {f"{sigma:.6g}": leaks for sigma, leaks in search["evaluations"]}
    assert all(not any(result["unions"][key]) for key in result["held_out"])
    assert result["held_out"][f"{search['sigma']:.6g}"]["leaking"] == [] and not leaked[f"{search['sigma']:.6g}"]
    assert Path(f"cal/initialisation/sigma={search['sigma']:.6g}/held_out/results.jsonl").exists()
    below = f"{search['leaking']:.6g}"  # leaked there: the victims (2 of 8 identified is above chance) or the held out
    victims_leaked = any(result["unions"][below]) or sum(result["identified"][below]["analytic"]) >= 2
    assert victims_leaked or result["held_out"][below]["leaking"] == ["analytic"]
    assert result["noise"]["noise_to_signal"] == pytest.approx(search["sigma"], rel=0.05)  # relative noise on all
    # every layer perturbed: the whole gradient is the perturbed part
    assert result["noise"]["noise_to_whole_signal"] == pytest.approx(result["noise"]["noise_to_signal"], rel=1e-6)
    block = capsys.readouterr().out.split("(paste under trainer.callbacks):\n")[1]
    (entry,) = yaml.safe_load(block)
    assert PartialPerturbation(**entry["init_args"]).spec == DefenseSpec(layers="all", sigma=search["sigma"], relative=True)


def test_calibrate_is_inconclusive_when_the_suite_leaks_nothing_without_noise():
    data = OfflineMNISTDataModule()
    data.setup("fit")
    torch.manual_seed(0)
    model = build_network("mlp", 10, (3, 32, 32), None, width=32)
    one_step = {"inverting": AttackSpec("inverting", {"iterations": 1, "progress": False})}
    family = DefenseSpec(layers="all", sigma=100.0, relative=True)
    result = calibrate(model, data.train_set, one_step, family, Path("cal"), data.mean, data.std, victims=2)
    assert result.outcome == "inconclusive" and result.leaking_attacks == [] and result.search.evaluations == []
    assert not Path("cal/sigma=100").exists()  # no noise was tried


def test_calibrate_needs_a_defense_family(capsys):
    with pytest.raises(SystemExit):
        main(["calibrate", "--config", _config(), "--victims=2"])
    assert "calibrate needs a defense family: add a callbacks.PartialPerturbation" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arch", "precode", "layers", "expected"),
    [
        ("mlp", None, "all", ["inverting", "analytic", "dlg"]),
        ("cnn", None, "all", ["inverting"]),
        ("cnn", {"latent_dim": 16}, "all", ["inverting", "inverting/before_bottleneck", "inverting/before_decoder",
                                            "adaptive", "feature_inversion"]),
        ("mlp", {"latent_dim": 16}, "before_bottleneck", ["inverting", "inverting/before_bottleneck",
         "inverting/before_decoder", "adaptive", "feature_inversion", "analytic", "dlg", "clean_layer"]),
    ],
)  # fmt: skip
def test_the_suite_holds_exactly_the_attacks_that_apply(arch, precode, layers, expected):
    torch.manual_seed(0)
    model = build_network(arch, 10, (3, 32, 32), precode, **({"width": 32} if arch == "mlp" else {}))
    suite = attack_suite(model, torch.zeros(1, 3, 32, 32), DefenseSpec(layers=layers))
    assert list(suite) == expected
    assert suite["inverting"].get("iterations") == 1000  # the converged budget
    with pytest.raises(ValueError, match=rf"attacks \['nope'\] do not apply to this model and defense; allowed: {expected[0]}"):
        attack_suite(model, torch.zeros(1, 3, 32, 32), DefenseSpec(layers=layers), names=["nope"])


def test_audit_logs_its_report_and_sheet_to_wandb(monkeypatch):
    logged = {}
    monkeypatch.setattr(WandbLogger, "log_table", lambda self, key, columns, data, **kw: logged.update({key: data}))
    monkeypatch.setattr(WandbLogger, "log_image", lambda self, key, images, **kw: logged.update({key: images}))
    config = _config()
    wandb_logger = {"class_path": "pytorch_lightning.loggers.WandbLogger", "init_args": {"save_dir": "runs"}}
    _audit(config, f"--trainer.logger={json.dumps(wandb_logger)}")
    assert logged["audit/report"] == [
        ["analytic", "4/4 above chance (95% CI 0.40-1.00; chance 1/100, p 1e-08)", "4/4 (95% CI 0.40-1.00)", "-", "leaked"]
    ]
    (sheet,) = logged["audit/sheet"]  # the sheet written to the folder, through the W&B sink
    written = Image.open("audit/sheet.png")
    assert tuple(sheet.shape) == (3, written.height, written.width)
    pixels = torch.from_numpy(np.asarray(written.convert("RGB"))).permute(2, 0, 1) / 255
    assert torch.allclose(sheet, pixels, atol=1 / 255)
    assert logged["audit/analytic/victims"][0][1] == 0  # the per-victim table of the attack (victim 0)


def test_calibrate_trains_with_and_without_the_noise_when_asked(capsys):
    main(["calibrate", "--config", _config([NOISY]), "--attacks=[analytic]", "--victims=2", "--folder=cal",
          "--train_epochs=1"])  # fmt: skip
    printed = capsys.readouterr().out
    without = float(printed.split("- without noise: ")[1].split("val/acc ")[1].split(",")[0])
    noisy = float(printed.split("- with that noise: ")[1].split("val/acc ")[1].split(",")[0])
    assert without > 0.7 and noisy < without  # one epoch of an mlp on the digits; the noise costs accuracy


def test_the_tensorboard_and_scalar_sinks_take_the_report_as_their_logger_can():
    from types import SimpleNamespace

    from ppp_lightning.lightning.logger_sinks import ScalarSink, TensorBoardSink

    calls = []
    experiment = SimpleNamespace(add_text=lambda *args: calls.append(("text", *args)),
                                 add_image=lambda *args: calls.append(("image", *args)))  # fmt: skip
    sheet = torch.rand(3, 8, 8)
    TensorBoardSink(SimpleNamespace(experiment=experiment)).log_report("audit", ["a", "b"], [["x", "y"]], sheet, 7)
    assert calls == [("text", "audit/report", "| a | b |\n|---|---|\n| x | y |", 7), ("image", "audit/sheet", sheet, 7)]
    assert ScalarSink(SimpleNamespace()).log_report("audit", ["a"], [["x"]], sheet, 7) is None  # scalars only


def test_calibrate_puts_both_sigmas_in_the_run_summary_and_plots_leaking_over_sigma(monkeypatch):
    from ppp_lightning.lightning.logger_sinks import WandbSink

    summaries, curves = [], []
    monkeypatch.setattr(WandbSink, "log_summary", lambda self, values: summaries.append(dict(values)))
    monkeypatch.setattr(WandbSink, "log_curve", lambda self, key, x_name, x, series: curves.append((key, x, series)))
    wandb_logger = {"class_path": "pytorch_lightning.loggers.WandbLogger", "init_args": {"save_dir": "runs"}}
    main(["calibrate", "--config", _config([NOISY]), "--attacks=[analytic]", "--victims=8", "--folder=cal",
          f"--trainer.logger={json.dumps(wandb_logger)}"])  # fmt: skip
    (result,) = json.loads(Path("cal/calibration.json").read_text())
    assert summaries == [{"calibrate/initialisation/outcome": "calibrated",
                          "calibrate/initialisation/sigma": result["search"]["sigma"],
                          "calibrate/initialisation/reconstruction_sigma": result["reconstruction"]["sigma"]}]  # fmt: skip
    ((key, sigmas, series),) = curves
    tried = {float(f"{s:.6g}") for run in ("search", "reconstruction") for s, _ in result[run]["evaluations"]}
    assert key == "calibrate/initialisation/leak_vs_sigma" and sigmas == sorted(tried)
    at = {f"{s:.6g}": rate for s, rate in zip(sigmas, series["reconstructed"])}
    answer, below = (f"{result['search'][k]:.6g}" for k in ("sigma", "leaking"))
    assert at[answer] == 0 and at[below] == sum(result["unions"][below]) / 8
