"""The attack engine: per-problem stopping, the best iterate, batched victims x restarts, execution choice."""

import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ppp_lightning.attacks import DLG, AdaptiveAttack, InvertingGradients, execution, matching
from ppp_lightning.attacks.optimiser import StoppingRule
from ppp_lightning.attacks.per_sample import ProblemGradients, Targets, stackable, stacked_gradients
from ppp_lightning.gradients import client_gradient
from ppp_lightning.models import build_network

MNIST = {"mean": (0.1307,), "std": (0.3081,)}


def _victims(count, seed=0, shape=(1, 3, 16, 16)):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((count, *shape), generator=generator)
    labels = torch.randint(0, 10, (count, shape[0]), generator=generator)
    return images, labels


def _model(arch="mlp", size=16, **kwargs):
    torch.manual_seed(0)
    return build_network(arch, 10, (3, size, size), None, **kwargs).train()


def _shared(model, images, labels):
    return [client_gradient(model, x, y) for x, y in zip(images, labels)]


def test_stopping_rule_stops_an_easy_problem_early_and_returns_the_best_iterate():
    model = _model(width=8)
    images, labels = _victims(1)
    shared = _shared(model, images, labels)[0]
    attack = InvertingGradients(iterations=2000, lr=0.1, tv_weight=0, patience=20, tol=1e-3, progress=False, **MNIST)
    result = attack(model, shared, labels[0], images[0].shape)
    record = result.restarts[0]
    assert record.stop_reason == "converged" and record.iterations < 2000  # measured: 105 iterations
    assert len(record.objectives) == record.iterations
    assert result.loss == record.best_objective == min(record.objectives)
    assert record.best_objective <= record.final_objective
    again = InvertingGradients(iterations=1, lr=1e-12, tv_weight=0, progress=False, **MNIST)
    rescored = again(model, shared, labels[0], images[0].shape, init=result.images)
    assert rescored.restarts[0].objectives[0] == pytest.approx(result.loss, rel=1e-4, abs=1e-6)


def test_patience_zero_runs_the_whole_budget():
    model = _model(width=8)
    images, labels = _victims(1)
    attack = InvertingGradients(iterations=30, patience=0, progress=False, **MNIST)
    record = attack(model, _shared(model, images, labels)[0], labels[0], images[0].shape).restarts[0]
    assert (record.iterations, record.stop_reason, len(record.objectives)) == (30, "budget", 31)


@pytest.mark.parametrize("arch, size, kwargs", [("mlp", 16, {"width": 16}), ("cnn", 32, {})])
def test_victims_times_restarts_in_one_call_equal_each_victim_alone(arch, size, kwargs):
    model = _model(arch, size, **kwargs)
    images, labels = _victims(3, shape=(1, 3, size, size))
    shared = _shared(model, images, labels)
    settings = dict(iterations=25, restarts=2, patience=5, tol=1e-2, progress=False, **MNIST)
    together = InvertingGradients(batched=True, **settings).run(model, shared, list(labels), images[0].shape)
    for victim, result in enumerate(together):
        alone = InvertingGradients(batched=False, **settings)(model, shared[victim], labels[victim], images[0].shape)
        torch.testing.assert_close(result.images, alone.images, rtol=1e-4, atol=1e-4)
        assert [r.iterations for r in result.restarts] == [r.iterations for r in alone.restarts]
        assert result.restart_losses == pytest.approx(alone.restart_losses, rel=1e-4, abs=1e-6)
    stopped = [r.iterations for result in together for r in result.restarts]
    assert len(set(stopped)) > 1  # problems stop on their own; measured e.g. [25, 17, 25, 25, 20, 25]


def test_vmap_runs_models_the_stacked_pass_cannot_and_equals_sequential():
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
    model = nn.Sequential(features, nn.Linear(36, 10)).train()
    images, labels = _victims(2, shape=(2, 3, 16, 16))
    shared = _shared(model, images, labels)
    names = list(shared[0])
    assert not stackable(model, names)  # BatchNorm in training mode mixes the stacked samples
    assert stackable(model.eval(), [n for n in names if not n.startswith("0.1.")])
    model.train()
    settings = dict(iterations=8, restarts=2, patience=0, progress=False, **MNIST)
    batched = InvertingGradients(batched=True, **settings).run(model, shared, list(labels), images[0].shape)
    sequential = InvertingGradients(batched=False, **settings).run(model, shared, list(labels), images[0].shape)
    for b, s in zip(batched, sequential):
        torch.testing.assert_close(b.images, s.images, rtol=1e-4, atol=1e-4)


def test_batching_that_fails_falls_back_to_sequential_with_a_warning(monkeypatch):
    model = _model(width=16)
    images, labels = _victims(2)
    shared = _shared(model, images, labels)
    settings = dict(iterations=5, restarts=2, patience=0, progress=False, **MNIST)
    sequential = InvertingGradients(batched=False, **settings).run(model, shared, list(labels), images[0].shape)

    def unsupported(*args, **kwargs):
        raise RuntimeError("no per-sample rule")

    monkeypatch.setattr(matching, "stacked_gradients", unsupported)
    with pytest.warns(UserWarning, match="one after another: batching failed"):
        fallback = InvertingGradients(batched=True, **settings).run(model, shared, list(labels), images[0].shape)
    for f, s in zip(fallback, sequential):
        torch.testing.assert_close(f.images, s.images)


