"""The layout: core and Lightning shell in separate folders, and every documented name where users import it."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHELL = ("ppp_lightning/lightning", "ppp_lightning/federated", "callbacks", "datamodules")
# Names users type or the README documents, and where they are defined now.
DOCUMENTED = {
    "ppp_lightning.PRECODE": "ppp_lightning.defenses.precode.PRECODE",
    "ppp_lightning.ImageClassifier": "ppp_lightning.lightning.classifier.ImageClassifier",
    "ppp_lightning.precode.trace_bottlenecks": "ppp_lightning.defenses.precode.trace_bottlenecks",
    "ppp_lightning.metrics.ReconstructionMetrics": "ppp_lightning.assessment.metrics.ReconstructionMetrics",
    "ppp_lightning.reporting.Reporter": "ppp_lightning.assessment.reporting.Reporter",
    "ppp_lightning.assessment.assess": "ppp_lightning.assessment.assess.assess",
    "ppp_lightning.attacks.AttackSpec": "ppp_lightning.attacks.spec.AttackSpec",
    "ppp_lightning.gradients.client_gradient": "ppp_lightning.gradients.client_gradient",
    "ppp_lightning.losses.classification_terms": "ppp_lightning.losses.classification_terms",
    "callbacks.PartialPerturbation": "callbacks.partial_perturbation.PartialPerturbation",
    "callbacks.GradientInversionAttack": "callbacks.gradient_inversion.GradientInversionAttack",
    "callbacks.LeakageAudit": "callbacks.leakage_audit.LeakageAudit",
    "datamodules.OfflineMNISTDataModule": "datamodules.offline_mnist.OfflineMNISTDataModule",
    "datamodules.MNISTDataModule": "datamodules.mnist.MNISTDataModule",
    "datamodules.CIFAR10DataModule": "datamodules.cifar10.CIFAR10DataModule",
}


def _resolve(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _modules(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if p.name != "__main__.py")


def _is_shell(path: Path) -> bool:
    return any(path.is_relative_to(ROOT / folder) for folder in SHELL)


def test_every_core_module_imports_no_lightning_in_a_fresh_interpreter():
    core = [p for p in _modules("ppp_lightning") if not _is_shell(p)]
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in core]
    assert {"ppp_lightning.attacks.registry", "ppp_lightning.assessment.record", "ppp_lightning.auditing.audit"} <= set(names)
    code = (
        f"import sys; import {', '.join(names)}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pytorch_lightning', 'lightning', 'lightning_fabric'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


def test_only_the_shell_folders_import_lightning():
    lightning = re.compile(r"^\s*(from|import) (pytorch_)?lightning\b", re.MULTILINE)
    importers = [p.relative_to(ROOT) for p in _modules("ppp_lightning") + _modules("callbacks")
                 if lightning.search(p.read_text())]  # fmt: skip
    assert importers and all(_is_shell(ROOT / p) for p in importers), [p for p in importers if not _is_shell(ROOT / p)]


@pytest.mark.parametrize("documented", sorted(DOCUMENTED))
def test_documented_names_import_from_where_users_type_them(documented):
    assert _resolve(documented) is _resolve(DOCUMENTED[documented])


def test_every_yaml_class_path_resolves():
    paths = set()
    for config in ROOT.glob("configs/**/*.yaml"):
        stack = [yaml.safe_load(config.read_text())]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                paths.update([node["class_path"]] if "class_path" in node else [])
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    assert {"ppp_lightning.ImageClassifier", "callbacks.PartialPerturbation", "callbacks.LeakageAudit"} <= paths
    assert all(isinstance(_resolve(path), type) for path in paths)
