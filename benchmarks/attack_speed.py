"""Attack speed (issue 11): batched restarts and victims, the automatic choice, the engine's overhead, threads.

Inverting Gradients on 3x32x32 images of an untrained model in training mode, labels known,
``patience=0`` so that every problem runs its whole budget. A time per iteration is the difference
between a long and a short attack divided by their difference in iterations, so set-up (gradient
selection, label handling) cancels; the execution probe runs in an untimed warm-up call, once per
attack and model signature. Every measurement times the things it compares
in turn within each repeat (their order reversed every other repeat, so a drift in the machine's
load hits them alike); a ratio is taken per repeat from that repeat's pair and reported as its
median with the range over repeats. Torch runs one thread (the attack's default) except in the
thread study. Problem counts below are the CPU preset's; ``--gpu`` takes more and has no targets.

- ``a``: cnn, 1 victim x 8 restarts: ``batched=True`` against ``batched=False``.
- ``b``: cnn, 16 victims x 4 restarts: one :meth:`run` call over all victims against one call per
  victim (both with the automatic choice, already probed).
- ``c``: resnet18 with BatchNorm and with GroupNorm, 1 victim x 4 restarts: the automatic choice
  (probed before timing; the probe's one-off cost is sampled separately on fresh attacks) against
  the better of ``batched=True`` and ``batched=False``.
- ``d``: cnn, 1 restart: the attack against :func:`reference_attack`, a minimal PyTorch loop
  with the same objective, optimiser and budget.
- ``threads``: cnn and resnet18 (BatchNorm), 1 restart: the attack's ``threads=1`` against ``threads=2``.

    python -m benchmarks.attack_speed [--repeats 5] [--iterations 10 50] [--resnet-iterations 2 4]
                                      [--only a b c d threads] [--gpu] [--out DIR] [--note TEXT]

On CPU a target is judged on the process-CPU-time ratio, which other jobs on a shared machine
disturb less than wall time; on CUDA on the wall-clock ratio.

Writes ``attack_speed.json`` and ``attack_speed.md`` (``attack_speed_gpu.*`` with ``--gpu``) into
``benchmarks/results/`` or ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppp_lightning.attacks import AttackSpec, InvertingGradients
from ppp_lightning.gradients import client_gradient
from ppp_lightning.models import build_network
from ppp_lightning.seeding import seeded

__all__ = [
    "ARCHS",
    "GROUPS",
    "PRESETS",
    "Contender",
    "Measurement",
    "Ratio",
    "Sizes",
    "Target",
    "Victims",
    "main",
    "make_victims",
    "measure",
    "per_iteration",
    "reference_attack",
]

RESULTS = Path(__file__).resolve().parent / "results"
SHAPE = (1, 3, 32, 32)
ARCHS = {
    "cnn": ("cnn", {}),
    "resnet18-batch": ("resnet18", {"norm": "batch"}),
    "resnet18-group": ("resnet18", {"norm": "group"}),
}
# The attack's settings in every measurement; the reference loop uses the same lr and tv_weight.
SETTINGS = {"lr": 0.1, "tv_weight": 1e-4, "patience": 0, "progress": False}
Budgets = tuple[int, int]


@dataclass(frozen=True)
class Sizes:
    """How large a run is: the device, the budgets and the problem counts.

    Attributes:
        device: where the models and attacks run.
        iterations: the cnn's short and long budget.
        resnet_iterations: resnet18's short and long budget.
        restarts: restarts of (a).
        victims: victims of (b).
        victim_restarts: restarts per victim of (b).
        resnet_restarts: restarts of (c).
        targets: whether the CPU targets apply (they are CPU goals).
        groups: the measurements run unless ``--only`` says otherwise.
    """

    device: str
    iterations: Budgets
    resnet_iterations: Budgets
    restarts: int
    victims: int
    victim_restarts: int
    resnet_restarts: int
    targets: bool
    groups: tuple[str, ...]


PRESETS = {
    "cpu": Sizes("cpu", (10, 50), (2, 4), 8, 16, 4, 4, True, ("a", "b", "c", "d", "threads")),
    # The thread study is left out: the attack's threads option only applies on CPU.
    "gpu": Sizes("cuda", (10, 60), (5, 20), 64, 64, 4, 16, False, ("a", "b", "c", "d")),
}


@dataclass(frozen=True)
class Victims:
    """A model with every victim's shared gradient and labels (one image per victim)."""

    model: nn.Module
    gradients: list[dict[str, Tensor]]
    labels: list[Tensor]


