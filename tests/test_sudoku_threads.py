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
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load), raising=False)
    assert auto_num_threads() == expected


def test_auto_threads_without_a_load_average(monkeypatch):
    def no_load():
        raise OSError("no load average here")

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "getloadavg", no_load, raising=False)
    assert auto_num_threads() == 2


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
