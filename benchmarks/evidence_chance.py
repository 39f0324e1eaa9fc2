"""How much of each protective sigma rests on findings that chance alone would make (the report's section 2c).

A calibration calls a sigma leaking when any attack of its suite reconstructs a victim or identifies
victims above chance, each attack by its own exact binomial test at
:data:`~ppp_lightning.assessment.verdicts.ALPHA`. A suite of ``A`` attacks runs ``A`` such tests per
audit, so an audit in which no attack learns anything still reads "leaked" by identification with
probability :func:`chance_leak_probability` (with 4 victims one identification is already above
chance). A reconstruction counts only where its victim is also identified (legible *and* the nearest
of its candidates), which guessing achieves for 1 victim in ``K``: one of 16 victims is then a finding
that guessing makes in 15% of the audits of one attack. Each sigma scales the same noise draw, so one
chance finding tends to recur at every larger sigma, and the search's answer moves up with it.

:func:`chance_rows` re-reads every calibration's per-sigma audits and derives its answer twice: by the
grid's rule (which must reproduce the recorded answer) and by the familywise rule: an attack leaks
only where the victims it identified (its reconstructions among them) are above chance at
``ALPHA / A`` (Bonferroni over the suite); an attack that scored no identification leaks by its
reconstructions, as before. The grid's verdicts stay those of the grid's rule; this is a sensitivity,
reported beside them. :func:`audit_chance_rows` lists the audits' attack findings (of the fixed
defenses: C1 and C2) that the grid's rule counts as leaks and the familywise rule does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

from scipy.stats import binom

from benchmarks.evidence_records import Evidence, num, table_lines
from ppp_lightning.assessment.record import AttackRecord
from ppp_lightning.assessment.verdicts import ALPHA, Identification

__all__ = [
    "RULES",
    "audit_chance_rows",
    "calibrated_answer",
    "chance_leak_probability",
    "chance_md",
    "chance_rows",
    "discounted_findings",
    "suite_leaks",
]

# The two rules: each attack's identification at ALPHA (the grid's), or at ALPHA / attacks (familywise).
RULES = ("grid", "familywise")


def chance_leak_probability(victims: int, attacks: int, pool_size: int, alpha: float = ALPHA) -> float:
    """The probability that an audit reads "leaked" by identification when every attack only guesses.

    Args:
        victims: victims per audit.
        attacks: attacks in the suite, each guessing independently (chance ``1 / pool_size`` per victim).
        pool_size: ``K``, each victim's candidates.
        alpha: each attack's test level.

    Returns:
        ``1 - (1 - P(k* or more of victims guessed))**attacks``, ``k*`` the fewest identifications the
        exact binomial test calls above chance at ``alpha`` (0 where no count is).
    """
    fewest = next((k for k in range(1, victims + 1) if Identification(k, victims, pool_size).p_value < alpha), None)
    if fewest is None:
        return 0.0
    one = float(binom.sf(fewest - 1, victims, 1 / pool_size))
    return 1 - (1 - one) ** attacks


def suite_leaks(records: Sequence[AttackRecord], rule: str, attacks: Optional[int] = None) -> bool:
    """Whether an audit's suite leaked.

    Args:
        records: the audit's attack records (one per attack that ran).
        rule: ``grid`` (a victim reconstructed, or an attack's identification above chance at ``ALPHA``)
            or ``familywise`` (an attack's identification above chance at ``ALPHA / attacks``; its
            reconstructed victims are identified too; without identification scored, a reconstruction).
        attacks: the suite's attacks (``None``: ``len(records)``; more where an audit stopped at its
            first leak).

    Raises:
        ValueError: on another rule.
    """
    level = _level(rule, attacks or len(records))
    for record in records:
        findings = record.attack.findings()
        if findings.identified is None:
            leaked = findings.reconstructed.leaked
        elif rule == "familywise":
            leaked = findings.identified.p_value < level
        else:
            leaked = findings.leaked
        if leaked:
            return True
    return False


def _level(rule: str, attacks: int) -> float:
    """Each attack's test level under ``rule`` in a suite of ``attacks``.

    Raises:
        ValueError: on a rule not in :data:`RULES`.
    """
    if rule not in RULES:
        raise ValueError(f"rule={rule!r}; allowed: {', '.join(RULES)}")
    return ALPHA / attacks if rule == "familywise" else ALPHA


def calibrated_answer(
    audits: Mapping[float, tuple[Sequence[AttackRecord], Sequence[AttackRecord]]], rule: str
) -> tuple[Optional[float], str]:
    """A calibration's answer from its audits: the smallest sigma above every leaking one, confirmed by its
    held-out victims.

    Args:
        audits: sigma -> (the victims' records, the held-out victims' records; empty where not audited).
        rule: as in :func:`suite_leaks`.

    Returns:
        ``(sigma, status)``: ``calibrated``; ``not found`` (``sigma`` ``None``: every sigma leaks); or
        ``unconfirmed`` (the held-out victims were not audited there by the whole suite: not at all, or
        their audit stopped at a leak that this rule does not count).
    """
    leaking = [sigma for sigma, (victims, held) in audits.items()
               if suite_leaks(victims, rule) or suite_leaks(held, rule, len(victims))]  # fmt: skip
    above = sorted(sigma for sigma in audits if sigma > max(leaking, default=0.0))
    if not above:
        return None, "not found"
    victims, held = audits[above[0]]
    return above[0], "calibrated" if held and len(held) == len(victims) else "unconfirmed"


def chance_rows(evidence: Evidence) -> list[dict[str, Any]]:
    """Per calibration with per-sigma audits: its answer by both rules, and the chance of a false leak per audit."""
    rows = []
    cells = [(arch, family, state) for arch, grid in evidence.grid.items() for state in grid.states
             for family in grid.families if (arch, family, state) in evidence.calibrations]  # fmt: skip
    for arch, family, state in cells:  # in the grid's order, as section 2
        calibration, audits = evidence.calibrations[(arch, family, state)], evidence.sigma_audits(arch, family, state)
        if not audits or calibration["outcome"] not in ("calibrated", "not found"):
            continue
        suite = next(iter(audits.values()))[0]  # the victims' records at the smallest sigma
        attacks, pool, victims = len(suite), suite[0].attack.pool_size, len(suite[0].attack.reconstructed)
        held = max((len(records[0].attack.reconstructed) for _, records in audits.values() if records), default=0)
        answers = {rule: calibrated_answer(audits, rule) for rule in RULES}
        discounted = discounted_findings(audits, answers["familywise"][0]) if answers["familywise"][0] else []
        recorded = calibration["search"]["sigma"] if calibration["outcome"] == "calibrated" else None
        rows.append({"arch": arch, "family": family, "state": state, "attacks": attacks, "pool_size": pool,
                     "victims": victims, "held_out": held, "recorded": recorded,
                     "reproduced": answers["grid"][0] == recorded,
                     **{rule: {"sigma": sigma, "status": status} for rule, (sigma, status) in answers.items()},
                     "chance": {rule: _chance(victims, held, attacks, pool, rule) for rule in RULES},
                     "discounted": discounted})  # fmt: skip
    return rows


def audit_chance_rows(evidence: Evidence) -> list[dict[str, Any]]:
    """Per audit and attack, by architecture and state: the findings that leak by the grid's rule and not by
    the familywise rule over the audit's attacks (``findings``: in words, as :func:`discounted_findings`)."""
    rows = []
    cells = [(key, audit) for arch, grid in evidence.grid.items() for state in grid.states
             for key, audit in evidence.audits.items() if (key[0], key[2]) == (arch, state)]  # fmt: skip
    for (arch, family, state, batch_size), audit in cells:
        records = [AttackRecord.from_dict(record) for record in audit["records"]]
        rows += [{"arch": arch, "family": family, "state": state, "batch_size": batch_size,
                  "attack": record.context["label"], "attacks": len(records), "findings": _in_words(record)}
                 for record in records if _only_the_grid_counts(record, len(records))]  # fmt: skip
    return rows