@dataclass(frozen=True)
class Contender:
    """One of the things a measurement compares.

    Attributes:
        label: its name in the tables.
        run: runs it with a budget of that many iterations.
        attack: the attack whose probe choices are reported (automatic execution only).
    """

    label: str
    run: Callable[[int], object]
    attack: InvertingGradients | None = None


@dataclass(frozen=True)
class Ratio:
    """The fastest of ``numerator`` over the fastest of ``denominator``, from per-iteration times."""

    numerator: tuple[str, ...]
    denominator: tuple[str, ...]

    def of(self, times: Mapping[str, float]) -> float:
        """The ratio of one repeat's times by contender label."""
        return min(times[label] for label in self.numerator) / min(times[label] for label in self.denominator)

    def __str__(self) -> str:
        return f"{_fastest(self.numerator)} / {_fastest(self.denominator)}"


def _fastest(labels: tuple[str, ...]) -> str:
    return labels[0] if len(labels) == 1 else f"min({', '.join(labels)})"


@dataclass(frozen=True)
class Target:
    """A goal for the median ratio: at least ``value`` or, with ``at_least=False``, at most."""

    value: float
    at_least: bool = True

    def met(self, ratio: float) -> bool:
        """Whether ``ratio`` reaches the goal."""
        return ratio >= self.value if self.at_least else ratio <= self.value

    def __str__(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.value:g}"


@dataclass(frozen=True)
class Measurement:
    """Contenders timed against each other, with the ratio that compares them.

    Attributes:
        key: the measurement's name in the results, e.g. ``c/resnet18-batch``.
        title: what is attacked.
        contenders: the things timed, in their order within a repeat.
        budgets: the short and long budget.
        ratio: how the per-iteration times compare.
        target: the goal for the median ratio, if any.
        probe: times the execution probe of a fresh attack, ``(seconds, chosen mode)``.
    """

    key: str
    title: str
    contenders: list[Contender]
    budgets: Budgets
    ratio: Ratio
    target: Target | None = None
    probe: Callable[[], tuple[float, str]] | None = field(default=None, repr=False)


# --- the reference loop -------------------------------------------------------------------------


def reference_attack(
    model: nn.Module,
    shared: Mapping[str, Tensor],
    labels: Tensor,
    start: Tensor,
    iterations: int,
    lr: float = SETTINGS["lr"],
    tv_weight: float = SETTINGS["tv_weight"],
) -> tuple[Tensor, Tensor]:
    """Inverting Gradients as a minimal PyTorch loop: one restart, the whole budget, pixels in ``[0, 1]``.

    Adam (``torch.optim.Adam``) on the sign of the gradient of ``1 - cos(dummy gradient, shared)``
    (over all of ``shared`` jointly) ``+ tv_weight * TV / numel``, the learning rate divided by 10
    at 3/8, 5/8 and 7/8 of the budget, clamped after every step; the best of the ``iterations + 1``
    iterates is returned, as the attack does.

    Args:
        model: the attacked model (its parameters named in ``shared``).
        shared: the shared gradient by parameter name.
        labels: ``(N,)`` the batch's labels.
        start: ``(N, C, H, W)`` the initial images.
        iterations: optimisation steps.
        lr: Adam's learning rate.
        tv_weight: weight of the total variation.

    Returns:
        The best iterate and the objective of every iterate, ``(iterations + 1,)``.
    """
    parameters = dict(model.named_parameters())
    params = [parameters[name] for name in shared]
    targets = [t.detach() for t in shared.values()]
    target_norm = torch.stack([t.square().sum() for t in targets]).sum().sqrt()
    images = start.detach().clone().requires_grad_()
    optimiser = torch.optim.Adam([images], lr=lr)
    milestones = [int(point * iterations) for point in (3 / 8, 5 / 8, 7 / 8)]
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones, gamma=0.1)

    def objective() -> Tensor:
        grads = torch.autograd.grad(F.cross_entropy(model(images), labels), params, create_graph=True)
        dot = torch.stack([(g * t).sum() for g, t in zip(grads, targets)]).sum()
        norm = torch.stack([g.square().sum() for g in grads]).sum().sqrt()
        tv = (images[..., 1:, :] - images[..., :-1, :]).abs().sum() + (images[..., 1:] - images[..., :-1]).abs().sum()
        return 1 - dot / (norm * target_norm).clamp_min(1e-12) + tv_weight * tv / images.numel()

    history, best, lowest = [], images.detach().clone(), torch.tensor(float("inf"), device=images.device)
    for step in range(iterations + 1):  # the iterate after the last step is evaluated too
        loss = objective()
        history.append(loss.detach())
        best = torch.where(loss < lowest, images.detach(), best)  # no host sync, as the attack
        lowest = torch.minimum(loss.detach(), lowest)
        if step == iterations:
            break
        (grad,) = torch.autograd.grad(loss, images)
        images.grad = grad.sign()
        optimiser.step()
        schedule.step()
        with torch.no_grad():
            images.clamp_(0, 1)
    return best, torch.stack(history)


