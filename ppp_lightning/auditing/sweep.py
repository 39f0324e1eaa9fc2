"""Audits of one defense family at many sigmas from one attack run per attack: the calibrator's sweep.

Every victim's shared gradient is computed once per sigma (its PRECODE sample and noise seeded as
the audit seeds them, so sigma only scales the same noise), and each attack of the suite runs once
over the problems of every sigma still to audit (victims x sigmas x restarts, each stopping on its
own). Each sigma's records go to its own folder exactly as :func:`~ppp_lightning.auditing.audit.audit`
writes them, without controls (the calibrator's control is its audit without noise), so a search
resumes from either and a sigma audited alone reads the same.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from ppp_lightning.assessment.record import AttackRecord
from ppp_lightning.assessment.reidentification import POOL_SIZE
from ppp_lightning.attacks import AttackSpec
from ppp_lightning.auditing.audit import audit_setting, audited_gradients
from ppp_lightning.auditing.audit_folder import AuditFolder, AuditScoring, run_attack
from ppp_lightning.auditing.folders import folder_lock
from ppp_lightning.defenses.spec import DefenseSpec
from ppp_lightning.progress import progress_bar
from ppp_lightning.validation import check_integer, check_seed
from ppp_lightning.victims import draw_victims

__all__ = ["audit_sigmas"]


def audit_sigmas(
    model: nn.Module,
    dataset: Any,
    attacks: Mapping[str, AttackSpec],
    family: DefenseSpec,
    folders: Mapping[float, Path],
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    one_channel: bool = False,
    victims: int = 16,
    seed: int = 0,
    progress: bool = True,
    pool_size: int = POOL_SIZE,
    until_leaked: bool = False,
) -> dict[float, list[AttackRecord]]:
    """Audit ``family`` at every sigma of ``folders`` (each alone in its batch, without controls).

    Args:
        model: the client's network (attacked in training mode, on a copy).
        dataset: the training set, items ``(normalised image, label)``.
        attacks: label -> attack.
        family: the defense family; its ``sigma`` is replaced by each of ``folders``' sigmas.
        folders: sigma -> the folder its audit goes to (resumed where it holds records).
        mean: the data's normalisation mean.
        std: the data's normalisation standard deviation.
        one_channel: the data has one true channel.
        victims: how many victims, class-stratified.
        seed: seed of the victims, PRECODE samples, noise and re-identification rivals.
        progress: show a bar over attacks.
        pool_size: ``K``, each victim's candidates for identification.
        until_leaked: stop auditing a sigma once an attack leaked there (the later attacks of
            ``attacks`` do not run at it): enough to know that the sigma does not protect.

    Returns:
        Per sigma, every attack's record that ran there, in the order of ``attacks``.

    Raises:
        ValueError: before any attack, on a bad ``victims`` or ``seed``, a folder that another
            process is auditing or that holds another audit.
    """
    check_integer("victims", victims, 1)
    check_seed(seed)
    images, labels = draw_victims(dataset, victims, seed, stratified=True)
    network = copy.deepcopy(model).train()
    device = next(network.parameters()).device
    shared, places = {}, {}
    scoring = AuditScoring.of(dataset, mean, std, one_channel, pool_size, seed)  # one for every sigma
    with ExitStack() as locks:
        for sigma, folder in folders.items():
            defense = replace(family, sigma=sigma)
            gradients = audited_gradients(network, images.to(device), labels.to(device), defense, seed, False)
            setting = audit_setting(network, defense, gradients, victims, seed, 1, pool_size) | {"tune": 0}
            where = locks.enter_context(folder_lock(folder))
            places[sigma] = AuditFolder(where, images, labels, setting, scoring, mean, std)
            shared[sigma] = gradients.shared
        known = list(labels.to(device).split(1))
        bar = progress_bar(attacks.items(), desc=f"sweep ({len(folders)} sigmas)", unit="attack", enabled=progress,
                           lines=True, name=lambda item: item[0])  # fmt: skip
        for label, spec in bar:
            pending = [sigma for sigma, place in places.items()
                       if place.pending(label, spec) and not (until_leaked and place.leaked())]  # fmt: skip
            if not pending:
                continue
            candidates = places[pending[0]].candidates(spec)
            started = time.perf_counter()
            results = run_attack(spec, network, [g for sigma in pending for g in shared[sigma]], known * len(pending),
                                 (1, *images.shape[1:]), mean, std,
                                 None if candidates is None else candidates * len(pending))  # fmt: skip
            share = (time.perf_counter() - started) / len(pending)  # one run served every pending sigma
            for index, sigma in enumerate(pending):
                places[sigma].record(label, spec, results[index * victims : (index + 1) * victims], None, share)
        return {sigma: place.finish(list(attacks)) for sigma, place in places.items()}