def discounted_findings(
    audits: Mapping[float, tuple[Sequence[AttackRecord], Sequence[AttackRecord]]], sigma: float
) -> list[str]:
    """The findings the grid's rule counts and the familywise rule does not, from ``sigma`` up, in words
    (e.g. ``"1000 held-out: inverting 1/16 reconstructed, 2/16 identified (p 0.011)"``)."""
    found = []
    for at, (victims, held) in audits.items():
        if at < sigma:
            continue
        for who, records in (("victims", victims), ("held-out", held)):
            for record in records:
                if _only_the_grid_counts(record, len(victims)):
                    found.append(f"{num(at)} {who}: {record.context['label']} {_in_words(record)}")
    return found


def _only_the_grid_counts(record: AttackRecord, attacks: int) -> bool:
    """Whether an attack's findings leak by the grid's rule and not by the familywise rule over ``attacks``."""
    return suite_leaks([record], "grid") and not suite_leaks([record], "familywise", attacks)


def _in_words(record: AttackRecord) -> str:
    """An attack's findings, e.g. ``1/16 reconstructed, 2/16 identified (p 0.011)``."""
    attack, named = record.attack, record.attack.findings().identified
    return (f"{sum(attack.reconstructed)}/{len(attack.reconstructed)} reconstructed, {named.identified}/"
            f"{named.total} identified (p {named.p_value:.2g})")