# --- what is compared ---------------------------------------------------------------------------


def make_victims(arch: str, count: int, device: torch.device) -> Victims:
    """``count`` victims of one seeded untrained ``arch`` (a key of :data:`ARCHS`) in training mode."""
    name, kwargs = ARCHS[arch]
    with seeded(0):
        model = build_network(name, 10, SHAPE[1:], None, **kwargs).to(device).train()
        images = torch.randn(count, *SHAPE, device=device)
    labels = [torch.tensor([v % 10], device=device) for v in range(count)]
    return Victims(model, [client_gradient(model, x, y) for x, y in zip(images, labels)], labels)


def engine(label: str, victims: Victims, budgets: Budgets, one_call: bool = True, **settings: Any) -> Contender:
    """The attack with ``settings`` on every victim of ``victims``: in one :meth:`run` call or one call each."""
    attacks = {n: AttackSpec("inverting", {**SETTINGS, "iterations": n, **settings}).build() for n in budgets}
    short, long = budgets
    attacks[long].execution = attacks[short].execution  # one probe: the choice does not depend on the budget

    def run(iterations: int) -> None:
        attack = attacks[iterations]
        if one_call:
            attack.run(victims.model, victims.gradients, victims.labels, SHAPE)
        else:
            for gradients, labels in zip(victims.gradients, victims.labels):
                attack(victims.model, gradients, labels, SHAPE)

    return Contender(label, run, attacks[short] if settings.get("batched") is None else None)


def reference(label: str, victims: Victims) -> Contender:
    """:func:`reference_attack` on the first victim, from the attack's first initial draw."""
    device = victims.labels[0].device
    start = torch.randn(SHAPE, generator=torch.Generator(device).manual_seed(0), device=device)
    model, shared, labels = victims.model, victims.gradients[0], victims.labels[0]
    return Contender(label, lambda iterations: reference_attack(model, shared, labels, start, iterations))


def probe_cost(victims: Victims, budgets: Budgets, restarts: int) -> Callable[[], tuple[float, str]]:
    """Samples the probe: a fresh automatic attack's first call minus its second, and its choice."""

    def sample() -> tuple[float, str]:
        contender = engine("probe", victims, budgets, restarts=restarts)
        first, again = (timed(lambda: contender.run(budgets[0]), victims.labels[0].device)[0] for _ in range(2))
        return first - again, _modes(contender.attack)

    return sample


def goal(sizes: Sizes, value: float, at_least: bool = True) -> Target | None:
    """The target where the preset has targets."""
    return Target(value, at_least) if sizes.targets else None


