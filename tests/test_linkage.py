"""Candidate linkage: an attacker who holds the candidates picks the victim by its gradient; reported apart."""

from __future__ import annotations

import pytest
import torch

from callbacks import GradientInversionAttack
from datamodules import OfflineMNISTDataModule
from ppp_lightning.assessment.reidentification import Reidentifier
from ppp_lightning.attacks import AttackSpec
from ppp_lightning.attacks.suite import attack_suite
from ppp_lightning.auditing.audit import audit
from ppp_lightning.federated.server_attack import ServerAttack
from ppp_lightning.gradients import client_gradient
from ppp_lightning.models import build_network
from ppp_lightning.victims import draw_victims


@pytest.fixture(scope="module")
def data():
    module = OfflineMNISTDataModule()
    module.setup("fit")
    return module


def _cnn():
    torch.manual_seed(0)
    return build_network("cnn", 10, (3, 32, 32)).train()


def test_linkage_identifies_every_victim_of_an_undefended_cnn_and_is_reported_apart(data, tmp_path):
    model, example = _cnn(), data.train_set[0][0][None]
    suite = attack_suite(model, example, names=["linkage"])
    records = audit(model, data.train_set, suite, tmp_path, None, data.mean, data.std, True, 4, progress=False,
                    pool_size=20)  # fmt: skip
    (linkage,) = records
    assert linkage.attack.identified == [True] * 4 and linkage.attack.reconstructed == [True] * 4
    assert linkage.context["threat_model"] == "linkage (the attacker holds the candidates)"
    report = (tmp_path / "report.md").read_text()
    assert "each identified among 20 candidates" in report
    assert "| linkage: linkage (the attacker holds the candidates) | 4/4 above chance" in report
    # the union over attacks answers another question: linkage is not in it
    assert "Any attack (per victim) (attacks with their own threat model apart): none ran besides those" in report


def test_linkage_is_only_in_the_suite_when_asked_for_by_name():
    model, example = _cnn(), torch.zeros(1, 3, 32, 32)
    assert "linkage" not in attack_suite(model, example)
    precode = build_network("cnn", 10, (3, 32, 32), {"latent_dim": 16})
    named = attack_suite(precode, example, names=["linkage", "linkage/before_bottleneck"])
    assert named["linkage/before_bottleneck"].settings == {"target": "before_bottleneck"}


def test_each_victim_is_once_among_its_candidates_at_a_seeded_position(data):
    images, labels = draw_victims(data.train_set, 3, seed=0, stratified=True)
    reidentifier = Reidentifier(data.train_set, data.mean, data.std, True, size=10, seed=5)
    pools = reidentifier.candidates(images, labels)
    copies = [[bool((candidate == image).all()) for candidate in pool] for pool, image in zip(pools, images)]
    assert [len(pool) for pool in pools] == [10] * 3 and [sum(found) for found in copies] == [1] * 3
    positions = [found.index(True) for found in copies]
    again = Reidentifier(data.train_set, data.mean, data.std, True, size=10, seed=5).candidates(images, labels)
    assert all(torch.equal(a, b) for a, b in zip(pools, again))
    assert len(set(positions)) > 1  # not always first


def test_linkage_without_candidates_and_where_no_candidates_exist_is_refused():
    model = _cnn()
    gradient = client_gradient(model, torch.zeros(1, 3, 32, 32), torch.tensor([0]))
    with pytest.raises(ValueError, match="linkage needs one set of candidates per shared gradient; got none for 1"):
        AttackSpec("linkage").build()(model, gradient, None, (1, 3, 32, 32))
    with pytest.raises(ValueError, match="attack='linkage' picks among candidates the attacker holds, which "
                                         "GradientInversionAttack does not have"):  # fmt: skip
        GradientInversionAttack(attack="linkage")
    with pytest.raises(ValueError, match="which the Flower server's attack does not have"):
        ServerAttack("linkage")
