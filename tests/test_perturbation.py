import math

import pytest
import torch
from torch import nn

from ppp_lightning.defenses.perturbation import GradientPerturbation, PerturbationHooks

N = 200_000  # entries per std estimate: its relative error is about 1% even for Laplace tails


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def excess_kurtosis(x: torch.Tensor) -> float:
    z = (x - x.mean()) / x.std()
    return z.pow(4).mean().item() - 3


@pytest.mark.parametrize("mechanism, kurtosis", [("gaussian", 0.0), ("laplace", 3.0)])
def test_noise_has_std_sigma_and_the_mechanism_s_shape(mechanism, kurtosis):
    grads = {"w": torch.full((N // 2,), 3.0), "b": torch.full((N // 2,), -1.0)}
    out = GradientPerturbation(mechanism, sigma=0.2)(grads, generator())
    noise = torch.cat([out["w"] - 3.0, out["b"] + 1.0])
    assert noise.std().item() == pytest.approx(0.2, rel=0.05)
    assert abs(noise.mean().item()) < 0.005
    assert excess_kurtosis(noise) == pytest.approx(kurtosis, abs=0.3)
    assert torch.equal(grads["w"], torch.full((N // 2,), 3.0))  # inputs untouched


def test_same_generator_state_gives_the_same_noise_and_other_seeds_differ():
    perturb = GradientPerturbation(sigma=1.0)
    grads = {"w": torch.zeros(100)}
    assert torch.equal(perturb(grads, generator(1))["w"], perturb(grads, generator(1))["w"])
    assert not torch.equal(perturb(grads, generator(1))["w"], perturb(grads, generator(2))["w"])


def test_relative_noise_scales_with_each_tensor_s_rms():
    grads = {"small": torch.full((N,), 0.01), "large": torch.full((N,), -5.0)}
    out = GradientPerturbation(sigma=0.5, relative=True)(grads, generator())
    assert (out["small"] - 0.01).std().item() == pytest.approx(0.005, rel=0.05)
    assert (out["large"] + 5.0).std().item() == pytest.approx(2.5, rel=0.05)


def test_clipping_bounds_the_joint_norm_and_keeps_the_direction():
    grads = {"a": torch.randn(300, generator=generator()) * 10, "b": torch.randn(7, 7, generator=generator(1))}
    out = GradientPerturbation("none", clip_norm=2.0)(grads)
    joint = math.sqrt(sum(v.square().sum().item() for v in out.values()))
    assert joint == pytest.approx(2.0, rel=1e-4)
    ratio = out["a"] / grads["a"]
    assert torch.allclose(ratio, ratio[0]) and torch.allclose(out["b"] / grads["b"], ratio[0])
    small = {"a": torch.full((4,), 0.1)}
    assert torch.equal(GradientPerturbation("none", clip_norm=2.0)(small)["a"], small["a"])


def test_clipping_comes_before_the_noise():
    out = GradientPerturbation(sigma=1.0, clip_norm=1e-3)({"a": torch.full((N,), 100.0)}, generator())
    assert out["a"].std().item() == pytest.approx(1.0, rel=0.05)  # the signal was clipped to ~0


@pytest.mark.parametrize("keep_ratio", [0.1, 0.5, 1.0])
def test_pruning_keeps_the_requested_fraction_of_largest_entries_per_tensor(keep_ratio):
    grads = {"a": torch.randn(1000, generator=generator()), "b": torch.randn(20, 30, generator=generator(1))}
    out = GradientPerturbation("none", keep_ratio=keep_ratio)(grads)
    for name, grad in grads.items():
        kept = out[name] != 0
        assert kept.sum().item() == round(keep_ratio * grad.numel())
        assert torch.equal(out[name][kept], grad[kept])
        if keep_ratio < 1:
            assert grad[kept].abs().min() >= grad[~kept].abs().max()


def test_loss_scale_keeps_noise_and_clipping_in_unscaled_units():
    grads = {"a": torch.randn(1000, generator=generator())}
    perturb = GradientPerturbation(sigma=0.3, clip_norm=1.0)
    plain = {"a": grads["a"].clone()}
    scaled = {"a": grads["a"] * 1024.0}
    clean_sq, noise_sq = perturb.apply_(plain, generator(5))
    scaled_clean_sq, scaled_noise_sq = perturb.apply_(scaled, generator(5), scale=1024.0)
    assert torch.allclose(scaled["a"] / 1024.0, plain["a"], atol=1e-5)
    assert scaled_clean_sq.item() == pytest.approx(clean_sq.item(), rel=1e-5)
    assert scaled_noise_sq.item() == pytest.approx(noise_sq.item(), rel=1e-5)
    assert clean_sq.item() == pytest.approx(grads["a"].square().sum().item(), rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mechanism": "uniform"}, "mechanism='uniform'; allowed: gaussian, laplace, none"),
        ({"sigma": -1.0}, "sigma=-1.0"),
        ({"mechanism": "none", "sigma": 1.0}, "sigma=1.0"),
        ({"clip_norm": 0.0}, "clip_norm=0.0; allowed: a finite number > 0"),
        ({"keep_ratio": 1.5}, "keep_ratio=1.5; allowed: a finite number > 0 and <= 1"),
    ],
)
def test_invalid_options_are_refused_with_the_value_and_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("]", r"\]")):
        GradientPerturbation(**kwargs)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(50, 200), nn.Tanh(), nn.Linear(200, 3))


def backward(net: nn.Module, times: int = 1) -> None:
    for _ in range(times):
        net(torch.linspace(-1, 1, 100).view(2, 50)).square().sum().backward()


def clean_grads(times: int = 1) -> dict[str, torch.Tensor]:
    net = tiny_net()
    backward(net, times)
    return {n: p.grad.clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("clip_norm", [None, 1e9])  # tensor hooks, and the joint path in finish()
def test_hooks_perturb_only_the_selected_gradients_once_per_arming_after_accumulation(clip_norm):
    net = tiny_net()
    hooks = PerturbationHooks(net, ["0.weight", "0.bias"], GradientPerturbation(sigma=0.1, clip_norm=clip_norm), generator())
    backward(net)  # not armed: clean
    hooks.arm()
    backward(net)  # armed: the accumulated gradient of both passes gets noise once
    stats = hooks.finish()
    assert hooks.finish() is None  # disarmed
    clean = clean_grads(times=2)
    grads = dict(net.named_parameters())
    assert torch.equal(grads["2.weight"].grad, clean["2.weight"]) and torch.equal(grads["2.bias"].grad, clean["2.bias"])
    noise = torch.cat([(grads[n].grad - clean[n]).flatten() for n in ("0.weight", "0.bias")])
    assert noise.std().item() == pytest.approx(0.1, rel=0.05)
    assert stats["num_tensors"].item() == 2 and stats["num_elements"].item() == noise.numel()
    assert stats["noise_norm"].item() == pytest.approx(noise.norm().item(), rel=1e-4)
    clean_norm = math.sqrt(clean["0.weight"].square().sum() + clean["0.bias"].square().sum())
    assert stats["clean_norm"].item() == pytest.approx(clean_norm, rel=1e-4)
    hooks.remove()


def test_attaching_twice_is_refused_and_removal_frees_the_parameters():
    net = tiny_net()
    hooks = PerturbationHooks(net, ["0.weight"], GradientPerturbation(sigma=1.0))
    with pytest.raises(RuntimeError, match=r"already carry perturbation hooks.*0\.weight"):
        PerturbationHooks(net, ["0.bias", "0.weight"], GradientPerturbation(sigma=1.0))
    hooks.remove()
    hooks.arm()
    backward(net)
    assert hooks.finish()["num_tensors"].item() == 1  # only finish() perturbs after removal
    again = PerturbationHooks(net, ["0.weight"], GradientPerturbation(sigma=1.0))
    again.remove()


def test_unknown_names_list_the_available_parameters():
    with pytest.raises(ValueError, match=r"\['nope'\].*available: \['0.weight', '0.bias', '2.weight', '2.bias'\]"):
        PerturbationHooks(tiny_net(), ["nope"], GradientPerturbation())


def test_matches_detects_replaced_parameters():
    net = tiny_net()
    hooks = PerturbationHooks(net, ["0.weight"], GradientPerturbation(sigma=1.0))
    assert hooks.matches(net)
    net[0] = nn.Linear(50, 200)
    assert not hooks.matches(net)
    hooks.remove()
