"""Federated learning with Flower: the shared-gradient core, the apps in one process, the Ray simulation."""

import json
import os
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from typing_extensions import override

from ppp_lightning import ImageClassifier
from ppp_lightning.federated import FederationSettings, quiet_flower, shared_gradient
from ppp_lightning.federated.core import client_seed, iid_indices
from ppp_lightning.federated.environment import SWITCHES
from ppp_lightning.losses import classification_terms
from ppp_lightning.seeding import seeded

requires_flower = pytest.mark.skipif(
    find_spec("flwr") is None, reason="Flower is not installed (pip install -e '.[federated]')"
)
requires_ray = pytest.mark.skipif(
    find_spec("ray") is None, reason="Ray is not installed (pip install -e '.[federated]')"
)

LR = 0.1
PRECODE = {"latent_dim": 32, "beta": 0.001}
SIGMA = 0.01
F32 = torch.finfo(torch.float32).eps

# What each client trained on, in call order (filled by BatchRecorder, a callback named in the YAML).
RECORDS: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []


class BatchRecorder(pl.Callback):
    """Keeps every training batch and the state of the generator PRECODE samples from in its step.

    The recorder gives the bottleneck a generator of its own before the step, so the client's noise
    sample can be replayed from the saved state, to recompute the true gradient.
    """

    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        generator = torch.Generator().manual_seed(len(RECORDS))
        pl_module.network.bottleneck.generator = generator
        images, labels = batch
        RECORDS.append((images.clone(), labels.clone(), generator.get_state()))


@pytest.fixture(autouse=True)
def _quiet_flower(monkeypatch):
    """Flower and Ray stay quiet in these tests, as under the entry points (Flower reads the switch on import)."""
    for key, value in SWITCHES.items():
        monkeypatch.setenv(key, value)


