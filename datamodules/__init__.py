"""LightningDataModules of ppp-lightning: every image is a normalised 3x32x32 tensor."""

from datamodules.base import ImageDataModule
from datamodules.cifar10 import CIFAR10DataModule
from datamodules.files import DataFileError
from datamodules.mnist import MNISTDataModule
from datamodules.offline_mnist import OfflineMNISTDataModule

__all__ = ["CIFAR10DataModule", "DataFileError", "ImageDataModule", "MNISTDataModule", "OfflineMNISTDataModule"]
