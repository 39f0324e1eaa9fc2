import pytest
import torch
from torch import nn

from ppp_lightning.defenses.perturbation import GradientPerturbation
from ppp_lightning.defenses.precode import PRECODE, trace_bottlenecks
from ppp_lightning.defenses.spec import DefenseSpec, ResolvedDefense
from ppp_lightning.gradients import client_gradient, seeded_client_gradients
from ppp_lightning.losses import classification_terms
from ppp_lightning.models import build_network


def _small_net(precode=True):
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
    bottleneck = PRECODE(4 * 6 * 6, latent_dim=8) if precode else nn.Identity()
    return nn.Sequential(features, bottleneck, nn.Linear(4 * 6 * 6, 5)).train()


def _batch(n=3):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=generator), torch.arange(n) % 5


def test_equals_the_training_backward_with_the_same_precode_sample():
    model, (x, y) = _small_net(), _batch()
    shared = client_gradient(model, x, y, generator=torch.Generator().manual_seed(3))
    model[1].generator = torch.Generator().manual_seed(3)
    classification_terms(lambda: model(x), y).loss.backward()
    assert list(shared) == [name for name, _ in model.named_parameters()]
    for name, param in model.named_parameters():
        torch.testing.assert_close(shared[name], param.grad)


def test_leaves_grads_statistics_hooks_and_mode_untouched():
    model, (x, y) = _small_net(), _batch()
    norm = model[0][1]
    stats = (norm.running_mean.clone(), norm.running_var.clone(), norm.num_batches_tracked.clone())
    fired = []
    for param in model.parameters():
        param.register_hook(lambda grad: fired.append(grad))
    attributes = {name: dict(vars(module)) for name, module in model.named_modules()}
    client_gradient(model, x, y)
    assert all(param.grad is None for param in model.parameters())
    # Not one attribute of any module is rebound (PRECODE leaves no KL or noise sample behind).
    for name, module in model.named_modules():
        assert vars(module).keys() == attributes[name].keys()
        assert all(vars(module)[k] is v for k, v in attributes[name].items()), name
    assert not fired
    assert torch.equal(norm.running_mean, stats[0]) and torch.equal(norm.running_var, stats[1])
    assert torch.equal(norm.num_batches_tracked, stats[2])
    assert model.training and model[1].generator is None


def test_given_generator_reproduces_the_sample_and_otherwise_precode_draws_fresh_noise():
    model, (x, y) = _small_net(), _batch()
    first = client_gradient(model, x, y, generator=torch.Generator().manual_seed(5))
    again = client_gradient(model, x, y, generator=torch.Generator().manual_seed(5))
    eps = torch.randn(3, 8, generator=torch.Generator().manual_seed(5))
    with trace_bottlenecks():
        replayed = model[2](model[1](model[0](x), eps=eps))
    torch.testing.assert_close(
        first["2.bias"], torch.autograd.grad(classification_terms(lambda: replayed, y).ce, model[2].bias)[0]
    )
    assert all(torch.equal(first[n], again[n]) for n in first)
    fresh = client_gradient(model, x, y)
    assert not torch.equal(first["2.weight"], fresh["2.weight"])
    # The noise reaches the layers before the bottleneck too (backward through z = mu + sigma * eps).
    assert not torch.equal(first["0.0.weight"], fresh["0.0.weight"])


def test_perturbation_applies_to_the_named_parameters_only_and_reproducibly():
    model, (x, y) = _small_net(precode=False), _batch()
    clean = client_gradient(model, x, y)
    names = ("0.0.weight", "0.0.bias")
    defense = DefenseSpec(layers=["0.0.*"], sigma=0.1).resolve(model)
    assert defense.parameter_names == names
    shared = client_gradient(model, x, y, defense, noise_generator=torch.Generator().manual_seed(0))
    again = client_gradient(model, x, y, defense, noise_generator=torch.Generator().manual_seed(0))
    for name in clean:
        assert torch.equal(shared[name], again[name])
        assert torch.equal(shared[name], clean[name]) == (name not in names)
    everything = client_gradient(model, x, y, DefenseSpec(layers="all", sigma=0.1).resolve(model))
    assert all(not torch.equal(everything[n], clean[n]) for n in clean)
    with pytest.raises(ValueError, match=r"defense parameters \['nope.weight'\] have no gradient"):
        client_gradient(model, x, y, ResolvedDefense(GradientPerturbation(sigma=0.1), ("nope.weight",)))


def test_runs_under_inference_mode_and_eval_mode():
    model = build_network("mlp", 10, (3, 8, 8), {"latent_dim": 4}, width=16).eval()
    with torch.inference_mode():
        x, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
        shared = client_gradient(model, x, y)
    assert not model.training
    assert shared["head.weight"].abs().sum() > 0 and not shared["head.weight"].is_inference()


def test_seeded_gradients_are_reproducible_and_differ_from_their_twin_only_where_the_defense_acts():
    net, (x, y) = _small_net(), _batch()
    resolved = DefenseSpec(layers="before_bottleneck", sigma=1.0).resolve(net, x)
    shared, clean = seeded_client_gradients(net, x, y, resolved, seed=5)
    again, twin = seeded_client_gradients(net, x, y, resolved, seed=5)
    assert all(torch.equal(shared[n], again[n]) and torch.equal(clean[n], twin[n]) for n in shared)
    changed = {n for n in shared if not torch.equal(shared[n], clean[n])}
    assert changed == set(resolved.parameter_names)
    plain, same = seeded_client_gradients(net, x, y, None, seed=5)
    assert plain is same and all(torch.equal(plain[n], clean[n]) for n in plain)  # the same PRECODE sample
