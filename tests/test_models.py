import pytest
import torch
from torch import nn

from ppp_lightning import PRECODE, ImageClassifier
from ppp_lightning.defenses.precode import trace_bottlenecks
from ppp_lightning.models import build_network

ARCHS = ["mlp", "cnn", "resnet18", "vit"]
FEATURE_DIMS = {"mlp": 1024, "cnn": 64, "resnet18": 512, "vit": 256}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("precode", [None, {"latent_dim": 16}])
def test_every_architecture_has_features_bottleneck_head(arch, precode):
    torch.manual_seed(0)
    net = build_network(arch, num_classes=10, precode=precode)
    x = torch.randn(2, 3, 32, 32)
    logits = net(x)
    assert logits.shape == (2, 10)
    features = net.features(x)
    assert features.shape == (2, FEATURE_DIMS[arch])
    assert isinstance(net.head, nn.Linear) and net.head.in_features == FEATURE_DIMS[arch]
    if precode is None:
        assert isinstance(net.bottleneck, nn.Identity)
    else:
        assert isinstance(net.bottleneck, PRECODE) and net.bottleneck.encoder.weight.shape == (32, FEATURE_DIMS[arch])
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_reference_shapes_of_mlp_and_cnn():
    mlp = build_network("mlp")
    assert [tuple(m.weight.shape) for m in mlp.features if isinstance(m, nn.Linear)] == [(1024, 3072), (1024, 1024)]
    cnn = build_network("cnn")
    convs = [m for m in cnn.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 16, (5, 5), (2, 2)),
        (16, 32, (5, 5), (2, 2)),
        (32, 64, (5, 5), (2, 2)),
    ]


def test_resnet18_is_adapted_to_32x32_and_can_use_groupnorm():
    net = build_network("resnet18", norm="group")
    assert net.features.conv1.kernel_size == (3, 3) and net.features.conv1.stride == (1, 1)
    assert isinstance(net.features.maxpool, nn.Identity)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in net.modules()) == 20


def test_vit_has_cls_token_and_paper_sizes():
    vit = build_network("vit").features
    assert vit.class_token.shape == (1, 1, 256) and vit.patch_size == 4
    assert len(vit.encoder.layers) == 4 and vit.encoder.layers[0].self_attention.num_heads == 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"arch": "lenet"}, "allowed: mlp, cnn, resnet18, vit"),
        ({"arch": "cnn", "optimizer": "rmsprop"}, "allowed: adam, adamw, sgd"),
        ({"arch": "cnn", "lr": 0.0}, "lr=0.0; allowed: a finite number > 0"),
        ({"arch": "resnet18", "arch_kwargs": {"norm": "layer"}}, "allowed: batch, group"),
    ],
)
def test_classifier_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageClassifier(**kwargs)


def test_classifier_loss_is_cross_entropy_plus_kl_and_checkpoint_rebuilds(tmp_path):
    model = ImageClassifier("mlp", precode={"latent_dim": 8, "beta": 1.0})
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    model.network.bottleneck.generator = torch.Generator().manual_seed(1)
    loss = model.training_step((x, y), 0)
    model.network.bottleneck.generator = torch.Generator().manual_seed(1)
    with trace_bottlenecks() as trace:
        ce = torch.nn.functional.cross_entropy(model(x), y)
    (kl,) = trace.kl_terms
    assert kl.item() > 0.1
    torch.testing.assert_close(loss, ce + kl)
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "pytorch-lightning_version": "2.6.6"}, path)
    restored = ImageClassifier.load_from_checkpoint(path)
    assert restored.hparams.precode == {"latent_dim": 8, "beta": 1.0}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))
