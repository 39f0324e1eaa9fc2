"""``ppp-lightning audit`` and ``ppp-lightning calibrate``: the Trainer's two extra subcommands.

:class:`PPPTrainer` is Lightning's Trainer with two more methods; the CLI exposes each method's
arguments as flags and YAML keys (``audit: {victims: 8}``), next to the ``model``, ``data`` and
``trainer`` sections of a ``fit`` config. The defense is the ``PartialPerturbation`` callback of
``trainer.callbacks`` (none: the gradient as it is), so a training config audits as it trained.
The work is done by the core (:func:`~ppp_lightning.auditing.audit.audit`,
:func:`~ppp_lightning.auditing.noise_search.calibrate`); this shell loads weights and data, logs and prints.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
from torch import nn

from callbacks.partial_perturbation import PartialPerturbation, attached_perturbation
from ppp_lightning.assessment.record import AttackRecord
from ppp_lightning.assessment.reporting import ReportSink
from ppp_lightning.attacks.suite import attack_suite
from ppp_lightning.auditing.audit import audit, model_fingerprint
from ppp_lightning.auditing.folders import writable_folder
from ppp_lightning.auditing.noise_search import (
    HELD_OUT_VICTIMS,
    Calibration,
    Search,
    SigmaSearch,
    calibrate,
    check_calibration,
)
from ppp_lightning.auditing.report import REPORT, SHEET, union_text
from ppp_lightning.auditing.tuning import check_tune
from ppp_lightning.checkpoints import read_checkpoint
from ppp_lightning.defenses.spec import DefenseSpec
from ppp_lightning.lightning.errors import usage_errors
from ppp_lightning.lightning.logger_sinks import sinks_for
from ppp_lightning.validation import check_integer, check_seed
from ppp_lightning.victims import VictimPool, victim_pool

__all__ = ["LeakFound", "PPPTrainer"]

CALIBRATION_FILE = "calibration.json"
# The noise's units in the calibration table (noise_statistics), in its columns' order.
NOISE_UNITS = ("absolute", "relative", "noise_to_signal", "noise_to_whole_signal")


class LeakFound(RuntimeError):
    """``audit --fail_on_leak=true`` found a leak: a victim reconstructed or identified above chance (exit status 3)."""


class PPPTrainer(pl.Trainer):
    """Lightning's Trainer with :meth:`audit` and :meth:`calibrate` (see the module doc)."""

    def audit(
        self,
        model: nn.Module,
        datamodule: Optional[pl.LightningDataModule] = None,
        ckpt_path: Optional[str] = None,
        attacks: Optional[list[str]] = None,
        victims: int = 16,
        seed: int = 0,
        folder: Optional[str] = None,
        fail_on_leak: bool = False,
        tune: int = 0,
    ) -> list[AttackRecord]:
        """Does the model, with the attached defense, leak? Attack it with a suite, with positive controls.

        Writes ``report.md`` (attack, identified and reconstructed k/n with 95% intervals, control,
        verdict, the union over attacks), ``sheet.png`` and ``results.jsonl``; a rerun with the same folder skips
        finished attacks. With a W&B logger the sheets, tables and rates are logged too.

        Args:
            model: the model (its configured initialisation, or ``ckpt_path``'s weights).
            datamodule: the data; the victims are drawn from its ``train_set``.
            ckpt_path: a checkpoint whose weights are audited.
            attacks: the attacks by label (``None``: every one that applies, e.g. ``inverting``,
                ``inverting/before_decoder``, ``adaptive``, ``analytic``, ``clean_layer``).
            victims: how many training images, class-stratified, each alone in its batch.
            seed: seed of the victims, PRECODE samples and noise.
            folder: where the audit goes (``None``: ``<default_root_dir>/audits/<model and defense>``).
            fail_on_leak: raise :class:`LeakFound` (exit status 3) if any attack leaked: reconstructed a
                victim or identified victims above chance.
            tune: first search each optimisation attack's settings (lr, TV weight, restarts,
                iterations up to its own, initialisation) with this many Optuna trials on the control
                of 4 other training images, and audit with the best (0: the attacks' own settings;
                needs ``pip install -e ".[tune]"``).

        Raises:
            LeakFound: with ``fail_on_leak``, on a leak.
            ValueError: before any attack (a usage error, exit status 2), on ``victims`` < 1, a
                ``seed`` outside ``[0, 2**32 - 1]``, ``tune`` < 0 (or > 0 without Optuna), a
                ``folder`` that is a file or cannot be written, an attack that does not apply or a
                datamodule without ``train_set``; then on a folder that another process is auditing
                or that holds another audit.
        """
        with usage_errors():
            check_integer("victims", victims, 1)
            check_seed(seed)
            check_tune(tune)
        if ckpt_path:
            _load_weights(model, ckpt_path)
        defense = getattr(attached_perturbation(self), "spec", None)
        where = Path(folder) if folder else _default_folder(self, "audits", model, defense, victims, seed)
        with usage_errors():
            writable_folder(where, "--folder")
        data = _prepared(datamodule, "audit")
        with usage_errors():
            suite = attack_suite(model, data.train_set[0][0][None], defense, attacks, data.one_channel, progress=True)
        records = audit(model, data.train_set, suite, where, defense, data.mean, data.std, data.one_channel,
                        victims, seed, sinks=sinks_for(self.loggers), step=self.global_step, tune=tune)  # fmt: skip
        print((where / REPORT).read_text() + f"\nSheet: {where / SHEET}")
        leaked = [r.context["label"] for r in records if r.attack.findings().leaked]
        if fail_on_leak and leaked:
            raise LeakFound(f"{', '.join(leaked)} leaked (any attack: {union_text(records)}); see {where / REPORT}")
        return records

    def calibrate(
        self,
        model: nn.Module,
        datamodule: Optional[pl.LightningDataModule] = None,
        checkpoints: Optional[list[str]] = None,
        initialisation: bool = True,
        attacks: Optional[list[str]] = None,
        victims: int = 16,
        seed: int = 0,
        factor: float = 1.5,
        start: Optional[float] = None,
        folder: Optional[str] = None,
        train_epochs: int = 0,
        held_out: int = HELD_OUT_VICTIMS,
        tune: int = 0,
        search: Search = "sweep",
    ) -> list[Calibration]:
        """How much noise does the attached defense family need? The smallest sigma at which nothing leaks.

        For every model state the suite first attacks without noise (attacks that leak nothing are
        dropped; none left: inconclusive), then sigma is searched to within ``factor`` until no attack
        reconstructs a victim and none identifies victims above chance (the answer); a second
        search gives the sigma that stops reconstruction alone. Prints both sigmas in the family's
        units, as the noise's RMS per entry, relative to each tensor's gradient RMS and as the
        noise-to-signal norm ratio, with the 95% upper bound of the reconstruction rate, and a
        ``PartialPerturbation`` block at the largest answer over the states.

        Args:
            model: the model at initialisation (as configured).
            datamodule: the data; the victims are drawn from its ``train_set``.
            checkpoints: further model states (checkpoint files) to calibrate at.
            initialisation: calibrate at the configured initialisation too.
            attacks: the attacks by label (``None``: every one that applies).
            victims: victims per audit, class-stratified.
            seed: seed of the victims, PRECODE samples and noise.
            factor: the precision of sigma (> 1).
            start: the first sigma tried (``None``: the callback's sigma, or 1).
            folder: where the audits and ``calibration.json`` go (``None``: under ``<default_root_dir>/calibrations``).
            train_epochs: then train this many epochs from initialisation with and without that
                noise and report both validation scores (0: do not).
            held_out: a sigma protects only if it also protects this many held-out victims (other
                images, audited where the victims leaked nothing), so the answer holds beyond the
                victims it was searched on (0: none).
            tune: before each state's search, tune each optimisation attack with this many Optuna
                trials on the gradient without noise of 4 other training images; every sigma's audit
                uses the settings chosen (0: the attacks' own settings; needs
                ``pip install -e ".[tune]"``).
            search: ``sweep``: audit whole sigma grids, each from one attack run per attack (a
                coarse grid, then one finer grid in the bracket); ``bisection``: one audit per sigma.

        Raises:
            ValueError: before any audit (a usage error, exit status 2), on a bad ``victims``,
                ``seed``, ``factor``, ``start``, ``held_out`` or ``tune`` (or ``tune`` > 0 without
                Optuna), without an attached ``PartialPerturbation`` (the family), with no state to
                calibrate, on a ``folder`` that is a file or cannot be written, or on an attack that
                does not apply.
            CheckpointFileError: on a ``checkpoints`` entry that cannot be read.
        """
        with usage_errors():
            check_calibration(victims, seed, factor, start, held_out, tune, search=search)
            family = getattr(attached_perturbation(self), "spec", None)
            if family is None:
                raise ValueError(
                    "calibrate needs a defense family: add a callbacks.PartialPerturbation to trainer.callbacks "
                    "(its layers, mechanism and relative are kept; sigma is searched)"
                )
            if not initialisation and not checkpoints:
                raise ValueError("initialisation=false and no checkpoints: nothing to calibrate; allowed: either or both")
            where = Path(folder) if folder else _default_folder(self, "calibrations", model, family, victims, seed)
            writable_folder(where, "--folder")
        states = ([("initialisation", model)] if initialisation else []) + [
            (path, _load_weights(copy.deepcopy(model), path, "--checkpoints")) for path in checkpoints or []
        ]
        data = _prepared(datamodule, "calibrate")
        with usage_errors():
            suites = [attack_suite(state, data.train_set[0][0][None], family, attacks, data.one_channel, progress=True)
                      for _, state in states]  # fmt: skip
        results = [
            calibrate(state, data.train_set, suite, family, where / _state_folder(name), data.mean, data.std,
                      data.one_channel, victims, seed, factor, start, name, held_out=held_out,
                      tune=tune, search=search)  # fmt: skip
            for (name, state), suite in zip(states, suites)
        ]
        (where / CALIBRATION_FILE).write_text(json.dumps([r.to_dict() for r in results], indent=2))
        print(_calibration_table(results) + f"\nDetails: {where / CALIBRATION_FILE}")
        _log_calibrations(results, sinks_for(self.loggers))
        found = [r for r in results if r.outcome == "calibrated"]
        if found:
            largest = max(found, key=lambda r: r.defense["sigma"])
            print("\nPartialPerturbation at the largest protective sigma (paste under trainer.callbacks):\n")
            print(largest.yaml_block())
            if train_epochs:
                print(self._accuracies(model, datamodule, DefenseSpec(**largest.defense), train_epochs))
        return results

    def _accuracies(
        self, model: nn.Module, datamodule: pl.LightningDataModule, defense: DefenseSpec, epochs: int
    ) -> str:
        """Train copies of ``model`` with and without ``defense`` and say their validation scores."""
        lines = [f"\nAfter {epochs} epoch(s) of training from initialisation:"]
        noisy = [PartialPerturbation(**defense.to_dict())]
        for name, callbacks in (("without noise", []), ("with that noise", noisy)):
            trainer = pl.Trainer(max_epochs=epochs, devices=1, logger=False, enable_checkpointing=False,
                                 enable_model_summary=False, callbacks=callbacks)  # fmt: skip
            network = copy.deepcopy(model)
            trainer.fit(network, datamodule=datamodule)
            scores = trainer.validate(network, datamodule=datamodule, verbose=False)[0]
            lines.append(f"- {name}: " + ", ".join(f"{key} {value:.4f}" for key, value in sorted(scores.items())))
        return "\n".join(lines)


