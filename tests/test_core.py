"""The functional core: one place per concept (defense spec, victims, floor, success)."""


import pytest
import torch
from torch import nn

from ppp_lightning.assessment.metrics import is_success
from ppp_lightning.defenses.spec import DefenseSpec
from ppp_lightning.models import build_network
from ppp_lightning.victims import draw_victims, floor_image


def test_defense_spec_resolves_the_perturbed_set_once_for_every_consumer():
    model = build_network("mlp", 10, (3, 8, 8), {"latent_dim": 4}, width=16)
    example = torch.zeros(1, 3, 8, 8)
    ppp = DefenseSpec(sigma=2.0, relative=True).resolve(model, example)
    features = [n for n, _ in model.named_parameters() if n.startswith("features.")]
    assert ppp.parameter_names == (*features, "bottleneck.encoder.weight", "bottleneck.encoder.bias")
    assert ppp.perturbation.sigma == 2.0 and ppp.perturbation.relative
    clean_encoder = DefenseSpec(include_encoder=False).resolve(model, example)
    assert clean_encoder.parameter_names == tuple(features)
    assert DefenseSpec(layers="all").resolve(model).parameter_names == tuple(n for n, _ in model.named_parameters())
    assert DefenseSpec(layers=["head.*"]).to_dict() == {
        "layers": ["head.*"], "include_encoder": True, "mechanism": "gaussian", "sigma": 0.0,
        "relative": False, "clip_norm": None, "keep_ratio": None,
    }  # fmt: skip
    with pytest.raises(ValueError, match="is relative to a PRECODE bottleneck but the model has none"):
        DefenseSpec().check(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="sigma=-1.0; allowed: a finite number >= 0"):
        DefenseSpec(sigma=-1.0)


class _Numbers(torch.utils.data.Dataset):
    """Image i is filled with the value i; label i % 3; sorted like a class-sorted dataset."""

    def __len__(self):
        return 30

    def __getitem__(self, index):
        return torch.full((1, 2, 2), float(index)), index % 3


def test_victims_are_seeded_and_the_floor_averages_the_whole_range():
    images, labels = draw_victims(_Numbers(), 4, seed=3)
    again, _ = draw_victims(_Numbers(), 4, seed=3)
    other, _ = draw_victims(_Numbers(), 4, seed=4)
    assert torch.equal(images, again) and not torch.equal(images, other)
    assert labels.tolist() == [int(v) % 3 for v in images[:, 0, 0, 0]]
    assert len(set(images[:, 0, 0, 0].tolist())) == 4
    assert floor_image(_Numbers()).flatten().tolist() == [14.5] * 4  # mean of 0..29
    assert floor_image(_Numbers(), limit=3).flatten().tolist() == pytest.approx([(0 + 14 + 29) / 3] * 4)  # evenly spaced
    with pytest.raises(ValueError, match="count=31 victims; allowed: 1 to 30"):
        draw_victims(_Numbers(), 31, seed=0)


def test_stratified_victims_take_the_classes_in_turn():
    images, labels = draw_victims(_Numbers(), 7, seed=3, stratified=True)
    assert labels.tolist() == [0, 1, 2, 0, 1, 2, 0]  # 7 victims of 3 classes: 3, 2, 2
    assert labels.tolist() == [int(v) % 3 for v in images[:, 0, 0, 0]] and len(set(images[:, 0, 0, 0].tolist())) == 7
    plain, _ = draw_victims(_Numbers(), 30, seed=3)
    every, _ = draw_victims(_Numbers(), 30, seed=3, stratified=True)
    assert sorted(plain[:, 0, 0, 0].tolist()) == sorted(every[:, 0, 0, 0].tolist())  # a reordering, nothing lost
    first = [v for v in plain[:, 0, 0, 0].tolist() if v % 3 == 0][:3]
    assert every[::3, 0, 0, 0].tolist()[:3] == first  # each class keeps its seeded order


def test_success_is_decided_in_one_place_for_both_directions():
    values = torch.tensor([0.84, 0.85, 0.9])
    assert is_success(values, "ncc", 0.85).tolist() == [False, True, True]
    assert is_success(torch.tensor([0.01, 0.02]), "mse", 0.015).tolist() == [True, False]
