"""LeakageAudit: audit the model for gradient leakage before and after training, and print the verdicts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only
from torchvision.utils import save_image
from typing_extensions import override

from callbacks.isolation import for_this_run, isolated
from callbacks.partial_perturbation import attached_perturbation
from ppp_lightning.assessment.metrics import to_unit_interval
from ppp_lightning.assessment.reporting import markdown_table
from ppp_lightning.assessment.sheets import SheetRow, draw_sheet
from ppp_lightning.attacks.suite import attack_suite
from ppp_lightning.auditing.audit import audit
from ppp_lightning.auditing.report import LEAK_COLUMNS, SHEET, leak_rows, sheet_rows
from ppp_lightning.auditing.tuning import check_tune
from ppp_lightning.defenses.spec import DefenseSpec
from ppp_lightning.lightning.logger_sinks import run_directory, sinks_for
from ppp_lightning.victims import VictimPool, draw_victims, victim_pool

__all__ = ["LeakageAudit"]

EVENTS = {"before_training": "before training", "after_training": "after training"}


class LeakageAudit(pl.Callback):
    """Run :func:`~ppp_lightning.auditing.audit.audit` on the model when training starts and ends, and print a table.

    Each audit attacks ``victims`` training images (class-stratified, each alone in its batch) on a
    copy of the model, with positive controls that remove the audited defense: with an attached
    ``PartialPerturbation`` its noise (the control: the same gradient without it), and with
    ``without_noise`` also the model alone, whose PRECODE is then audited (the control: its
    sampling off). Training is unchanged (copies, forked RNG). Each audit goes to
    ``<run dir>/<name>/<event>-<noise|no_noise>/`` (``report.md``, ``sheet.png``,
    ``results.jsonl``) and, with W&B or TensorBoard, to the logger; when training ends the callback
    prints one table of every audit: when, defense, attack, identified and reconstructed k/n with
    their 95% intervals (identification against chance ``1/K`` with its binomial p-value), the
    control and the outcome, and draws every audit's reconstructions and their controls' into
    ``<run dir>/<name>/sheet.png``. A defense is called protective only where neither finding
    leaked, the attack converged and its control leaked. Under ``fast_dev_run`` the optimisation
    attacks run 2 iterations (a smoke test). The audits done and their table rows are checkpointed:
    a resumed run neither repeats an audit nor drops its rows from the table (the combined sheet
    shows the audits of the current process; earlier ones keep theirs in their folders).

    Args:
        attacks: attack labels of :func:`~ppp_lightning.attacks.suite.attack_suite` (``None``: all that apply).
        victims: victims per audit.
        seed: seed of the victims, PRECODE samples and noise.
        before_training: audit the initial model (when training starts).
        after_training: audit the trained model (when training ends).
        without_noise: with a ``PartialPerturbation`` attached, also audit without its noise.
        progress: show the attacks' progress bars.
        name: the folder in the run directory and the prefix of logged keys.
        tune: before each audit, search each optimisation attack's settings with this many Optuna
            trials on the control of 4 other training images, and audit with the best
            (:mod:`~ppp_lightning.auditing.tuning`; 0: the attacks' own settings).

    Raises:
        ValueError: if ``victims < 1``, ``tune < 0`` or ``tune > 0`` without Optuna; at setup,
            without a datamodule ``train_set`` or on an attack that does not apply to the model.
    """

    def __init__(
        self,
        attacks: Optional[list[str]] = None,
        victims: int = 8,
        seed: int = 0,
        before_training: bool = True,
        after_training: bool = True,
        without_noise: bool = True,
        progress: bool = True,
        name: str = "audit",
        tune: int = 0,
    ) -> None:
        if victims < 1:
            raise ValueError(f"victims={victims}; allowed: >= 1")
        check_tune(tune)
        self.attacks = attacks
        self.victims = victims
        self.seed = seed
        self.before_training = before_training
        self.after_training = after_training
        self.without_noise = without_noise
        self.progress = progress
        self.name = name
        self.tune = tune
        self.done: list[str] = []
        self.rows: list[list[str]] = []
        self.sheet: Optional[Path] = None
        self._sheet_rows: list[SheetRow] = []
        self._pool: Optional[VictimPool] = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._pool = victim_pool(trainer.datamodule, "LeakageAudit")
            for defense in self._defenses(trainer):  # refuse an attack that does not apply before training
                attack_suite(pl_module, self._pool.train_set[0][0][None], defense, self.attacks)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.before_training:
            self._audit(trainer, pl_module, "before_training")

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.after_training:
            self._audit(trainer, pl_module, "after_training")
        self._print()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"done": list(self.done), "rows": [list(row) for row in self.rows]}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # a resumed run prints the audits that ran before it (their images stay in their own folders)
        self.done = list(state_dict.get("done", []))
        self.rows = [list(row) for row in state_dict.get("rows", [])]

    def _defenses(self, trainer: pl.Trainer) -> list[Optional[DefenseSpec]]:
        attached = attached_perturbation(trainer)
        if attached is None:
            return [None]
        return ([None] if self.without_noise else []) + [attached.spec]

    @rank_zero_only
    def _audit(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: str) -> None:
        if event in self.done or self._pool is None:
            return
        pool = self._pool
        root = run_directory(trainer.loggers, trainer.log_dir or trainer.default_root_dir) / self.name
        with isolated(pl_module.device):
            model = copy.deepcopy(pl_module, memo={id(trainer): None})  # the copy holds no Trainer
            for defense in self._defenses(trainer):
                audited = f"{event}-{'no_noise' if defense is None else 'noise'}"
                folder = root / audited
                suite = attack_suite(model, pool.train_set[0][0][None], defense, self.attacks, pool.one_channel,
                                     self.progress)  # fmt: skip
                suite = {label: for_this_run(spec, trainer) for label, spec in suite.items()}
                records = audit(model, pool.train_set, suite, folder, defense, pool.mean, pool.std, pool.one_channel,
                                self.victims, self.seed, progress=self.progress, sinks=sinks_for(trainer.loggers),
                                step=trainer.global_step, prefix=f"{self.name}/{audited}", tune=self.tune)  # fmt: skip
                defended = _defended(records[0].context)
                self.rows += [[EVENTS[event], defended, *row] for row in leak_rows(records)]
                prefix = f"{EVENTS[event].split()[0]}, {defended.split(' (')[0]}: "
                self._sheet_rows += sheet_rows(folder, records, pool.mean, pool.std, prefix=prefix)
        self.done.append(event)
        self._draw(root)

    def _draw(self, root: Path) -> None:
        """One sheet of every audit so far: the victims, then each audited attack's reconstructions."""
        pool = self._pool
        images, _ = draw_victims(pool.train_set, self.victims, self.seed, stratified=True)
        truth = SheetRow("truth", to_unit_interval(images, pool.mean, pool.std))
        title = "Gradient leakage audit: every victim; each attack, its control, each with a contrast-stretched copy"
        self.sheet = root / SHEET
        save_image(draw_sheet(title, [truth, *self._sheet_rows]), self.sheet)

    @rank_zero_only
    def _print(self) -> None:
        if not self.rows:
            return
        print(
            f"\nGradient leakage ({self.victims} training images, each alone in its batch; k/n with 95% intervals). "
            "Leaked: a victim reconstructed, or victims identified among their candidates above chance. A defense "
            "is said to protect only where neither holds, the attack converged and its control (the same attack "
            "without it) leaked.\n"
        )
        print(markdown_table(("when", "defense", *LEAK_COLUMNS), self.rows))
        print(f"\nSheet: {self.sheet} (each audit's report.md and sheet.png are in the folders next to it)")


def _defended(record: dict[str, Any]) -> str:
    """What the audited gradient was defended by (the control removes the last part)."""
    if record["audited"] == "gradient perturbation":
        defense = record["defense"]
        if defense["mechanism"] == "none":
            return f"clipping/pruning on {defense['layers']}"
        kind = "relative" if defense["relative"] else "absolute"
        return f"noise on {defense['layers']} ({defense['mechanism']}, {kind} sigma {defense['sigma']:g})"
    return "PRECODE" if record["audited"] == "precode sampling" else "none"