def write_config(path: Path, sigma: float, rounds: int = 2, evaluate_clients: int = 0) -> Path:
    """A FedSGD experiment: mlp + PRECODE, PartialPerturbation before the bottleneck, offline MNIST."""
    config = {
        "model": {
            "class_path": "ppp_lightning.ImageClassifier",
            "init_args": {"arch": "mlp", "precode": PRECODE, "optimizer": "sgd", "lr": LR},
        },
        "data": {"class_path": "datamodules.OfflineMNISTDataModule", "init_args": {"batch_size": 4}},
        "callbacks": [
            {
                "class_path": "callbacks.PartialPerturbation",
                "init_args": {"layers": "before_bottleneck", "sigma": sigma},
            },
            {"class_path": "tests.test_federated.BatchRecorder"},
        ],
        "federation": {
            "num_rounds": rounds,
            "clients_per_round": 2,
            "evaluate_clients": evaluate_clients,
            "local_steps": 1,
            "run_dir": "runs/fed",
        },
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


# ---- the Flower-free core ----------------------------------------------------------------------


def test_shared_gradient_inverts_one_sgd_step():
    torch.manual_seed(0)
    before = {"w": torch.randn(5, 3), "b": torch.randn(3), "steps": torch.tensor(7)}
    grad = {"w": torch.randn(5, 3), "b": torch.randn(3)}
    after = {"w": before["w"] - LR * grad["w"], "b": before["b"] - LR * grad["b"], "steps": torch.tensor(8)}
    recovered = shared_gradient(before, after, LR)
    assert list(recovered) == ["w", "b"]  # integer counters are no gradient
    for name in grad:
        torch.testing.assert_close(recovered[name], grad[name], rtol=0, atol=4 * F32 * before[name].abs().max() / LR)
    with pytest.raises(ValueError, match="lr must be > 0, got 0"):
        shared_gradient(before, after, 0)
    with pytest.raises(ValueError, match=r"differ in names: \['steps'\]"):
        shared_gradient(before, {k: v for k, v in after.items() if k != "steps"}, LR)


def test_iid_partitions_are_disjoint_balanced_and_seeded():
    parts = [iid_indices(10, 3, i, seed=1) for i in range(3)]
    assert sorted(sum(parts, [])) == list(range(10))
    assert [len(p) for p in parts] == [4, 3, 3]
    assert parts[0] == iid_indices(10, 3, 0, seed=1) != iid_indices(10, 3, 0, seed=2)
    with pytest.raises(ValueError, match="partition_id=3"):
        iid_indices(10, 3, 3)
    assert len({client_seed(0, r, p) for r in (1, 2) for p in (0, 1)}) == 4


def test_settings_name_the_bad_value():
    with pytest.raises(ValueError, match="exactly one of them"):
        FederationSettings(local_steps=1, local_epochs=1)
    with pytest.raises(ValueError, match="num_rounds=0"):
        FederationSettings(num_rounds=0)
    with pytest.raises(ValueError, match="num_supernodes=1 < 2"):
        FederationSettings(clients_per_round=2).check_nodes(1)


def test_importing_the_package_changes_no_environment_variable():
    """In a fresh interpreter, after the dependencies (torch and Flower set variables of their own)."""
    modules = ["ppp_lightning.federated", *(f"ppp_lightning.federated.{m}" for m in ("__main__", "simulation"))]
    code = (
        "import os, pytorch_lightning, flwr.clientapp, flwr.serverapp\n"
        "before = dict(os.environ)\n"
        f"for module in {modules!r}: __import__(module)\n"
        "print(sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)))"
    )
    environment = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_quiet_flower_keeps_the_users_values(monkeypatch):
    for key in SWITCHES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")  # the user's explicit choice
    expected = {**SWITCHES, "RAY_USAGE_STATS_ENABLED": "1"}
    assert quiet_flower() == expected
    assert {key: os.environ[key] for key in SWITCHES} == expected


@requires_flower
def test_the_command_line_entry_point_sets_flowers_switches_unless_the_user_did(monkeypatch, tmp_path):
    import ppp_lightning.federated.simulation as simulation
    from ppp_lightning.federated.__main__ import main

    seen = {}
    monkeypatch.setattr(simulation, "simulate", lambda config, *args: seen.update(os.environ, nodes=args[0]))
    for key in SWITCHES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("FLWR_DISABLE_UPDATE_CHECK", "0")  # the user's explicit choice
    main(["--config", str(write_config(tmp_path / "fed.yaml", SIGMA)), "--num-supernodes", "3"])
    assert seen["nodes"] == 3
    assert {key: seen[key] for key in SWITCHES} == {**SWITCHES, "FLWR_DISABLE_UPDATE_CHECK": "0"}


def test_seeded_draws_as_after_seeding_and_restores_the_callers_streams():
    import random

    import numpy as np

    torch.manual_seed(1)
    expected = torch.rand(3)
    state = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    with seeded(1):
        drawn, _, _ = torch.rand(3), random.random(), np.random.rand()
    assert torch.equal(drawn, expected)
    assert torch.equal(torch.get_rng_state(), state[0]) and random.getstate() == state[1]
    assert np.array_equal(np.random.get_state()[1], state[2])


def test_missing_flower_names_the_extra(monkeypatch):
    for name in ["flwr", *(m for m in sys.modules if m.startswith("flwr."))]:
        monkeypatch.setitem(sys.modules, name, None)  # as if Flower were not installed (nor imported yet)
    for module in ("ppp_lightning.federated._flower", "ppp_lightning.federated.strategy"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=r"pip install 'ppp-lightning\[federated\]'"):
        import ppp_lightning.federated.strategy  # noqa: F401


# ---- the apps in one process: ServerApp logic, FedAvg strategy, ClientApp called directly ------


def true_gradient(global_weights, images, labels, generator_state):
    """The client's gradient recomputed independently: same weights, batch and PRECODE sample."""
    model = ImageClassifier(arch="mlp", precode=PRECODE, optimizer="sgd", lr=LR)
    model.load_state_dict(global_weights)
    net = model.network.train()
    generator = torch.Generator()
    generator.set_state(generator_state)
    loss = classification_terms(lambda: net(images), labels, generator).loss
    names, params = zip(*model.named_parameters())
    return dict(zip(names, torch.autograd.grad(loss, params)))


@requires_flower
@pytest.mark.parametrize("sigma", [0.0, SIGMA])
def test_server_recovers_each_fedsgd_client_gradient(tmp_path, sigma):
    from ppp_lightning.federated.client_app import app as client_app
    from ppp_lightning.federated.config import parse_config
    from ppp_lightning.federated.in_process import InProcessGrid
    from ppp_lightning.federated.server_app import run_federation
    from ppp_lightning.federated.strategy import ObservingFedAvg

    class Observer(ObservingFedAvg):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.updates = []

        def on_client_update(self, update):
            self.updates.append(update)

    RECORDS.clear()
    config = parse_config(["--config", str(write_config(tmp_path / "fed.yaml", sigma))])
    strategy, result = run_federation(InProcessGrid(client_app, 2), config, Observer)

    updates = strategy.updates
    assert sorted((u.server_round, u.partition_id) for u in updates) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert len(RECORDS) == 4 and all(u.num_examples == 2000 for u in updates)  # 4,000 training digits, halved
    # FedAvg: round 2 starts from the mean of round 1's clients (equal sizes); the last mean is the result.
    for name, weight in updates[2].global_weights.items():
        torch.testing.assert_close(weight, (updates[0].client_weights[name] + updates[1].client_weights[name]) / 2)
    assert set(strategy.sent_weights) == {2}  # keeps the latest round only
    assert set(result.train_metrics_clientapp) == {1, 2}

    noises = []  # per client update: recovered minus true gradient on the perturbed parameters
    for update, (images, labels, generator_state) in zip(updates, RECORDS):
        true = true_gradient(update.global_weights, images, labels, generator_state)
        recovered = update.shared_gradient(LR)
        noisy = []
        for name, grad in true.items():
            # before_bottleneck with the encoder: the features and PRECODE's encoder get noise
            if sigma > 0 and name.startswith(("network.features.", "network.bottleneck.encoder.")):
                noisy.append((recovered[name] - grad).flatten())
                continue
            # float32 rounding of the client's step w - lr * g, divided by lr
            atol = 4 * F32 * update.global_weights[name].abs().max().item() / LR
            torch.testing.assert_close(recovered[name], grad, rtol=1e-5, atol=atol, msg=lambda m: f"{name}: {m}")
        if noisy:
            noises.append(torch.cat(noisy))
    for noise in noises:
        assert noise.numel() > 1e6
        assert noise.std().item() == pytest.approx(SIGMA, rel=0.01)
        assert abs(noise.mean().item()) < 1e-4
    # every client and round draws its own noise (seeds derived per client and round)
    correlations = torch.corrcoef(torch.stack(noises)) if noises else torch.eye(1)
    assert (correlations - torch.eye(len(correlations))).abs().max() < 0.01
    saved = json.loads(Path("runs/fed/metrics.json").read_text())
    assert saved["train"]["2"]["train/loss"] == pytest.approx(result.train_metrics_clientapp[2]["train/loss"])
    assert set(torch.load("runs/fed/global_weights.pt")) == set(updates[0].global_weights)


# ---- Flower's simulation engine ----------------------------------------------------------------


def _ray_processes():
    import psutil

    names = ("raylet", "gcs_server", "ray::", "default_worker", "plasma_store", "dashboard")
    running = []
    for process in psutil.Process().children(recursive=True):
        try:
            if any(name in " ".join(process.cmdline()) for name in names):
                running.append(process)
        except psutil.NoSuchProcess:  # it exited meanwhile (a zombie, ZombieProcess, only awaits its parent)
            pass
    return running


@pytest.mark.slow
@requires_flower
@requires_ray
def test_ray_simulation_runs_two_clients_and_cleans_up(tmp_path):
    import ray

    from ppp_lightning.federated.config import parse_config
    from ppp_lightning.federated.simulation import simulate

    path = write_config(tmp_path / "fed.yaml", SIGMA, rounds=1, evaluate_clients=2)
    simulate(parse_config(["--config", str(path)]), num_supernodes=2)

    saved = json.loads(Path("runs/fed/metrics.json").read_text())
    assert set(saved["train"]) == {"1"} and set(saved["evaluate"]) == {"1"}  # both clients replied
    assert saved["train"]["1"]["perturbation/num_elements"] > 0
    assert 0 <= saved["evaluate"]["1"]["val/acc"] <= 1
    assert any(Path("runs/fed/ray").iterdir())  # Ray's files stay in the run directory
    assert not ray.is_initialized()
    deadline = time.monotonic() + 60  # Ray's workers exit after shutdown returns; on a loaded machine 20 s was too few
    while _ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ray_processes() == []
