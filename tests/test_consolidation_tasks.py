"""Issue 15 (tasks, CLI, examples, presets): one validation helper for the native ports' configs, one table of sampling
method presets, task commands as entry points, `head_type` everywhere, `prism_hf.arguments` moved to the examples,
and `prism_hf.testing` building only the real classes."""

import importlib.util
import json
import sys
import warnings
from pathlib import Path

import pytest

from prism_hf.utils.validation import check_positive_float, check_positive_int, check_probability, check_supported

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _example(name):
    """An example script as a module (the examples import their shared `arguments.py` from their own folder)."""
    spec = importlib.util.spec_from_file_location(f"consolidation_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


# ----- one validation helper for the ports' configurations ------------------------------------------------------
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: check_positive_int("n_layers", 0), r"^n_layers=0 must be a positive int\.$"),
        (lambda: check_positive_int("n_layers", True), r"^n_layers=True must be a positive int\.$"),
        (lambda: check_positive_int("n_kv_heads", -1, optional=True), r"^n_kv_heads=-1 must be a positive int or None\.$"),
        (lambda: check_positive_float("rms_norm_eps", 0.0), r"^rms_norm_eps=0\.0 must be a positive float\.$"),
        (lambda: check_positive_float("rope_theta", "big", example="500000.0"),
         r"^rope_theta='big' must be a positive float, e\.g\. 500000\.0\.$"),
        (lambda: check_probability("dropout", 1.0), r"^dropout=1\.0 must be a float in \[0, 1\)\.$"),
        (lambda: check_probability("dropout", False), r"^dropout=False must be a float in \[0, 1\)\.$"),
        (lambda: check_supported("init_fn", "xavier", ("normal", "mitchell"), "the native LLaDA port"),
         r"^init_fn='xavier' is not implemented by the native LLaDA port; supported values: \['normal', 'mitchell'\]\.$"),
        (lambda: check_supported("alibi", True, [False], "the native LLaDA port", "the forward asserts it is off"),
         r"^alibi=True is not implemented by the native LLaDA port \(the forward asserts it is off\); supported values: "
         r"\[False\]\.$"),
    ],
)
def test_validation_helpers_name_the_argument_the_value_and_what_is_valid(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_validation_helpers_accept_valid_values():
    check_positive_int("n_layers", 2)
    check_positive_int("n_kv_heads", None, optional=True)
    check_positive_float("rope_theta", 10_000)
    check_probability("dropout", 0.0)
    check_supported("rope", True, [True], "the native LLaDA port")


def test_every_port_configuration_uses_the_one_helper():
    from prism_hf.models.dream import DreamConfig
    from prism_hf.models.llada import LLaDAConfig
    from prism_hf.models.mdlm import MDLMConfig

    cases = [
        (lambda: MDLMConfig(n_blocks=0), r"n_blocks=0 must be a positive int\."),
        (lambda: MDLMConfig(dropout=1.5), r"dropout=1\.5 must be a float in \[0, 1\)\."),
        (lambda: DreamConfig(num_hidden_layers=0), r"num_hidden_layers=0 must be a positive int\."),
        (lambda: DreamConfig(rope_theta=-1.0), r"rope_theta=-1\.0 must be a positive float\."),
        (lambda: DreamConfig(hidden_act="prelu"), r"hidden_act='prelu' is not implemented by the native Dream port; "
                                                  r"supported values: \['silu'"),
        (lambda: LLaDAConfig(n_layers=0), r"n_layers=0 must be a positive int\."),
        (lambda: LLaDAConfig(init_fn="xavier"), r"init_fn='xavier' is not implemented by the native LLaDA port; "
                                                r"supported values: \['normal'"),
    ]
    for build, message in cases:
        with pytest.raises(ValueError, match=message):
            build()


# ----- one table of method presets ---------------------------------------------------------------------------------
def _sudoku_table_of_the_previous_release(recipe):
    """The scheduler arguments tasks/sudoku/evaluation.py wrote out before the table existed (release 0.1.0)."""
    count_kwargs = dict(
        unmasking=recipe.unmasking, num_remask=recipe.num_remask, remask_schedule="fixed",
        step_on=recipe.step_on, step_off=recipe.step_off, prism_loop_steps=recipe.prism_loop_steps,
    )
    return {
        "vanilla-confidence": dict(unmasking="confidence", remasking="none"),
        "vanilla-margin": dict(unmasking="margin", remasking="none"),
        "vanilla-random": dict(unmasking="random", remasking="none"),
        "remdm-conf": dict(unmasking=recipe.unmasking, remasking="remdm_conf"),
        "random-remask": dict(count_kwargs, remasking="random"),
        "confidence-remask": dict(count_kwargs, remasking="confidence"),
        "prism": dict(count_kwargs, remasking="prism"),
    }


#: The rule presets examples/eval_text.py wrote out before the table existed (release 0.1.0).
TEXT_RULES_OF_THE_PREVIOUS_RELEASE = {
    "prism": {"remasking": "prism", "remask_schedule": "binomial", "eta": 0.01, "unmasking": "random", "step_on": 0.5},
    "vanilla": {"remasking": "none", "unmasking": "random"},
    "remdm_cap": {"remasking": "remdm_cap", "eta": 0.04, "unmasking": "random"},
    "remdm_rescale": {"remasking": "remdm_rescale", "unmasking": "random"},
    "remdm_conf": {"remasking": "remdm_conf", "unmasking": "random"},
    "remdm_loop": {"remasking": "remdm_loop", "unmasking": "random"},
    "confidence": {"remasking": "confidence", "remask_schedule": "binomial", "eta": 0.01, "unmasking": "random",
                   "step_on": 0.5},
    "random": {"remasking": "random", "remask_schedule": "binomial", "eta": 0.01, "unmasking": "random", "step_on": 0.5},
}


def _config(scheduler):
    return {key: value for key, value in scheduler.config.items() if not key.startswith("_")}


@pytest.mark.parametrize("recipe_name, changes", [
    ("tiny", {}), ("demo", {}), ("paper", {}), ("demo", dict(unmasking="entropy", num_remask=3, step_on=0.25,
                                                             step_off=0.75, prism_loop_steps=2)),
])
def test_sudoku_methods_build_the_schedulers_of_the_previous_release(recipe_name, changes):
    from prism_hf.sampling.scheduling_prism import PrismScheduler
    from prism_hf.tasks.sudoku import get_recipe
    from prism_hf.tasks.sudoku.evaluation import METHODS, method_scheduler

    recipe = get_recipe(recipe_name, **changes)
    before = _sudoku_table_of_the_previous_release(recipe)
    assert list(METHODS) == list(before)
    for method, kwargs in before.items():
        assert _config(method_scheduler(method, recipe)) == _config(PrismScheduler(temperature=0.0, **kwargs)), method


def test_text_rules_are_the_presets_of_the_previous_release():
    eval_text = _example("eval_text")
    for rule, before in TEXT_RULES_OF_THE_PREVIOUS_RELEASE.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            settings = eval_text.EvalArguments(rules=[rule], top_p=0.9).rule_settings()[rule]
        assert settings == {"temperature": 1.0, "top_p": 0.9, "top_p_mode": "mdlm", **before}, rule
        renamed = rule in ("remdm_cap", "remdm_rescale", "remdm_conf", "remdm_loop", "confidence", "random")
        assert any(issubclass(w.category, FutureWarning) and f"`{rule}` is deprecated" in str(w.message)
                   for w in caught) == renamed, rule
    new = eval_text.EvalArguments(rules=["remdm-cap", "confidence-remask"]).rule_settings()
    assert new["remdm-cap"]["eta"] == 0.04 and new["confidence-remask"]["remask_schedule"] == "binomial"


def test_code_scheduler_from_a_method_or_a_remasking_rule():
    from prism_hf.sampling.scheduling_prism import PrismScheduler

    eval_code = _example("eval_code")
    flags = ["--checkpoint", "never-loaded"]
    parse = lambda *extra: eval_code.HfArgumentParser(eval_code.EvalArguments).parse_args_into_dataclasses(  # noqa: E731
        args=[*flags, *extra])[0]
    # --remasking (or its default, prism) passes every sampler flag, as the previous release did
    before = dict(unmasking="confidence", remask_schedule="budget", num_remask=4, remask_budget=12, eta=None,
                  step_on=0.0, step_off=1.0, prism_loop_steps=0, temperature=0.0, block_length=64, kv_cache="none",
                  confidence_threshold=None, quality_threshold=None)
    for extra, remasking in (((), "prism"), (("--remasking", "remdm_conf"), "remdm_conf")):
        assert _config(eval_code.make_scheduler(parse(*extra))) == _config(PrismScheduler(remasking=remasking, **before))
    # --method takes the flags as the task's settings
    assert _config(eval_code.make_scheduler(parse("--method", "prism"))) == _config(PrismScheduler(remasking="prism", **before))
    margin = eval_code.make_scheduler(parse("--method", "vanilla-margin", "--remask_budget", "5"))
    assert (margin.config.remasking, margin.config.unmasking, margin.config.block_length) == ("none", "margin", 64)
    with pytest.raises(ValueError, match=r"method='prism' and remasking='random': pass one"):
        parse("--method", "prism", "--remasking", "random")
    with pytest.raises(ValueError, match=r"method='prsim' is not a known sampling method; valid names: \[.*'prism'"):
        parse("--method", "prsim")


def test_method_table_lookup_registration_and_bad_input():
    from prism_hf.sampling.presets import (
        METHOD_PRESETS,
        MethodPreset,
        get_method_preset,
        method_names,
        register_method_preset,
    )

    assert {"vanilla-confidence", "vanilla-margin", "vanilla-random", "remdm-conf", "random-remask", "confidence-remask",
            "prism", "vanilla", "remdm-cap", "remdm-rescale", "remdm-loop"} <= set(method_names())
    assert get_method_preset("prism").scheduler_kwargs({"unmasking": "random", "num_remask": 4}) == {
        "remasking": "prism", "unmasking": "random", "num_remask": 4}
    assert get_method_preset("remdm-conf").scheduler_kwargs({"unmasking": "random", "num_remask": 4}) == {
        "remasking": "remdm_conf", "unmasking": "random"}
    with pytest.raises(ValueError, match=r"method='best' is not a known sampling method; valid names: \["):
        get_method_preset("best")
    with pytest.warns(FutureWarning, match=r"`random` is deprecated; use `random-remask`"):
        assert get_method_preset("random") is get_method_preset("random-remask")
    with pytest.raises(ValueError, match=r"has \['temperature'\], which are not task sampler settings"):
        get_method_preset("prism").scheduler_kwargs({"temperature": 0.0})
    with pytest.raises(ValueError, match=r"scheduler_kwargs=\{'unmasking': 'margin'\} repeat what method 'prism'"):
        get_method_preset("prism").scheduler({"unmasking": "random"}, unmasking="margin")
    with pytest.raises(TypeError, match="is not a MethodPreset"):
        register_method_preset({"name": "mine"})
    with pytest.raises(ValueError, match="already registered"):
        register_method_preset(MethodPreset("prism", "random"))
    mine = register_method_preset(MethodPreset("test-oldest-first", "random", uses_remask_counts=True))
    try:
        assert get_method_preset("test-oldest-first") is mine and "test-oldest-first" in METHOD_PRESETS
    finally:
        METHOD_PRESETS.unregister("test-oldest-first")


def test_every_method_of_the_table_runs_on_sudoku_in_exactly_nfe_forwards():
    import numpy as np

    from prism_hf import PrismForMaskedDiffusion
    from prism_hf.sampling.presets import method_names
    from prism_hf.tasks.sudoku import SudokuMDMConfig, SudokuMDMForMaskedLM, generate_solved_grids, get_recipe, make_puzzles
    from prism_hf.tasks.sudoku.evaluation import evaluate

    recipe = get_recipe("tiny", num_remask=2, prism_loop_steps=1)
    spec = recipe.spec
    backbone = SudokuMDMForMaskedLM(SudokuMDMConfig(box_rows=spec.box_rows, box_cols=spec.box_cols, hidden_size=32,
                                                    num_hidden_layers=1, num_attention_heads=2))
    model = PrismForMaskedDiffusion.from_backbone(backbone, head_type="linear")
    puzzles = make_puzzles(generate_solved_grids(6, spec, seed=3), (6, 8), seed=3, spec=spec)
    # evaluate raises unless every method made exactly nfe model forwards
    result = evaluate(model, puzzles, recipe, methods=method_names(), nfe=[5], show_progress=False)
    assert [r["method"] for r in result["records"]] == list(method_names())
    assert all(0.0 <= r["success_rate"] <= 1.0 and r["nfe"] == 5 for r in result["records"])
    assert np.isnan(result["quality_auroc"]) or 0.0 <= result["quality_auroc"] <= 1.0


def test_sudoku_cli_methods_come_from_the_table(capsys):
    from prism_hf.tasks.sudoku.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--checkpoint", "never-read", "--methods", "prism", "prsim"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--methods: method='prsim' is not a known sampling method" in err and "'remdm-cap'" in err


# ----- head_type: one name, the earlier `head` deprecated ------------------------------------------------------------
def test_recipe_head_type_and_its_earlier_name(tmp_path):
    from prism_hf.tasks.sudoku import SudokuInputError, SudokuRecipe, get_recipe

    assert SudokuRecipe().head_type == "mlp" and get_recipe("paper").head_type == "linear"
    # each warning names the line that used the old name (this file), not a line inside prism_hf
    with pytest.warns(FutureWarning, match=r"SudokuRecipe: `head` is deprecated; use `head_type`") as caught:
        assert SudokuRecipe(head="linear").head_type == "linear"
    with pytest.warns(FutureWarning, match=r"get_recipe: `head` is deprecated") as caught_get:
        assert get_recipe("tiny", head="transformer").head_type == "transformer"
    with pytest.warns(FutureWarning, match=r"SudokuRecipe.replace: `head` is deprecated") as caught_replace:
        assert get_recipe("tiny").replace(head="linear").head_type == "linear"
    with pytest.warns(FutureWarning, match=r"`head` is deprecated") as caught_property:
        assert SudokuRecipe(head_type="linear").head == "linear"
    for record in (*caught, *caught_get, *caught_replace, *caught_property):
        assert record.filename == __file__, (str(record.message), record.filename)
    with pytest.raises(TypeError, match=r"pass `head_type` only; `head` is its deprecated name and both were given"):
        SudokuRecipe(head="linear", head_type="mlp")
    with pytest.raises(TypeError, match="both were given"):
        get_recipe("tiny").replace(head="linear", head_type="mlp")
    with pytest.raises(SudokuInputError, match=r"head_type='cnn' is not a quality head type"):
        get_recipe("tiny", head_type="cnn")
    # A saved recipe carries both names (readers of the previous release read `head`), and loads without a warning.
    get_recipe("tiny", head_type="linear").save(str(tmp_path))
    saved = json.loads((tmp_path / "sudoku_recipe.json").read_text())
    assert saved["head_type"] == saved["head"] == "linear"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SudokuRecipe.load(str(tmp_path)).head_type == "linear"
    saved["head"] = "mlp"
    (tmp_path / "sudoku_recipe.json").write_text(json.dumps(saved))
    with pytest.raises(SudokuInputError, match=r"has head='mlp' and head_type='linear'; they name one field"):
        SudokuRecipe.load(str(tmp_path))


def test_a_recipe_file_of_the_previous_release_loads():
    from prism_hf.tasks.sudoku import SudokuRecipe, get_recipe

    folder = FIXTURES / "sudoku_release_0_1_0"
    assert json.loads((folder / "sudoku_recipe.json").read_text())["head"] == "mlp"  # written by prism_hf 0.1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = SudokuRecipe.load(str(folder))
    # 0.1.0's tiny recipe inherited the demo's k = 8 of its day (the demo now fills 12); every field is read back.
    assert loaded == get_recipe("tiny", num_update_tokens=8) and loaded.head_type == "mlp"


def test_sudoku_cli_head_type_and_its_deprecated_alias(tmp_path, monkeypatch, capsys):
    import argparse

    from prism_hf.tasks.sudoku import cli as sudoku_cli

    parser = argparse.ArgumentParser()
    sudoku_cli.register(parser.add_subparsers(dest="command"))

    def recipe(*flags):
        return sudoku_cli._recipe(parser.parse_args(["sudoku", "pretrain", "--output-dir", "x", "--recipe", "tiny", *flags]))

    assert recipe("--head-type", "linear").head_type == "linear"
    with pytest.warns(FutureWarning, match=r"prism-hf sudoku: `--head` is deprecated; use `--head-type`"):
        assert recipe("--head", "transformer").head_type == "transformer"
    code = sudoku_cli.main(["pretrain", "--recipe", "tiny", "--output-dir", str(tmp_path / "p"), "--head", "linear",
                            "--head-type", "mlp"])
    assert code == 2
    assert "pass `--head-type` only; `--head` is its deprecated name and both were given" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


# ----- arguments.py serves only the examples ------------------------------------------------------------------------
def test_arguments_moved_to_the_examples_and_the_old_module_warns():
    import subprocess

    check = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from prism_hf.arguments import parse_args_with_config, train_resume_save\n"
        "assert any(issubclass(w.category, FutureWarning) and 'moved to examples/arguments.py' in str(w.message)\n"
        "           for w in caught), [str(w.message) for w in caught]\n"
        "assert callable(parse_args_with_config) and callable(train_resume_save)\n"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    arguments = _example("arguments")
    assert set(arguments.__all__) == {"parse_args_with_config", "prism_model_from_arguments", "train_resume_save"}
    for script in ("train_text", "train_code"):
        source = (EXAMPLES / f"{script}.py").read_text()
        assert "from arguments import" in source and "prism_hf.arguments" not in source, script


def test_examples_parse_a_yaml_config_with_the_moved_helper(tmp_path):
    from dataclasses import dataclass, field

    arguments = _example("arguments")

    @dataclass
    class Args:
        steps: int = field(default=1)
        name: str = field(default="a")

    (tmp_path / "c.yaml").write_text("steps: 3\nname: b\n")
    (args,) = arguments.parse_args_with_config((Args,), ["--config", str(tmp_path / "c.yaml"), "--name", "c"])
    assert (args.steps, args.name) == (3, "c")
    (tmp_path / "bad.yaml").write_text("stepz: 3\n")
    with pytest.raises(ValueError, match=r"--config .*bad.yaml: unknown keys \['stepz'\]"):
        arguments.parse_args_with_config((Args,), ["--config", str(tmp_path / "bad.yaml")])


# ----- task commands register through an entry-point group -----------------------------------------------------------
def _fake_entry_points(monkeypatch, *entry_points):
    from importlib import metadata

    from prism_hf import cli

    group = [metadata.EntryPoint(name=name, value=value, group=cli.ENTRY_POINT_GROUP) for name, value in entry_points]
    real = metadata.entry_points

    def entry_points_of(**selection):
        return group if selection.get("group") == cli.ENTRY_POINT_GROUP else real(**selection)

    monkeypatch.setattr(cli.metadata, "entry_points", entry_points_of)


def test_cli_names_no_task():
    from prism_hf import cli

    import ast

    tree = ast.parse(Path(cli.__file__).read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node) is not None}
    strings = [node.value for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]
    assert not [text for text in strings if "sudoku" in text.lower() or "tasks" in text], "cli.py names a task"
    assert cli.SUBCOMMAND_MODULES == []
    setup_py = (ROOT / "setup.py").read_text()
    assert '"prism_hf.commands": ["sudoku = prism_hf.tasks.sudoku.cli:register"]' in setup_py


