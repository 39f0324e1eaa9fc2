import json
import struct
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from callbacks import GradientInversionAttack, PartialPerturbation
from datamodules import OfflineMNISTDataModule
from ppp_lightning import ImageClassifier
from ppp_lightning.assessment.metrics import LEGIBLE_NCC
from ppp_lightning.assessment.reporting import read_records


@pytest.fixture(scope="module")
def data():
    """One datamodule for all runs: setting it up once saves seconds per run."""
    return OfflineMNISTDataModule(batch_size=8)


def _fit(data, callbacks, logger=False, max_steps=4, **trainer_kwargs):
    pl.seed_everything(0, verbose=False)
    model = ImageClassifier(arch="cnn", precode={"latent_dim": 16})
    trainer = pl.Trainer(
        max_steps=max_steps,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        **{"default_root_dir": "run", **trainer_kwargs},
    )
    trainer.fit(model, data)
    return model, trainer


def _attack(**kwargs):
    return GradientInversionAttack(iterations=5, **kwargs)


def test_training_is_bit_identical_with_and_without_the_callback(data):
    def run(with_attack):
        defense = PartialPerturbation(sigma=0.01)
        callbacks = [defense, _attack(every_n_steps=1, num_images=2)] if with_attack else [defense]
        model, _ = _fit(data, callbacks)
        return model.state_dict(), torch.get_rng_state(), defense.generator.get_state()

    (plain, rng, noise), (attacked, rng_attacked, noise_attacked) = run(False), run(True)
    assert plain.keys() == attacked.keys()
    assert all(torch.equal(plain[k], attacked[k]) for k in plain)
    assert torch.equal(rng, rng_attacked) and torch.equal(noise, noise_attacked)
    assert len(read_records(Path("run/attack/metrics.jsonl"))) == 5  # steps 0-3 and the end


def test_no_logger_run_writes_png_grids_and_json_on_schedule(data):
    attack = _attack(every_n_epochs=1, num_images=3, victims="fixed", known_labels=False)
    _fit(data, [PartialPerturbation(sigma=0.01), attack], max_steps=-1, max_epochs=2, limit_train_batches=3)
    records = read_records(Path("run/attack/metrics.jsonl"))
    assert [(r["global_step"], r["event"]) for r in records] == [(0, "before_training"), (3, "epoch"), (6, "epoch")]
    for record in records:
        width, height = Image.open(Path("run/attack", record["image"])).size
        assert width >= 3 * 96 and height >= 2 * 96  # two rows of three images, each at least 96 px
        assert len(record["identified"]) == 3 and (record["pool_size"], record["pool_seed"]) == (100, 0)
        assert sorted(record["attack_labels"]) == sorted(record["labels"])  # recovered from the gradient
        assert set(record["per_image"]) == {"psnr", "ssim", "mse", "ncc"} and len(record["per_image"]["ssim"]) == 3
        rule = zip(record["per_image"]["ncc"], record["identified"])
        assert record["successes"] == [ncc >= LEGIBLE_NCC and found for ncc, found in rule]
        assert record["success_rate"] == pytest.approx(sum(record["successes"]) / 3) and record["floor"]["psnr"] > 5
        assert record["defense"]["partial_perturbation"]["sigma"] == 0.01 and len(record["defense"]["precode"]) == 1
    assert records[0]["labels"] == records[-1]["labels"]  # a fixed victim set


