"""Does this model, with this defense, leak? An attack suite on fixed victims, with positive controls.

The core of ``ppp-lightning audit``. What is audited is the model's outermost defense, and the
control removes exactly that, at the same victims, seed and budget:

- a gradient perturbation (``defense``: noise, clipping, pruning): the control is the same gradient
  without it (same PRECODE sample); defended and control problems run in one :meth:`run` call;
- else a PRECODE that samples: the control is the same network with its sampling off
  (``z = mu``, :func:`~ppp_lightning.defenses.precode.without_sampling`) for the client and the attacker;
- else nothing is audited and no control runs (a leak needs no control; protection would).

Every attack is assessed (:func:`~ppp_lightning.assessment.assess`: both findings per victim,
reconstructed and identified among ``pool_size`` candidates, how its problems stopped) and its
typed record (:class:`~ppp_lightning.assessment.record.AttackRecord`) appended to ``results.jsonl``
at once, so a rerun skips finished attacks (a folder holding another model's, defense's or
victims' audit is refused). :mod:`~ppp_lightning.auditing.report` writes ``report.md`` (attack,
identified and reconstructed k/n with 95% intervals, control, verdict, the union over attacks);
``sheet.png`` shows every attack's and control's reconstructions under the victims. With ``tune``,
each optimisation attack's settings are first searched on the control of other victims
(:mod:`~ppp_lightning.auditing.tuning`), and its record holds the trials and the choice.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Optional

from torch import Tensor, nn

from ppp_lightning.assessment.record import AttackRecord
from ppp_lightning.assessment.reidentification import POOL_SIZE
from ppp_lightning.assessment.reporting import ReportSink
from ppp_lightning.attacks import AttackResult, AttackSpec
from ppp_lightning.auditing.audit_folder import AuditFolder, AuditScoring, run_attack
from ppp_lightning.auditing.folders import folder_lock
from ppp_lightning.auditing.tuning import TUNING_VICTIMS, Tuner, check_tune, draw_tuning_victims
from ppp_lightning.defenses.precode import PRECODE, without_sampling
from ppp_lightning.defenses.spec import DefenseSpec
from ppp_lightning.gradients import client_gradient, seeded_client_gradients
from ppp_lightning.progress import progress_bar
from ppp_lightning.validation import check_integer, check_seed
from ppp_lightning.victims import draw_victims

__all__ = ["AuditedGradients", "audit", "audit_setting", "audited_gradients", "model_fingerprint"]

@dataclass
class AuditedGradients:
    """The victims' shared gradients and, where a defense is audited, their controls.

    Args:
        audited: what the control removes: ``"gradient perturbation"`` (noise, clipping or pruning),
            ``"precode sampling"`` or ``"nothing"``.
        shared: every victim's shared gradient.
        control: every victim's gradient without the audited defense (``None``: no control).
        control_model: the network the control's client and attacker use.
    """

    audited: str
    shared: list[dict[str, Tensor]]
    control: Optional[list[dict[str, Tensor]]] = None
    control_model: Optional[nn.Module] = None


def audited_gradients(
    network: nn.Module,
    images: Tensor,
    labels: Tensor,
    defense: Optional[DefenseSpec],
    seed: int,
    control: bool = True,
    batch_size: int = 1,
) -> AuditedGradients:
    """Every batch's shared gradient and the control's (see the module doc).

    Args:
        network: the client's model, in the mode the client trains in.
        images: ``(N, C, H, W)`` the victims.
        labels: ``(N,)`` their labels.
        defense: the gradient perturbation (``None``: none).
        seed: batch ``i``'s PRECODE sample and noise are drawn with ``seed + i``.
        control: also compute the control's gradients.
        batch_size: victims per shared gradient (consecutive ones; 1: each alone).
    """
    batches = list(zip(images.split(batch_size), labels.split(batch_size)))
    resolved = None if defense is None else defense.resolve(network, images[:1])
    pairs = [seeded_client_gradients(network, x, y, resolved, seed + i) for i, (x, y) in enumerate(batches)]
    shared = [pair[0] for pair in pairs]
    if defense is not None:
        clean = [pair[1] for pair in pairs] if control else None
        return AuditedGradients("gradient perturbation", shared, clean, network)
    if not any(isinstance(module, PRECODE) for module in network.modules()):
        return AuditedGradients("nothing", shared)
    if not control:
        return AuditedGradients("precode sampling", shared)
    plain = without_sampling(network)
    return AuditedGradients("precode sampling", shared, [client_gradient(plain, x, y) for x, y in batches], plain)


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of the model's parameters and buffers (which weights were audited)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def audit(
    model: nn.Module,
    dataset: Any,
    attacks: Mapping[str, AttackSpec],
    folder: Path,
    defense: Optional[DefenseSpec] = None,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    one_channel: bool = False,
    victims: int = 16,
    seed: int = 0,
    control: bool = True,
    progress: bool = True,
    sinks: Sequence[ReportSink] = (),
    step: int = 0,
    prefix: str = "audit",
    batch_size: int = 1,
    pool_size: int = POOL_SIZE,
    tune: int = 0,
    tuning_victims: int = TUNING_VICTIMS,
    reserved: Sequence[int] = (),
) -> list[AttackRecord]:
    """Attack ``victims`` training images of ``dataset`` with every attack, with controls; write the report.

    Args:
        model: the client's network (attacked in training mode, on a copy).
        dataset: the training set, items ``(normalised image, label)``.
        attacks: label -> attack.
        folder: where ``results.jsonl``, ``report.md``, ``sheet.png`` and one sheet per attack go.
        defense: the gradient perturbation on the shared gradient (``None``: the gradient as it is).
        mean: the data's normalisation mean.
        std: the data's normalisation standard deviation.
        one_channel: the data has one true channel.
        victims: how many victims (each alone in its batch), class-stratified.
        seed: seed of the victims, PRECODE samples, noise and re-identification rivals.
        control: run the positive controls.
        progress: show a bar over attacks with the remaining time.
        sinks: logger adapters (W&B, TensorBoard) every attack and the report also go to.
        step: the logging step (a training step when audited during training).
        prefix: the logged keys are ``<prefix>/<attack label>/...``.
        batch_size: victims per shared gradient (consecutive victims share one; 1: each alone).
        pool_size: ``K``, each victim's candidates for identification (itself and ``K - 1``
            training images of its class; chance ``1/K``).
        tune: first search each optimisation attack's settings with this many Optuna trials on
            the control of ``tuning_victims`` other training images, then audit with the best
            (:mod:`~ppp_lightning.auditing.tuning`; 0: the attacks' own settings). A rerun reuses
            the recorded choice.
        tuning_victims: how many tuning victims (class-stratified, never an audited victim).
        reserved: dataset indices the tuning victims also avoid (e.g. calibrate's held-out victims).

    Returns:
        Every attack's record (those of earlier runs included), in the order of ``attacks``.

    Raises:
        ValueError: before any work, if ``victims`` is not an integer >= 1 or not a multiple of
            ``batch_size``, ``seed`` is not in ``[0, 2**32 - 1]``, ``folder`` is a file or cannot be
            created or written, another process is auditing it (:func:`folder_lock`), it holds an
            audit of another model, defense, victims, seed, batch size, pool size or ``tune``, or
            ``tune`` is not an integer >= 0 (or > 0 without Optuna installed).
    """
    check_integer("victims", victims, 1)
    check_seed(seed)
    if batch_size < 1 or victims % batch_size:
        raise ValueError(f"victims={victims}, batch_size={batch_size}; allowed: victims a multiple of batch_size >= 1")
    check_tune(tune, tuning_victims, batch_size)
    with folder_lock(folder) as folder:
        return _audit(model, dataset, attacks, folder, defense, mean, std, one_channel, victims, seed, control,
                      progress, sinks, step, prefix, batch_size, pool_size, tune, tuning_victims, reserved)  # fmt: skip


def _audit(
    model: nn.Module,
    dataset: Any,
    attacks: Mapping[str, AttackSpec],
    folder: Path,
    defense: Optional[DefenseSpec],
    mean: Sequence[float],
    std: Sequence[float],
    one_channel: bool,
    victims: int,
    seed: int,
    control: bool,
    progress: bool,
    sinks: Sequence[ReportSink],
    step: int,
    prefix: str,
    batch_size: int,
    pool_size: int,
    tune: int,
    tuning_victims: int,
    reserved: Sequence[int],
) -> list[AttackRecord]:
    """:func:`audit`'s work, its arguments checked and its folder locked."""
    images, labels = draw_victims(dataset, victims, seed, stratified=True)
    network = copy.deepcopy(model).train()
    device = next(network.parameters()).device  # attacks run there; scores on the CPU
    gradients = audited_gradients(network, images.to(device), labels.to(device), defense, seed, control, batch_size)
    setting = audit_setting(network, defense, gradients, victims, seed, batch_size, pool_size) | {"tune": tune}
    scoring = AuditScoring.of(dataset, mean, std, one_channel, pool_size, seed)
    where = AuditFolder(folder, images, labels, setting, scoring, mean, std, sinks, step, prefix)
    tuner = None
    if tune:  # on the control of other victims, scored as the audit scores
        tuner = Tuner(tune, draw_tuning_victims(dataset, tuning_victims, seed, victims, reserved), network,
                      partial(audited_gradients, network, defense=defense, control=control, batch_size=batch_size),
                      where.assess, mean, std, seed, progress)  # fmt: skip
    bar = progress_bar(attacks.items(), desc="audit", unit="attack", enabled=progress, lines=True,
                       name=lambda item: item[0])  # fmt: skip
    for label, spec in bar:
        if not where.pending(label, spec):
            continue  # finished (a tuned attack with the choice it recorded)
        spec, tuning = tuner(label, spec) if tuner else (spec, None)
        started = time.perf_counter()
        results, controls = _attack(spec, network, gradients, labels.to(device), tuple(images.shape[1:]), mean, std,
                                    where.candidates(spec))  # fmt: skip
        # attack and control together: what a budget must fit
        where.record(label, spec, results, controls, time.perf_counter() - started, tuning)
    return where.finish(list(attacks))


def audit_setting(
    network: nn.Module,
    defense: Optional[DefenseSpec],
    gradients: AuditedGradients,
    victims: int,
    seed: int,
    batch_size: int,
    pool_size: int,
) -> dict[str, Any]:
    """What an audit is, as every record of its folder states it (a folder of another setting is refused)."""
    return {
        "model": model_fingerprint(network),
        "defense": None if defense is None else defense.to_dict(),
        "audited": gradients.audited,
        "controlled": gradients.control is not None,
        "victims": victims,
        "seed": seed,
        "batch_size": batch_size,
        "pool_size": pool_size,
    }


def _attack(
    spec: AttackSpec,
    network: nn.Module,
    gradients: AuditedGradients,
    labels: Tensor,
    image_shape: tuple[int, ...],
    mean: Sequence[float],
    std: Sequence[float],
    candidates: Optional[list[Tensor]] = None,
) -> tuple[list[AttackResult], Optional[list[AttackResult]]]:
    """The attack's results on the shared gradients and on the controls (one run where possible).

    ``candidates``: every victim's identification candidates, for an attack that picks among them.
    """
    known = list(labels.split(len(labels) // len(gradients.shared)))
    shape = (len(known[0]), *image_shape)
    count = len(known)

    def run(model: nn.Module, batch: list[dict[str, Tensor]]) -> list[AttackResult]:
        times = len(batch) // count
        pools = None if candidates is None else candidates * times
        return run_attack(spec, model, batch, known * times, shape, mean, std, pools)

    if gradients.control is None:
        return run(network, gradients.shared), None
    if gradients.control_model is network:
        both = run(network, gradients.shared + gradients.control)
        return both[:count], both[count:]
    return run(network, gradients.shared), run(gradients.control_model, gradients.control)