def restart_batching(sizes: Sizes) -> list[Measurement]:
    """(a) one victim's restarts batched against one after another."""
    cnn, restarts = make_victims("cnn", 1, torch.device(sizes.device)), sizes.restarts
    contenders = [
        engine(mode, cnn, sizes.iterations, restarts=restarts, batched=batched)
        for mode, batched in (("batched", True), ("sequential", False))
    ]
    ratio = Ratio(("sequential",), ("batched",))
    return [
        Measurement("a/cnn", f"1 victim x {restarts} restarts", contenders, sizes.iterations, ratio, goal(sizes, 3.5))
    ]


def victim_batching(sizes: Sizes) -> list[Measurement]:
    """(b) all victims in one call against one call per victim."""
    cnn, restarts = make_victims("cnn", sizes.victims, torch.device(sizes.device)), sizes.victim_restarts
    contenders = [
        engine(label, cnn, sizes.iterations, one_call, restarts=restarts)
        for label, one_call in (("one call", True), ("per victim", False))
    ]
    title = f"{sizes.victims} victims x {restarts} restarts"
    ratio = Ratio(("per victim",), ("one call",))
    return [Measurement("b/cnn", title, contenders, sizes.iterations, ratio, goal(sizes, 4.0))]


def automatic_choice(sizes: Sizes) -> list[Measurement]:
    """(c) the probed choice against the better forced mode, with BatchNorm and with GroupNorm."""
    measurements, budgets, restarts = [], sizes.resnet_iterations, sizes.resnet_restarts
    for arch in ("resnet18-batch", "resnet18-group"):
        victims = make_victims(arch, 1, torch.device(sizes.device))
        contenders = [
            engine(label, victims, budgets, restarts=restarts, batched=batched)
            for label, batched in (("auto", None), ("batched", True), ("sequential", False))
        ]
        ratio = Ratio(("batched", "sequential"), ("auto",))
        title = f"1 victim x {restarts} restarts"
        probe = probe_cost(victims, budgets, restarts)
        measurements.append(Measurement(f"c/{arch}", title, contenders, budgets, ratio, goal(sizes, 0.95), probe))
    return measurements


def engine_overhead(sizes: Sizes) -> list[Measurement]:
    """(d) one restart of the attack against the minimal reference loop."""
    cnn = make_victims("cnn", 1, torch.device(sizes.device))
    contenders = [engine("attack", cnn, sizes.iterations), reference("reference", cnn)]
    ratio = Ratio(("attack",), ("reference",))
    return [Measurement("d/cnn", "1 victim x 1 restart", contenders, sizes.iterations, ratio, goal(sizes, 1.05, False))]


def thread_study(sizes: Sizes) -> list[Measurement]:
    """The attack's ``threads=1`` against ``threads=2``, one restart, on cnn and resnet18 (BatchNorm)."""
    measurements = []
    for arch, budgets in (("cnn", sizes.iterations), ("resnet18-batch", sizes.resnet_iterations)):
        victims = make_victims(arch, 1, torch.device(sizes.device))
        contenders = [engine(f"threads={n}", victims, budgets, threads=n) for n in (1, 2)]
        ratio = Ratio(("threads=2",), ("threads=1",))
        measurements.append(Measurement(f"threads/{arch}", "1 victim x 1 restart", contenders, budgets, ratio))
    return measurements


GROUPS: dict[str, Callable[[Sizes], list[Measurement]]] = {
    "a": restart_batching,
    "b": victim_batching,
    "c": automatic_choice,
    "d": engine_overhead,
    "threads": thread_study,
}


# --- timing -------------------------------------------------------------------------------------


