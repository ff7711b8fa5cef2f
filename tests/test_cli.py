"""The ``prism-hf`` command line: --version, info, and the sub-command plug-in mechanism."""

import subprocess
import sys
import types

import pytest

import prism_hf
from prism_hf import cli
from prism_hf.families import registered_families
from prism_hf.heads import HEAD_REGISTRY


def test_version_flag_prints_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"prism_hf {prism_hf.__version__}"


def test_info_lists_every_family_model_type_and_head_type(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"prism_hf {prism_hf.__version__}" in out
    for model_type, family in registered_families().items():
        assert model_type in out
        assert family.name in out
    for head_type in HEAD_REGISTRY:
        assert head_type in out
    for expected in ("llada", "dream", "mdlm", "bert", "modernbert", "linear", "mlp", "transformer"):
        assert expected in out


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: prism-hf" in capsys.readouterr().out


def _fake_plugin(monkeypatch, name, register):
    module = types.ModuleType(name)
    if register is not None:
        module.register = register
    monkeypatch.setitem(sys.modules, name, module)
    return name


def test_plugin_registers_a_command_that_main_runs(monkeypatch, capsys):
    def register(subparsers):
        parser = subparsers.add_parser("hello", help="Say hello.")
        parser.add_argument("--name", default="world")
        parser.set_defaults(func=lambda args: print(f"hello {args.name}") or 3)

    plugin = _fake_plugin(monkeypatch, "prism_test_plugin_hello", register)
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", [plugin])
    assert cli.main(["hello", "--name", "prism"]) == 3
    assert capsys.readouterr().out.strip() == "hello prism"
    assert cli.main(["info"]) == 0
    assert "Task commands: hello" in capsys.readouterr().out


def test_missing_plugin_module_is_skipped(monkeypatch):
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ["prism_hf.no_such_package.cli", "no_such_top_level_pkg.cli"])
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["no_such_package"])
    assert cli.main(["info"]) == 0


def test_plugin_with_missing_dependency_is_not_hidden(tmp_path, monkeypatch):
    # The plug-in module exists but imports something that does not: that must surface, not be skipped.
    (tmp_path / "prism_test_broken_plugin.py").write_text("import prism_test_dependency_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ["prism_test_broken_plugin"])
    with pytest.raises(ModuleNotFoundError, match="prism_test_dependency_that_does_not_exist"):
        cli.build_parser()


def test_plugin_without_register_is_an_error(monkeypatch):
    plugin = _fake_plugin(monkeypatch, "prism_test_plugin_no_register", None)
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", [plugin])
    with pytest.raises(TypeError, match="prism_test_plugin_no_register.*register"):
        cli.build_parser()


def test_default_plugin_list_builds():
    # Whatever of the task plug-ins exists right now must import and register cleanly.
    parser = cli.build_parser()
    assert "info" in parser._subparsers._group_actions[0].choices


def test_console_module_runs_as_a_script():
    result = subprocess.run(
        [sys.executable, "-m", "prism_hf.cli", "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"prism_hf {prism_hf.__version__}"


def test_console_script_entry_point_is_installed():
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("prism-hf") == "prism_hf.cli:main"


def test_sudoku_bad_input_through_the_prism_hf_entry_point(tmp_path, capsys):
    # A task command's bad input is a clear one-line error with exit status 2 through `prism-hf`, before any work.
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["sudoku", "demo", "--recipe", "tiny", "--output-dir", str(tmp_path / "run"), "--num-threads", "-1"])
    assert exit_info.value.code == 2
    assert "--num-threads -1 is not valid" in capsys.readouterr().err
    assert cli.main(["sudoku", "demo", "--recipe", "tiny", "--output-dir", str(tmp_path / "run"), "--num-eval-puzzles", "0"]) == 2
    assert "error: num_eval_puzzles=0 is not valid; use an int >= 1." in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
