"""examples/train_text.py -> examples/eval_text.py end to end, offline, on the tiny stand-ins.

A tiny model of the native MDLM port (the class that loads kuleshov-group/mdlm-owt), a GPT-2-like
word tokenizer without a mask token, a few hundred lines of synthetic text, and a tiny random GPT-2 with a
character tokenizer as the Gen PPL / MAUVE judge.
"""

import json
import math
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

import eval_text  # noqa: E402
import text_corpus  # noqa: E402
import train_text  # noqa: E402


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_text")
    paths = text_corpus.main(["--output_dir", str(root), "--num_lines", "300"])
    return {key: Path(value) for key, value in paths.items()}


@pytest.fixture(scope="module")
def trained(tiny_text, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    trainer, result = train_text.main([
        "--model_name_or_path", str(tiny_text["tiny_mdlm"]),
        "--tokenizer_name", str(tiny_text["tokenizer"]),
        "--data_files", str(tiny_text["train"]), "--holdout_last_n", "0",
        "--output_dir", str(out), "--max_length", "32", "--max_steps", "4",
        "--per_device_train_batch_size", "4", "--global_batch_size", "8",
        "--learning_rate", "1e-3", "--warmup_steps", "0", "--logging_steps", "2",
        "--bf16", "false", "--use_cpu", "true", "--save_strategy", "no", "--report_to", "none",
    ])
    return out, trainer, result


def test_train_text_runs_the_recipe_offline(trained):
    out, trainer, result = trained
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert trainer.args.gradient_accumulation_steps == 2  # global batch 8 = 4 per device x 1 process x 2
    config = json.loads((out / "config.json").read_text())
    assert config["head_type"] == "transformer" and config["backbone_family"] == "mdlm"
    assert config["mask_token_id"] == 48  # MDLM rule: the last id of a 49-token vocabulary (tokenizer has 48, no mask)
    recipe = config["recipe"]
    assert (recipe["num_update_tokens"], recipe["num_proposals"], recipe["mdm_loss_weight"], recipe["update_selection"]) == (
        8, 4, 0.5, "random"
    )
    logs = [entry for entry in trainer.state.log_history if "self_correction_loss" in entry]
    assert logs and all(math.isfinite(entry["loss"]) and math.isfinite(entry["self_correction_loss"]) for entry in logs)
    assert result.global_step == 4


def test_the_trainer_passes_the_text_recipe_proposal_settings(trained, monkeypatch):
    import prism_hf.trainer as trainer_module

    _, trainer, _ = trained
    seen = {}
    original = trainer_module.prism_step

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "prism_step", spy)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    trainer.compute_loss(trainer.model, batch)
    assert seen.get("proposal_top_p") == 0.9 and seen.get("share_proposal_draws") is True


def test_eval_text_end_to_end(trained, tiny_text, tmp_path):
    out, _, _ = trained
    report = eval_text.main([
        "--model_name_or_path", str(out),
        "--rules", "prism", "remdm_cap", "vanilla", "--nfes", "4", "8",
        "--num_samples", "8", "--batch_size", "8", "--seq_length", "32", "--device", "cpu",
        "--eval_model", str(tiny_text["tiny_gpt2"]), "--eval_batch_size", "8",
        "--reference_files", str(tiny_text["validation"]), "--reference_last_n", "0", "--num_reference", "8",
        "--mauve_num_buckets", "2", "--mauve_kmeans_num_redo", "1", "--output_dir", str(tmp_path),
    ])
    rows = report["results"]
    assert [(r["rule"], r["nfe"]) for r in rows] == [(rule, nfe) for rule in ("prism", "remdm_cap", "vanilla") for nfe in (4, 8)]
    for row in rows:
        assert row["forwards"] == row["nfe"]  # no extra quality forward: NFE is what the sampler spent
        assert 1.0 < row["gen_ppl"] < 1000 and 0.0 < row["entropy"] <= math.log(32) and 0.0 <= row["mauve"] <= 1.0
    assert report["settings"]["rule_settings"]["prism"]["remask_schedule"] == "binomial"
    assert report["settings"]["rule_settings"]["remdm_cap"]["eta"] == 0.04
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"] == json.loads(json.dumps(rows))
    assert (tmp_path / "metrics_vs_nfe.png").read_bytes()[:4] == b"\x89PNG"
    samples = (tmp_path / "samples_prism_8.jsonl").read_text().splitlines()
    assert len(samples) == 8 and all(json.loads(line)["text"] for line in samples)


