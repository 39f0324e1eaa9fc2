"""The attack-speed benchmark: its reference loop is the attack's computation, and a tiny run writes every table row."""

import dataclasses
import json

import pytest
import torch

from benchmarks import attack_speed
from benchmarks.attack_speed import SETTINGS, main, reference_attack
from ppp_lightning.attacks import AttackSpec
from ppp_lightning.gradients import client_gradient
from ppp_lightning.models import build_network

SHAPE = (1, 3, 32, 32)


def test_reference_loop_follows_the_attacks_single_restart():
    torch.manual_seed(0)
    model = build_network("cnn", 10, SHAPE[1:], None).train()
    labels = torch.tensor([3])
    shared = client_gradient(model, torch.rand(SHAPE), labels)
    start = torch.randn(SHAPE)
    attack = AttackSpec("inverting", {**SETTINGS, "iterations": 16}).build()
    result = attack(model, shared, labels, SHAPE, init=start)
    images, objectives = reference_attack(model, shared, labels, start, 16)
    # Measured: both differ by at most 2e-7 (Adam's bias correction is rounded in another order).
    torch.testing.assert_close(images, result.images, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(objectives, torch.tensor(result.restarts[0].objectives), rtol=1e-5, atol=1e-6)


def test_tiny_run_writes_every_measurement(tmp_path, monkeypatch):
    # cnn stands in for resnet18 and the problem counts shrink: the pipeline is tested, not the speed.
    monkeypatch.setitem(attack_speed.ARCHS, "resnet18-batch", ("cnn", {}))
    monkeypatch.setitem(attack_speed.ARCHS, "resnet18-group", ("cnn", {}))
    small = dataclasses.replace(
        attack_speed.PRESETS["cpu"], restarts=2, victims=2, victim_restarts=2, resnet_restarts=2
    )
    monkeypatch.setitem(attack_speed.PRESETS, "cpu", small)
    threads = torch.get_num_threads()
    main(["--repeats", "1", "--iterations", "1", "2", "--resnet-iterations", "1", "2", "--out", str(tmp_path)])
    assert torch.get_num_threads() == threads
    measurements = json.loads((tmp_path / "attack_speed.json").read_text())["measurements"]
    keys = ["a/cnn", "b/cnn", "c/resnet18-batch", "c/resnet18-group", "d/cnn", "threads/cnn", "threads/resnet18-batch"]
    assert list(measurements) == keys
    for result in measurements.values():
        assert set(result["per_iteration_s"]) == set(result["compared"])
        assert len(result["ratio"]["samples"]) == 1
        assert (result["met"] is None) == (result["target"] is None)
    assert measurements["c/resnet18-batch"]["probe"]["choices"]
    table = (tmp_path / "attack_speed.md").read_text()
    assert all(f"| {key}: " in table for key in keys)
    assert "| min(batched, sequential) / auto |" in table and "- Threads: threads=" in table


def test_only_selects_measurements(tmp_path, monkeypatch):
    monkeypatch.setitem(attack_speed.PRESETS, "cpu", dataclasses.replace(attack_speed.PRESETS["cpu"], restarts=2))
    main(["--repeats", "1", "--iterations", "1", "2", "--only", "a", "d", "--out", str(tmp_path)])
    assert list(json.loads((tmp_path / "attack_speed.json").read_text())["measurements"]) == ["a/cnn", "d/cnn"]


@pytest.mark.parametrize("argv", [["--iterations", "3", "3"], ["--resnet-iterations", "0", "2"], ["--repeats", "0"]])
def test_bad_budgets_stop_with_a_message(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert "allowed" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message is for machines without CUDA")
def test_gpu_preset_without_cuda_says_so():
    with pytest.raises(SystemExit, match="CUDA is not available"):
        main(["--gpu"])
