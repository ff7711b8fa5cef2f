"""`--num-threads auto` (the Sudoku commands' default): two threads only when two CPUs are idle."""

import os

import pytest

from prism_hf.tasks.sudoku import cli as sudoku_cli
from prism_hf.tasks.sudoku.cli import auto_num_threads


@pytest.mark.parametrize(
    "cpus,load,expected",
    [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.2, 1), (2, 5.0, 1), (1, 0.0, 1), (16, 0.0, 2), (16, 14.7, 1),
     (16, 13.0, 2)],
)
def test_auto_threads_count_idle_cpus(monkeypatch, cpus, load, expected):
    monkeypatch.setattr(sudoku_cli, "_busy_cpus", lambda: None)  # no /proc/stat: the load average decides
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load), raising=False)
    assert auto_num_threads() == expected


def test_auto_threads_without_a_load_average(monkeypatch):
    def no_load():
        raise OSError("no load average here")

    monkeypatch.setattr(sudoku_cli, "_busy_cpus", lambda: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "getloadavg", no_load, raising=False)
    assert auto_num_threads() == 2


@pytest.mark.parametrize("busy_ticks,expected", [(0, 2), (40, 2), (60, 1), (100, 1), (200, 1)])
def test_busy_cpus_now_win_over_the_load_average(tmp_path, monkeypatch, busy_ticks, expected):
    """Two reads of /proc/stat half a second apart: 200 ticks pass on 2 CPUs, ``busy_ticks`` of them busy. A high
    load average (a job that just ended) changes nothing."""
    import time

    stat = tmp_path / "stat"
    stat.write_text("cpu  1000 0 500 8000 100 0 0 0 0 0\ncpu0 1 2 3 4\n")

    def sleep(seconds):
        user = 1000 + busy_ticks
        stat.write_text(f"cpu  {user} 0 500 {8000 + 200 - busy_ticks} 100 0 0 0 0 0\n")

    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    busy = sudoku_cli._busy_cpus(0.5, str(stat))
    assert busy == pytest.approx(2 * busy_ticks / 200)
    monkeypatch.setattr(sudoku_cli, "_busy_cpus", lambda: busy)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 5.0, 5.0), raising=False)
    assert auto_num_threads() == expected


def test_busy_cpus_without_proc_stat(tmp_path):
    assert sudoku_cli._busy_cpus(0.0, str(tmp_path / "missing")) is None


def test_num_threads_flag_takes_auto_or_a_count(tmp_path, capsys, monkeypatch):
    assert sudoku_cli._num_threads("auto") == "auto"
    assert sudoku_cli._num_threads("0") == 0 and sudoku_cli._num_threads("3") == 3
    with pytest.raises(SystemExit):
        sudoku_cli.main(["demo", "--recipe", "tiny", "--output-dir", str(tmp_path / "x"), "--num-threads", "two"])
    assert "--num-threads 'two' is not an integer" in capsys.readouterr().err


def test_auto_is_resolved_before_the_command_runs(monkeypatch):
    import torch

    seen = {}
    monkeypatch.setattr(sudoku_cli, "auto_num_threads", lambda max_threads=2: 1)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.setdefault("threads", n))

    class Args:
        num_threads = "auto"

    assert sudoku_cli._handle_errors(lambda args: args.num_threads)(Args()) == 1
    assert seen["threads"] == 1
