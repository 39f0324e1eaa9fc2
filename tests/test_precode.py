import math

import pytest
import torch
import torch.nn.functional as F

from ppp_lightning import PRECODE
from ppp_lightning.defenses.precode import trace_bottlenecks
from ppp_lightning.losses import classification_terms


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
    with trace_bottlenecks() as trace:
        bits(x)
        nats(x)
    assert trace.kl_terms[1].item() == pytest.approx(expected_nats, rel=1e-5)
    assert trace.kl_terms[0].item() == pytest.approx(expected_nats / math.log(2), rel=1e-5)


def test_shapes_are_preserved_for_any_input_shape():
    module = PRECODE(2 * 3 * 5, latent_dim=4)
    with trace_bottlenecks() as trace:
        out = module(torch.randn(7, 2, 3, 5))
    assert out.shape == (7, 2, 3, 5)
    assert module.encoder.weight.shape == (8, 30) and module.decoder.weight.shape == (30, 4)
    assert trace.eps[0].shape == (7, 4)


def test_training_samples_and_generator_reproduces_the_draw():
    module = PRECODE(10, latent_dim=5).train()
    x = torch.randn(3, 10)
    first = module(x)
    assert not torch.equal(first, module(x))
    module.generator = torch.Generator().manual_seed(7)
    with trace_bottlenecks() as trace:
        a = module(x)
    eps = trace.eps[0]
    module.generator = torch.Generator().manual_seed(7)
    assert torch.equal(a, module(x))
    assert torch.equal(eps, torch.randn(3, 5, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(module(x, eps=eps), a)
    # A trace's generator replaces the module's for the block and leaves the module's stream alone.
    state = module.generator.get_state()
    with trace_bottlenecks(torch.Generator().manual_seed(7)):
        assert torch.equal(module(x), a)
    assert torch.equal(module.generator.get_state(), state)


def test_eval_samples_by_default_and_uses_mu_when_asked():
    x = torch.randn(3, 10)
    sampling = PRECODE(10, latent_dim=5).eval()
    assert not torch.equal(sampling(x), sampling(x))
    mean = PRECODE(10, latent_dim=5, eval_sampling="mean").eval()
    with trace_bottlenecks() as trace:
        out = mean(x)
    assert torch.equal(out, mean(x)) and trace.eps == [None]
    mu = mean.encoder(x)[:, :5]
    torch.testing.assert_close(out, mean.decoder(mu))
    assert not torch.equal(mean.train()(x), out)


def test_loss_sums_the_kl_of_every_precode_pass_and_is_zero_without():
    model = torch.nn.Sequential(PRECODE(4, 2, beta=1.0), PRECODE(4, 3, beta=2.0), torch.nn.Linear(4, 3))
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    model[0].generator, model[1].generator = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    terms = classification_terms(lambda: model(x), y)
    model[0].generator, model[1].generator = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    with trace_bottlenecks() as trace:
        logits = model(x)
    assert len(trace.kl_terms) == 2 and min(t.item() for t in trace.kl_terms) > 0
    assert terms.kl.item() == pytest.approx(sum(t.item() for t in trace.kl_terms))
    torch.testing.assert_close(terms.loss, F.cross_entropy(logits, y) + terms.kl)
    plain = classification_terms(lambda: model[2](x), y)
    assert plain.kl.item() == 0.0 and plain.loss.item() == pytest.approx(plain.ce.item())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"latent_dim": 0}, "latent_dim=0"),
        ({"beta": -1.0}, "beta=-1.0; allowed: a finite number >= 0"),
        ({"eval_sampling": "median"}, "allowed: sample, mean"),
        ({"kl_unit": "bytes"}, "allowed: bits, nats"),
    ],
)
def test_invalid_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PRECODE(8, **kwargs)


def test_a_forward_pass_leaves_no_state_on_the_module():
    import copy

    module = PRECODE(4, 2)
    before = dict(vars(module))
    with trace_bottlenecks():
        module(torch.randn(3, 4)).sum().backward()
    assert vars(module).keys() == before.keys() and all(vars(module)[k] is before[k] for k in before if k != "_parameters")
    clone = copy.deepcopy(module)
    assert all(torch.equal(a, b) for a, b in zip(clone.state_dict().values(), module.state_dict().values()))
