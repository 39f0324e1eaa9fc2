"""Bad data and checkpoint files stop with one message naming the file, the cause and the fix."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import calculate_md5

from datamodules import CIFAR10DataModule, DataFileError, MNISTDataModule
from ppp_lightning.lightning.cli import CheckpointFileError, main, read_checkpoint
from tests.fake_data import set_magic, truncate, write_checkpoint, write_cifar10, write_mnist

FIX = "download: true (CLI: --data.init_args.download=true)"


def _setup_error(module) -> DataFileError:
    with pytest.raises(DataFileError) as info:
        module.setup()
    return info.value


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_mnist_file_with_a_wrong_magic_number(tmp_path, name):
    path = set_magic(write_mnist(tmp_path) / "MNIST" / "raw" / name, 0x12345678)
    message = str(_setup_error(MNISTDataModule(data_dir=str(tmp_path), val_size=4)))
    assert f"{path.resolve()}: bad magic number 0x12345678, expected 0x0000080" in message
    assert FIX in message and message.count("MNIST/raw/") == 1


@pytest.mark.parametrize("keep", [0, 2, 10, 1000])
def test_truncated_mnist_file(tmp_path, keep):
    path = truncate(write_mnist(tmp_path, n_train=8) / "MNIST" / "raw" / "train-images-idx3-ubyte", keep)
    message = str(_setup_error(MNISTDataModule(data_dir=str(tmp_path), val_size=4)))
    assert f"{path.resolve()}: truncated: {keep} bytes" in message and FIX in message


def test_truncated_cifar10_batch_is_not_reported_missing(cifar10_root):
    path = cifar10_root / "cifar-10-batches-py" / "data_batch_3"
    truncate(path, path.stat().st_size // 2)
    message = str(_setup_error(CIFAR10DataModule(data_dir=str(cifar10_root), val_size=4)))
    assert f"{path.resolve()}: truncated" in message and "not found" not in message
    assert "data_batch_1" not in message and FIX in message


def test_cifar10_batch_that_is_not_a_pickle(cifar10_root):
    path = cifar10_root / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    message = str(_setup_error(CIFAR10DataModule(data_dir=str(cifar10_root), val_size=4)))
    assert f"{path.resolve()}: not a CIFAR batch pickle" in message


def test_cifar10_checksum_mismatch_is_found_by_torchvision_own_check(tmp_path, monkeypatch):
    folder = write_cifar10(tmp_path) / "cifar-10-batches-py"
    md5 = {path.name: calculate_md5(str(path)) for path in folder.iterdir()}
    # torchvision's real MD5 test, with the digests of our files instead of the real CIFAR-10's.
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    CIFAR10DataModule(data_dir=str(tmp_path), val_size=4).setup()  # sound files load
    batch = folder / "data_batch_2"
    content = pickle.loads(batch.read_bytes())
    content["labels"] = list(reversed(content["labels"]))  # still a valid batch, other bytes
    batch.write_bytes(pickle.dumps(content))
    message = str(_setup_error(CIFAR10DataModule(data_dir=str(tmp_path), val_size=4)))
    assert f"{batch.resolve()}: checksum mismatch (md5 {calculate_md5(str(batch))}, expected {md5['data_batch_2']})" in message
    assert "data_batch_1" not in message and FIX in message


def test_missing_file_is_named(tmp_path):
    raw = write_mnist(tmp_path) / "MNIST" / "raw"
    (raw / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing: .*t10k-images-idx3-ubyte\).*--data.init_args.download=true"):
        MNISTDataModule(data_dir=str(tmp_path), val_size=4).setup()


def _checkpoint(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "model.ckpt", {"arch": "mlp"})


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        (lambda p: truncate(p, p.stat().st_size // 2), "truncated: "),
        (lambda p: truncate(p, 0), "truncated: the file is empty"),
        (lambda p: p.write_text("not a checkpoint"), "not a PyTorch checkpoint"),
        (lambda p: p.unlink(), "no such file"),
    ],
    ids=["truncated", "empty", "text", "missing"],
)
def test_bad_checkpoint_names_the_file_and_the_cause(tmp_path, damage, cause):
    path = _checkpoint(tmp_path)
    damage(path)
    with pytest.raises(CheckpointFileError, match="bad checkpoint") as info:
        read_checkpoint(path)
    assert str(path) in str(info.value) and cause in str(info.value)


def test_checkpoint_without_state_dict_is_refused(tmp_path):
    import torch

    torch.save({"weights": 1}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointFileError, match="not a Lightning checkpoint: it holds no 'state_dict' entry"):
        read_checkpoint(tmp_path / "plain.pt")


def _cli_error(capsys, args: list[str]) -> list[str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 1
    return [line for line in capsys.readouterr().err.splitlines() if "error:" in line]


def test_cli_stops_on_a_truncated_checkpoint_with_one_line(tmp_path, capsys):
    path = _checkpoint(tmp_path)
    truncate(path, 1000)
    errors = _cli_error(capsys, ["fit", "--model=ppp_lightning.ImageClassifier", "--data=datamodules.OfflineMNISTDataModule", f"--ckpt_path={path}"])
    assert len(errors) == 1 and str(path) in errors[0] and "truncated" in errors[0]


def test_cli_stops_on_a_bad_mnist_file_with_one_line(tmp_path, capsys):
    path = set_magic(write_mnist(tmp_path) / "MNIST" / "raw" / "train-labels-idx1-ubyte", 0)
    args = ["fit", "--model=ppp_lightning.ImageClassifier", "--data=datamodules.MNISTDataModule", f"--data.init_args.data_dir={tmp_path}"]
    errors = _cli_error(capsys, args + ["--data.init_args.val_size=4", "--trainer.fast_dev_run=true"])
    assert len(errors) == 1 and f"{path.resolve()}: bad magic number 0x00000000" in errors[0] and FIX in errors[0]
