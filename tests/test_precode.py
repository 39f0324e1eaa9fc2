import math

import pytest
import torch
import torch.nn.functional as F

from ppp_lightning import PRECODE
from ppp_lightning.precode import bottleneck_kl


def test_kl_matches_hand_computation_in_bits_and_nats():
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    bits = PRECODE(6, latent_dim=3, beta=0.5)
    nats = PRECODE(6, latent_dim=3, beta=0.5, kl_unit="nats")
    nats.load_state_dict(bits.state_dict())
    stats = x @ bits.encoder.weight.T + bits.encoder.bias
    mu, sigma = stats[:, :3], F.softplus(stats[:, 3:])
    per_image = [
        sum(0.5 * (m**2 + s**2 - 2 * math.log(s) - 1) for m, s in zip(mu[i].tolist(), sigma[i].tolist()))
        for i in range(4)
    ]
    expected_nats = 0.5 * sum(per_image) / 4
    bits(x)
    nats(x)
    assert nats.kl.item() == pytest.approx(expected_nats, rel=1e-5)
    assert bits.kl.item() == pytest.approx(expected_nats / math.log(2), rel=1e-5)


def test_shapes_are_preserved_for_any_input_shape():
    module = PRECODE(2 * 3 * 5, latent_dim=4)
    out = module(torch.randn(7, 2, 3, 5))
    assert out.shape == (7, 2, 3, 5)
    assert module.encoder.weight.shape == (8, 30) and module.decoder.weight.shape == (30, 4)
    assert module.last_eps.shape == (7, 4)


def test_training_samples_and_generator_reproduces_the_draw():
    module = PRECODE(10, latent_dim=5).train()
    x = torch.randn(3, 10)
    first = module(x)
    assert not torch.equal(first, module(x))
    module.generator = torch.Generator().manual_seed(7)
    a, eps = module(x), module.last_eps
    module.generator = torch.Generator().manual_seed(7)
    assert torch.equal(a, module(x))
    assert torch.equal(eps, torch.randn(3, 5, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(module(x, eps=eps), a)


def test_eval_samples_by_default_and_uses_mu_when_asked():
    x = torch.randn(3, 10)
    sampling = PRECODE(10, latent_dim=5).eval()
    assert not torch.equal(sampling(x), sampling(x))
    mean = PRECODE(10, latent_dim=5, eval_sampling="mean").eval()
    out = mean(x)
    assert torch.equal(out, mean(x)) and mean.last_eps is None
    mu = mean.encoder(x)[:, :5]
    torch.testing.assert_close(out, mean.decoder(mu))
    assert not torch.equal(mean.train()(x), out)


def test_bottleneck_kl_sums_every_precode_and_is_zero_without():
    model = torch.nn.Sequential(PRECODE(4, 2, beta=1.0), PRECODE(4, 3, beta=2.0))
    model(torch.randn(5, 4))
    assert bottleneck_kl(model).item() == pytest.approx((model[0].kl + model[1].kl).item())
    assert bottleneck_kl(torch.nn.Linear(2, 2)).item() == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"latent_dim": 0}, "latent_dim=0"),
        ({"beta": -1.0}, "beta must be >= 0"),
        ({"eval_sampling": "median"}, "allowed: sample, mean"),
        ({"kl_unit": "bytes"}, "allowed: bits, nats"),
    ],
)
def test_invalid_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PRECODE(8, **kwargs)


def test_a_copy_after_a_forward_pass_drops_only_the_kl_graph():
    import copy

    module = PRECODE(4, 2)
    module(torch.randn(3, 4))
    clone = copy.deepcopy(module)
    assert clone.kl is None and module.kl is not None
    assert torch.equal(clone.last_eps, module.last_eps)
    assert all(torch.equal(a, b) for a, b in zip(clone.state_dict().values(), module.state_dict().values()))