def test_installed_metadata_declares_the_sudoku_command():
    from importlib import metadata

    from prism_hf import cli

    commands = {ep.name: ep.value for ep in metadata.entry_points(group=cli.ENTRY_POINT_GROUP)}
    assert commands.get("sudoku") == "prism_hf.tasks.sudoku.cli:register", (
        "the installed metadata lacks the entry point; run `pip install -e .`")


def test_a_fake_entry_point_adds_a_command(monkeypatch, capsys):
    import types

    from prism_hf import cli

    module = types.ModuleType("prism_test_ep_hello")

    def register(subparsers):
        parser = subparsers.add_parser("hello", help="Say hello.")
        parser.add_argument("--name", default="world")
        parser.set_defaults(func=lambda args: print(f"hello {args.name}") or 5)

    module.register = register
    monkeypatch.setitem(sys.modules, "prism_test_ep_hello", module)
    # an entry point may name the function or the module that has it
    for value in ("prism_test_ep_hello:register", "prism_test_ep_hello"):
        _fake_entry_points(monkeypatch, ("hello", value))
        assert cli.main(["hello", "--name", "prism"]) == 5
        assert capsys.readouterr().out.strip() == "hello prism"
    assert cli.main(["info"]) == 0
    assert "Task commands: hello" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["sudoku", "--help"])  # only what the (fake) metadata declares is there


