from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
import yaml
from pytorch_lightning.plugins import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks import PartialPerturbation
from ppp_lightning import PRECODE, ImageClassifier
from ppp_lightning.lightning.cli import main

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted([*(CONFIG_DIR / "ppp").glob("*.yaml"), *(CONFIG_DIR / "noise_all").glob("*.yaml")])
SIGMA = 0.05


class GradRecorder(pl.Callback):
    """The (unscaled) gradients that the optimizer is about to use, per step."""

    def __init__(self) -> None:
        self.grads: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads.append({n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None})


def loader(n: int = 16, shape: tuple[int, ...] = (3, 8, 8), classes: int = 10) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, *shape, generator=generator), torch.randint(0, classes, (n,), generator=generator))
    return DataLoader(data, batch_size=4)


def small_classifier(precode: bool = True) -> ImageClassifier:
    pl.seed_everything(0)
    return ImageClassifier("mlp", input_shape=(3, 8, 8), precode={"latent_dim": 8} if precode else None, arch_kwargs={"width": 96})


def fit(model: pl.LightningModule, callbacks: list[pl.Callback], data: DataLoader = None, ckpt_path=None, **kwargs) -> pl.Trainer:
    options = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer = pl.Trainer(**{**options, "enable_model_summary": False, "limit_val_batches": 0, **kwargs}, callbacks=callbacks)
    trainer.fit(model, data or loader(), ckpt_path=ckpt_path)
    return trainer


def first_step_grads(callback: list[pl.Callback], **kwargs) -> dict[str, torch.Tensor]:
    recorder = GradRecorder()
    fit(small_classifier(), callback + [recorder], max_steps=1, **kwargs)
    return recorder.grads[0]


@pytest.mark.parametrize(
    "mechanism, trainer_kwargs",
    [
        ("gaussian", {}),
        ("laplace", {}),
        ("gaussian", {"accumulate_grad_batches": 4}),
        ("gaussian", {"precision": "bf16-mixed"}),
        ("laplace", {"plugins": [MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=2.0**12))]}),
    ],
    ids=["gaussian", "laplace", "accumulate4", "bf16", "fp16"],
)
def test_only_the_selected_gradients_change_and_their_noise_has_std_sigma(mechanism, trainer_kwargs):
    callback = PartialPerturbation(mechanism=mechanism, sigma=SIGMA, seed=1)
    noisy = first_step_grads([callback], **trainer_kwargs)
    clean = first_step_grads([], **trainer_kwargs)
    selected = [n for n in noisy if n.startswith(("network.features.", "network.bottleneck.encoder."))]
    assert callback.parameter_names == selected and len(selected) == 6
    assert all(torch.equal(noisy[n], clean[n]) for n in clean if n not in selected)
    noise = torch.cat([(noisy[n] - clean[n]).flatten() for n in selected])
    assert noise.numel() > 25_000 and (noise != 0).all()
    assert noise.std().item() == pytest.approx(SIGMA, rel=0.05)


def test_logs_the_perturbed_set_and_signal_to_noise_per_step():
    callback = PartialPerturbation(layers="all", sigma=SIGMA)
    trainer = fit(small_classifier(precode=False), [callback], max_steps=2, log_every_n_steps=1)
    metrics = trainer.logged_metrics
    assert metrics["perturbation/num_tensors"].item() == 6 == len(callback.parameter_names)
    total = sum(p.numel() for p in trainer.lightning_module.parameters())
    assert metrics["perturbation/num_elements"].item() == total
    assert metrics["perturbation/noise_norm"].item() == pytest.approx(SIGMA * total**0.5, rel=0.05)
    snr = metrics["perturbation/clean_norm"] / metrics["perturbation/noise_norm"]
    assert metrics["perturbation/snr"].item() == pytest.approx(snr.item())
    assert callback._hooks is None  # removed on teardown


def test_trainer_gradient_clipping_is_flagged():
    with pytest.warns(UserWarning, match="gradient_clip_val=0.5.*runs after the perturbation"):
        fit(small_classifier(), [PartialPerturbation(sigma=SIGMA)], max_steps=1, gradient_clip_val=0.5)


def test_two_callbacks_on_the_same_parameters_are_refused():
    callbacks = [PartialPerturbation(layers="all", sigma=SIGMA), PartialPerturbation(layers="*.bias", sigma=SIGMA)]
    with pytest.raises(RuntimeError, match="already carry perturbation hooks"):
        fit(small_classifier(), callbacks, max_steps=1)


