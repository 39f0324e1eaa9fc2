"""APRIL: a ViT's image out of its patch and positional embeddings' gradients, and its place in the suite."""

from __future__ import annotations

import pytest
import torch

from datamodules import OfflineMNISTDataModule
from ppp_lightning.assessment.metrics import abs_ncc
from ppp_lightning.attacks import AttackSpec
from ppp_lightning.attacks.april import APRIL, patch_embedding, patches_from_gradients
from ppp_lightning.attacks.suite import attack_suite
from ppp_lightning.auditing.audit import audit
from ppp_lightning.defenses.spec import DefenseSpec
from ppp_lightning.gradients import client_gradient
from ppp_lightning.models import build_network

SMALL_VIT = {"patch_size": 8, "hidden_dim": 64, "num_layers": 1, "num_heads": 2, "mlp_dim": 64}


def _vit(precode=None):
    torch.manual_seed(0)
    return build_network("vit", 10, (3, 32, 32), precode, **SMALL_VIT).train()


def _noisy(gradients, relative, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {name: g + relative * g.pow(2).mean().sqrt() * torch.randn(g.shape, generator=generator)
            for name, g in gradients.items()}  # fmt: skip


def test_april_recovers_the_image_and_label_exactly_from_a_clean_gradient():
    model, image, label = _vit(), torch.rand(1, 3, 32, 32), torch.tensor([7])
    result = APRIL()(model, client_gradient(model, image, label), None, image.shape)
    assert (result.images - image).abs().max() < 1e-4 and result.labels.tolist() == [7]
    assert patch_embedding(model.features) == patch_embedding(model).__class__("conv_proj.weight",
                                                                               "encoder.pos_embedding", 8)  # fmt: skip


def test_least_squares_over_all_embedding_rows_averages_noise_that_a_square_solve_amplifies():
    model, label = _vit(), torch.tensor([2])
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    noisy = _noisy(client_gradient(model, image, label), 0.001)  # noise 0.1% of each tensor's RMS
    weight, positions = noisy["features.conv_proj.weight"], noisy["features.encoder.pos_embedding"]
    every_row = float(abs_ncc(patches_from_gradients(weight, positions, (3, 32, 32)), image))
    # 16 of the 64 embedding rows: as many equations as tokens, an exactly determined solve
    square = float(abs_ncc(patches_from_gradients(weight[:16], positions[..., :16], (3, 32, 32)), image))
    assert every_row > 0.7 and square < 0.15, (every_row, square)  # measured: 0.74 and 0.10


def test_april_applies_where_a_vit_adds_a_positional_embedding_and_only_there():
    image = torch.zeros(1, 3, 32, 32)
    assert {"april", "april_inverting"} <= set(attack_suite(_vit(), image))
    assert {"april", "april_inverting"} <= set(attack_suite(_vit({"latent_dim": 16}), image))
    cnn = build_network("cnn", 10, (3, 32, 32))
    assert not {"april", "april_inverting"} & set(attack_suite(cnn, image))
    with pytest.raises(ValueError, match="april needs a torchvision VisionTransformer; BottleneckNetwork holds none"):
        APRIL()(cnn, client_gradient(cnn, image, torch.tensor([0])), None, image.shape)
    with pytest.raises(ValueError, match=r"recovers one image per gradient; got shape \(2, 3, 32, 32\)"):
        APRIL()(_vit(), {}, None, (2, 3, 32, 32))


def test_april_inverting_starts_every_victim_from_its_own_recovery():
    model, images, labels = _vit(), torch.rand(2, 3, 32, 32), torch.tensor([1, 4])
    gradients = [client_gradient(model, images[i : i + 1], labels[i : i + 1]) for i in range(2)]
    attack = AttackSpec("april_inverting", {"iterations": 1, "progress": False}).build((0.0,), (1.0,))
    results = attack.run(model, gradients, list(labels.split(1)), (1, 3, 32, 32))
    scores = [float(abs_ncc(result.images, images[i : i + 1])) for i, result in enumerate(results)]
    assert min(scores) > 0.999, scores  # one step from an exact start: each victim its own, not the first's


def test_an_undefended_vit_leaks_every_victim_and_noise_before_the_bottleneck_is_judged_by_its_control(tmp_path):
    data = OfflineMNISTDataModule()
    data.setup("fit")
    model, example = _vit(), data.train_set[0][0][None]
    suite = {label: spec.replace(iterations=3, progress=False) if "iterations" in spec.options() else spec
             for label, spec in attack_suite(model, example, tie_channels=True).items()}  # fmt: skip
    assert list(suite) == ["inverting", "april", "april_inverting"]
    records = audit(model, data.train_set, suite, tmp_path / "none", None, data.mean, data.std, True, 4,
                    progress=False)  # fmt: skip
    found = {record.context["label"]: record for record in records}
    assert found["april"].attack.reconstructed == [True] * 4 and found["april"].verdict.outcome == "leaked"
    assert found["inverting"].attack.reconstructed == [False] * 4  # 3 steps: nowhere near
    ppp = DefenseSpec(layers="before_bottleneck", sigma=100.0, relative=True)
    defended = _vit({"latent_dim": 16})
    (april,) = audit(defended, data.train_set, {"april": suite["april"]}, tmp_path / "ppp", ppp, data.mean, data.std,
                     True, 4, progress=False)  # fmt: skip
    assert april.control.reconstructed == [True] * 4  # PRECODE alone: APRIL reads the image before it
    assert april.attack.reconstructed == [False] * 4 and april.verdict.outcome == "protected"