def timed(call: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds of ``call``, queued GPU work included."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def per_iteration(run: Callable[[int], object], budgets: Budgets, device: torch.device) -> tuple[float, float]:
    """(wall, CPU) seconds per iteration: a long run minus a short one, over their difference in iterations."""
    short, long = budgets
    first, second = (timed(lambda n=n: run(n), device) for n in budgets)
    return tuple((b - a) / (long - short) for a, b in zip(first, second))


def measure(measurement: Measurement, repeats: int, device: torch.device) -> dict[str, Any]:
    """Time the contenders in turn ``repeats`` times; per-iteration times, ratios and probe costs summarised."""
    for contender in measurement.contenders:  # warm-up: lazy initialisation and the probes run here
        contender.run(measurement.budgets[0])
    times = {c.label: {"wall": [], "cpu": []} for c in measurement.contenders}
    ratios, probes = {"wall": [], "cpu": []}, []
    for repeat in range(repeats):
        order = measurement.contenders[:: -1 if repeat % 2 else 1]
        sample = {c.label: per_iteration(c.run, measurement.budgets, device) for c in order}
        for i, clock in enumerate(("wall", "cpu")):
            for label, seconds in sample.items():
                times[label][clock].append(seconds[i])
            ratios[clock].append(measurement.ratio.of({label: seconds[i] for label, seconds in sample.items()}))
        if measurement.probe is not None:
            probes.append(measurement.probe())
    ratio = summary(ratios["wall"])
    judged = summary(ratios["cpu" if device.type == "cpu" else "wall"])
    result = {
        "title": measurement.title,
        "compared": [c.label for c in measurement.contenders],
        "per_iteration_s": {
            label: {clock: summary(s) for clock, s in clocks.items()} for label, clocks in times.items()
        },
        "ratio": {"definition": str(measurement.ratio), **ratio, "cpu": summary(ratios["cpu"])},
        "target": None if measurement.target is None else dataclasses.asdict(measurement.target),
        "met": None if measurement.target is None else measurement.target.met(judged["median"]),
        "modes": {c.label: mode for c in measurement.contenders if c.attack is not None and (mode := _modes(c.attack))},
    }
    if probes:
        result["probe"] = {"seconds": summary([s for s, _ in probes]), "choices": [mode for _, mode in probes]}
    return result


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """All samples with their median, min and max."""
    return {"samples": list(samples), "median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def _modes(attack: InvertingGradients) -> str:
    """The execution modes the attack's probe chose (none for one problem: it runs plain autograd)."""
    return ", ".join(sorted(set(attack.execution.choices.values())))


# --- reporting ----------------------------------------------------------------------------------


def write(results: dict[str, dict], meta: dict[str, Any], out: Path, stem: str) -> None:
    """``<stem>.json`` (everything) and ``<stem>.md`` (the table and notes) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "measurements": results}, indent=1) + "\n")
    lines = [
        "# Attack speed",
        "",
        (
            f"Inverting Gradients, 3x32x32 images, untrained models in training mode, labels known, patience 0; "
            f"{meta['device']}, torch {meta['torch']}, {meta['threads']} thread(s) unless stated. Seconds per "
            f"iteration from attacks of {_budgets(meta['iterations'])} iterations (cnn) and "
            f"{_budgets(meta['resnet_iterations'])} (resnet18), wall clock, median of {meta['repeats']} repeats; "
            "each ratio is taken within a repeat and given as median (min-max), by wall clock and by process "
            f"CPU time; targets are judged on the {'CPU' if meta['device'].startswith('cpu') else 'wall'} ratio."
        ),
        "",
        "| measurement | compared | median s/it each (wall) | wall ratio (min-max) | CPU ratio (min-max) | target | met |",
        "|---|---|---|---|---|---|---|",
        *(_row(key, r) for key, r in results.items()),
        "",
        *_notes(results),
        *([f"Note: {meta['note']}"] if meta.get("note") else []),
    ]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


def _budgets(budgets: Budgets) -> str:
    return f"{budgets[0]} and {budgets[1]}"


def _row(key: str, result: dict[str, Any]) -> str:
    each = ", ".join(f"{label} {t['wall']['median']:.4g}" for label, t in result["per_iteration_s"].items())
    ratio = result["ratio"]
    target = result["target"]
    goal_text = "-" if target is None else str(Target(**target))
    met = "-" if result["met"] is None else ("yes" if result["met"] else "no")
    wall, cpu = _span(ratio), _span(ratio["cpu"])
    return f"| {key}: {result['title']} | {ratio['definition']} | {each} | {wall} | {cpu} | {goal_text} | {met} |"


def _span(ratio: Mapping[str, float]) -> str:
    return f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})"


def _notes(results: dict[str, dict]) -> list[str]:
    """What the probe chose and cost, and which thread setting to recommend."""
    notes = []
    for key, result in results.items():
        modes = ", ".join(f"{mode} for {label}" for label, mode in result["modes"].items())
        if modes:
            notes.append(f"- {key}: the probe chose {modes}.")
        if "probe" in result:
            seconds = result["probe"]["seconds"]
            notes.append(
                f"- {key}: one-off probe cost {seconds['median']:.3g} s ({seconds['min']:.3g}-{seconds['max']:.3g}); "
                f"fresh probes chose {', '.join(result['probe']['choices'])}."
            )
    threads = {key: r for key, r in results.items() if key.startswith("threads/")}
    if threads:
        notes.append(f"- {_thread_advice(threads)}")
    return notes


def _thread_advice(results: Mapping[str, dict]) -> str:
    """The thread setting whose worst slowdown against the best setting, over the studies, is smallest."""
    labels = next(iter(results.values()))["compared"]
    worst = {label: 0.0 for label in labels}
    for result in results.values():
        medians = {label: result["per_iteration_s"][label]["wall"]["median"] for label in labels}
        for label in labels:
            worst[label] = max(worst[label], medians[label] / min(medians.values()))
    best = min(worst, key=worst.get)
    others = ", ".join(f"{label} up to {worst[label]:.2f}x" for label in labels if label != best)
    return f"Threads: {best} is never more than {worst[best]:.2f}x the best setting here ({others})."


# --- command line -------------------------------------------------------------------------------


def sizes_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Sizes:
    """The preset with the command line's budgets; exits on a bad budget or group."""
    sizes = PRESETS["gpu" if args.gpu else "cpu"]
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("attack_speed --gpu: CUDA is not available here; run without --gpu to measure on CPU")
    sizes = dataclasses.replace(
        sizes,
        iterations=tuple(args.iterations or sizes.iterations),
        resnet_iterations=tuple(args.resnet_iterations or sizes.resnet_iterations),
        groups=tuple(args.only or sizes.groups),
    )
    for option, (short, long) in (("--iterations", sizes.iterations), ("--resnet-iterations", sizes.resnet_iterations)):
        if not 1 <= short < long:
            parser.error(f"{option} {short} {long}; allowed: 1 <= SHORT < LONG")
    if args.gpu and "threads" in sizes.groups:
        parser.error("--only threads is a CPU study: the attack's threads option does not apply on CUDA")
    return sizes


def main(argv: list[str] | None = None) -> None:
    """Run the selected measurements and write their JSON and markdown table.

    Args:
        argv: the command line (``None``: ``sys.argv``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, nargs=2, metavar=("SHORT", "LONG"), help="cnn budgets")
    parser.add_argument("--resnet-iterations", type=int, nargs=2, metavar=("SHORT", "LONG"), help="resnet18 budgets")
    parser.add_argument("--only", nargs="+", choices=list(GROUPS), help="measurements to run (default: the preset's)")
    parser.add_argument("--gpu", action="store_true", help="the CUDA preset: more problems, no targets")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--note", default="", help="a line under the table, e.g. the machine's load")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}; allowed: >= 1")
    sizes = sizes_from(args, parser)
    device = torch.device(sizes.device)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the attack's default; a shared machine's other jobs disturb one thread least
    try:
        results = {}
        for group in sizes.groups:
            for measurement in GROUPS[group](sizes):
                results[measurement.key] = measure(measurement, args.repeats, device)
                print(_row(measurement.key, results[measurement.key]), flush=True)
    finally:
        torch.set_num_threads(previous_threads)
    meta = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu: {platform.machine()}",
        "torch": torch.__version__,
        "threads": 1,
        "repeats": args.repeats,
        "iterations": sizes.iterations,
        "resnet_iterations": sizes.resnet_iterations,
        "sizes": dataclasses.asdict(sizes),
        "note": args.note,
    }
    write(results, meta, args.out, "attack_speed_gpu" if args.gpu else "attack_speed")


if __name__ == "__main__":
    main()