def test_the_automatic_choice_probes_once_per_signature(monkeypatch):
    timings = iter([1.0, 0.1, 0.1, 1.0])  # first probe: batched slower; second: faster
    monkeypatch.setattr(execution, "_seconds", lambda *args: next(timings))
    model = _model(width=16)
    images, labels = _victims(2)
    shared = _shared(model, images, labels)
    attack = InvertingGradients(iterations=2, restarts=2, progress=False, **MNIST)
    attack.run(model, shared, list(labels), images[0].shape)
    attack.run(model, shared, list(labels), images[0].shape)  # same signature: no new probe
    assert list(attack.execution.choices.values()) == ["sequential"]
    attack.run(model, shared[:1], list(labels[:1]), images[0].shape)  # 2 problems, not 4: a new probe
    assert sorted(attack.execution.choices.values()) == ["sequential", "stacked"]


@pytest.mark.parametrize(
    "layer",
    [
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten()),
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 12), nn.LayerNorm(12), nn.ReLU()),
    ],
)
def test_stacked_gradients_equal_per_problem_autograd(layer):
    torch.manual_seed(0)
    features = layer()
    width = features(torch.zeros(1, 3, 6, 6)).shape[1]
    model = nn.Sequential(features, nn.Linear(width, 5))
    params = {n: p.detach() for n, p in model.named_parameters()}
    names = list(params)
    images, labels = torch.randn(3, 2, 3, 6, 6), torch.randint(0, 5, (3, 2))

    def loss(p, x, y):
        return nn.functional.cross_entropy(functional_call(model, p, (x,)), y)

    expected = vmap(grad(loss), in_dims=(None, 0, 0))(params, images, labels)
    victims = torch.tensor([0, 0, 1])
    stacked = stacked_gradients(
        model, names, victims, lambda: 3 * nn.functional.cross_entropy(model(images.flatten(0, 1)), labels.flatten())
    )
    targets = Targets({n: torch.randn(2, *p.shape) for n, p in params.items()})
    reference = ProblemGradients(victims, dict(expected))
    torch.testing.assert_close(stacked.dot(targets), reference.dot(targets), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stacked.square_norm(), reference.square_norm(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        stacked.square_distance(targets), reference.square_distance(targets), rtol=1e-4, atol=1e-4
    )
    assert stacked.factored  # the wide weights stay factored


def test_tied_channels_are_identical_and_mixed_normalisations_are_refused():
    model = _model(width=16)
    images, labels = _victims(1)
    attack = InvertingGradients(iterations=3, tie_channels=True, progress=False, **MNIST)
    result = attack(model, _shared(model, images, labels)[0], labels[0], images[0].shape)
    assert result.images.shape == images[0].shape
    assert torch.equal(result.images[:, 0], result.images[:, 1]) and torch.equal(
        result.images[:, 0], result.images[:, 2]
    )
    with pytest.raises(ValueError, match=r"tie_channels=True needs one normalisation for all channels"):
        InvertingGradients(tie_channels=True, mean=(0.4, 0.5, 0.5), std=(0.2, 0.2, 0.2))


def test_threads_are_set_for_the_attack_and_restored():
    model = _model(width=8)
    images, labels = _victims(1)
    before = torch.get_num_threads()
    seen = []
    original = InvertingGradients.optimise

    def spy(self, evaluate, variables):
        seen.append(torch.get_num_threads())
        return original(self, evaluate, variables)

    attack = InvertingGradients(iterations=2, threads=1, progress=False, **MNIST)
    attack.optimise = spy.__get__(attack)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attack(model, _shared(model, images, labels)[0], labels[0], images[0].shape)
    assert seen == [1] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match=r"threads=0; allowed: None"):
        InvertingGradients(threads=0)


def test_stopping_rule_and_dlg_options_are_validated():
    with pytest.raises(ValueError, match=r"patience=-1; allowed: an integer >= 0"):
        StoppingRule(patience=-1)
    with pytest.raises(ValueError, match=r"tol=-0.1; allowed"):
        InvertingGradients(tol=-0.1)
    with pytest.raises(ValueError, match=r"dlg does not take batched"):
        DLG(batched=True)


def test_adaptive_attack_batches_victims_with_their_own_noise_samples():
    torch.manual_seed(0)
    model = build_network("mlp", 10, (3, 16, 16), {"latent_dim": 8}, width=16).train()
    images, labels = _victims(2)
    shared = [
        client_gradient(model, x, y, generator=torch.Generator().manual_seed(i))
        for i, (x, y) in enumerate(zip(images, labels))
    ]
    settings = dict(iterations=6, restarts=2, patience=0, progress=False, **MNIST)
    together = AdaptiveAttack(batched=True, **settings).run(model, shared, list(labels), images[0].shape)
    alone = AdaptiveAttack(batched=False, **settings)(model, shared[1], labels[1], images[0].shape)
    torch.testing.assert_close(together[1].images, alone.images, rtol=1e-4, atol=1e-4)