def test_recipe_defaults_and_config_file():
    # use_cpu: bf16 (the recipe's default) is only accepted on a GPU otherwise.
    _, _, args = train_text.parse_args(["--output_dir", "unused", "--use_cpu", "true"])
    assert (args.num_update_tokens, args.num_proposals, args.mdm_loss_weight, args.update_selection) == (8, 4, 0.5, "random")
    # the public OWT recipe: top-p 0.9 proposals, one draw shared by the n_y copies; the old behaviour on request
    assert (args.proposal_top_p, args.share_proposal_draws) == (0.9, True)
    _, _, old = train_text.parse_args(["--output_dir", "unused", "--use_cpu", "true", "--proposal_top_p", "1.0",
                                       "--share_proposal_draws", "false"])
    assert (old.proposal_top_p, old.share_proposal_draws) == (1.0, False)
    assert (args.learning_rate, args.max_steps, args.global_batch_size, args.max_length) == (1.5e-4, 20_000, 256, 1024)
    model_args, data_args, from_yaml = train_text.parse_args(["--config", str(EXAMPLES / "configs" / "mdlm_owt.yaml"), "--use_cpu", "true"])
    assert model_args.model_name_or_path == "kuleshov-group/mdlm-owt" and model_args.head_type == "transformer"
    assert model_args.tokenizer_name == "gpt2" and data_args.dataset_name == "Skylion007/openwebtext"
    for name in ("num_update_tokens", "num_proposals", "mdm_loss_weight", "learning_rate", "max_steps", "global_batch_size",
                 "proposal_top_p", "share_proposal_draws"):
        assert getattr(from_yaml, name) == getattr(args, name), name
    train_text.set_global_batch_size(from_yaml)
    assert from_yaml.gradient_accumulation_steps == 256 // 32  # one process
    from_yaml.per_device_train_batch_size = 24
    with pytest.raises(ValueError, match="global_batch_size=256 is not a positive multiple"):
        train_text.set_global_batch_size(from_yaml)


def test_pack_texts_wraps_blocks_like_mdlm():
    tokenizer = text_corpus.word_tokenizer()
    eos = tokenizer.eos_token_id
    docs = ["the cat sees a ship .", "a quiet river", "every old teacher paints some letter slowly ."]
    blocks = train_text.pack_texts(docs, tokenizer, block_size=8)["input_ids"]
    stream = [t for d in docs for t in tokenizer(d)["input_ids"] + [eos]]  # 7 + 4 + 9 = 20 tokens
    assert len(blocks) == 20 // 6 and all(len(b) == 8 and b[0] == eos and b[-1] == eos for b in blocks)
    assert [t for b in blocks for t in b[1:-1]] == stream[: 6 * len(blocks)]
    plain = train_text.pack_texts(docs, tokenizer, block_size=8, wrap_bos_eos=False)["input_ids"]
    assert [t for b in plain for t in b] == stream[:16]


