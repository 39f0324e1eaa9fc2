import pytest
import torch
from torch import nn

from ppp_lightning import PRECODE
from ppp_lightning.defenses.selection import execution_spans, select_parameters
from ppp_lightning.models import build_network

X = torch.randn(2, 3, 32, 32)
SMALL = {"mlp": {"width": 32}, "cnn": {}, "resnet18": {"norm": "group"}, "vit": {"hidden_dim": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 32}}


def names(module: nn.Module, prefix: str) -> list[str]:
    return [f"{prefix}.{n}" for n, _ in module.named_parameters()]


@pytest.mark.parametrize("arch", SMALL)
def test_positions_split_every_architecture_at_the_bottleneck(arch):
    net = build_network(arch, 10, (3, 32, 32), {"latent_dim": 8}, **SMALL[arch])
    features, encoder, decoder, head = (
        names(net.features, "features"),
        names(net.bottleneck.encoder, "bottleneck.encoder"),
        names(net.bottleneck.decoder, "bottleneck.decoder"),
        names(net.head, "head"),
    )
    assert set(select_parameters(net, "before_bottleneck", True, X)) == set(features + encoder)
    assert set(select_parameters(net, "before_bottleneck", False, X)) == set(features)
    assert select_parameters(net, "bottleneck", True, X) == encoder + decoder
    assert select_parameters(net, "bottleneck", False, X) == decoder
    assert select_parameters(net, "after_bottleneck", False, X) == head
    assert set(select_parameters(net, "all", False)) == set(features + decoder + head)
    assert set(select_parameters(net, "all")) == {n for n, _ in net.named_parameters()}


class Shuffled(nn.Module):
    """Registered as head, bottleneck, stem, but run as stem -> bottleneck -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 2)
        self.bottleneck = PRECODE(6, latent_dim=3)
        self.stem = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bottleneck(self.stem(x)))


def test_positions_follow_the_executed_order_not_the_registration_order():
    model = Shuffled()
    x = torch.randn(3, 4)
    assert select_parameters(model, "before_bottleneck", False, x) == [
        "stem.0.weight", "stem.0.bias", "stem.1.weight", "stem.1.bias"
    ]
    assert select_parameters(model, "after_bottleneck", False, x) == ["head.weight", "head.bias"]
    spans = execution_spans(model, x)
    assert spans["stem"][1] < spans["bottleneck"][0] < spans["bottleneck.encoder"][0] < spans["bottleneck"][1] < spans["head"][0]


def test_tracing_leaves_rng_batchnorm_modes_and_precode_state_untouched():
    model = Shuffled()
    model.bottleneck.generator = torch.Generator().manual_seed(3)
    model.train()
    model.stem[2].eval()  # a mixed mode must survive
    model(torch.randn(3, 4))
    x = torch.randn(3, 4)
    before = (
        torch.get_rng_state(),
        model.bottleneck.generator.get_state(),
        model.stem[1].running_mean.clone(),
        model.stem[1].num_batches_tracked.clone(),
        {n: m.training for n, m in model.named_modules()},
    )
    select_parameters(model, "before_bottleneck", True, x)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert torch.equal(model.bottleneck.generator.get_state(), before[1])
    assert torch.equal(model.stem[1].running_mean, before[2]) and torch.equal(model.stem[1].num_batches_tracked, before[3])
    assert {n: m.training for n, m in model.named_modules()} == before[4]


def test_patterns_match_full_names_and_dotted_suffixes_and_keep_model_order():
    net = build_network("cnn", 10, (3, 32, 32), {"latent_dim": 8})
    assert select_parameters(net, ["bottleneck.encoder.*", "features.0.*"]) == [
        "features.0.weight", "features.0.bias", "bottleneck.encoder.weight", "bottleneck.encoder.bias"
    ]
    wrapped = nn.ModuleDict({"network": net})
    assert select_parameters(wrapped, "head.weight") == ["network.head.weight"]
    assert select_parameters(wrapped, ["*.bias"], include_encoder=False)[-1] == "network.head.bias"


def test_frozen_parameters_are_never_selected():
    net = build_network("cnn", 10, (3, 32, 32), None)
    net.features[0].weight.requires_grad_(False)
    assert "features.0.weight" not in select_parameters(net, "all")
    with pytest.raises(ValueError, match="selects no trainable parameter"):
        select_parameters(net, "features.0.weight")


def test_an_empty_selection_lists_the_available_names():
    net = build_network("cnn", 10, (3, 32, 32), {"latent_dim": 8})
    with pytest.raises(ValueError, match=r"selects no trainable parameter.*before_bottleneck.*'head.bias'"):
        select_parameters(net, ["classifier.*"])


def test_a_position_without_precode_fails_with_the_available_names_but_all_works():
    net = build_network("mlp", 10, (3, 32, 32), None, width=8)
    with pytest.raises(ValueError, match=r"layers='before_bottleneck'.*has none.*'features.1.weight'"):
        select_parameters(net, "before_bottleneck", True, X)
    assert len(select_parameters(net, "all")) == 6


def test_a_position_needs_an_example_input():
    with pytest.raises(ValueError, match="needs an example input"):
        select_parameters(Shuffled(), "after_bottleneck")