def _prepared(datamodule: Optional[pl.LightningDataModule], command: str) -> VictimPool:
    """The datamodule, set up: its training set and normalisation."""
    if datamodule is not None:
        datamodule.prepare_data()
        datamodule.setup("fit")
    return victim_pool(datamodule, command)


def _load_weights(model: nn.Module, path: str, option: str = "--ckpt_path") -> nn.Module:
    """``model`` with a checkpoint's weights (:func:`~ppp_lightning.checkpoints.read_checkpoint` names a bad file
    and the ``option`` that gave it)."""
    model.load_state_dict(read_checkpoint(Path(path), option=option)["state_dict"])
    return model


def _default_folder(
    trainer: pl.Trainer, kind: str, model: nn.Module, defense: Optional[DefenseSpec], victims: int, seed: int
) -> Path:
    """A folder named by what is audited, so a rerun finds (and resumes) its own audit."""
    settings = json.dumps([model_fingerprint(model), None if defense is None else defense.to_dict(), victims, seed])
    return Path(trainer.default_root_dir, kind, hashlib.sha256(settings.encode()).hexdigest()[:12])


def _state_folder(state: str) -> str:
    return "initialisation" if state == "initialisation" else Path(state).stem


def _log_calibrations(results: list[Calibration], sinks: list[ReportSink]) -> None:
    """Each state's outcome and both sigmas in the run's summary, and its leak rates over sigma as a plot."""
    for result in results:
        prefix = f"calibrate/{_state_folder(result.state)}"
        summary = {f"{prefix}/outcome": result.outcome, f"{prefix}/sigma": result.search.sigma,
                   f"{prefix}/reconstruction_sigma": result.reconstruction.sigma}  # fmt: skip
        sigmas, series = result.leak_curves()
        for sink in sinks:
            sink.log_summary(summary)
            if sigmas:
                sink.log_curve(f"{prefix}/leak_vs_sigma", "sigma", sigmas, series)


