"""GradientInversionAttack(source="captured"): the gradient a step really used, bit for bit, and what leaks from it."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.utils.data import DataLoader, TensorDataset

from callbacks import GradientInversionAttack, PartialPerturbation
from datamodules import OfflineMNISTDataModule
from ppp_lightning import ImageClassifier
from ppp_lightning.assessment.reporting import read_records

SMALL = {"arch": "mlp", "input_shape": (3, 8, 8), "precode": {"latent_dim": 8}, "arch_kwargs": {"width": 32}}


class SeenBySGD(torch.optim.SGD):
    """SGD that records, per step, the weights and gradients its update consumes (after Lightning's clipping)."""

    def __init__(self, named_parameters, lr: float) -> None:
        self.names = dict(named_parameters)
        super().__init__(self.names.values(), lr=lr)
        self.seen: list[tuple[dict, dict]] = []

    def step(self, closure=None):
        with torch.enable_grad():
            loss = closure()  # Lightning's closure: forward, backward, on_before_optimizer_step, clipping
        weights = {n: p.detach().clone() for n, p in self.names.items()}
        self.seen.append((weights, {n: p.grad.clone() for n, p in self.names.items() if p.grad is not None}))
        super().step()
        return loss


class Recorded(ImageClassifier):
    def configure_optimizers(self):
        self.optimizer = SeenBySGD(self.named_parameters(), lr=0.5)
        return self.optimizer


class Captures(pl.Callback):
    """Every step's capture, read after the attack callback's on_train_batch_end."""

    def __init__(self) -> None:
        self.steps = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        attack = next(c for c in trainer.callbacks if isinstance(c, GradientInversionAttack))
        if attack.last_capture is not None:
            self.steps[attack.last_capture.step] = attack.last_capture


def loader(n: int = 16, batch_size: int = 4, shape=(3, 8, 8)) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, *shape, generator=generator), torch.randint(0, 10, (n,), generator=generator))
    return DataLoader(data, batch_size=batch_size)


def fit(model, callbacks, data, **kwargs) -> pl.Trainer:
    options = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    options.update(enable_model_summary=False, limit_val_batches=0, default_root_dir="run")
    trainer = pl.Trainer(**{**options, **kwargs}, callbacks=callbacks)
    trainer.fit(model, data)
    return trainer


def norm(gradient: dict) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gradient.values()]))


def captured(**kwargs) -> GradientInversionAttack:
    return GradientInversionAttack(source="captured", iterations=2, pool_size=None, **kwargs)


def clean_gradient(capture, **model_kwargs):
    """The control's gradient of ``capture``, on a fresh model given the captured weights."""
    with torch.random.fork_rng():
        return capture.clean_gradient(capture.load_weights(ImageClassifier(**model_kwargs)))


def test_invalid_source_settings_are_refused_at_construction():
    with pytest.raises(ValueError, match="source='server'; allowed: recomputed, captured"):
        GradientInversionAttack(source="server")
    with pytest.raises(ValueError, match="num_images=4, victims='batch' with source='captured'"):
        GradientInversionAttack(source="captured", num_images=4)
    with pytest.raises(ValueError, match="victims='fixed' with source='captured'"):
        GradientInversionAttack(source="captured", victims="fixed")


class Manual(ImageClassifier):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.automatic_optimization = False


class Batches(pl.LightningDataModule):
    batch_size = 4

    def train_dataloader(self):
        return loader(batch_size=self.batch_size)


@pytest.mark.parametrize(
    "module, options, accumulate, match",
    [
        (Manual, {}, 1, "source='captured' pairs each optimizer step with its batches"),
        (ImageClassifier, {"attack": "analytic"}, 2, r"source='captured' attacks 8 \(batch_size=4 x accumulate_grad"),
    ],
    ids=["manual_optimization", "analytic_on_a_batch"],
)
def test_set_ups_that_cannot_be_captured_are_refused_before_any_step(module, options, accumulate, match):
    attack = GradientInversionAttack(source="captured", pool_size=None, **options)
    with pytest.raises(ValueError, match=match):
        fit(module(**SMALL), [attack], Batches(), max_steps=1, accumulate_grad_batches=accumulate)
    assert not Path("run/attack").exists()