def test_dataset_without_text_column_is_a_clear_error(tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text("\n".join(json.dumps({"content": line}) for line in text_corpus.synthetic_lines(5)) + "\n")
    with pytest.raises(ValueError, match=r"--text_column='text'.*no column 'text'.*\['content'\]"):
        train_text.main(["--data_files", str(data), "--holdout_last_n", "0", "--output_dir", str(tmp_path / "o"),
                         "--use_cpu", "true", "--bf16", "false", "--report_to", "none"])


@pytest.mark.parametrize("nfes", [["0", "4"], ["-8"]])
def test_non_positive_nfe_is_rejected_before_loading(nfes, tmp_path):
    with pytest.raises(ValueError, match="every NFE must be an integer >= 1"):
        eval_text.main(["--model_name_or_path", str(tmp_path / "does-not-exist"), "--nfes", *nfes])


def test_unknown_rule_is_rejected():
    with pytest.raises(ValueError, match="rules has 'prsim'"):
        eval_text.main(["--rules", "prsim"])


def test_non_causal_eval_model_is_rejected_before_sampling(trained, tiny_text, tmp_path):
    from prism_hf.testing import tiny_bert, tiny_char_tokenizer

    bert_dir = tmp_path / "tiny-bert"
    tokenizer = tiny_char_tokenizer()
    tiny_bert(vocab_size=len(tokenizer)).save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    out, _, _ = trained
    with pytest.raises(ValueError, match="--eval_model=BertLMHeadModel is not a causal language model"):
        eval_text.main(["--model_name_or_path", str(out), "--nfes", "4",
                        "--num_samples", "2", "--device", "cpu", "--eval_model", str(bert_dir),
                        "--output_dir", str(tmp_path / "eval")])
    assert not list((tmp_path / "eval").glob("samples_*"))
    # A model type with no causal-LM class at all fails at loading, with the same kind of message.
    with pytest.raises(ValueError, match="cannot be loaded as a causal language model"):
        eval_text.main(["--model_name_or_path", str(out), "--nfes", "4", "--device", "cpu",
                        "--eval_model", str(tiny_text["tiny_mdlm"]), "--output_dir", str(tmp_path / "eval2")])


def test_streaming_packs_the_same_blocks(tiny_text):
    tokenizer = text_corpus.word_tokenizer()
    blocks = {}
    for streaming in (False, True):
        dataset = train_text.load_text_dataset(dataset_name=None, data_files=[str(tiny_text["train"])], streaming=streaming)
        packed = train_text.packed_dataset(dataset, tokenizer, 32, "text")
        blocks[streaming] = [row["input_ids"] for _, row in zip(range(5), packed)]
    assert blocks[True] == blocks[False] and all(len(b) == 32 for b in blocks[True])


def test_eval_defaults_follow_the_public_owt_recipe():
    args = eval_text.EvalArguments()
    settings = args.rule_settings()
    assert (args.top_p, args.top_p_mode) == (0.9, "mdlm")
    assert all(kw["top_p"] == 0.9 and kw["top_p_mode"] == "mdlm" for kw in settings.values())
    assert settings["prism"]["step_on"] == 0.5 and settings["prism"].get("step_off", 1.0) == 1.0
    (from_yaml,) = eval_text.parse_args(["--config", str(EXAMPLES / "configs" / "mdlm_owt_eval.yaml")],
                                        dataclass_types=(eval_text.EvalArguments,))
    assert (from_yaml.top_p, from_yaml.top_p_mode) == (0.9, "mdlm")
    # the old behaviour: every step remasks, no nucleus
    old = eval_text.EvalArguments(top_p=1.0, rule_overrides='{"prism": {"step_on": 0.0}}').rule_settings()["prism"]
    assert old["step_on"] == 0.0 and old["top_p"] == 1.0


def test_bad_sampling_values_fail_when_the_arguments_are_parsed():
    with pytest.raises(ValueError, match=r"rule 'prism': top_p=1.5"):
        eval_text.EvalArguments(top_p=1.5)
    with pytest.raises(ValueError, match=r"rule 'prism': temperature=nan"):
        eval_text.EvalArguments(temperature=float("nan"))
    with pytest.raises(ValueError, match=r"rule 'prism': num_remask=True"):
        eval_text.EvalArguments(rule_overrides='{"prism": {"num_remask": true}}')


def test_rule_overrides_change_and_add_rules():
    args = eval_text.EvalArguments(
        rules=["prism", "mine"], top_p=0.9,
        rule_overrides='{"prism": {"eta": 0.02, "step_on": 0.1}, "mine": {"remasking": "random", "num_remask": 2}}',
    )
    settings = args.rule_settings()
    assert settings["prism"] == {"temperature": 1.0, "top_p": 0.9, "top_p_mode": "mdlm", "remasking": "prism",
                                 "remask_schedule": "binomial", "eta": 0.02, "unmasking": "random", "step_on": 0.1}
    assert settings["mine"]["remasking"] == "random" and settings["mine"]["num_remask"] == 2
    with pytest.raises(ValueError, match="must be a JSON object"):
        eval_text.EvalArguments(rule_overrides='["prism"]')


def test_prism_rule_on_a_plain_backbone_fails_before_sampling(tiny_text, tmp_path):
    with pytest.raises(ValueError, match=r"rules \['prism'\] need a quality head.*plain MDLMForMaskedLM backbone"):
        eval_text.main(["--model_name_or_path", str(tiny_text["tiny_mdlm"]),
                        "--tokenizer_name", str(tiny_text["tokenizer"]), "--rules", "prism", "vanilla", "--nfes", "4",
                        "--device", "cpu", "--eval_model", str(tiny_text["tiny_gpt2"]),
                        "--reference_files", str(tiny_text["validation"]), "--output_dir", str(tmp_path)])
    assert not list(tmp_path.glob("samples_*"))
