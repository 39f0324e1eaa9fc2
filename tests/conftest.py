"""Shared test set-up: no network, no W&B server, small CPU thread pool."""

import os
import sys

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Run every test in its own folder so runs, checkpoints and W&B files never collide."""
    monkeypatch.chdir(tmp_path)
    yield
    if "wandb" in sys.modules:  # in-process CLI runs would otherwise share one W&B run
        sys.modules["wandb"].finish()


@pytest.fixture
def mnist_root(tmp_path_factory):
    """A folder with a small MNIST in torchvision's raw idx layout."""
    from tests.fake_data import write_mnist

    return write_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture
def cifar10_root(tmp_path_factory, monkeypatch):
    """A folder with a small CIFAR-10 in its pickle layout (md5 check off: the bytes are ours)."""
    from torchvision.datasets import cifar

    from tests.fake_data import write_cifar10

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: True)
    return write_cifar10(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="session")
def digits():
    """The first 16 offline MNIST training digits, their labels, the mean of 1,000 (the floor) and the metrics."""
    from datamodules import OfflineMNISTDataModule
    from ppp_lightning.assessment.metrics import ReconstructionMetrics

    data = OfflineMNISTDataModule()
    data.setup("fit")
    images, labels = zip(*(data.train_set[i] for i in range(16)))
    floor = torch.stack([data.train_set[i][0] for i in range(1000)]).mean(0)
    return torch.stack(images), torch.stack(labels), floor, ReconstructionMetrics(data.mean, data.std)
