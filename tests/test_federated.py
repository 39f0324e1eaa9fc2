"""Federated learning with Flower: the shared-gradient core, the apps in one process, the Ray simulation."""

import json
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from ppp_lightning import ImageClassifier
from ppp_lightning.classifier import classification_loss
from ppp_lightning.federated import FederationSettings, shared_gradient
from ppp_lightning.federated.core import client_seed, iid_indices

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
    """Keeps every training batch and PRECODE's noise sample for it, to recompute the true gradient."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        images, labels = batch
        RECORDS.append((images.clone(), labels.clone(), pl_module.network.bottleneck.last_eps.clone()))


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


def test_missing_flower_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "flwr", None)  # as if Flower were not installed
    for module in ("ppp_lightning.federated._flower", "ppp_lightning.federated.strategy"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=r"pip install 'ppp-lightning\[federated\]'"):
        import ppp_lightning.federated.strategy  # noqa: F401


# ---- the apps in one process: ServerApp logic, FedAvg strategy, ClientApp called directly ------


def true_gradient(global_weights, images, labels, eps):
    """The client's gradient recomputed independently: same weights, batch and PRECODE sample."""
    model = ImageClassifier(arch="mlp", precode=PRECODE, optimizer="sgd", lr=LR)
    model.load_state_dict(global_weights)
    net = model.network.train()
    logits = net.head(net.bottleneck(net.features(images), eps=eps))
    names, params = zip(*model.named_parameters())
    return dict(zip(names, torch.autograd.grad(classification_loss(net, logits, labels), params)))


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
    for update, (images, labels, eps) in zip(updates, RECORDS):
        true = true_gradient(update.global_weights, images, labels, eps)
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
    return [p for p in psutil.Process().children(recursive=True) if any(n in " ".join(p.cmdline()) for n in names)]


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
    deadline = time.monotonic() + 20
    while _ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ray_processes() == []