@pytest.mark.parametrize(
    "defense, accumulate", [(True, 1), (False, 2)], ids=["partial_perturbation", "accumulate_grad_batches=2"]
)
def test_the_capture_is_bit_for_bit_what_the_optimizer_used(defense, accumulate):
    pl.seed_everything(0, verbose=False)
    model, captures = Recorded(**SMALL), Captures()
    noise = [PartialPerturbation(sigma=0.05)] if defense else []
    attack = captured(every_n_steps=1, after_training=False)
    fit(model, [*noise, attack, captures], loader(), max_steps=3, accumulate_grad_batches=accumulate)
    assert sorted(captures.steps) == [0, 1, 2]
    for step, (weights, grads) in enumerate(model.optimizer.seen):
        capture = captures.steps[step]
        assert capture.gradient.keys() == grads.keys() and capture.weights.keys() == weights.keys()
        assert all(torch.equal(capture.gradient[n], grads[n]) for n in grads)
        assert all(torch.equal(capture.weights[n], weights[n]) for n in weights)
        assert [len(b.labels) for b in capture.micro_batches] == [4] * accumulate
        clean = clean_gradient(capture, **SMALL)  # the control: the same step, PRECODE sample and batch
        noisy = set(noise[0].parameter_names) if defense else set()
        assert bool(noisy) == defense and all(not torch.allclose(clean[n], grads[n], atol=1e-3) for n in noisy)
        assert all(torch.allclose(clean[n], grads[n], atol=1e-6) for n in grads if n not in noisy)


def test_the_capture_precedes_the_trainers_gradient_clipping():
    pl.seed_everything(0, verbose=False)
    model, captures = Recorded(**SMALL), Captures()
    fit(model, [captured(after_training=False), captures], loader(), max_steps=1, gradient_clip_val=1e-3)
    (_, grads), capture = model.optimizer.seen[0], captures.steps[0]
    assert norm(grads).item() == pytest.approx(1e-3, rel=1e-3) and norm(capture.gradient) > 0.1  # unclipped
    scale = 1e-3 / norm(capture.gradient)
    assert all(torch.allclose(g * scale, grads[n], rtol=1e-4, atol=0) for n, g in capture.gradient.items())


def test_an_epochs_short_last_step_is_rescaled_and_unequal_micro_batches_are_skipped():
    pl.seed_everything(0, verbose=False)
    captures = Captures()
    # 6 images in batches of 2, 2 per step: steps [2, 2] and [2] (the epoch's end)
    fit(Recorded(**SMALL), [captured(every_n_steps=1), captures], loader(6, 2), max_epochs=1, accumulate_grad_batches=2)
    short = captures.steps[1]
    assert len(short.micro_batches) == 1 and short.accumulate == 2
    assert all(torch.equal(g, 2 * short.gradient[n]) for n, g in short.batch_gradient().items())  # loss / 2, one batch
    clean = clean_gradient(short, **SMALL)
    assert all(torch.allclose(clean[n], g, atol=1e-6) for n, g in short.batch_gradient().items())
    # 3 images: one step of [2, 1], which no attack on the whole batch models exactly
    odd = loader(3, 2)
    with pytest.warns(UserWarning, match=r"step 0 is not attacked: its micro-batches hold \[2, 1\] images"):
        fit(Recorded(**SMALL), [captured()], odd, max_epochs=1, accumulate_grad_batches=2, default_root_dir="odd")
    assert not Path("odd/attack/metrics.jsonl").exists()