def _chance(victims: int, held: int, attacks: int, pool: int, rule: str) -> dict[str, dict[str, float]]:
    """Per victim set, the false-leak probability by identification, and (grid rule) its upper bound with a
    single reconstruction counted too: some attack guesses some victim right, ``1 - (1 - 1/K)**(n * A)``."""
    level = _level(rule, attacks)
    audits = {"victims": victims, "held_out": held} if held else {"victims": victims}
    return {who: {"identification": chance_leak_probability(n, attacks, pool, level),
                  **({"with_reconstructions_at_most": 1 - (1 - 1 / pool) ** (n * attacks)} if rule == "grid" else {})}
            for who, n in audits.items()}  # fmt: skip


def chance_md(rows: Sequence[dict[str, Any]], audit_rows: Sequence[dict[str, Any]] = ()) -> list[str]:
    """Section 2c of ``summary.md``: the calibrations' rows (:func:`chance_rows`), then the audits'
    (:func:`audit_chance_rows`)."""
    if not rows and not audit_rows:
        return []
    header = ["arch", "family", "state", "attacks", "victims (held-out)", "sigma: grid rule", "familywise",
              "chance of a false leak per audit: grid rule", "familywise",
              "what only the grid rule counts, from the familywise answer up"]  # fmt: skip
    table = [[r["arch"], r["family"], r["state"], str(r["attacks"]), f"{r['victims']} ({r['held_out']})",
              _answer(r["grid"]) + ("" if r["reproduced"] else f" (recorded {num(r['recorded'])})"),
              _answer(r["familywise"]), *(_chances(r["chance"][rule]) for rule in RULES),
              "; ".join(r["discounted"]) or "-"] for r in rows]  # fmt: skip
    return ["## 2c. How much each sigma rests on chance", "",
            "Each attack's identification is tested against chance on its own (grid rule), so a suite of A attacks "
            "reads leaked by identification alone with the probability shown even where every attack only "
            "guesses; a single legible reconstruction reads leaked too, and since it needs its victim identified, "
            "guessing makes one in up to the share in brackets (as often as the legibility rule passes a guess). "
            "Sigma scales one noise draw, so such a finding tends to recur at every larger sigma. The "
            "familywise column re-derives each answer from the same audits with each attack's identified victims "
            "tested at 0.05 / A (Bonferroni; a reconstruction counts only where its victim is identified, which "
            "guessing achieves for 1 in 100, so a single one is no longer a leak by itself). 'unconfirmed': the "
            "held-out victims were not audited at that sigma. The verdicts above use the grid rule; this is a "
            "sensitivity.", "",
            *table_lines(header, table), *_audits_md(audit_rows)]  # fmt: skip


def _audits_md(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The audits' findings that only the grid's rule counts."""
    table = [[r["arch"], r["family"] + ("" if r["batch_size"] == 1 else f" (batch {r['batch_size']})"),
              r["state"], r["attack"], str(r["attacks"]), r["findings"]] for r in rows]  # fmt: skip
    words = ("Audits of the fixed defenses (section 1; C1 and C2 read them): the attacks' findings that read "
             "leaked by the grid's rule but not with identification tested at 0.05 / the audit's attacks.")
    if not table:
        return [words + " None.", ""]
    return [words, "", *table_lines(["arch", "defense", "state", "attack", "attacks", "findings"], table)]


def _answer(answer: dict[str, Any]) -> str:
    return {"calibrated": num(answer["sigma"]), "not found": "not found"}.get(
        answer["status"], f"{num(answer['sigma'])} ({answer['status']})"
    )


def _chances(chance: dict[str, dict[str, float]]) -> str:
    bound = {
        who: f" (up to {p['with_reconstructions_at_most']:.0%})" if len(p) > 1 else "" for who, p in chance.items()
    }
    return ", ".join(f"{who.replace('_', '-')} {p['identification']:.1%}{bound[who]}" for who, p in chance.items())