def test_entry_point_errors_are_clear(monkeypatch, tmp_path):
    import types

    from prism_hf import cli

    # a package uninstalled but its metadata left behind: skipped, with a warning naming it
    _fake_entry_points(monkeypatch, ("gone", "prism_test_no_such_package.cli:register"))
    with pytest.warns(RuntimeWarning, match=r"skipping the command of entry point gone .*prism_test_no_such_package"):
        parser = cli.build_parser()
    assert "No task commands are installed" in parser.epilog
    # an installed plug-in whose own import fails is not hidden
    (tmp_path / "prism_test_ep_broken.py").write_text("import prism_test_dependency_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _fake_entry_points(monkeypatch, ("broken", "prism_test_ep_broken:register"))
    with pytest.raises(ModuleNotFoundError, match="prism_test_dependency_that_does_not_exist"):
        cli.build_parser()
    # a module without register(subparsers)
    monkeypatch.setitem(sys.modules, "prism_test_ep_empty", types.ModuleType("prism_test_ep_empty"))
    _fake_entry_points(monkeypatch, ("empty", "prism_test_ep_empty"))
    with pytest.raises(TypeError, match=r"entry point empty = 'prism_test_ep_empty' has no callable `register"):
        cli.build_parser()


# ----- no test doubles in the wheel ----------------------------------------------------------------------------------
def test_importing_prism_hf_testing_registers_nothing_and_builds_the_real_classes():
    """prism_hf.testing defines no model class and registers nothing: a user who imports it (the pipeline's docstring
    does) gets the same Auto mappings, and every builder returns the class that loads the Hub checkpoints."""
    import subprocess

    check = (
        "import prism_hf, transformers\n"
        "from transformers.models.auto import configuration_auto, modeling_auto\n"
        "def snapshot():\n"
        "    mappings = [configuration_auto.CONFIG_MAPPING] + [getattr(modeling_auto, name) for name in dir(modeling_auto)\n"
        "                                                      if name.startswith('MODEL_') and name.endswith('_MAPPING')]\n"
        "    return [(dict(m._extra_content), dict(getattr(m, '_model_mapping', {}))) for m in mappings]\n"
        "before = snapshot()\n"
        "import prism_hf.testing as testing\n"
        "assert snapshot() == before, 'importing prism_hf.testing changed the Auto mappings'\n"
        "from prism_hf.models import DreamModel, LLaDAModelLM, MDLMForMaskedLM\n"
        "expected = {'bert': transformers.BertForMaskedLM, 'modernbert': transformers.ModernBertForMaskedLM,\n"
        "            'llada': LLaDAModelLM, 'dream': DreamModel, 'mdlm': MDLMForMaskedLM}\n"
        "assert set(testing.TINY_BUILDERS) == set(expected)\n"
        "for name, build in testing.TINY_BUILDERS.items():\n"
        "    model = build()\n"
        "    assert type(model) is expected[name], (name, type(model))\n"
        "    assert transformers.AutoConfig.for_model(model.config.model_type).__class__ is type(model.config), name\n"
        "defined = [v for v in vars(testing).values() if isinstance(v, type) and v.__module__ == testing.__name__]\n"
        "assert not defined, defined\n"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_sudoku_and_code_never_took_the_text_names_and_do_not_now(capsys):
    from prism_hf.tasks.sudoku import SudokuInputError, get_recipe
    from prism_hf.tasks.sudoku.cli import main
    from prism_hf.tasks.sudoku.evaluation import method_scheduler

    # "random" was never a Sudoku method (vanilla-random and random-remask are): no silent alias there
    with pytest.raises(SudokuInputError, match=r"method='random' is not a known sampling method"):
        method_scheduler("random", get_recipe("tiny"))
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", "never-read", "--methods", "random"])
    assert "method='random' is not a known sampling method" in capsys.readouterr().err
    eval_code = _example("eval_code")
    with pytest.raises(ValueError, match=r"method='remdm_conf' is not a known sampling method"):
        eval_code.HfArgumentParser(eval_code.EvalArguments).parse_args_into_dataclasses(
            args=["--checkpoint", "x", "--method", "remdm_conf"])
