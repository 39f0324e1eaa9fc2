"""Shared test set-up: no network, no W&B server, small CPU thread pool."""

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Run every test in its own folder so runs, checkpoints and W&B files never collide."""
    monkeypatch.chdir(tmp_path)
