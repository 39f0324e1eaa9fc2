"""One audit's folder: its victims, its finished records, and how an attack's results are scored and written.

:func:`~ppp_lightning.auditing.audit.audit` fills one folder; the sigma sweep
(:mod:`~ppp_lightning.auditing.sweep`) fills one per sigma from a single attack run. Either way an
attack's record is appended to the folder's ``results.jsonl`` at once (a rerun skips it), its
reconstructions are kept for the combined sheet, and :meth:`AuditFolder.finish` writes
``report.md`` and ``sheet.png``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torchvision.utils import save_image

from ppp_lightning.assessment.assess import Assessment, assess
from ppp_lightning.assessment.metrics import ReconstructionMetrics, to_unit_interval
from ppp_lightning.assessment.record import AttackRecord, Convergence
from ppp_lightning.assessment.reidentification import POOL_SIZE, Reidentifier
from ppp_lightning.assessment.reporting import Reporter, ReportSink
from ppp_lightning.assessment.sheets import SheetRow, draw_sheet
from ppp_lightning.attacks import AttackResult, AttackSpec
from ppp_lightning.auditing.report import (
    LEAK_COLUMNS,
    RESULTS,
    SHEET,
    file_name,
    leak_rows,
    reconstructions_path,
    sheet_rows,
    write_report,
)
from ppp_lightning.auditing.tuning import Tuning, untuned_spec
from ppp_lightning.victims import floor_image

__all__ = ["RECORD_DEFAULTS", "AuditFolder", "AuditScoring", "run_attack"]

# Settings that records written before they existed lack, with the value those audits used.
RECORD_DEFAULTS = {"batch_size": 1, "pool_size": POOL_SIZE, "tune": 0}


def run_attack(
    spec: AttackSpec,
    model: nn.Module,
    gradients: Sequence[Mapping[str, Tensor]],
    labels: Sequence[Tensor],
    shape: tuple[int, ...],
    mean: Sequence[float],
    std: Sequence[float],
    candidates: Optional[Sequence[Tensor]] = None,
) -> list[AttackResult]:
    """One run of ``spec`` on a copy of ``model`` over every shared gradient (each one problem set).

    Args:
        spec: the attack.
        model: the attacked network (copied: PRECODE draws from its RNG).
        gradients: the shared gradients.
        labels: each gradient's labels.
        shape: ``(N, C, H, W)`` of each gradient's batch.
        mean: the data's normalisation mean.
        std: the data's normalisation standard deviation.
        candidates: each gradient's identification candidates, for an attack that picks among them.
    """
    pools = {} if candidates is None else {"candidates": list(candidates)}
    return spec.build(mean, std).run(copy.deepcopy(model), list(gradients), list(labels), shape, **pools)


@dataclass(frozen=True)
class AuditScoring:
    """How an audit scores reconstructions: the metrics and pixel rule, identification, the trivial floor.

    Built once per dataset and setting, it serves every folder of a sweep (the floor averages
    thousands of images, and the rivals' draw reads every label).

    Args:
        metrics: the scores and the pixel rule.
        reidentifier: identification among same-class candidates.
        floor: ``(C, H, W)`` the trivial reconstruction (the dataset's mean image).
    """

    metrics: ReconstructionMetrics
    reidentifier: Reidentifier
    floor: Tensor

    @classmethod
    def of(
        cls, dataset: Any, mean: Sequence[float], std: Sequence[float], one_channel: bool, pool_size: int, seed: int
    ) -> AuditScoring:
        """The scoring of audits on ``dataset`` with ``pool_size`` candidates drawn with ``seed``."""
        metrics = ReconstructionMetrics(mean, std, one_channel=one_channel)
        reidentifier = Reidentifier(dataset, mean, std, one_channel, pool_size, seed)
        return cls(metrics, reidentifier, floor_image(dataset))


class AuditFolder:
    """An audit's folder and victims: which attacks it finished, and the scoring and writing of new ones.

    Args:
        folder: the audit's folder (locked by the caller).
        images: ``(N, C, H, W)`` the victims, normalised.
        labels: ``(N,)`` their labels.
        setting: what the audit is (model, defense, victims, seed...): a folder holding another
            setting's records is refused, and every record carries it.
        scoring: how reconstructions are scored (its pool size and seed are the setting's).
        mean: the data's normalisation mean.
        std: the data's normalisation standard deviation.
        sinks: logger adapters every attack and the report also go to.
        step: the logging step.
        prefix: the logged keys' prefix.

    Raises:
        ValueError: if ``folder`` holds an audit of another setting.
    """

    def __init__(
        self,
        folder: Path,
        images: Tensor,
        labels: Tensor,
        setting: dict[str, Any],
        scoring: AuditScoring,
        mean: Sequence[float],
        std: Sequence[float],
        sinks: Sequence[ReportSink] = (),
        step: int = 0,
        prefix: str = "audit",
    ) -> None:
        self.folder, self.images, self.labels, self.setting = folder, images, labels, setting
        self.mean, self.std, self.sinks, self.step, self.prefix = mean, std, sinks, step, prefix
        self.reporter = Reporter(folder, prefix, mean, std, sinks, records_file=RESULTS)
        self.done = self._finished()
        self.scoring = scoring

    def pending(self, label: str, spec: AttackSpec) -> bool:
        """Whether ``spec`` still has to run under ``label`` (a tuned attack counts as its untuned self)."""
        return label not in self.done or untuned_spec(self.done[label].context) != spec.to_dict()

    def leaked(self) -> bool:
        """Whether an attack finished here leaked (reconstructed a victim or identified victims above chance)."""
        return any(record.attack.findings().leaked for record in self.done.values())

    def candidates(self, spec: AttackSpec) -> Optional[list[Tensor]]:
        """Every victim's identification candidates where ``spec`` picks among them (``None`` otherwise)."""
        needed = spec.capabilities.needs_candidates
        return self.scoring.reidentifier.candidates(self.images, self.labels) if needed else None

    def assess(self, reconstructions: Tensor, victims: Tensor, labels: Tensor) -> Assessment:
        """Score reconstructions of any victims (in their order) as this audit scores its own."""
        scoring = self.scoring
        return assess(scoring.metrics, reconstructions, victims, labels, scoring.floor, scoring.reidentifier,
                      batch_size=self.setting["batch_size"])  # fmt: skip

    def record(
        self,
        label: str,
        spec: AttackSpec,
        results: Sequence[AttackResult],
        controls: Optional[Sequence[AttackResult]],
        seconds: float,
        tuning: Optional[Tuning] = None,
    ) -> AttackRecord:
        """Score the attack (and its control), append its record and keep its reconstructions.

        Args:
            label: the attack's label.
            spec: the attack as it ran.
            results: its results, one per shared gradient.
            controls: the control's results (``None``: no control ran).
            seconds: what the attack (and its control) cost.
            tuning: how its settings were tuned (``None``: they were not).
        """
        scoring = self.scoring
        control_images = None if controls is None else _images(controls)
        control_convergence = None if controls is None else Convergence.of(controls)
        assessed = assess(scoring.metrics, _images(results), self.images, self.labels, scoring.floor,
                          scoring.reidentifier, control_images, self.setting["batch_size"], Convergence.of(results),
                          control_convergence)  # fmt: skip
        context = {"label": label, "attack": spec.name, "settings": spec.settings, "spec": spec.to_dict(),
                   **self.setting, "threat_model": spec.capabilities.threat_model, "seconds": round(seconds, 1),
                   "labels": self.labels.tolist()}  # fmt: skip
        if tuning is not None:
            context["tuning"] = tuning.to_dict()
        self._keep(label, assessed)
        written = self.reporter.report(f"{file_name(label)}.png", self.images, assessed.reconstructions,
                                       assessed.record(context).to_dict(), self.step, prefix=f"{self.prefix}/{label}",
                                       control=assessed.control_reconstructions)  # fmt: skip
        self.done[label] = AttackRecord.from_dict(written)
        return self.done[label]

    def finish(self, labels: Sequence[str]) -> list[AttackRecord]:
        """Write ``report.md`` and ``sheet.png`` (and log them); the records of ``labels``, in order."""
        records = [self.done[label] for label in labels if label in self.done]
        write_report(self.folder, records)
        title = f"Audit of {len(self.images)} victims; audited defense: {self.setting['audited']}"
        truth = SheetRow("truth", to_unit_interval(self.images, self.mean, self.std))
        sheet = draw_sheet(title, [truth, *sheet_rows(self.folder, records, self.mean, self.std)])
        save_image(sheet, self.folder / SHEET)
        for sink in self.sinks:  # the report itself, next to every attack's sheet and table
            sink.log_report(self.prefix, LEAK_COLUMNS, leak_rows(records), sheet, self.step)
        return records

    def _finished(self) -> dict[str, AttackRecord]:
        """The folder's finished attacks by label (the latest of each), refusing another audit's folder."""
        done = {}
        for record in self.reporter.records():
            other = {key: record.get(key, RECORD_DEFAULTS.get(key)) for key in self.setting}
            if other != self.setting:
                changed = [key for key in self.setting if other[key] != self.setting[key]]
                raise ValueError(
                    f"{self.folder} holds an audit with other {', '.join(changed)} ({other}); "
                    "pass another folder or delete it"
                )
            done[record["label"]] = AttackRecord.from_dict(record)
        return done

    def _keep(self, label: str, assessed: Assessment) -> None:
        """Save the reconstructions (for the combined sheet of a resumed audit)."""
        kept = {"attack": assessed.reconstructions, "control": assessed.control_reconstructions}
        path = reconstructions_path(self.folder, label)
        path.parent.mkdir(parents=True, exist_ok=True)
        unfinished = path.with_suffix(".part")  # renamed when complete: a run killed while saving leaves no half file
        torch.save({key: None if value is None else value.cpu() for key, value in kept.items()}, unfinished)
        unfinished.replace(path)


def _images(results: Sequence[AttackResult]) -> Tensor:
    return torch.cat([result.images for result in results]).cpu()
