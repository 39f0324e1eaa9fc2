"""Draw docs/images/federated_reconstruction.png: the server's reconstructions of each client's digit.

Runs ``configs/federated/fedsgd_mlp_attack.yaml`` and its PRECODE variant in one process (no Ray),
then stacks the PNG grids the attacking strategy wrote (ground truth above reconstruction, one
column per client): the undefended mlp on the left, PRECODE on the right.

    python docs/federated_reconstruction.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.io import read_image
from torchvision.utils import save_image

from ppp_lightning.federated.client_app import app as client_app
from ppp_lightning.federated.config import parse_config
from ppp_lightning.federated.in_process import InProcessGrid
from ppp_lightning.federated.server_app import run_federation

CONFIGS = ("configs/federated/fedsgd_mlp_attack.yaml", "configs/federated/fedsgd_mlp_precode_attack.yaml")
OUTPUT = Path("docs/images/federated_reconstruction.png")
SCALE = 4  # nearest-neighbour upscaling of the 32x32 digits


def attacked_grid(path: str) -> torch.Tensor:
    """Run one config without W&B and return its clients' grids side by side (float, 0..1)."""
    config = parse_config(["--config", path, "--logger", "null", "--federation.num_rounds", "1"])
    strategy, _ = run_federation(InProcessGrid(client_app, config.federation.clients_per_round), config)
    for record in strategy.records:
        print(f"{path}: client {record['partition_id']}: SSIM {record['mean']['ssim']:.3f}, PSNR {record['mean']['psnr']:.1f} dB")
    folder = Path(config.federation.run_dir) / config.attack.log_name
    return torch.cat([read_image(str(folder / record["image"]))[:3].float() / 255 for record in strategy.records], dim=2)


def main() -> None:
    grids = [attacked_grid(path) for path in CONFIGS]
    gap = torch.ones(3, grids[0].shape[1], 8)
    picture = torch.cat([grids[0], gap, grids[1]], dim=2)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    save_image(picture.repeat_interleave(SCALE, 1).repeat_interleave(SCALE, 2), OUTPUT)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
