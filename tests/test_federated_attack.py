"""The honest-but-curious server's attack on FedSGD updates, in one process (no Ray).

Measured values are in the comments (seed 0, 2 CPU cores).
"""

import json
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from ppp_lightning.assessment.reporting import read_records
from ppp_lightning.federated.core import decode_batch, encode_batch
from ppp_lightning.federated.environment import SWITCHES
from ppp_lightning.federated.server_attack import ServerAttack

requires_flower = pytest.mark.skipif(
    find_spec("flwr") is None, reason="Flower is not installed (pip install -e '.[federated]')"
)


@pytest.fixture(autouse=True)
def _quiet_flower(monkeypatch):
    """Flower stays quiet in these tests, as under the entry points (it reads the switch on import)."""
    for key, value in SWITCHES.items():
        monkeypatch.setenv(key, value)


def run_attacked_federation(tmp_path: Path, precode, attack: dict, share_truth: bool = True):
    """One FedSGD round of 2 clients on an mlp (width 64, batch of one digit); the server attacks client 0."""
    from ppp_lightning.federated.client_app import app as client_app
    from ppp_lightning.federated.config import parse_config
    from ppp_lightning.federated.in_process import InProcessGrid
    from ppp_lightning.federated.server_app import run_federation

    config = {
        "model": {
            "class_path": "ppp_lightning.ImageClassifier",
            "init_args": {"arch": "mlp", "arch_kwargs": {"width": 64}, "precode": precode, "optimizer": "sgd", "lr": 0.1},
        },
        "data": {"class_path": "datamodules.OfflineMNISTDataModule", "init_args": {"batch_size": 1}},
        "federation": {
            "num_rounds": 1,
            "clients_per_round": 2,
            "evaluate_clients": 0,
            "local_steps": 1,
            "run_dir": "runs/fed",
            "share_truth": share_truth,
        },
        "attack": {"rounds": [1], "clients": [0], **attack},
    }
    path = tmp_path / "fed.yaml"
    path.write_text(json.dumps(config))
    return run_federation(InProcessGrid(client_app, 2), parse_config(["--config", str(path)]))


@requires_flower
def test_server_reconstructs_a_fedsgd_client_image_of_an_undefended_mlp(tmp_path):
    from ppp_lightning.federated.attacking import AttackingFedAvg

    strategy, _ = run_attacked_federation(tmp_path, None, {"name": "analytic", "known_labels": False})
    assert isinstance(strategy, AttackingFedAvg)  # chosen by the config's attack section
    (record,) = strategy.records  # client 0 in round 1 only
    assert (record["round"], record["partition_id"], record["exact_gradient"]) == (1, 0, True)
    assert record["mean"]["ssim"] > 0.9  # measured 1.000 (PSNR 163 dB, floor 11.3 dB): exact
    assert record["mean"]["psnr"] > record["floor"]["psnr"] + 30
    assert record["attack_labels"] == record["labels"] == [0]  # recovered from the head's bias gradient
    # identified among 100 candidates from the federation's training data: 1/1 is p = 0.01 against chance
    assert (record["identified"], record["pool_size"]) == ([True], 100) and record["outcome"] == "leaked"
    assert record["findings"]["identified"]["p_value"] == pytest.approx(0.01)
    folder = Path("runs/fed/attack")
    # one line per attack, as kept (compared as JSON: the analytic attack's matching loss is NaN)
    assert json.dumps(read_records(folder / "metrics.jsonl")) == json.dumps([record])
    assert record["image"] == "round0001_client0.png" and (folder / record["image"]).stat().st_size > 0


@requires_flower
def test_precode_blurs_the_servers_plain_attack_yet_its_victim_is_identified(tmp_path):
    attack = {"name": "inverting", "kwargs": {"iterations": 100, "progress": False}}
    strategy, _ = run_attacked_federation(tmp_path, {"latent_dim": 32}, attack)
    (record,) = strategy.records
    (precode,) = record["defense"]["precode"]
    assert "latent_dim=32" in precode
    assert record["labels"] == record["attack_labels"] == [5]  # client 0's digit in round 1 (seed 0), given
    assert record["mean"]["ssim"] < 0.3  # measured 0.07 (PSNR 7.4 dB); undefended 0.97 (32.8 dB)
    # yet the digit's shape is there: ncc 0.43 (>= 0.26, the calibrated rule) and nearest of its 100 candidates
    assert 0.3 < record["per_image"]["ncc"][0] < 0.5 and record["identified"] == [True] and record["outcome"] == "leaked"
    # the control: the same attack and budget on the federation without PRECODE reconstructs its client's digit
    # (another digit, [0]: the model's initialisation draws from the seeded stream before the batches do)
    (tmp_path / "control").mkdir()
    control, _ = run_attacked_federation(tmp_path / "control", None, attack)
    (undefended,) = control.records
    assert undefended["mean"]["ssim"] > 0.9 and undefended["successes"] == [True] and undefended["labels"] == [0]


@requires_flower
def test_without_ground_truth_the_reconstruction_is_saved_unscored(tmp_path):
    attack = {"name": "analytic", "known_labels": False}
    with pytest.warns(UserWarning, match="share_truth: false"):
        strategy, _ = run_attacked_federation(tmp_path, None, attack, share_truth=False)
    (record,) = strategy.records
    assert "mean" not in record and record["labels"] is None and len(record["attack_labels"]) == 1
    assert Path("runs/fed/attack/round0001_client0.png").exists()


@requires_flower
def test_known_labels_need_the_simulations_ground_truth(tmp_path):
    with pytest.raises(ValueError, match="federation.share_truth: true"):
        run_attacked_federation(tmp_path, None, {"name": "analytic"}, share_truth=False)


def test_attack_settings_name_the_bad_value():
    with pytest.raises(ValueError, match="attack='nope'; allowed: inverting, adaptive, analytic"):
        ServerAttack(name="nope")
    with pytest.raises(ValueError, match=r"attack='analytic' does not take \['iterations'\]"):
        ServerAttack(name="analytic", kwargs={"iterations": 20})  # an option the attack would ignore
    with pytest.raises(ValueError, match="attack.rounds=\\[0\\]"):
        ServerAttack(rounds=[0])
    with pytest.raises(ValueError, match="iterations=0"):
        ServerAttack(name="inverting", kwargs={"iterations": 0})
    attack = ServerAttack(rounds=None, clients=[1], kwargs={"iterations": 3})
    assert attack.targets(7, 1) and not attack.targets(7, 0)
    assert (attack.spec.name, attack.spec.settings) == ("inverting", {"iterations": 3})


def test_ground_truth_round_trips_through_bytes():
    images, labels = torch.randn(3, 1, 4, 4), torch.tensor([1, 2, 3])
    decoded = decode_batch(encode_batch(images, labels))
    assert torch.equal(decoded[0], images) and torch.equal(decoded[1], labels)
