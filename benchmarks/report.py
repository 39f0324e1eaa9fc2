"""Tables, derived figures and plots from the privacy-utility benchmark's ``results.jsonl``.

    python -m benchmarks.report benchmarks/results/privacy_utility

Plots are drawn on :class:`matplotlib.figure.Figure` objects, which need no backend: nothing
global (pyplot's state, the backend) is touched, on a display or without one.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from matplotlib.figure import Figure

from ppp_lightning.metrics import is_success
from ppp_lightning.verdicts import LeakRate, judge, union_over_attacks

__all__ = ["protection_thresholds", "summarise", "write_report"]

NOISE_FAMILIES = ("noise_all", "ppp", "ppp_no_encoder")
METRICS = ("ssim", "psnr", "ncc", "mse")


def summarise(record: dict[str, Any], success: dict[str, Any]) -> dict[str, Any]:
    """Mean, median and max of every metric over the victims, the success rate and the floor.

    Success is judged from the stored scores with ``success`` (the config's ``success_metric`` and
    ``success_threshold``), so a report can apply a changed threshold without re-running attacks.
    """
    victims = record["victims"]
    judge = success["success_metric"]
    row = {key: record[key] for key in ("arch", "defense", "family", "sigma", "state", "attack", "test_acc")}
    for metric in METRICS:
        values = [v[metric] for v in victims]
        row |= {f"{metric}_mean": statistics.fmean(values), f"{metric}_median": statistics.median(values), f"{metric}_max": max(values)}
        row[f"floor_{metric}"] = statistics.fmean(v[f"floor_{metric}"] for v in victims)
    scores = torch.tensor([v[judge] for v in victims], dtype=torch.float64)
    row["successes"] = is_success(scores, judge, success["success_threshold"]).tolist()
    row["success_rate"] = statistics.fmean(row["successes"])
    row["leaked"] = str(LeakRate.of(row["successes"]))
    if "control_victims" in record:  # the same victims' gradients without the defense's perturbation
        controls = torch.tensor([v[judge] for v in record["control_victims"]], dtype=torch.float64)
        row["control_successes"] = is_success(controls, judge, success["success_threshold"]).tolist()
    row["relative_sigma"] = record["sigma"]
    row["absolute_sigma"] = record["gradient"]["noise_std"]
    row["perturbed_share"] = record["perturbed_share"]
    row["ce"], row["kl"] = record["gradient"]["ce"], record["gradient"]["kl"]
    row["seconds"] = record["seconds"]
    return row


def attach_verdicts(rows: list[dict[str, Any]]) -> None:
    """Give every defended row its verdict (:func:`~ppp_lightning.verdicts.judge`) against its positive control.

    The control of a noise or pruning cell is the same attack on the same victims' unperturbed
    gradients (run in the cell); of a PRECODE cell, the same attack on the same architecture without
    PRECODE in the same state (the ``none`` cell). Without a control the verdict is inconclusive.
    """
    undefended = {(r["arch"], r["state"], r["attack"]): r["successes"] for r in rows if r["family"] == "none"}
    for row in rows:
        if row["family"] == "none":
            row["verdict"], row["outcome"] = "-", "undefended"
            continue
        control = row.get("control_successes", undefended.get((row["arch"], row["state"], row["attack"])))
        verdict = judge(LeakRate.of(row["successes"]), None if control is None else LeakRate.of(control))
        row["verdict"], row["outcome"] = str(verdict), verdict.outcome


def protection_thresholds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per architecture and noise family: the smallest sigma at which every attack in every state is
    stopped with a passing control (verdict "protected"; rows need :func:`attach_verdicts`)."""
    by_cell: dict[tuple[str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["family"] in NOISE_FAMILIES:
            by_cell[(row["arch"], row["family"], row["relative_sigma"])].append(row)
    out = []
    for arch in sorted({key[0] for key in by_cell}):
        for family in NOISE_FAMILIES:
            sigmas = sorted(s for a, f, s in by_cell if a == arch and f == family)
            if not sigmas:
                continue
            safe = [s for s in sigmas if all(r["outcome"] == "protected" for r in by_cell[(arch, family, s)])]
            cell = by_cell[(arch, family, safe[0])] if safe else []
            out.append(
                {
                    "arch": arch,
                    "family": family,
                    "relative_sigma": safe[0] if safe else None,
                    "absolute_sigma": max((r["absolute_sigma"] for r in cell), default=None),
                    "test_acc": _final_accuracy(cell),
                    "perturbed_share": cell[0]["perturbed_share"] if cell else None,
                    "worst_success_by_sigma": {s: max(r["success_rate"] for r in by_cell[(arch, family, s)]) for s in sigmas},
                    "inconclusive_by_sigma": {
                        s: sum(r["outcome"] == "inconclusive" for r in by_cell[(arch, family, s)]) for s in sigmas
                    },
                }
            )
    return out


def _final_accuracy(cell: list[dict[str, Any]]) -> Optional[float]:
    """Test accuracy in the most trained state (the state whose model has the best accuracy)."""
    return max((r["test_acc"] for r in cell), default=None)


def write_report(folder: Path) -> dict[str, Any]:
    """Write ``summary.json``, ``results.md`` and the plots into ``folder``; returns the summary."""
    records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    success = yaml.safe_load((folder / "config.yaml").read_text())["success"]
    rows = [summarise(r, success) for r in records]
    attach_verdicts(rows)
    summary = {"success": success, "rows": rows, "protection": protection_thresholds(rows)}
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    (folder / "results.md").write_text(_markdown(rows, summary["protection"], success))
    _plot_ssim_and_accuracy(rows, folder)
    _plot_reconstructions(records, folder)
    return summary


def _markdown(rows: list[dict[str, Any]], protection: list[dict[str, Any]], success: dict[str, Any]) -> str:
    lines = [
        f"Success: {success['success_metric']} >= {success['success_threshold']} (judged by the report from the stored scores).",
        "",
        "## Smallest sigma at which every attack is stopped, in every state, with a passing control",
        "",
        "A defense is only called protective where the same attack leaked the same victims without it",
        "(the control); a stopped attack whose control also failed is inconclusive, not protected.",
        "",
    ]
    lines += [
        "| arch | defense | relative sigma | absolute sigma (measured) | perturbed share | best test acc "
        "| worst success rate by relative sigma | inconclusive cells by relative sigma |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in protection:
        worst = ", ".join(f"{s:g}: {rate:.2f}" for s, rate in p["worst_success_by_sigma"].items())
        unsure = ", ".join(f"{s:g}: {count}" for s, count in p["inconclusive_by_sigma"].items())
        lines.append(
            f"| {p['arch']} | {p['family']} | {_fmt(p['relative_sigma'], 'none of the grid')} | {_fmt(p['absolute_sigma'])} | "
            f"{_fmt(p['perturbed_share'])} | {_fmt(p['test_acc'])} | {worst} | {unsure} |"
        )
    lines += ["", "## Any attack: victims leaked by at least one attack, per cell", ""]
    lines += ["| arch | state | defense | attacks | leaked (union, 95% CI) |", "|---|---|---|---|---|"]
    for (arch, state, defense), attacks in sorted(union_by_cell(rows).items()):
        lines.append(f"| {arch} | {state} | {defense} | {', '.join(attacks['attacks'])} | {attacks['leaked']} |")
    lines += ["", "## Every cell (leaked: k/n victims with the 95% Clopper-Pearson interval)", ""]
    header = "| arch | state | defense | attack | test acc | SSIM mean/median/max | PSNR mean | NCC mean/max | leaked | verdict | floor SSIM/NCC | KL / CE |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for r in sorted(rows, key=lambda r: (r["arch"], r["state"], r["family"], r["relative_sigma"], r["attack"])):
        lines.append(
            f"| {r['arch']} | {r['state']} | {r['defense']} | {r['attack']} | {r['test_acc']:.3f} | "
            f"{r['ssim_mean']:.2f}/{r['ssim_median']:.2f}/{r['ssim_max']:.2f} | {r['psnr_mean']:.1f} | "
            f"{r['ncc_mean']:.2f}/{r['ncc_max']:.2f} | {r['leaked']} | {r['verdict']} | "
            f"{r['floor_ssim']:.2f}/{r['floor_ncc']:.2f} | {r['kl']:.3g} / {r['ce']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def union_by_cell(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Per (arch, state, defense): the attacks run and the victims any of them leaked."""
    cells: dict[tuple[str, str, str], dict[str, list[bool]]] = {}
    for r in rows:
        cells.setdefault((r["arch"], r["state"], r["defense"]), {})[r["attack"]] = r["successes"]
    return {
        key: {"attacks": sorted(outcomes), "leaked": str(LeakRate.of(union_over_attacks(outcomes)))}
        for key, outcomes in cells.items()
    }


def _fmt(value: Optional[float], missing: str = "-") -> str:
    return missing if value is None else f"{value:.3g}"


def _plot_ssim_and_accuracy(rows: list[dict[str, Any]], folder: Path) -> None:
    """SSIM of the strongest attack and test accuracy against the relative sigma, per architecture."""
    archs = sorted({r["arch"] for r in rows})
    fig = Figure(figsize=(5 * len(archs), 7))
    axes = fig.subplots(2, len(archs), squeeze=False)
    for column, arch in enumerate(archs):
        for family in NOISE_FAMILIES:
            cells = defaultdict(list)
            for r in rows:
                if r["arch"] == arch and r["family"] == family:
                    cells[r["relative_sigma"]].append(r)
            sigmas = sorted(cells)
            if not sigmas:
                continue
            axes[0][column].plot(sigmas, [max(r["ssim_mean"] for r in cells[s]) for s in sigmas], "o-", label=family)
            axes[1][column].plot(sigmas, [_final_accuracy(cells[s]) for s in sigmas], "o-", label=family)
        axes[0][column].set(title=f"{arch}: strongest attack", xscale="log", ylabel="mean SSIM", xlabel="relative sigma")
        axes[1][column].set(title=f"{arch}: accuracy", xscale="log", ylabel="test accuracy", xlabel="relative sigma")
        for ax in axes[:, column]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "ssim_accuracy_vs_sigma.png", dpi=110)


def _plot_reconstructions(records: list[dict[str, Any]], folder: Path) -> None:
    """Ground truth and the first victim's reconstruction per defense (rows) and attack (columns)."""
    for arch in sorted({r["arch"] for r in records}):
        last_state = max((r for r in records if r["arch"] == arch), key=lambda r: r["state_epochs"])["state"]
        chosen = [r for r in records if r["arch"] == arch and r["state"] == last_state]
        defenses = list(dict.fromkeys(r["defense"] for r in chosen))
        attacks = list(dict.fromkeys(r["attack"] for r in chosen))
        fig = Figure(figsize=(1.6 * (len(attacks) + 1), 1.6 * len(defenses)))
        axes = fig.subplots(len(defenses), len(attacks) + 1, squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for r in chosen:
            images = torch.load(folder / r["images"])
            row, col = defenses.index(r["defense"]), attacks.index(r["attack"]) + 1
            axes[row][0].imshow(images["truth"][0].permute(1, 2, 0))
            axes[row][0].set_title(f"{r['defense']}\ntruth", fontsize=6)
            axes[row][col].imshow(images["reconstruction"][0].permute(1, 2, 0))
            axes[row][col].set_title(f"{r['attack']}\nSSIM {r['victims'][0]['ssim']:.2f}", fontsize=6)
        fig.tight_layout()
        fig.savefig(folder / f"reconstructions_{arch}_{last_state}.png", dpi=110)


def main() -> None:
    """Write the report of the results folder named on the command line."""
    parser = argparse.ArgumentParser(description="Report the privacy-utility benchmark")
    parser.add_argument("folder", type=Path)
    write_report(parser.parse_args().folder)


if __name__ == "__main__":
    main()
