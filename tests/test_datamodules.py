import numpy as np
import pytest
import torch

from datamodules import CIFAR10DataModule, MNISTDataModule, OfflineMNISTDataModule
from tests.fake_data import write_mnist


def test_mnist_is_resized_to_3x32x32_and_normalised(mnist_root):
    dm = MNISTDataModule(data_dir=str(mnist_root), batch_size=8, val_size=10)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (30, 10, 10)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.long
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    pixels = dm.denormalize(torch.stack([dm.train_set[i][0] for i in range(8)]))
    raw = dm.train_set.dataset.data[dm.train_set.indices[:8]].float() / 255
    assert pixels.min() >= 0 and pixels.max() <= 1
    torch.testing.assert_close(pixels.mean(dim=(1, 2, 3)), raw.mean(dim=(1, 2)), atol=0.01, rtol=0)


def test_cifar10_pixels_round_trip_through_normalisation(cifar10_root):
    dm = CIFAR10DataModule(data_dir=str(cifar10_root), batch_size=4, val_size=8)
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (32, 8, 8)
    x, y = dm.test_set[0]
    assert x.shape == (3, 32, 32)
    raw = np.frombuffer(dm.test_set.data[0].tobytes(), dtype=np.uint8).reshape(32, 32, 3)
    expected = torch.as_tensor(raw, dtype=torch.float32).permute(2, 0, 1) / 255
    torch.testing.assert_close(dm.denormalize(x), expected)
    assert y == 0


def test_split_is_seeded(mnist_root):
    first, second = (MNISTDataModule(data_dir=str(mnist_root), val_size=10, seed=3) for _ in range(2))
    first.setup("fit")
    second.setup("fit")
    assert first.val_set.indices == second.val_set.indices
    other = MNISTDataModule(data_dir=str(mnist_root), val_size=10, seed=4)
    other.setup("fit")
    assert other.val_set.indices != first.val_set.indices


@pytest.mark.parametrize("module", [MNISTDataModule, CIFAR10DataModule])
def test_missing_files_name_the_folder_and_the_flag(tmp_path, module):
    dm = module(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"nowhere.*download=False.*--data.init_args.download=true"):
        dm.setup()


def test_download_flag_reaches_torchvision(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(MNISTDataModule, "dataset_class", staticmethod(lambda root, train, download: calls.append((train, download))))
    MNISTDataModule(data_dir=str(tmp_path), download=True).prepare_data()
    MNISTDataModule(data_dir=str(tmp_path), download=False).prepare_data()
    assert calls == [(True, True), (False, True)]


def test_offline_digits_are_real_balanced_mnist():
    dm = OfflineMNISTDataModule(batch_size=16)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (4000, 500, 500)
    images = torch.stack([dm.train_set[i][0] for i in range(len(dm.train_set))])
    labels = torch.tensor([dm.train_set[i][1] for i in range(len(dm.train_set))])
    assert images.shape[1:] == (3, 32, 32)
    counts = torch.bincount(torch.cat([labels, torch.tensor([y for _, y in dm.val_set]), torch.tensor([y for _, y in dm.test_set])]))
    assert counts.tolist() == [500] * 10
    pixels = dm.denormalize(images)
    # Real digits: mostly black background with a bright stroke, about 13% ink like MNIST.
    assert 0.08 < pixels.mean().item() < 0.2 and pixels.amax().item() == pytest.approx(1.0, abs=1e-3)


def test_offline_rejects_splits_without_training_images():
    with pytest.raises(ValueError, match="test_size=4000 and val_size=1000"):
        OfflineMNISTDataModule(test_size=4000, val_size=1000)


def test_val_size_must_leave_training_images(tmp_path):
    dm = MNISTDataModule(data_dir=str(write_mnist(tmp_path, n_train=5)), val_size=5)
    with pytest.raises(ValueError, match="val_size=5 leaves no training images out of 5"):
        dm.setup()
