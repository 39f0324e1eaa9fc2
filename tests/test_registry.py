"""One registry entry per attack: a toy attack added by one registration reaches the spec, the suite,
the callback and the docs' table; no list of attacks, mechanisms or architectures is copied."""

import ast
from pathlib import Path

import pytest
import torch

from callbacks import GradientInversionAttack
from ppp_lightning.attacks import REGISTRY, AttackResult, AttackSpec, register
from ppp_lightning.attacks.registry import capability_table, check_images
from ppp_lightning.attacks.suite import attack_suite
from ppp_lightning.defenses.perturbation import MECHANISMS
from ppp_lightning.models import ARCHITECTURES, build_network

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def toy():
    """A toy attack, registered once; removed again afterwards."""

    @register("toy", "returns zeros (a test's attack)", one_image=True, needs_precode=True)
    class Toy:
        def __init__(self, tie_channels: bool = False, progress: bool = False) -> None:
            self.tie_channels = tie_channels

        def __call__(self, model, gradients, labels, shape):
            check_images(self.capabilities, shape)
            return AttackResult(torch.zeros(tuple(shape)), torch.zeros(shape[0], dtype=torch.long))

        def run(self, model, gradients, labels, shape):
            return [self(model, g, None, shape) for g in gradients]

    yield Toy
    REGISTRY.pop("toy")


def test_one_registration_puts_a_toy_attack_in_the_spec_the_suite_the_callback_and_the_docs(toy):
    spec = AttackSpec("toy", {"tie_channels": True})
    assert isinstance(spec.build(), toy) and spec.capabilities.one_image
    precode = build_network("mlp", 10, (3, 32, 32), {"latent_dim": 8}, width=32)
    plain = build_network("mlp", 10, (3, 32, 32), None, width=32)
    example = torch.zeros(1, 3, 32, 32)
    assert attack_suite(precode, example, tie_channels=True)["toy"] == spec.replace(progress=False)
    assert "toy" not in attack_suite(plain, example)  # it needs a PRECODE
    assert "toy" not in attack_suite(precode, example, batch_size=2)  # it recovers one image per gradient
    assert GradientInversionAttack(attack="toy").spec == AttackSpec("toy")
    with pytest.raises(ValueError, match=r"num_images=2; allowed: >= 1 \(exactly 1 for attack='toy'\)"):
        GradientInversionAttack(attack="toy", num_images=2)
    with pytest.raises(ValueError, match=r"attack 'toy' recovers one image per gradient; got shape \(2, 3, 4, 4\)"):
        spec.build()(precode, {}, None, (2, 3, 4, 4))
    assert "| `toy` | returns zeros (a test's attack) | yes | yes | - | - | - | - |" in capability_table()


def test_a_name_is_registered_once_and_capabilities_are_checked(toy):
    with pytest.raises(ValueError, match=r"attack 'toy' is registered already \(by Toy\)"):
        register("toy", "again")(type("Other", (), {}))
    with pytest.raises(ValueError, match=r"capabilities \['needs_gpu'\] of attack 'x'; allowed: convolution_free"):
        register("x", "?", needs_gpu=True)


def test_the_docs_hold_the_registrys_table():
    assert capability_table() in (ROOT / "docs" / "architecture.md").read_text()


@pytest.mark.parametrize("names", [tuple(REGISTRY), MECHANISMS, tuple(ARCHITECTURES)], ids=["attacks", "mechanisms", "archs"])
def test_no_list_of_names_is_written_out_twice(names):
    """Every literal tuple, list or Literal[...] that holds all the names, across the package and callbacks."""
    holders = []
    for path in [*ROOT.glob("ppp_lightning/**/*.py"), *ROOT.glob("callbacks/*.py"), *ROOT.glob("datamodules/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) or (isinstance(node, ast.Dict) and node.keys):
                items = node.keys if isinstance(node, ast.Dict) else node.elts
                values = {item.value for item in items if isinstance(item, ast.Constant)}
                if set(names) <= values:
                    holders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert len(holders) <= 1, holders  # attacks: none (each registers itself); the others: their one definition