def _calibration_table(results: list[Calibration]) -> str:
    """Per state, the sigma that stops both findings (the answer) and the one that stops reconstruction alone."""
    lines = [
        "| state | outcome | stops | sigma | noise RMS per entry | relative to gradient RMS | noise / signal norm | "
        "noise / whole gradient norm | reconstruction rate upper bound (95%) | attacks searched |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        searched = ", ".join(r.leaking_attacks) or "-"
        bound = "-" if r.upper_bound is None else f"{r.upper_bound:.3f} (0/{r.victims + r.held_out_victims})"
        rows = (("reconstruction and identification (the answer)", r.search, r.noise, bound),
                ("reconstruction only", r.reconstruction, r.reconstruction_noise, "-"))  # fmt: skip
        for stops, search, noise, shown_bound in rows:
            units = [f"{noise[key]:.4g}" if key in noise else "-" for key in NOISE_UNITS]
            cells = [r.state, r.outcome, stops, _sigma_text(search), *units, shown_bound, searched]
            lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def _sigma_text(search: SigmaSearch) -> str:
    if search.sigma is None:
        return "-"
    if search.leaking is None:
        return f"{search.sigma:.4g} (the smallest tried)"
    return f"{search.sigma:.4g} (leaks at {search.leaking:.4g})"