def test_training_is_bit_identical_with_and_without_the_capture():
    def run(with_attack):
        pl.seed_everything(0, verbose=False)
        model, defense = ImageClassifier(**SMALL), PartialPerturbation(sigma=0.05)
        attack = captured(every_n_steps=2, control=True)
        fit(model, [defense, attack] if with_attack else [defense], loader(), max_steps=4, accumulate_grad_batches=2)
        return model.state_dict(), torch.get_rng_state(), defense.generator.get_state()

    (plain, rng, noise), (attacked, rng_attacked, noise_attacked) = run(False), run(True)
    assert plain.keys() == attacked.keys() and all(torch.equal(plain[k], attacked[k]) for k in plain)
    assert torch.equal(rng, rng_attacked) and torch.equal(noise, noise_attacked)
    records = read_records(Path("run/attack/metrics.jsonl"))
    assert [(r["global_step"], r["event"], r["source"], r["num_images"]) for r in records] == [
        (0, "before_training", "captured", 8), (2, "step", "captured", 8), (3, "after_training", "captured", 8),
    ]  # fmt: skip


def test_one_image_leaks_from_its_captured_update_and_eight_leak_less(capsys):
    def attack(batch_size):
        pl.seed_everything(0, verbose=False)
        model = ImageClassifier(arch="mlp", arch_kwargs={"width": 16})
        callback = GradientInversionAttack(
            source="captured", iterations=100, control=True, after_training=False, name=f"batch{batch_size}"
        )
        fit(model, [callback], OfflineMNISTDataModule(batch_size=batch_size), max_steps=1)
        (record,) = read_records(Path(f"run/batch{batch_size}/metrics.jsonl"))
        return record

    one, eight = attack(1), attack(8)
    with capsys.disabled():
        for record in (one, eight):
            print(
                f"\ncaptured update, batch {record['num_images']}: {sum(record['successes'])}/{record['num_images']} "
                f"leaked, mean NCC {record['mean']['ncc']:.3f}; control {sum(record['control']['successes'])}/"
                f"{record['num_images']}, mean NCC {record['control']['mean']['ncc']:.3f}"
            )
    assert one["successes"] == [True] and one["control"]["successes"] == [True] and one["outcome"] == "leaked"
    assert one["identified"] == [True] and one["mean"]["ncc"] > 0.9
    assert sum(eight["successes"]) < 8 and eight["success_rate"] < one["success_rate"]
    assert eight["mean"]["ncc"] < one["mean"]["ncc"]


SENT: dict[int, torch.Tensor] = {}  # per process: what DDP's all-reduce received from this rank


def _keep_and_average(state, bucket):
    SENT.update({id(p): g.clone() for p, g in zip(bucket.parameters(), bucket.gradients())})
    return default_hooks.allreduce_hook(state, bucket)


class DDPProbe(pl.Callback):
    """Rank 0 saves its capture, the gradients its DDP all-reduce received and the averaged ones."""

    def on_train_start(self, trainer, pl_module) -> None:
        trainer.strategy.model.register_comm_hook(None, _keep_and_average)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.averaged = {n: p.grad.clone() for n, p in pl_module.named_parameters()}

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            attack = next(c for c in trainer.callbacks if isinstance(c, GradientInversionAttack))
            sent = {n: SENT[id(p)] for n, p in pl_module.named_parameters()}
            torch.save({"captured": attack.last_capture.gradient, "sent": sent, "averaged": self.averaged}, "ddp.pt")


@pytest.mark.slow
def test_under_ddp_rank_zero_captures_its_own_gradient_before_the_all_reduce():
    pl.seed_everything(0, verbose=False)
    # PPP without an example input hooks the parameters in its own on_before_backward, listed after the
    # attack's: the capture must still come after its noise
    callbacks = [captured(after_training=False), PartialPerturbation(sigma=0.05), DDPProbe()]
    fit(ImageClassifier(**SMALL), callbacks, loader(), devices=2, strategy="ddp_spawn", max_steps=1)
    saved = torch.load("ddp.pt")
    captured_grads, sent, averaged = saved["captured"], saved["sent"], saved["averaged"]
    assert captured_grads.keys() == sent.keys() == averaged.keys()
    assert all(torch.equal(captured_grads[n], sent[n]) for n in sent)  # noise included, before the all-reduce
    assert all(not torch.allclose(captured_grads[n], averaged[n]) for n in sent)