def _wandb_history(run_dir: Path, timeout: float = 60.0) -> list[dict[str, str]]:
    """History rows of a finished offline run, read from its ``.wandb`` log.

    The file is in LevelDB's log format (32 KiB blocks of records with 7-byte headers). W&B's
    service may still be writing it after ``wandb.finish()`` returns: wait for the exit record.
    """
    from wandb.proto import wandb_internal_pb2

    deadline = time.monotonic() + timeout
    while True:
        data, pos, chunk, records = next(run_dir.glob("run-*.wandb")).read_bytes(), 7, b"", []
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
                pos += 32768 - pos % 32768
                continue
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            chunk, pos = chunk + data[pos + 7 : pos + 7 + length], pos + 7 + length
            if kind in (1, 4):  # a full record or the last piece of one
                records.append(wandb_internal_pb2.Record.FromString(chunk))
                chunk = b""
        kinds = [record.WhichOneof("record_type") for record in records]
        if "exit" in kinds or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return [
        {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
        for record, kind in zip(records, kinds)
        if kind == "history"
    ]


def test_offline_wandb_run_holds_images_table_and_metrics(data, monkeypatch, tmp_path):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # artifact staging, not ~/.local
    wandb.teardown()  # forget the settings (mode "disabled") of W&B runs earlier in the session
    logger = WandbLogger(offline=True, save_dir="runs", project="attack-test")
    attack = _attack(every_n_steps=2, num_images=2, before_training=False, name="attack")
    _fit(data, [attack, _attack(name="attack_targeted", target="before_decoder", after_training=False)], logger=logger)
    run_dir = Path(logger.experiment.dir).parent
    wandb.finish()
    files = run_dir / "files"
    assert len(list((files / "media/images/attack").glob("reconstruction_*.png"))) == 2  # steps 2 and 4
    tables = sorted((files / "media/table/attack").glob("victims_*.table.json"))
    table = json.loads(tables[-1].read_text())
    assert table["columns"][:5] == ["step", "victim", "label", "ground_truth", "reconstruction"]
    assert [row[:2] for row in table["data"]] == [[4, 0], [4, 1]]
    records = read_records(files / "attack/metrics.jsonl")
    assert [row[5] for row in table["data"]] == pytest.approx(records[-1]["per_image"]["psnr"])
    scalars = [row for row in _wandb_history(run_dir) if "attack/psnr" in row]
    assert [json.loads(row["trainer/global_step"]) for row in scalars] == [2, 4]
    assert json.loads(scalars[-1]["attack/psnr"]) == pytest.approx(records[-1]["mean"]["psnr"])
    assert json.loads(scalars[-1]["attack/reconstructed_rate"]) == records[-1]["success_rate"]
    assert json.loads(scalars[-1]["attack/identified_rate"]) == records[-1]["findings"]["identified"]["rate"]
    assert (files / "attack" / records[-1]["image"]).exists()
    targeted = read_records(files / "attack_targeted/metrics.jsonl")  # a second attack, apart
    assert [(r["global_step"], r["settings"]["target"]) for r in targeted] == [(0, "before_decoder")]
    assert any("attack_targeted/psnr" in row for row in _wandb_history(run_dir))


def test_tensorboard_run_logs_images_and_scalars(data):
    pytest.importorskip("tensorboard")
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger("tb")
    _fit(data, [_attack(after_training=False)], logger=logger, max_steps=1)
    (record,) = read_records(Path(logger.log_dir) / "attack/metrics.jsonl")
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0}).Reload()
    (image,) = events.Images("attack/reconstruction")
    sheet = Image.open(Path(logger.log_dir, "attack", record["image"]))
    assert image.step == 0 and (image.width, image.height) == sheet.size and image.height >= 2 * 96  # the PNG's sheet
    (psnr,) = events.Scalars("attack/psnr")
    assert psnr.step == 0 and psnr.value == pytest.approx(record["mean"]["psnr"], rel=1e-5)
    assert events.Scalars("attack/reconstructed_rate")[0].value == record["success_rate"]


def test_invalid_settings_are_refused_at_construction():
    allowed = "inverting, adaptive, analytic, clean_layer, dlg, feature_inversion"
    with pytest.raises(ValueError, match=f"attack='gan'; allowed: {allowed}"):
        GradientInversionAttack(attack="gan")
    with pytest.raises(ValueError, match="victims='test'; allowed: batch, fixed"):
        GradientInversionAttack(victims="test")
    with pytest.raises(ValueError, match="exactly 1 for attack='analytic'"):
        GradientInversionAttack(attack="analytic", num_images=2)
    with pytest.raises(ValueError, match="every_n_steps=0"):
        GradientInversionAttack(every_n_steps=0)
    with pytest.raises(ValueError, match="success_metric='acc'"):
        GradientInversionAttack(success_metric="acc")
    with pytest.raises(ValueError, match="iterations=0"):
        GradientInversionAttack(iterations=0)


