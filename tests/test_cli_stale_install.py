"""A checkout updated past the move of task commands to entry points, without reinstalling, says how to fix it."""

from importlib import metadata

import pytest

from prism_hf import cli


def test_unknown_command_with_no_task_commands_installed_says_to_reinstall(monkeypatch, capsys):
    real = metadata.entry_points
    monkeypatch.setattr(cli.metadata, "entry_points",
                        lambda **sel: [] if sel.get("group") == cli.ENTRY_POINT_GROUP else real(**sel))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["sudoku", "demo", "--recipe", "tiny"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'sudoku'" in err and "pip install -e ." in err and cli.ENTRY_POINT_GROUP in err
    assert cli.main(["info"]) == 0  # `info` still works


def test_installed_task_commands_parse_as_before(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["nope"])
    assert exit_info.value.code == 2
    assert "pip install" not in capsys.readouterr().err  # sudoku is installed: the plain argparse error
