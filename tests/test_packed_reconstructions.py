"""An audit's reconstructions packed as 8-bit images: the same pictures, a fraction of the bytes."""

import torch

from ppp_lightning.auditing.report import kept_images, pack_reconstructions, reconstructions_path

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _keep(folder, label, control=True):
    """Raw reconstructions as an audit keeps them: normalised images, a control or none."""
    generator = torch.Generator().manual_seed(0)
    kept = {"attack": torch.randn(4, 3, 8, 8, generator=generator),
            "control": torch.randn(4, 3, 8, 8, generator=generator) if control else None}  # fmt: skip
    path = reconstructions_path(folder, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(kept, path)
    return kept


def test_packed_images_are_the_unit_interval_images_to_half_an_8_bit_step(tmp_path):
    _keep(tmp_path, "inverting")
    _keep(tmp_path, "inverting/before_decoder", control=False)
    raw = {label: kept_images(tmp_path, label, MEAN, STD) for label in ("inverting", "inverting/before_decoder")}
    packed = pack_reconstructions(tmp_path, MEAN, STD)
    assert [path.name for path in packed] == ["inverting.npz", "inverting_before_decoder.npz"]
    for path in packed:
        path.with_suffix(".pt").unlink()  # a clone of committed results: the packed copies alone
    for label, images in raw.items():
        again = kept_images(tmp_path, label, MEAN, STD)
        assert again["attack"].shape == (4, 3, 8, 8) and again["attack"].dtype == torch.float32
        assert (again["attack"] - images["attack"]).abs().max().item() <= 0.5 / 255 + 1e-6
        assert 0 <= again["attack"].min().item() and again["attack"].max().item() <= 1
    control = kept_images(tmp_path, "inverting", MEAN, STD)["control"]
    assert (control - raw["inverting"]["control"]).abs().max().item() <= 0.5 / 255 + 1e-6
    assert kept_images(tmp_path, "inverting/before_decoder", MEAN, STD)["control"] is None
    assert kept_images(tmp_path, "analytic", MEAN, STD) is None  # neither raw nor packed


def test_a_folder_without_kept_reconstructions_packs_nothing(tmp_path):
    assert pack_reconstructions(tmp_path, MEAN, STD) == []