def test_a_resumed_run_neither_repeats_nor_loses_attacks(data, tmp_path):
    def fit(max_steps, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        trainer = pl.Trainer(
            max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
            callbacks=[_attack(every_n_steps=2, after_training=False)],
        )  # fmt: skip
        trainer.fit(ImageClassifier(arch="cnn", precode={"latent_dim": 16}), data, ckpt_path=ckpt_path)
        return trainer

    first = fit(3)  # attacks at steps 0 and 2, then stops
    first.save_checkpoint(tmp_path / "stopped.ckpt")
    fit(6, ckpt_path=tmp_path / "stopped.ckpt")  # resumes at step 3: attacks at step 4 only
    records = read_records(tmp_path / "attack/metrics.jsonl")
    assert [(r["global_step"], r["event"]) for r in records] == [(0, "before_training"), (2, "step"), (4, "step")]


def test_more_victims_than_the_batch_holds_is_refused_before_any_attack(tmp_path):
    data = OfflineMNISTDataModule(batch_size=4)
    with pytest.raises(ValueError, match="num_images=8 but the training batches hold 4 images"):
        _fit(data, [_attack(num_images=8)], default_root_dir=tmp_path)
    assert not (tmp_path / "attack").exists()


def test_fast_dev_run_records_the_iterations_that_ran(data, tmp_path):
    _fit(data, [_attack()], max_steps=-1, fast_dev_run=True, default_root_dir=tmp_path)
    records = read_records(tmp_path / "attack/metrics.jsonl")
    assert [r["settings"]["iterations"] for r in records] == [2, 2]


def _fit_mlp(data, callbacks, logger):
    pl.seed_everything(0, verbose=False)
    model = ImageClassifier(arch="mlp", arch_kwargs={"width": 64})
    trainer = pl.Trainer(
        max_steps=1, logger=logger, callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, default_root_dir="run",
    )  # fmt: skip
    trainer.fit(model, data)


def test_a_control_that_leaks_makes_a_blocked_attack_protected_and_logs_both_rates(data, tmp_path):
    logger = CSVLogger(tmp_path)
    defense = PartialPerturbation(layers="all", sigma=100.0, relative=True)
    attack = GradientInversionAttack(attack="analytic", control=True, after_training=False)
    _fit_mlp(data, [defense, attack], logger)
    (record,) = read_records(Path(logger.log_dir, "attack", "metrics.jsonl"))
    assert record["success_rate"] == 0.0 and record["control"]["success_rate"] == 1.0  # noise 100x the RMS vs exact
    assert record["outcome"] == "protected" and record["convergence"]["budget_share"] == 0  # analytic: no budget
    assert record["verdict"] == (
        "protected: reconstructed 0/1 (95% CI 0.00-0.97), identified 0/1 not above chance (95% CI 0.00-0.97; "
        "chance 1/100, p 1); control (without the audited defense): identified 1/1 above chance (95% CI 0.03-1.00; "
        "chance 1/100, p 0.01), reconstructed 1/1 (95% CI 0.03-1.00)"
    )
    metrics = Path(logger.log_dir, "metrics.csv").read_text().splitlines()[0].split(",")
    logged = {"reconstructed_rate", "identified_rate", "identification_p_value", "leaked", "budget_share"}
    logged |= {f"control_{key}" for key in ("reconstructed_rate", "identified_rate", "identification_p_value", "leaked")}
    assert {f"attack/{key}" for key in logged} <= set(metrics)
    width, height = Image.open(Path(logger.log_dir, "attack", record["image"])).size
    assert height >= 5 * 96  # truth; attack, control, each with its contrast-stretched copy


def test_without_a_passing_control_the_verdict_is_inconclusive(data):
    attack = _attack(control=True, before_training=True, after_training=False)
    _fit(data, [PartialPerturbation(sigma=10.0, relative=True), attack], max_steps=1)
    (record,) = read_records(Path("run/attack/metrics.jsonl"))
    assert record["control"]["successes"] == [False] and record["successes"] == [False]  # 5 iterations: too weak
    assert record["verdict"].startswith("inconclusive (the attack did not leak without the defense either; the "
                                        "attack stopped at its budget (100% of its problems)): reconstructed 0/1")
