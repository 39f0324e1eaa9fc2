"""Small datasets written in MNIST's and CIFAR-10's own on-disk formats, so the real loaders run,
and the ways such files (and checkpoints) go bad."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import torch


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 40, n_test: int = 10, seed: int = 0) -> Path:
    """Write ``root/MNIST/raw`` idx files with random 28x28 digits; returns ``root``."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 0x803)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, 0x801)
    return root


def write_cifar10(root: Path, per_batch: int = 8, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py`` pickles (5 train batches, 1 test batch); returns ``root``."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), "labels": list(np.arange(per_batch) % 10)}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return root


def truncate(path: Path, keep: int) -> Path:
    """Cut ``path`` down to its first ``keep`` bytes, as an interrupted download leaves it."""
    path.write_bytes(path.read_bytes()[:keep])
    return path


def set_magic(path: Path, magic: int) -> Path:
    """Overwrite the 4-byte big-endian magic number that starts an idx file."""
    path.write_bytes(struct.pack(">I", magic) + path.read_bytes()[4:])
    return path


def write_checkpoint(path: Path, hyper_parameters: dict, tensor_elements: int = 4096) -> Path:
    """Write a minimal Lightning-style checkpoint (zip format, like ``torch.save`` of a real one)."""
    torch.save({"state_dict": {"w": torch.zeros(tensor_elements)}, "hyper_parameters": hyper_parameters}, path)
    return path
