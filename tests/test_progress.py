"""Progress output: live bars in a terminal, one plain line per finished item (or nothing) in a file or CI."""

import io
import re

import pytest
import torch

from ppp_lightning.attacks import DLG, InvertingGradients
from ppp_lightning.gradients import client_gradient
from ppp_lightning.models import build_network
from ppp_lightning.progress import LineProgress, interactive, progress_bar

ESCAPES = re.compile(r"\r|\x1b\[")


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_interactive_reads_the_stream_when_asked(monkeypatch):
    assert interactive(Terminal()) and not interactive(io.StringIO())
    monkeypatch.setattr("sys.stderr", Terminal())
    assert interactive()
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not interactive()


def test_outside_a_terminal_one_plain_line_per_finished_attack_with_the_time_left(monkeypatch):
    clock = iter([0.0, 10.0, 30.0, 60.0])
    monkeypatch.setattr("ppp_lightning.progress.time.perf_counter", lambda: next(clock))
    log = io.StringIO()
    attacks = {"inverting": 1, "analytic": 2, "dlg": 3}
    items = progress_bar(attacks.items(), desc="audit", unit="attack", lines=True, name=lambda item: item[0], stream=log)
    assert [label for label, _ in items] == list(attacks)
    assert not ESCAPES.search(log.getvalue())
    assert log.getvalue().splitlines() == [
        "audit: 1/3 attacks (inverting), 10s elapsed, about 20s left",
        "audit: 2/3 attacks (analytic), 30s elapsed, about 15s left",
        "audit: 3/3 attacks (dlg), 1m00s elapsed, about 0s left",
    ]


def test_in_a_terminal_a_live_bar_and_nothing_when_disabled():
    screen = Terminal()
    assert list(progress_bar(range(3), desc="audit", unit="attack", lines=True, stream=screen)) == [0, 1, 2]
    assert "\r" in screen.getvalue() and "audit" in screen.getvalue() and "3/3" in screen.getvalue()
    quiet = Terminal()
    assert list(progress_bar(range(3), desc="audit", enabled=False, lines=True, stream=quiet)) == [0, 1, 2]
    assert quiet.getvalue() == ""
    assert not isinstance(progress_bar(range(3), lines=True, enabled=False, stream=io.StringIO()), LineProgress)


def test_line_progress_updates_and_resets_without_an_iterable():
    log = io.StringIO()
    with progress_bar(total=2, desc="calibrate", unit="sigma", lines=True, stream=log) as bar:
        bar.update()
        bar.reset(total=4)
        bar.update(2)
    lines = log.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["calibrate: 1/2 sigmas", "calibrate: 2/4 sigmas"]


def _problem():
    torch.manual_seed(0)
    model = build_network("mlp", 10, (1, 8, 8), None, width=8).train()
    images, labels = torch.rand(1, 1, 1, 8, 8), torch.tensor([[3]])
    return model, client_gradient(model, images[0], labels[0]), labels[0], images[0].shape


@pytest.mark.parametrize("attack", [InvertingGradients, DLG], ids=["inverting", "dlg"])
def test_an_attacks_iteration_bar_is_live_in_a_terminal_and_silent_in_a_file(attack, monkeypatch):
    model, shared, labels, shape = _problem()
    for stream, shown in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr("sys.stderr", stream)
        attack(iterations=20, patience=0, progress=True).run(model, [shared], [labels], shape)
        assert bool(ESCAPES.search(stream.getvalue())) is shown
        assert (stream.getvalue() == "") is not shown


def test_an_audit_in_a_log_file_prints_one_line_per_attack_and_no_escape_codes(monkeypatch, tmp_path):
    from datamodules import OfflineMNISTDataModule
    from ppp_lightning.attacks import AttackSpec
    from ppp_lightning.auditing.audit import audit

    log = io.StringIO()  # not a terminal, as a log file or CI
    monkeypatch.setattr("sys.stderr", log)
    data = OfflineMNISTDataModule()
    data.setup("fit")
    torch.manual_seed(0)
    model = build_network("mlp", 10, (3, 32, 32), None, width=32)
    attacks = {"analytic": AttackSpec("analytic"), "inverting": AttackSpec("inverting", {"iterations": 3, "progress": True})}
    audit(model, data.train_set, attacks, tmp_path, victims=2, mean=data.mean, std=data.std)
    lines = log.getvalue().splitlines()
    assert not ESCAPES.search(log.getvalue())
    assert [line.split(", ")[0] for line in lines] == ["audit: 1/2 attacks (analytic)", "audit: 2/2 attacks (inverting)"]


@pytest.mark.parametrize("stream, shown", [(io.StringIO(), False), (Terminal(), True)], ids=["log file", "terminal"])
def test_the_cli_shows_lightnings_progress_bar_only_in_a_terminal(stream, shown, monkeypatch):
    from ppp_lightning.lightning.cli import PPPLightningCLI

    monkeypatch.setattr("sys.stderr", stream)
    model = {"class_path": "ppp_lightning.ImageClassifier", "init_args": {"arch": "mlp", "arch_kwargs": {"width": 8}}}
    args = [f"--model={model}", "--data=datamodules.OfflineMNISTDataModule", "--trainer.logger=false"]
    cli = PPPLightningCLI(args=args, run=False)
    assert (cli.trainer.progress_bar_callback is not None) == shown
    forced = PPPLightningCLI(args=[*args, "--trainer.enable_progress_bar=true"], run=False)
    assert forced.trainer.progress_bar_callback is not None  # the user's choice wins