class ReplaceHead(pl.Callback):
    """Swap ``network.head`` for a new Linear before the second step: the hooked parameters change."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 1:
            pl_module.network.head = nn.Linear(96, 10)


def test_hooks_move_to_parameters_that_replace_the_hooked_ones():
    noisy, clean = GradRecorder(), GradRecorder()
    callbacks = [ReplaceHead(), PartialPerturbation(layers=["network.head.*"], sigma=SIGMA), noisy]
    fit(small_classifier(precode=False), callbacks, max_steps=2)
    fit(small_classifier(precode=False), [ReplaceHead(), clean], max_steps=2)
    noise = torch.cat([(noisy.grads[1][n] - clean.grads[1][n]).flatten() for n in ("network.head.weight", "network.head.bias")])
    assert noise.std().item() == pytest.approx(SIGMA, rel=0.1)  # 970 entries: the new head is perturbed


def test_a_position_without_precode_fails_before_training():
    with pytest.raises(ValueError, match=r"layers='before_bottleneck'.*has none.*network.head.weight"):
        fit(small_classifier(precode=False), [PartialPerturbation(sigma=SIGMA)], max_steps=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layers": []}, "layers=[]; allowed: one of before_bottleneck"),
        ({"mechanism": "uniform"}, "mechanism='uniform'; allowed"),
        ({"keep_ratio": 0.0}, "keep_ratio=0.0; allowed"),
    ],
)
def test_invalid_options_name_the_value_and_the_allowed_ones(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        PartialPerturbation(**kwargs)


def test_resuming_mid_training_continues_the_same_noise_stream():
    def run(max_epochs: int, ckpt_path: str = None) -> pl.Trainer:
        model = small_classifier(precode=False)
        return fit(model, [PartialPerturbation(layers="all", sigma=SIGMA, seed=7)], max_epochs=max_epochs, ckpt_path=ckpt_path)

    straight = run(2).lightning_module.state_dict()
    run(1).save_checkpoint("mid.ckpt")
    resumed = run(2, "mid.ckpt").lightning_module.state_dict()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


class UserModel(pl.LightningModule):
    """A model the toolkit did not build: a torchvision MLP, PRECODE, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(torchvision.ops.MLP(48, [64, 32]), PRECODE(32, latent_dim=4), nn.Linear(32, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x.flatten(1)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize(
    "layers, expected",
    [
        (["net.0.0.*"], ["net.0.0.weight", "net.0.0.bias"]),
        ("before_bottleneck", ["net.0.0.weight", "net.0.0.bias", "net.0.3.weight", "net.0.3.bias", "net.1.encoder.weight", "net.1.encoder.bias"]),
    ],
)
def test_a_user_model_with_patterns_or_positions_traced_on_the_first_batch(layers, expected):
    callback, recorder = PartialPerturbation(layers=layers, sigma=SIGMA), GradRecorder()
    pl.seed_everything(0)
    fit(UserModel(), [callback, recorder], loader(shape=(3, 4, 4), classes=3), max_steps=1)
    assert callback.parameter_names == expected
    pl.seed_everything(0)
    clean = GradRecorder()
    fit(UserModel(), [clean], loader(shape=(3, 4, 4), classes=3), max_steps=1)
    changed = [n for n, g in recorder.grads[0].items() if not torch.equal(g, clean.grads[0][n])]
    assert changed == expected


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_perturbation_config_attaches_from_yaml(config, monkeypatch):
    seen = []
    teardown = PartialPerturbation.teardown

    def record(self, trainer, pl_module, stage):
        seen.append((list(self.parameter_names), dict(trainer.logged_metrics), dict(pl_module.named_parameters())))
        teardown(self, trainer, pl_module, stage)

    monkeypatch.setattr(PartialPerturbation, "teardown", record)
    main(["fit", "--config", str(config), "--trainer.fast_dev_run=true", "--trainer.log_every_n_steps=1", "--data.init_args.batch_size=2"])
    (names, metrics, params), = seen
    ppp = config.parent.name == "ppp"
    assert yaml.safe_load(config.read_text())["model"]["init_args"]["precode"] == ({} if ppp else None)
    expected = [n for n in params if n.startswith(("network.features.", "network.bottleneck.encoder."))] if ppp else list(params)
    assert sorted(names) == sorted(expected)
    assert metrics["perturbation/num_tensors"].item() == len(expected)


class ZeroGradModel(pl.LightningModule):
    """``noisy`` has an exactly zero clean gradient, so after the all-reduce it holds the averaged noise."""

    def __init__(self) -> None:
        super().__init__()
        self.noisy = nn.Linear(100, 100)
        self.clean = nn.Linear(100, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        clean_loss = self.clean(x).sum() * (self.global_rank + 1)  # ranks' clean gradients differ
        return clean_loss + 0 * sum(p.sum() for p in self.noisy.parameters())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class SaveGrads(pl.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        torch.save({n: p.grad for n, p in pl_module.named_parameters()}, f"grads{trainer.global_rank}.pt")

    def on_train_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint("ddp.ckpt")  # on every rank, as Lightning requires


@pytest.mark.parametrize("clip_norm", [None, 1e6], ids=["tensor_hooks", "joint_clipping"])
def test_ddp_ranks_add_different_noise_before_the_all_reduce(clip_norm):
    x = torch.randn(8, 100)
    callbacks = [PartialPerturbation(["noisy.*"], sigma=SIGMA, clip_norm=clip_norm), SaveGrads()]
    data = DataLoader(TensorDataset(x), batch_size=2)
    fit(ZeroGradModel(), callbacks, data, devices=2, strategy="ddp_spawn", max_steps=1, use_distributed_sampler=False)
    rank0, rank1 = torch.load("grads0.pt"), torch.load("grads1.pt")
    assert all(torch.equal(rank0[n], rank1[n]) for n in rank0)  # averaged
    noise = torch.cat([rank0["noisy.weight"].flatten(), rank0["noisy.bias"]])
    assert noise.std().item() == pytest.approx(SIGMA / 2**0.5, rel=0.05)  # identical ranks would give SIGMA
    assert torch.allclose(rank0["clean.weight"][0], 1.5 * (x[0] + x[1]), atol=1e-5)  # mean of 1x and 2x
    saved = torch.load("ddp.ckpt", weights_only=False)["callbacks"][callbacks[0].state_key]["generator_states"]
    assert len(saved) == 2 and not torch.equal(saved[0], saved[1])  # every rank's stream is checkpointed
