"""Progress reporting: plain periodic lines when stderr is a log, a tqdm bar on a terminal."""

from __future__ import annotations

import subprocess
import sys

import pytest

from postergenre import console
from postergenre.console import PROGRESS_ENV, format_duration, progress, report_skipped


class FakeClock:
    """Stands in for `time.monotonic`; tests move it on by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(console.time, "monotonic", fake)
    return fake


def lines(capsys) -> list[str]:
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout stays clean for --json output
    return captured.err.splitlines()


def test_every_update_prints_count_percent_rate_and_eta(capsys, clock, monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "0")

    with progress(4, "decoding posters") as bar:
        for _ in range(4):
            clock.now += 2.0
            bar.update()

    assert lines(capsys) == [
        "decoding posters: 1/4 (25.0%), 0.5 img/s, ETA 6.0s",
        "decoding posters: 2/4 (50.0%), 0.5 img/s, ETA 4.0s",
        "decoding posters: 3/4 (75.0%), 0.5 img/s, ETA 2.0s",
        "decoding posters: 4/4 done in 8.0s (0.5 img/s)",
    ]


def test_a_long_interval_prints_only_every_interval_seconds(capsys, clock, monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "30")

    with progress(5071, "decoding posters") as bar:
        for _ in range(5071):
            clock.now += 1 / 32  # 32 img/s (exact in binary) for 158 s: 5 lines, then done
            bar.update()

    out = lines(capsys)
    assert len(out) == 6
    assert out[0] == "decoding posters: 960/5071 (18.9%), 32.0 img/s, ETA 2m8s"
    assert out[4].startswith("decoding posters: 4800/5071 (94.7%)")
    assert out[-1] == "decoding posters: 5071/5071 done in 2m38s (32.0 img/s)"


def test_the_interval_argument_beats_the_environment(capsys, clock, monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "0")

    with progress(10, "embedding (lite0)", interval=5) as bar:
        for _ in range(10):
            clock.now += 1.0
            bar.update()

    assert len(lines(capsys)) == 2  # one at 5 s, then the final line


def test_disabled_or_empty_work_prints_nothing(capsys, clock, monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "0")

    with progress(3, "decoding posters", enabled=False) as bar:
        for _ in range(3):
            clock.now += 1.0
            bar.update()
            bar.set_postfix(loss=0.5)
    with progress(0, "decoding posters") as bar:
        bar.update(0)

    assert lines(capsys) == []


def test_postfix_and_a_run_that_stops_early(capsys, clock, monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "0")

    with progress(10, "epoch 1", unit="batch") as bar:
        clock.now += 4.0
        bar.set_postfix(loss=0.123456, acc="81%")
        bar.update(2)

    assert lines(capsys) == [
        "epoch 1: 2/10 (20.0%), 0.5 batch/s, ETA 16s [loss=0.1235, acc=81%]",
        "epoch 1: 2/10 stopped after 4.0s (0.5 batch/s) [loss=0.1235, acc=81%]",
    ]


def test_a_bad_interval_setting_warns_and_uses_the_default(capsys, clock, monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "often")

    bar = progress(3, "decoding posters")

    assert bar.interval == 10.0
    assert "warning" in capsys.readouterr().err


def test_a_terminal_gets_a_tqdm_bar_instead_of_lines(capsys, monkeypatch):
    monkeypatch.setattr(console, "_stderr_is_tty", lambda: True)

    with progress(3, "decoding posters") as bar:
        bar.update(3)

    err = capsys.readouterr().err
    assert "decoding posters" in err and "3/3" in err
    assert "done in" not in err  # the bar, not the log lines


def test_format_duration():
    assert format_duration(0.42) == "0.4s"
    assert format_duration(42) == "42s"
    assert format_duration(123) == "2m3s"
    assert format_duration(3_900) == "1h5m0s"


def test_importing_console_stays_cheap():
    code = "import sys, postergenre.console; print('tqdm' in sys.modules, 'numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_skipped_files_are_listed_up_to_a_limit_then_counted(capsys):
    report_skipped({i: f"p{i}.jpg: not an image" for i in range(5)}, limit=3)
    assert capsys.readouterr().err.splitlines() == [
        "warning: skipped p0.jpg: not an image",
        "warning: skipped p1.jpg: not an image",
        "warning: skipped p2.jpg: not an image",
        "warning: ... and 2 more",
        "warning: 5 unreadable posters skipped",
    ]
    report_skipped({})
    assert capsys.readouterr().err == ""


def test_a_stream_lists_the_first_skipped_files_of_its_count_without_a_tally(capsys):
    # a stream lists only the first reasons it kept, and its summary line tallies them all
    listed = {f"p{i}.jpg": f"p{i}.jpg: empty file" for i in range(2)}
    report_skipped(listed, limit=1, count=1500, tally=False)
    assert capsys.readouterr().err.splitlines() == [
        "warning: skipped p0.jpg: empty file",
        "warning: ... and 1,499 more unreadable posters",
    ]
